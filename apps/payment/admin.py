from django.contrib import admin

from apps.payment.models import Payment
from messaging import ConversationLinkAdmin, ReadOnlyAdmin


@admin.register(Payment)
class PaymentAdmin(ConversationLinkAdmin, ReadOnlyAdmin):
    """Payments are made by ProcessPayment commands only."""

    conversation_field = "order_id"  # the checkout's correlation id

    list_display = ("order_id", "customer_id", "amount", "status", "created_at")
    list_filter = ("status",)
    search_fields = ("order_id", "customer_id")
