from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from demo.seed import DEMO_BASKETS, demo_seed


class Command(BaseCommand):
    help = (
        "Create demo products (with stock) and baskets ready to check out, through the contexts' services. "
        "Safe to run again: it adds only what is missing (an emptied demo basket is filled again)."
    )

    def handle(self, *args, **options):
        try:
            report = demo_seed()
        except DatabaseError as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CommandError(f"nothing was seeded: {reason} (has `python manage.py migrate` run?)") from exc
        write = self.stdout.write

        write("Products (catalog):")
        for product, opening_price in report.listed:
            write(f"  listed {product.sku} {product.name}: {product.stock_available} in stock, at {opening_price}, "
                  f"then price {product.price} (catalog.ProductPriceChanged, price version {product.price_version})")
        for product in report.already_listed:
            write(f"  {product.sku} already listed: left as it is ({product.price}, {product.stock_available} in stock)")

        write("Baskets:")
        for basket in report.filled:
            lines = ", ".join(f"{quantity} x {sku}" for sku, quantity in basket.lines)
            write(f"  filled {basket.customer_id}'s basket: {lines}")
        for basket, why in report.left:
            write(f"  {basket.customer_id}'s basket {why}: left as it is")

        if report.listed:
            write("\nThe price changes are in the outbox: once the relay and the workers run, ordering's price list "
                  "(admin: Ordering) holds the prices and the baskets show them, with the old ones.")
        write(self.style.SUCCESS(
            "\nNext: with `python manage.py run_platform` running, open http://127.0.0.1:8000/admin/basket/basket/, "
            "select the baskets and run the action \"Check out selected baskets\". Then Ordering > Orders:"
        ))
        for basket in DEMO_BASKETS:
            write(f"  {basket.customer_id}: {basket.outcome}")
