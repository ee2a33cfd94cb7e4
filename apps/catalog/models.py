from django.core.validators import MinValueValidator
from django.db import models


class Product(models.Model):
    sku = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    #: Never negative: ProductPriceChanged refuses a negative price, so the form must first.
    price = models.DecimalField(max_digits=12, decimal_places=2, validators=[MinValueValidator(0)])
    #: How many times the price changed; orders the ProductPriceChanged events.
    price_version = models.PositiveIntegerField(default=0)
    #: Units on hand that no order has reserved.
    stock_available = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["sku"]

    def __str__(self):
        return f"{self.sku} {self.name}"


class StockReservation(models.Model):
    """Stock held for one order, until the order is paid or cancelled."""

    class Status(models.TextChoices):
        RESERVED = "reserved"
        RELEASED = "released"

    order_id = models.UUIDField(unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RESERVED)
    #: [{"sku": ..., "quantity": ...}] as reserved.
    lines = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"reservation for order {self.order_id} ({self.status})"
