"""Basket: what a customer is about to buy, at the prices they were shown.

A basket's status and pending order change only through the checkout and what
ordering announces, so the admin shows them read-only and checks out through
``basket_checkout``, as the shop would. Lines of an open basket are edited in
place: the basket announces nothing, so no message is skipped by doing so.
"""
from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from apps.basket.models import Basket, BasketLine
from apps.basket.services import BasketError, basket_checkout
from messaging.conversation_admin import ConversationLinkAdmin
from messaging.outbox import MessageRejectedError


class BasketLineInline(admin.TabularInline):
    model = BasketLine
    fields = ("sku", "quantity", "unit_price", "previous_unit_price", "price_version")
    readonly_fields = ("previous_unit_price", "price_version")
    extra = 0

    def has_change_permission(self, request, obj=None):
        # A basket checking out has sent its lines to ordering: they are no longer the basket's to change.
        return super().has_change_permission(request, obj) and _is_open(obj)

    def has_add_permission(self, request, obj=None):
        return super().has_add_permission(request, obj) and _is_open(obj)

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and _is_open(obj)


@admin.register(Basket)
class BasketAdmin(ConversationLinkAdmin, admin.ModelAdmin):
    conversation_field = "pending_order_id"  # the checkout's correlation id
    list_display = ("customer_id", "status", "pending_order_id")
    list_filter = ("status",)
    search_fields = ("customer_id", "pending_order_id")
    readonly_fields = ("status", "pending_order_id")
    inlines = [BasketLineInline]
    actions = ["check_out"]

    @admin.action(description="Check out selected baskets", permissions=["change"])
    def check_out(self, request, queryset):
        """Start one checkout per basket; a basket that cannot check out is reported and skipped."""
        for basket in queryset.order_by("customer_id"):
            try:
                order_id = basket_checkout(customer_id=basket.customer_id)
            except (BasketError, MessageRejectedError) as refusal:
                self.message_user(request, f"Basket of {basket.customer_id} not checked out: {refusal}",
                                  messages.ERROR)
                continue
            orders = reverse("admin:ordering_order_changelist") + f"?q={order_id}"
            self.message_user(request, format_html(
                'Basket of {}: checkout started, order <a href="{}">{}</a> (its id is also its correlation id).',
                basket.customer_id, orders, order_id,
            ), messages.SUCCESS)


def _is_open(basket: Basket | None) -> bool:
    return basket is None or basket.status == Basket.Status.OPEN
