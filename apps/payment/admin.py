from django.contrib import admin

from apps.payment.models import Payment
from messaging.admin import ReadOnlyAdmin


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    """Payments are made by ProcessPayment commands only."""

    list_display = ("order_id", "customer_id", "amount", "status", "created_at")
    list_filter = ("status",)
    search_fields = ("order_id", "customer_id")
