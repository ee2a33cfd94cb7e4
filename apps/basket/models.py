from django.db import models


class Basket(models.Model):
    class Status(models.TextChoices):
        OPEN = "open"
        #: Checkout sent; the order has not confirmed it started yet.
        CHECKING_OUT = "checking_out", "Checking out (waiting for ordering)"

    customer_id = models.CharField(max_length=64, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    #: The order the pending checkout asked for, until ordering confirms it.
    pending_order_id = models.UUIDField(null=True, blank=True)

    def __str__(self):
        return f"basket of {self.customer_id} ({self.status})"


class BasketLine(models.Model):
    basket = models.ForeignKey(Basket, related_name="lines", on_delete=models.CASCADE)
    sku = models.CharField(max_length=64)
    quantity = models.PositiveIntegerField()
    unit_price = models.DecimalField(max_digits=12, decimal_places=2)
    #: The price before the catalog's last change, shown so the customer notices.
    previous_unit_price = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    #: The catalog price version unit_price came from (0: the price seen when added).
    price_version = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["basket", "sku"], name="basket_line_per_sku")]

    @property
    def price_changed(self) -> bool:
        return self.previous_unit_price is not None

    def __str__(self):
        return f"{self.quantity} x {self.sku} at {self.unit_price}"
