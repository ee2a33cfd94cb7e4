"""The admin: behind a login, messages read-only, task results visible."""

import pytest
from django.urls import reverse

from messaging.models import DeadLetter, InboxMessage, OutboxMessage
from messaging.testing import TestBus

MESSAGE_ADMINS = ["messaging_outboxmessage", "messaging_inboxmessage", "messaging_deadletter"]


@pytest.fixture
def flow_data(catalog_product):
    from decimal import Decimal

    from apps.basket.services import basket_add_item, basket_checkout

    basket_add_item(customer_id="c1", sku="MUG-1", quantity=1, unit_price=Decimal("10.00"))
    basket_checkout(customer_id="c1")
    TestBus().run_until_quiet()
    DeadLetter.objects.create(context="basket", reason=DeadLetter.Reason.UNKNOWN_TYPE, error="no handler", body={})


@pytest.mark.django_db
def test_the_admin_requires_a_login(client):
    response = client.get(reverse("admin:messaging_outboxmessage_changelist"))

    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


@pytest.mark.django_db
@pytest.mark.parametrize("admin_name", MESSAGE_ADMINS)
def test_message_lists_and_details_show_and_are_read_only(admin_client, flow_data, admin_name):
    model = {"messaging_outboxmessage": OutboxMessage, "messaging_inboxmessage": InboxMessage,
             "messaging_deadletter": DeadLetter}[admin_name]
    obj = model.objects.first()

    changelist = admin_client.get(reverse(f"admin:{admin_name}_changelist"))
    detail = admin_client.get(reverse(f"admin:{admin_name}_change", args=[obj.pk]))

    assert changelist.status_code == 200 and detail.status_code == 200
    assert admin_client.get(reverse(f"admin:{admin_name}_add")).status_code == 403
    assert b'type="submit" value="Save"' not in detail.content
    assert admin_client.post(reverse(f"admin:{admin_name}_delete", args=[obj.pk]), {"post": "yes"}).status_code == 403
    assert model.objects.filter(pk=obj.pk).exists()


@pytest.mark.django_db
def test_outbox_list_filters_by_publication_and_searches_by_correlation(admin_client, flow_data):
    from decimal import Decimal

    from apps.catalog.services import product_change_price

    place_order = OutboxMessage.objects.get(message_type="ordering.PlaceOrder")
    product_change_price(sku="MUG-1", new_price=Decimal("11.00"))  # a new conversation, not yet published
    url = reverse("admin:messaging_outboxmessage_changelist")

    searched = admin_client.get(url, {"q": str(place_order.correlation_id)})
    unpublished = admin_client.get(url, {"published_at__isempty": "1"})

    assert searched.context["cl"].result_count == OutboxMessage.objects.count() - 1
    # The checkout's deadline waits, scheduled, beside the new price change.
    assert sorted(row.message_type for row in unpublished.context["cl"].result_list) == [
        "catalog.ProductPriceChanged", "ordering.ExpireOrder"
    ]


@pytest.mark.django_db
def test_a_truncated_dead_letter_shows_its_size_and_is_found_by_its_flag(admin_client, settings):
    import json

    from messaging.dead_letters import dead_letter_record

    settings.BUS_DEAD_LETTER_BODY_LIMIT = 100
    body = {"padding": "x" * 500}
    dead_letter_record(reason=DeadLetter.Reason.INVALID_ENVELOPE, context="basket", body={}, error="small")
    letter = dead_letter_record(reason=DeadLetter.Reason.INVALID_ENVELOPE, context="basket", body=body, error="big")

    truncated = admin_client.get(reverse("admin:messaging_deadletter_changelist"), {"body_truncated__exact": "1"})
    detail = admin_client.get(reverse("admin:messaging_deadletter_change", args=[letter.pk]))

    assert list(truncated.context["cl"].result_list) == [letter]
    assert b"By body truncated" in truncated.content and b"column-body_size" in truncated.content
    assert b"Body size (bytes)" in detail.content
    assert f"<div class=\"readonly\">{len(json.dumps(body))}</div>".encode() in detail.content


@pytest.mark.django_db
def test_task_results_are_in_the_admin(admin_client):
    from django_celery_results.models import TaskResult

    TaskResult.objects.create(task_id="t-1", task_name="ordering.PlaceOrder", status="SUCCESS")

    response = admin_client.get(reverse("admin:django_celery_results_taskresult_changelist"))

    assert response.status_code == 200
    assert b"ordering.PlaceOrder" in response.content


@pytest.mark.django_db
@pytest.mark.parametrize("admin_name", ["ordering_order", "ordering_pricelistentry", "catalog_stockreservation",
                                        "payment_payment"])
def test_state_that_only_messages_change_is_read_only_in_the_admin(admin_client, flow_data, admin_name):
    changelist = admin_client.get(reverse(f"admin:{admin_name}_changelist"))

    assert changelist.status_code == 200
    assert admin_client.get(reverse(f"admin:{admin_name}_add")).status_code == 403


@pytest.mark.django_db
def test_a_price_changed_in_the_admin_is_announced_like_any_other(admin_client, catalog_product):
    from decimal import Decimal

    url = reverse("admin:catalog_product_change", args=[catalog_product.pk])
    form = {"sku": "MUG-1", "name": "Big mug", "price": "14.00", "stock_available": "5"}

    response = admin_client.post(url, form)

    assert response.status_code == 302
    catalog_product.refresh_from_db()
    assert (catalog_product.name, catalog_product.price, catalog_product.price_version) == ("Big mug", Decimal("14.00"), 1)
    [event] = OutboxMessage.objects.all()
    assert event.message_type == "catalog.ProductPriceChanged"
    assert event.envelope["data"] == {"sku": "MUG-1", "old_price": "10.00", "new_price": "14.00", "price_version": 1, "currency": "EUR"}


@pytest.mark.django_db
def test_a_product_saved_in_the_admin_with_its_price_unchanged_announces_nothing(admin_client, catalog_product):
    from decimal import Decimal

    url = reverse("admin:catalog_product_change", args=[catalog_product.pk])

    response = admin_client.post(url, {"name": "Big mug", "price": "10.0", "stock_available": "7"})

    assert response.status_code == 302
    catalog_product.refresh_from_db()
    assert (catalog_product.name, catalog_product.price, catalog_product.stock_available,
            catalog_product.price_version) == ("Big mug", Decimal("10.00"), 7, 0)
    assert not OutboxMessage.objects.exists()


@pytest.mark.django_db
def test_a_negative_price_is_refused_by_the_admin_form_and_nothing_is_announced(admin_client, catalog_product):
    from decimal import Decimal

    url = reverse("admin:catalog_product_change", args=[catalog_product.pk])

    response = admin_client.post(url, {"name": "Mug", "price": "-1.00", "stock_available": "5"})

    assert response.status_code == 200  # the form again, with its error
    assert "Ensure this value is greater than or equal to 0" in response.content.decode()
    catalog_product.refresh_from_db()
    assert catalog_product.price == Decimal("10.00")
    assert not OutboxMessage.objects.exists()


@pytest.mark.django_db
def test_a_products_sku_is_set_when_it_is_added_in_the_admin_and_never_changed_there(admin_client):
    from apps.catalog.models import Product

    added = admin_client.post(reverse("admin:catalog_product_add"),
                              {"sku": "LAMP-3", "name": "Lamp", "price": "25.00", "stock_available": "2"})
    lamp = Product.objects.get()
    admin_client.post(reverse("admin:catalog_product_change", args=[lamp.pk]),
                      {"sku": "LAMP-9", "name": "Lamp", "price": "25.00", "stock_available": "2"})

    assert added.status_code == 302 and added["Location"] == reverse("admin:catalog_product_changelist")
    assert list(Product.objects.values_list("sku", "name", "price_version", "stock_available")) == [
        ("LAMP-3", "Lamp", 0, 2)
    ]
    assert not OutboxMessage.objects.exists()  # listing a product is not a price change
