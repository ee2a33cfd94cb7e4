from django.db import models


class Payment(models.Model):
    class Status(models.TextChoices):
        SUCCEEDED = "succeeded"
        DECLINED = "declined"
        #: Charged, then given back: the order had been cancelled by then.
        REFUNDED = "refunded"

    order_id = models.UUIDField(unique=True)
    customer_id = models.CharField(max_length=64)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    status = models.CharField(max_length=16, choices=Status.choices)
    decline_reason = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"payment for order {self.order_id}: {self.status}"
