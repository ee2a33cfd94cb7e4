"""The basket admin: check out from the changelist, as the shop would, and read-only checkout state."""

from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from django.utils.html import strip_tags

from apps.basket.models import Basket
from apps.basket.services import basket_add_item, basket_checkout
from apps.ordering.models import Order
from messaging.models import OutboxMessage
from tests.memory_bus import deliver_all

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
    deliver_all()
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
