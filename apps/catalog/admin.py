from django.contrib import admin

from apps.catalog.models import Product, StockReservation
from apps.catalog.services import product_create, product_update
from messaging import ConversationLinkAdmin, ReadOnlyAdmin


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    """Products are created and changed by the catalog's services: a price changed here is announced like any other."""

    list_display = ("sku", "name", "price", "stock_available")
    search_fields = ("sku", "name")
    readonly_fields = ("price_version",)

    def get_readonly_fields(self, request, obj=None):
        # The SKU names the product in every context (baskets, price lists, orders, events): set once.
        readonly = super().get_readonly_fields(request, obj)
        return (*readonly, "sku") if obj else readonly

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if change:
            product = product_update(sku=obj.sku, name=data["name"], price=data["price"],
                                     stock_available=data["stock_available"])
        else:
            product = product_create(sku=data["sku"], name=data["name"], price=data["price"],
                                     stock=data["stock_available"])
        # The admin's history entry and redirect name the row the service saved.
        obj.pk = product.pk
        obj.refresh_from_db()


@admin.register(StockReservation)
class StockReservationAdmin(ConversationLinkAdmin, ReadOnlyAdmin):
    """Reservations follow ReserveStock and ReleaseStock commands only."""

    conversation_field = "order_id"  # the checkout's correlation id

    list_display = ("order_id", "status", "created_at")
    list_filter = ("status",)
    search_fields = ("order_id",)
