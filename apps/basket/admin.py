from django.contrib import admin

from apps.basket.models import Basket, BasketLine
from messaging.conversation_admin import ConversationLinkAdmin


class BasketLineInline(admin.TabularInline):
    model = BasketLine
    fields = ("sku", "quantity", "unit_price", "previous_unit_price", "price_version")
    readonly_fields = ("previous_unit_price", "price_version")
    extra = 0


@admin.register(Basket)
class BasketAdmin(ConversationLinkAdmin, admin.ModelAdmin):
    conversation_field = "pending_order_id"  # the checkout's correlation id
    list_display = ("customer_id", "status", "pending_order_id")
    list_filter = ("status",)
    search_fields = ("customer_id",)
    inlines = [BasketLineInline]
