from django.contrib import admin

from apps.payment.models import Payment


@admin.register(Payment)
class PaymentAdmin(admin.ModelAdmin):
    list_display = ("order_id", "customer_id", "amount", "status", "created_at")
    list_filter = ("status",)
    search_fields = ("order_id", "customer_id")
    readonly_fields = ("order_id", "customer_id", "amount", "status", "decline_reason", "created_at")

    def has_add_permission(self, request):
        return False
