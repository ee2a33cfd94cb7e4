from django.db import models


class Order(models.Model):
    """An order; its status says how far the checkout flow has come."""

    class Status(models.TextChoices):
        AWAITING_STOCK = "awaiting_stock", "Awaiting stock confirmation"
        AWAITING_PAYMENT = "awaiting_payment", "Awaiting payment"
        PAID = "paid", "Paid"
        CANCELLED = "cancelled", "Cancelled"

    id = models.UUIDField(primary_key=True)
    customer_id = models.CharField(max_length=64, db_index=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.AWAITING_STOCK)
    total = models.DecimalField(max_digits=12, decimal_places=2)
    cancel_reason = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"order {self.id} ({self.get_status_display()})"


class OrderLine(models.Model):
    order = models.ForeignKey(Order, related_name="lines", on_delete=models.CASCADE)
    sku = models.CharField(max_length=64)
    quantity = models.PositiveIntegerField()
    unit_price = models.DecimalField(max_digits=12, decimal_places=2)

    def __str__(self):
        return f"{self.quantity} x {self.sku} at {self.unit_price}"


class PriceListEntry(models.Model):
    """Ordering's own copy of catalog prices, kept current by catalog events."""

    sku = models.CharField(max_length=64, unique=True)
    price = models.DecimalField(max_digits=12, decimal_places=2)
    #: The price's currency (ISO 4217), as the catalog announced it (a price change of
    #: version 1, which named none, in ``CATALOG_CURRENCY``). A default in the database
    #: too, EUR, the catalog's unless set: the code of the release before, still running
    #: during a rolling deploy, inserts entries without the column. A shop whose catalog
    #: is in another currency sets it on those entries once the deploy is over.
    currency = models.CharField(max_length=3, default="EUR", db_default="EUR")
    #: The catalog's price version this entry reflects; older changes are ignored.
    price_version = models.PositiveIntegerField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "price list entries"

    def __str__(self):
        return f"{self.sku} at {self.price}"
