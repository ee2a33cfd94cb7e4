from django.contrib import admin
from django.db import transaction

from apps.catalog.models import Product, StockReservation
from apps.catalog.services import product_change_price
from messaging.admin import ReadOnlyAdmin
from messaging.conversation_admin import ConversationLinkAdmin


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ("sku", "name", "price", "stock_available")
    search_fields = ("sku", "name")
    readonly_fields = ("price_version",)

    def save_model(self, request, obj, form, change):
        # A price change from the admin must announce itself like any other.
        if not (change and "price" in form.changed_data):
            super().save_model(request, obj, form, change)
            return
        with transaction.atomic():
            new_price, obj.price = obj.price, form.initial["price"]
            super().save_model(request, obj, form, change)
            product_change_price(sku=obj.sku, new_price=new_price)


@admin.register(StockReservation)
class StockReservationAdmin(ConversationLinkAdmin, ReadOnlyAdmin):
    """Reservations follow ReserveStock and ReleaseStock commands only."""

    conversation_field = "order_id"  # the checkout's correlation id

    list_display = ("order_id", "status", "created_at")
    list_filter = ("status",)
    search_fields = ("order_id",)
