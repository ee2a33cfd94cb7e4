"""The basket admin: check out from the changelist, as the shop would; lines edited through the basket's services."""

from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from django.utils.html import strip_tags

from apps.basket.admin import BasketAdmin
from apps.basket.models import Basket, BasketLine
from apps.basket.services import basket_add_item, basket_checkout
from apps.ordering.models import Order
from messaging.models import OutboxMessage
from messaging.testing import TestBus

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:basket_basket_changelist"


def _check_out(client, *baskets: Basket):
    return client.post(reverse(CHANGELIST), {"action": "check_out", "_selected_action": [b.pk for b in baskets]},
                       follow=True)


def _messages(response) -> list[tuple[str, str]]:
    return [(m.level_tag, strip_tags(str(m))) for m in response.context["messages"]]


def test_check_out_starts_one_checkout_per_basket_and_says_which_order(admin_client, catalog_product):
    basket_add_item(customer_id="alice", sku="MUG-1", quantity=1, unit_price=Decimal("10.00"))
    basket_add_item(customer_id="bob", sku="MUG-1", quantity=2, unit_price=Decimal("10.00"))

    response = _check_out(admin_client, *Basket.objects.all())

    placed = {row.envelope["data"]["customer_id"]: row.envelope["data"]["order_id"]
              for row in OutboxMessage.objects.filter(message_type="ordering.PlaceOrder")}
    assert set(placed) == {"alice", "bob"}
    assert _messages(response) == [
        ("success", f"Basket of {customer}: checkout started, order {placed[customer]} "
                    "(its id is also its correlation id).")
        for customer in ("alice", "bob")
    ]
    assert f'href="/admin/ordering/order/?q={placed["alice"]}"' in response.content.decode()  # a link to the order
    TestBus().run_until_quiet()
    assert set(Order.objects.values_list("status", flat=True)) == {Order.Status.PAID}


def test_baskets_that_cannot_check_out_are_refused_by_name_and_the_others_go_ahead(admin_client, catalog_product):
    basket_add_item(customer_id="alice", sku="MUG-1", quantity=1, unit_price=Decimal("10.00"))
    basket_add_item(customer_id="bob", sku="MUG-1", quantity=1, unit_price=Decimal("10.00"))
    pending = basket_checkout(customer_id="bob")
    empty = Basket.objects.create(customer_id="carol")

    response = _check_out(admin_client, *Basket.objects.all())

    assert _messages(response)[1:] == [
        ("error", f"Basket of bob not checked out: already checking out (order {pending}); "
                  "ordering has not answered yet"),
        ("error", "Basket of carol not checked out: the basket is empty"),
    ]
    assert _messages(response)[0][0] == "success"
    assert Basket.objects.get(customer_id="alice").status == Basket.Status.CHECKING_OUT
    assert Basket.objects.get(pk=empty.pk).status == Basket.Status.OPEN
    assert OutboxMessage.objects.filter(message_type="ordering.PlaceOrder").count() == 2


def test_check_out_needs_the_change_permission(client, catalog_product):
    basket_add_item(customer_id="alice", sku="MUG-1", quantity=1, unit_price=Decimal("10.00"))
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_basket"))
    client.force_login(viewer)

    page = client.get(reverse(CHANGELIST))
    _check_out(client, Basket.objects.get())

    assert page.status_code == 200 and b"check_out" not in page.content
    assert Basket.objects.get().status == Basket.Status.OPEN
    assert not OutboxMessage.objects.exists()


def test_checkout_state_is_read_only_and_a_checking_out_basket_keeps_its_lines(admin_client, catalog_product):
    basket_add_item(customer_id="alice", sku="MUG-1", quantity=1, unit_price=Decimal("10.00"))
    basket = Basket.objects.get()
    open_page = admin_client.get(reverse("admin:basket_basket_change", args=[basket.pk]))
    basket_checkout(customer_id="alice")

    checking_out_page = admin_client.get(reverse("admin:basket_basket_change", args=[basket.pk]))

    assert 'name="status"' not in open_page.content.decode()
    assert 'name="lines-0-quantity"' in open_page.content.decode()
    assert 'name="lines-0-quantity"' not in checking_out_page.content.decode()


def _edit_lines(client, basket: Basket, *, quantities=None, skus=None, prices=None, delete=(), add=()):
    """Post the basket's change form as the admin page would, with these line edits."""
    lines = list(basket.lines.order_by("id"))
    data = {"lines-TOTAL_FORMS": len(lines) + len(add), "lines-INITIAL_FORMS": len(lines),
            "lines-MIN_NUM_FORMS": 0, "lines-MAX_NUM_FORMS": 1000, "_save": "Save"}
    for i, line in enumerate(lines):
        data |= {f"lines-{i}-id": line.pk, f"lines-{i}-basket": basket.pk,
                 f"lines-{i}-sku": (skus or {}).get(line.sku, line.sku),
                 f"lines-{i}-quantity": (quantities or {}).get(line.sku, line.quantity),
                 f"lines-{i}-unit_price": (prices or {}).get(line.sku, line.unit_price)}
        if line.sku in delete:
            data[f"lines-{i}-DELETE"] = "on"
    for i, (sku, quantity, unit_price) in enumerate(add, start=len(lines)):
        data |= {f"lines-{i}-basket": basket.pk, f"lines-{i}-sku": sku, f"lines-{i}-quantity": quantity,
                 f"lines-{i}-unit_price": unit_price}
    return client.post(reverse("admin:basket_basket_change", args=[basket.pk]), data, follow=True)


def _lines(customer_id: str) -> set[tuple[str, int, Decimal]]:
    return set(BasketLine.objects.filter(basket__customer_id=customer_id).values_list("sku", "quantity", "unit_price"))


@pytest.fixture
def alices_basket(db) -> Basket:
    basket_add_item(customer_id="alice", sku="MUG-1", quantity=1, unit_price=Decimal("10.00"))
    basket_add_item(customer_id="alice", sku="TEA-2", quantity=1, unit_price=Decimal("4.00"))
    return Basket.objects.get(customer_id="alice")


def test_lines_added_changed_and_removed_in_the_admin_change_the_open_basket_and_announce_nothing(
    admin_client, alices_basket
):
    response = _edit_lines(admin_client, alices_basket, quantities={"MUG-1": 3}, delete=["TEA-2"],
                           add=[("LAMP-3", 2, "25.00")])

    assert _messages(response) == [("success", "The basket “basket of alice (open)” was changed successfully.")]
    assert _lines("alice") == {("MUG-1", 3, Decimal("10.00")), ("LAMP-3", 2, Decimal("25.00"))}
    assert not OutboxMessage.objects.exists()  # the basket announces nothing: no message is skipped


def test_a_line_already_in_the_basket_keeps_its_sku_and_the_price_the_customer_was_shown(admin_client, alices_basket):
    response = _edit_lines(admin_client, alices_basket, skus={"MUG-1": "MUG-9"}, prices={"MUG-1": "0.01"})

    assert [level for level, _ in _messages(response)] == ["success"]  # not offered, so not refused either
    assert _lines("alice") == {("MUG-1", 1, Decimal("10.00")), ("TEA-2", 1, Decimal("4.00"))}


def test_a_line_holds_at_least_one(admin_client, alices_basket):
    response = _edit_lines(admin_client, alices_basket, quantities={"MUG-1": 0})

    assert "Ensure this value is greater than or equal to 1." in response.content.decode()
    assert ("MUG-1", 1, Decimal("10.00")) in _lines("alice")


def test_a_checking_out_basket_ignores_line_edits_posted_to_it(admin_client, alices_basket):
    basket_checkout(customer_id="alice")

    _edit_lines(admin_client, alices_basket, quantities={"MUG-1": 3}, delete=["TEA-2"], add=[("LAMP-3", 2, "25.00")])

    assert _lines("alice") == {("MUG-1", 1, Decimal("10.00")), ("TEA-2", 1, Decimal("4.00"))}


def test_a_checkout_that_started_while_the_page_was_open_refuses_every_line_edit(
    admin_client, alices_basket, monkeypatch
):
    # The checkout commits between the admin reading the basket and the line edits:
    # the basket services, which lock the basket, refuse them all.
    def checkout_meanwhile(self, request, obj, form, change):
        basket_checkout(customer_id=obj.customer_id)

    monkeypatch.setattr(BasketAdmin, "save_model", checkout_meanwhile)

    response = _edit_lines(admin_client, alices_basket, quantities={"TEA-2": 5}, delete=["MUG-1"])

    assert ("error", "Lines of alice's basket not changed: the basket is checking out; wait for the order to start") \
        in _messages(response)
    assert _lines("alice") == {("MUG-1", 1, Decimal("10.00")), ("TEA-2", 1, Decimal("4.00"))}
    [place_order] = OutboxMessage.objects.filter(message_type="ordering.PlaceOrder")
    assert [line["sku"] for line in place_order.envelope["data"]["lines"]] == ["MUG-1", "TEA-2"]
