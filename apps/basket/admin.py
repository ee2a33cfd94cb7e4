"""Basket: what a customer is about to buy, at the prices they were shown.

A basket's status and pending order change only through the checkout and what
ordering announces, so the admin shows them read-only and checks out through
``basket_checkout``, as the shop would. Lines are edited in the basket's page,
and each edit is a basket service (``basket_add_item``, ``basket_change_quantity``,
``basket_remove_item``), which refuses unless the basket is open.
"""
from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.urls import reverse
from django.utils.html import format_html

from apps.basket.models import Basket, BasketLine
from apps.basket.services import (
    BasketError,
    basket_add_item,
    basket_change_quantity,
    basket_checkout,
    basket_remove_item,
)
from messaging import ConversationLinkAdmin, MessageRejectedError


class BasketLineForm(forms.ModelForm):
    """A new line takes a SKU, a quantity and a price; a line already there changes its quantity only."""

    quantity = forms.IntegerField(min_value=1)

    class Meta:
        model = BasketLine
        fields = ("sku", "quantity", "unit_price")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            # The SKU is the line; its price is the one the customer was shown (the catalog reprices it).
            self.fields["sku"].disabled = self.fields["unit_price"].disabled = True


class BasketLineInline(admin.TabularInline):
    model = BasketLine
    form = BasketLineForm
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

    def get_readonly_fields(self, request, obj=None):
        # The basket services find a basket by its customer: set once.
        readonly = super().get_readonly_fields(request, obj)
        return (*readonly, "customer_id") if obj else readonly

    def save_formset(self, request, form, formset, change):
        """Apply the line edits through the basket's services, all or none."""
        formset.save(commit=False)  # sorts the forms into new, changed and deleted lines; saves nothing
        customer_id = form.instance.customer_id
        try:
            with transaction.atomic():
                for line in formset.deleted_objects:
                    basket_remove_item(customer_id=customer_id, sku=line.sku)
                for line, _ in formset.changed_objects:
                    basket_change_quantity(customer_id=customer_id, sku=line.sku, quantity=line.quantity)
                for line in formset.new_objects:
                    basket_add_item(customer_id=customer_id, sku=line.sku, quantity=line.quantity,
                                    unit_price=line.unit_price)
        except BasketError as refusal:
            # The basket started checking out after the page was read: no line changed.
            self.message_user(request, f"Lines of {customer_id}'s basket not changed: {refusal}", messages.ERROR)

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
