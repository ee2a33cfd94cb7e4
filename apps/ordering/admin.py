from django.contrib import admin

from apps.ordering.models import Order, OrderLine, PriceListEntry


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    readonly_fields = ("sku", "quantity", "unit_price")
    can_delete = False
    extra = 0


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    """Orders change only through messages: the admin shows where each stands."""

    list_display = ("id", "customer_id", "status", "total", "created_at", "updated_at")
    list_filter = ("status",)
    search_fields = ("id", "customer_id")
    date_hierarchy = "created_at"
    readonly_fields = ("id", "customer_id", "status", "total", "cancel_reason", "created_at", "updated_at")
    inlines = [OrderLineInline]

    def has_add_permission(self, request):
        return False


@admin.register(PriceListEntry)
class PriceListEntryAdmin(admin.ModelAdmin):
    list_display = ("sku", "price", "updated_at")
    search_fields = ("sku",)
    readonly_fields = ("sku", "price", "updated_at")
