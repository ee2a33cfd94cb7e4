from django.contrib import admin

from apps.ordering.models import Order, OrderLine, PriceListEntry
from messaging import ConversationLinkAdmin, ReadOnlyAdmin, short_id


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    readonly_fields = ("sku", "quantity", "unit_price")
    can_delete = False
    extra = 0

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Order)
class OrderAdmin(ConversationLinkAdmin, ReadOnlyAdmin):
    """Orders change only through messages: the admin shows where each stands."""

    conversation_field = "id"  # the checkout's correlation id

    list_display = ("short_order_id", "customer_id", "status", "total", "created_at", "updated_at")
    list_filter = ("status",)
    search_fields = ("id", "customer_id")
    date_hierarchy = "created_at"
    inlines = [OrderLineInline]

    @admin.display(description="order id", ordering="id")
    def short_order_id(self, obj):
        return short_id(obj.id)


@admin.register(PriceListEntry)
class PriceListEntryAdmin(ReadOnlyAdmin):
    """Ordering's copy of catalog prices, kept by ProductPriceChanged events."""

    list_display = ("sku", "price", "currency", "price_version", "updated_at")
    search_fields = ("sku",)
