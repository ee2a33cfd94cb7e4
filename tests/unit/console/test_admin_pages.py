"""The bus's admin pages: the overview counts what the tables hold, the topology draws
what the code declares, the AsyncAPI page shows the document as tables, and all are for
permitted staff only."""

import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from django.utils import timezone

from console.asyncapi_tables import constraints, field_rows, type_text
from console.display import duration_text
from messaging import asyncapi
from messaging.models import DeadLetter, InboxMessage, OutboxMessage
from console.overview import handled_per_minute
from messaging.registry import registry
from tests.brokers import on_broker
from messaging.topology import Topology
from console.topology_diagram import diagram_svg, message_flows

PAGES = ["bus:overview", "bus:topology", "bus:asyncapi"]


def _staff(username: str, *permissions: str) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    for codename in permissions:
        user.user_permissions.add(Permission.objects.get(content_type__app_label="messaging", codename=codename))
    return user


def _outbox_row(*, available_at, published_at=None) -> OutboxMessage:
    message_id = uuid.uuid4()
    return OutboxMessage.objects.create(
        message_id=message_id, kind="event", message_type="catalog.ProductPriceChanged",
        correlation_id=uuid.uuid4(), envelope={"id": str(message_id)},
        available_at=available_at, published_at=published_at,
    )


def _handled(*, at, consumer="ordering:ordering.PlaceOrder") -> InboxMessage:
    row = InboxMessage.objects.create(message_id=uuid.uuid4(), consumer=consumer, message_type="ordering.PlaceOrder")
    InboxMessage.objects.filter(pk=row.pk).update(handled_at=at)  # handled_at is set on insert
    return row


def _changelist_count(client, url: str) -> int:
    response = client.get(url)
    assert response.status_code == 200, url
    return response.context["cl"].result_count


# Who may see the pages


@pytest.mark.django_db
@pytest.mark.parametrize("page", PAGES)
def test_a_page_sends_an_anonymous_visitor_to_the_admin_login(client, page):
    response = client.get(reverse(page))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


@pytest.mark.django_db
@pytest.mark.parametrize("page", PAGES)
def test_a_page_refuses_staff_without_view_permission(client, page):
    client.force_login(_staff("clerk"))

    assert client.get(reverse(page)).status_code == 403


@pytest.mark.django_db
def test_the_overview_needs_view_permission_on_every_bus_table_it_counts(client):
    client.force_login(_staff("outbox-only", "view_outboxmessage"))
    refused = client.get(reverse("bus:overview"))
    client.force_login(_staff("bus-reader", "view_outboxmessage", "view_inboxmessage", "view_deadletter"))
    allowed = client.get(reverse("bus:overview"))

    assert refused.status_code == 403
    assert allowed.status_code == 200


@pytest.mark.django_db
def test_the_topology_is_shown_to_staff_who_may_see_the_bus_app(client):
    client.force_login(_staff("outbox-only", "view_outboxmessage"))

    assert client.get(reverse("bus:topology")).status_code == 200


@pytest.mark.django_db
def test_the_admin_index_links_the_pages_only_for_those_allowed(client, admin_client):
    client.force_login(_staff("clerk"))

    clerk_index = client.get(reverse("admin:index")).content.decode()
    admin_index = admin_client.get(reverse("admin:index")).content.decode()
    bus_app_page = admin_client.get(reverse("admin:app_list", args=["messaging"])).content.decode()

    for page in PAGES:
        assert f'href="{reverse(page)}"' in admin_index
        assert f'href="{reverse(page)}"' in bus_app_page
        assert f'href="{reverse(page)}"' not in clerk_index


@pytest.mark.django_db
def test_the_site_root_leads_an_operator_to_the_overview_and_others_to_the_admin(client, admin_client):
    client.force_login(_staff("clerk"))

    assert admin_client.get("/")["Location"] == reverse("bus:overview")
    assert client.get("/")["Location"] == reverse("admin:index")


# Overview


@pytest.mark.django_db
def test_the_overview_counts_due_and_scheduled_outbox_rows_and_links_to_them(admin_client):
    now = timezone.now()
    oldest = _outbox_row(available_at=now - timedelta(minutes=3))
    _outbox_row(available_at=now - timedelta(seconds=5))
    _outbox_row(available_at=now + timedelta(hours=1))
    _outbox_row(available_at=now - timedelta(hours=1), published_at=now - timedelta(minutes=59))

    response = admin_client.get(reverse("bus:overview"))

    backlog = response.context["backlog"]
    assert (backlog.due, backlog.scheduled, backlog.oldest_due_since) == (2, 1, oldest.available_at)
    assert _changelist_count(admin_client, response.context["due_url"]) == 2
    assert _changelist_count(admin_client, response.context["scheduled_url"]) == 1
    assert f'<a href="{response.context["due_url"]}">2</a>'.replace("&", "&amp;") in response.content.decode()


@pytest.mark.django_db
def test_the_overview_counts_dead_letters_per_consumer_and_links_to_each_group(admin_client):
    for _ in range(2):
        DeadLetter.objects.create(context="ordering", consumer="ordering:ordering.PlaceOrder",
                                  reason=DeadLetter.Reason.HANDLER_FAILED, error="boom")
    DeadLetter.objects.create(context="ordering", consumer="ordering:catalog.StockReserved",
                              reason=DeadLetter.Reason.INVALID_DATA, error="bad data")
    DeadLetter.objects.create(context="basket", reason=DeadLetter.Reason.UNKNOWN_TYPE, error="no handler")

    response = admin_client.get(reverse("bus:overview"))

    rows = response.context["dead_letters"]
    assert [(r["context"], r["consumer"], r["count"]) for r in rows] == [
        ("ordering", "ordering:ordering.PlaceOrder", 2),
        ("basket", "", 1),
        ("ordering", "ordering:catalog.StockReserved", 1),
    ]
    assert [_changelist_count(admin_client, r["url"]) for r in rows] == [2, 1, 1]
    assert response.context["dead_letters_total"] == 4


@pytest.mark.django_db
def test_the_overview_plots_messages_handled_in_the_last_hour(admin_client):
    now = timezone.now()
    for _ in range(3):
        _handled(at=now - timedelta(minutes=5))
    _handled(at=now - timedelta(minutes=20))
    _handled(at=now - timedelta(hours=2))  # before the plotted hour

    response = admin_client.get(reverse("bus:overview"))

    plot = str(response.context["activity_svg"])
    bars = [int(count) for count in re.findall(r'class="bar"[^>]*data-count="(\d+)"', plot)]
    assert len(bars) == 60 and sorted(bars)[-2:] == [1, 3] and sum(bars) == 4
    assert (response.context["handled_total"], response.context["handled_peak"]) == (4, 3)
    assert _changelist_count(admin_client, response.context["handled_url"]) == 4


@pytest.mark.django_db
def test_handled_messages_are_counted_in_the_minute_they_were_handled():
    now = datetime(2025, 3, 4, 12, 30, 15, tzinfo=UTC)
    _handled(at=datetime(2025, 3, 4, 12, 30, 1, tzinfo=UTC))
    _handled(at=datetime(2025, 3, 4, 12, 25, 0, tzinfo=UTC))
    _handled(at=datetime(2025, 3, 4, 12, 25, 59, tzinfo=UTC), consumer="basket:x")
    _handled(at=datetime(2025, 3, 4, 11, 30, 59, tzinfo=UTC))  # the minute before the window

    minutes = handled_per_minute(now)

    assert len(minutes) == 60
    assert minutes[0].minute == datetime(2025, 3, 4, 11, 31, tzinfo=UTC)
    assert {m.minute.strftime("%H:%M"): m.count for m in minutes if m.count} == {"12:25": 2, "12:30": 1}


def test_a_waiting_time_reads_to_the_second():
    assert [duration_text(timedelta(seconds=s)) for s in (0, 42, 192, 7500)] == [
        "0 s", "42 s", "3 min 12 s", "2 h 5 min",
    ]


# Topology


@pytest.mark.django_db
def test_the_topology_diagram_names_every_context_and_message(admin_client):
    response = admin_client.get(reverse("bus:topology"))

    svg = str(response.context["diagram_svg"])
    assert svg.startswith("<svg") and svg in response.content.decode()
    for context in registry.contexts_known():
        assert f">{context}</text>" in svg
    for contract in registry.contracts:
        assert f">{contract.type_name()}</text>" in svg


@pytest.mark.django_db
def test_the_topology_table_names_every_queue_as_bus_topology_does(admin_client):
    response = admin_client.get(reverse("bus:topology"))

    table = response.content.decode().split('id="topology-table"', 1)[1]
    for about in Topology().describe()["contexts"].values():
        for queue in about["queues"]:
            assert f"<code>{queue}</code>" in table
        for handler in about["handlers"]:
            assert f"<code>{handler['handler']}</code>" in table


DESCRIPTION = {
    "contracts": [
        {"type": "shop.OrderPlaced", "kind": "event", "version": 1, "owner": "shop"},
        {"type": "shop.OrderForgotten", "kind": "event", "version": 1, "owner": "shop"},
        {"type": "stock.Reserve", "kind": "command", "version": 2, "owner": "stock"},
    ],
    "contexts": {
        "stock": {"queues": [], "commands": [], "subscriptions": [], "handlers": [
            {"message_type": "stock.Reserve", "kind": "command", "handler": "stock.handlers.reserve"},
            {"message_type": "shop.OrderPlaced", "kind": "event", "handler": "stock.handlers.on_order"},
        ]},
        "mail": {"queues": [], "commands": [], "subscriptions": [], "handlers": [
            {"message_type": "shop.OrderPlaced", "kind": "event", "handler": "mail.handlers.confirm"},
        ]},
    },
}


def _message_group(svg: str, message_type: str) -> str:
    return re.search(rf'<g class="([^"]*)" data-type="{re.escape(message_type)}">(.*?)</g>', svg).group(0)


def test_an_event_without_subscribers_is_drawn_marked_and_one_with_subscribers_is_not():
    svg = str(diagram_svg(message_flows(DESCRIPTION)))

    forgotten = _message_group(svg, "shop.OrderForgotten")
    placed = _message_group(svg, "shop.OrderPlaced")
    assert "unreceived" in forgotten and ">no subscribers</text>" in forgotten
    assert "unreceived" not in placed and "no subscribers" not in placed


def test_the_diagram_draws_an_arrow_for_each_delivery():
    flows = message_flows(DESCRIPTION)

    svg = str(diagram_svg(flows))

    assert [(f.type, [d.queue for d in f.deliveries]) for f in flows] == [
        ("shop.OrderForgotten", []),
        ("shop.OrderPlaced", ["mail.events.shop.OrderPlaced", "stock.events.shop.OrderPlaced"]),
        ("stock.Reserve", ["stock.commands"]),
    ]
    assert svg.count('class="route"') == 3


def test_the_diagram_is_the_same_whatever_order_the_registry_lists_things_in():
    shuffled = {
        "contracts": list(reversed(DESCRIPTION["contracts"])),
        "contexts": dict(reversed(DESCRIPTION["contexts"].items())),
    }

    assert diagram_svg(message_flows(shuffled)) == diagram_svg(message_flows(DESCRIPTION))


# AsyncAPI


@pytest.mark.django_db
def test_the_asyncapi_page_and_its_download_are_shown_to_staff_who_may_see_the_bus_app(client):
    client.force_login(_staff("outbox-only", "view_outboxmessage"))

    assert client.get(reverse("bus:asyncapi")).status_code == 200
    assert client.get(reverse("bus:asyncapi-json")).status_code == 200


@pytest.mark.django_db
def test_the_asyncapi_download_needs_a_login_and_the_permission(client):
    anonymous = client.get(reverse("bus:asyncapi-json"))
    client.force_login(_staff("clerk"))
    refused = client.get(reverse("bus:asyncapi-json"))

    assert anonymous.status_code == 302 and anonymous["Location"].startswith(reverse("admin:login"))
    assert refused.status_code == 403


@pytest.mark.django_db
def test_the_asyncapi_download_is_the_document_as_bus_asyncapi_writes_it(admin_client):
    response = admin_client.get(reverse("bus:asyncapi-json"))

    assert response["Content-Disposition"] == 'attachment; filename="asyncapi.json"'
    assert json.loads(response.content) == asyncapi.document()


@pytest.mark.django_db
def test_the_asyncapi_page_lists_servers_channels_operations_and_every_message(admin_client, settings):
    on_broker(settings, "rabbitmq")

    page = admin_client.get(reverse("bus:asyncapi")).content.decode()

    assert f'href="{reverse("bus:asyncapi-json")}"' in page
    assert "<code>localhost:5672</code>" in page and "<td>amqp</td>" in page
    assert "<code>x-queue-type=quorum</code>" in page
    assert "<code>commands (ordering.PlaceOrder)</code>" in page
    operations = page.split('id="operations"', 1)[1].split('id="messages"', 1)[0]
    for operation_id in asyncapi.document()["operations"]:
        assert f"<code>{operation_id}</code>" in operations
    assert "<caption>ordering</caption>" in operations
    for contract in registry.contracts:
        assert f'id="message-{contract.type_name()}"' in page
    assert 'id="message-catalog.ProductPriceChanged.v1"' in page
    # Each receiving operation links every version it reads.
    received = operations.split("<code>ordering.receive.catalog.ProductPriceChanged</code>", 1)[1].split("</tr>", 1)[0]
    assert ('href="#message-catalog.ProductPriceChanged"' in received
            and 'href="#message-catalog.ProductPriceChanged.v1"' in received)
    assert "<script" not in page.split('id="content-main"', 1)[1]
    # Nothing of the page leaks into the admin's flash messages (a context variable named
    # "messages" would be shown there, each message's repr as a success notice).
    assert 'class="messagelist"' not in page and "MessageView(" not in page


@pytest.mark.django_db
def test_a_message_on_the_asyncapi_page_reads_as_a_table_of_its_fields(admin_client):
    page = admin_client.get(reverse("bus:asyncapi")).content.decode()

    message = page.split('id="message-catalog.ReserveStock"', 1)[1].split('<div class="module" id="message-', 1)[0]
    data = message.split("<caption>Data", 1)[1].split("</table>", 1)[0]
    cells = [re.sub(r"<[^>]+>|\s+", " ", cell).strip() for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", data, re.S)]
    assert cells[5:] == [
        "order_id", "string (uuid)", "required", "", "",
        "lines", "list of ReserveStockLine", "required", "at least 1 items", "",
        "lines[].sku", "string", "required", "at least 1 characters  at most 64 characters", "",
        "lines[].quantity", "integer", "required", "&gt; 0", "",
    ]
    envelope = message.split("<caption>Envelope", 1)[1].split("</table>", 1)[0]
    assert "<code>correlationid</code>" in envelope and "data." not in envelope
    assert "Version written: <strong>1</strong>" in message


def test_a_field_type_names_formats_lists_references_and_alternatives():
    assert type_text({"type": "string", "format": "uuid"}) == "string (uuid)"
    assert type_text({"type": "array", "items": {"$ref": "#/components/schemas/catalog.ReserveStockLine"}}) == (
        "list of ReserveStockLine")
    assert type_text({"anyOf": [{"type": "number"}, {"type": "string"}]}) == "number or string"
    assert constraints({"anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": "^x$"}]}) == [
        "as number: ≥ 0", "as string: matches ^x$"]


def test_nested_objects_are_flattened_into_dotted_fields():
    schemas = {"Inner": {"type": "object", "properties": {"depth": {"type": "integer"}}, "required": ["depth"]}}
    schema = {"type": "object", "properties": {"inner": {"$ref": "#/components/schemas/Inner"}}}

    rows = field_rows(schema, schemas)

    assert [(r.field, r.type, r.required) for r in rows] == [("inner", "Inner", False), ("inner.depth", "integer", True)]


@pytest.mark.django_db
def test_the_overview_names_each_process_on_this_host_and_a_context_with_none_running(admin_client, settings, tmp_path):
    from messaging.health import Heartbeat

    settings.BUS_HEALTH_DIR = tmp_path
    Heartbeat("relay").beat("publishing")
    Heartbeat("worker-basket").beat("reconnecting", "the broker went away")

    response = admin_client.get(reverse("bus:overview"))

    rows = {row.name: row for row in response.context["processes"]}
    assert set(rows) == {"relay", *(f"worker-{context}" for context in registry.contexts())}
    assert (rows["relay"].state, rows["relay"].problem) == ("publishing", "")
    assert rows["worker-basket"].problem.endswith("is reconnecting: the broker went away")
    assert rows["worker-ordering"].problem == "no worker-ordering process runs on this host"
    page = response.content.decode()
    assert "no worker-ordering process runs on this host" in page and "reconnecting" in page


@pytest.mark.django_db
def test_the_overview_shows_each_queues_depth_and_what_waits_to_be_retried(admin_client, settings, monkeypatch):
    from messaging import bus_state

    on_broker(settings, "rabbitmq")
    depths = {"basket.events.catalog.ProductPriceChanged": 3, "ordering.commands": 0, "dead-letters": 1,
              "retry.basket.400ms": 2, "retry.basket.2000ms": 5}
    monkeypatch.setattr(bus_state, "queue_depths", lambda timeout=None: depths)

    response = admin_client.get(reverse("bus:overview"))

    queues = {queue.name: (queue.kind, queue.context, queue.messages) for queue in response.context["queues"]}
    assert queues["basket.events.catalog.ProductPriceChanged"] == ("consumer", "basket", 3)
    assert queues["retry.basket.2000ms"] == ("retry", "", 5)
    assert queues["dead-letters"] == ("dead letters", "", 1)
    assert response.context["retrying"] == 7
    assert re.search(r'id="retrying">.*?<td class="number">7</td>', response.content.decode(), re.S)


@pytest.mark.django_db
def test_the_overview_says_when_the_broker_did_not_answer_and_reloads_itself(admin_client, monkeypatch):
    from messaging import bus_state

    monkeypatch.setattr(bus_state, "queue_depths", lambda timeout=None: None)

    response = admin_client.get(reverse("bus:overview"))

    page = response.content.decode()
    assert "The broker did not answer in time: queue depths unknown." in page
    assert '<meta http-equiv="refresh" content="10">' in page
