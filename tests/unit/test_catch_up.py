"""A new subscriber catches up (``republish_outbox --to <context> --type <type>``): the
history of an event type goes to that one context, oldest first, paced, resumable.

The in-memory bus stands in for the relay and the workers: whenever the catch-up
waits (``messaging.catch_up.sleep``), the bus publishes what is due and every
context handles its queue, and the catch-up's clock moves on by the time it slept.
The same on RabbitMQ and Redis with the real processes: ``tests/integration/test_catch_up.py``.
"""

import datetime
import signal
import uuid
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError, OutputWrapper
from django.utils import timezone

from apps.catalog.messages import StockReserved
from apps.catalog.models import Product
from apps.catalog.services import product_change_price, product_create
from messaging import catch_up
from messaging.catch_up import CatchUp, CatchUpError
from messaging.management.commands._progress import Progress
from messaging.models import InboxMessage, OutboxMessage
from messaging.registry import registry
from messaging.testing import DUPLICATE, HANDLED

pytestmark = pytest.mark.django_db

PRICE_CHANGED = "catalog.ProductPriceChanged"
#: When the history was published: before ordering subscribed, as far as this test goes.
AN_HOUR_AGO = datetime.timedelta(hours=1)


def _history(count: int, *, sku: str = "MUG-1", ago: datetime.timedelta = AN_HOUR_AGO) -> list[OutboxMessage]:
    """``count`` price changes of ``sku``, published ``ago`` to the subscribers of the time:
    on the outbox, marked published, delivered to no one here."""
    if not Product.objects.filter(sku=sku).exists():
        product_create(sku=sku, name=sku, price=Decimal("10.00"))
    for _ in range(count):
        product_change_price(sku=sku, new_price=Product.objects.get(sku=sku).price + 1)
    written = OutboxMessage.objects.filter(message_type=PRICE_CHANGED, published_at__isnull=True)
    ids = list(written.order_by("id").values_list("id", flat=True))
    written.update(published_at=timezone.now() - ago)
    return list(OutboxMessage.objects.filter(id__in=ids).order_by("id"))


class RelayAndWorkers:
    """The catch-up's clock and sleep: each sleep moves the clock on and, unless ``idle``,
    lets the in-memory bus publish and handle everything (the relay and the workers)."""

    def __init__(self, bus) -> None:
        self.bus, self.now, self.idle = bus, 0.0, False
        #: Run inside each sleep (a test's Ctrl-C).
        self.during_sleep = lambda: None

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.during_sleep()
        if not self.idle:
            self.bus.run_until_quiet()


@pytest.fixture
def relay_and_workers(bus, monkeypatch) -> RelayAndWorkers:
    running = RelayAndWorkers(bus)
    monkeypatch.setattr(catch_up, "sleep", running.sleep)
    monkeypatch.setattr(catch_up, "monotonic", running.monotonic)
    return running


def _handled_by(bus, context: str) -> list[str]:
    return [d.message_id for d in bus.deliveries if d.context == context and d.outcome == HANDLED]


def _inbox_of(context: str, message_type: str = PRICE_CHANGED):
    consumers = [handler.name for handler in registry.handlers_for(message_type, context)]
    return InboxMessage.objects.filter(consumer__in=consumers, message_type=message_type)


def _plan(since: datetime.timedelta = 2 * AN_HOUR_AGO, context: str = "ordering") -> CatchUp:
    return CatchUp.plan(context=context, event_type=PRICE_CHANGED, since=timezone.now() - since)


def _call(*args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("republish_outbox", *args, stdout=out, stderr=err)
    return out.getvalue().strip(), err.getvalue().strip()


# What is sent, and to whom.


def test_the_history_goes_to_the_one_subscriber_named_oldest_first(relay_and_workers, bus):
    history = _history(5)

    sent = _plan().run(rate=1000)

    assert sent == 5
    assert _handled_by(bus, "ordering") == [str(row.message_id) for row in history]
    copies = OutboxMessage.objects.filter(redeliver_to="ordering").order_by("id")
    assert [copy.message_id for copy in copies] == [row.message_id for row in history]
    assert all(copy.envelope == row.envelope for copy, row in zip(copies, history, strict=True))


def test_the_other_subscribers_never_see_the_copies(relay_and_workers, bus):
    _history(3)

    _plan().run(rate=1000)

    assert [d for d in bus.deliveries if d.context != "ordering"] == []
    assert _inbox_of("basket").count() == 0
    assert _inbox_of("ordering").count() == 3


def test_the_order_is_the_relays_a_row_scheduled_later_goes_after_those_written_after_it(relay_and_workers, bus):
    first, second, third = _history(3)
    OutboxMessage.objects.filter(id=first.id).update(available_at=third.available_at + datetime.timedelta(seconds=1))

    _plan().run(rate=1000)

    assert _handled_by(bus, "ordering") == [str(second.message_id), str(third.message_id), str(first.message_id)]


def test_only_the_type_asked_and_only_the_range_asked_is_sent(relay_and_workers, bus):
    too_old = _history(1, ago=3 * AN_HOUR_AGO)
    wanted = _history(2)
    bus.publish(StockReserved(order_id=uuid.uuid4()))
    OutboxMessage.objects.filter(published_at__isnull=True).update(published_at=timezone.now() - AN_HOUR_AGO)

    _plan(since=2 * AN_HOUR_AGO).run(rate=1000)

    assert _handled_by(bus, "ordering") == [str(row.message_id) for row in wanted]
    assert str(too_old[0].message_id) not in _handled_by(bus, "ordering")


def test_an_event_the_subscriber_had_already_is_absorbed_by_its_inbox(relay_and_workers, bus):
    had, missed = _history(2)
    bus.deliver(had.envelope, context="ordering")  # it reached ordering live, after its queue was bound

    _plan().run(rate=1000)

    outcomes = {d.message_id: d.outcome for d in bus.deliveries[1:]}
    assert outcomes == {str(had.message_id): DUPLICATE, str(missed.message_id): HANDLED}
    assert _inbox_of("ordering").count() == 2


def test_events_published_once_the_catch_up_began_are_left_to_the_subscribers_own_queue(relay_and_workers, bus):
    _history(2)
    planned = _plan()
    later = _history(1, ago=-datetime.timedelta(seconds=5))  # published after the plan's "until"

    planned.run(rate=1000)

    assert str(later[0].message_id) not in _handled_by(bus, "ordering")
    assert len(_handled_by(bus, "ordering")) == 2


# Pace and progress.


def test_copies_go_a_chunk_a_second_at_the_rate_asked_each_once_the_relay_published_the_last(relay_and_workers):
    _history(5)
    told = []

    _plan().run(rate=2, progress=told.append)

    assert told == [2, 4, 5]  # two a chunk: a second's worth at 2 per second
    # The fifth copy no sooner than 2 seconds after the first (5 copies at 2 per second).
    assert relay_and_workers.now >= 2.0


def test_a_chunk_is_never_larger_than_a_relay_batch(relay_and_workers, settings):
    settings.BUS_RELAY_BATCH_SIZE = 2
    _history(5)
    told = []

    _plan().run(rate=1000, progress=told.append)

    assert told == [2, 4, 5]


def test_a_relay_that_does_not_publish_is_named_and_the_catch_up_waits_for_it(relay_and_workers):
    _history(1)
    relay_and_workers.idle = True
    notices = []

    sent = _plan().run(rate=1000, notice=notices.append, stop=lambda: bool(notices))

    assert sent == 0
    assert len(notices) == 1 and "the relay has not published the last 1 copies" in notices[0]
    assert OutboxMessage.objects.filter(redeliver_to="ordering", published_at__isnull=True).count() == 1


@pytest.mark.parametrize("rate", [0, -1, float("inf"), float("nan")])
def test_a_rate_that_is_not_a_positive_number_is_refused(rate):
    with pytest.raises(CatchUpError, match="the rate is copies per second"):
        _plan().run(rate=rate)


# Stopping and going on.


def test_a_catch_up_stopped_halfway_goes_on_where_it_stopped_and_sends_nothing_twice(relay_and_workers, bus):
    history = _history(5)
    told = []

    first = _plan().run(rate=2, progress=told.append, stop=lambda: bool(told))
    again = _plan().run(rate=2)

    assert (first, again) == (2, 3)
    assert _handled_by(bus, "ordering") == [str(row.message_id) for row in history]
    assert OutboxMessage.objects.filter(redeliver_to="ordering").count() == 5
    assert _plan().pending().count() == 0


def test_stopped_while_the_relay_publishes_a_chunk_that_chunk_is_left_to_it_and_not_written_again(
    relay_and_workers, bus,
):
    history = _history(3)
    relay_and_workers.idle = True

    first = _plan().run(rate=2, stop=lambda: relay_and_workers.now > 0)
    relay_and_workers.idle = False
    again = _plan().run(rate=2)

    assert (first, again) == (0, 1)  # the first chunk (2) was written, then left to the relay
    assert _handled_by(bus, "ordering") == [str(row.message_id) for row in history]
    assert OutboxMessage.objects.filter(redeliver_to="ordering").count() == 3


# What can be asked.


@pytest.mark.parametrize(("context", "event_type", "error"), [
    ("shipping", PRICE_CHANGED, "unknown context 'shipping': the contexts are basket, catalog, ordering, payment"),
    ("ordering", "catalog.PriceChanged", "unknown message type 'catalog.PriceChanged': the events are "),
    ("catalog", "ordering.PlaceOrder", "ordering.PlaceOrder is a command"),
    ("payment", PRICE_CHANGED, (r"payment does not subscribe to catalog.ProductPriceChanged in this code "
                                r"\(its subscribers: basket, ordering\)")),
])
def test_what_cannot_be_caught_up_on_is_refused_saying_why(context, event_type, error):
    with pytest.raises(CatchUpError, match=error):
        CatchUp.plan(context=context, event_type=event_type, since=timezone.now())


def test_a_range_older_than_the_outbox_keeps_is_refused_naming_what_can_be_sent(settings):
    settings.BUS_OUTBOX_RETENTION = datetime.timedelta(days=7)
    oldest = _history(1, ago=datetime.timedelta(days=6))[0]
    now = timezone.now()

    with pytest.raises(CatchUpError) as refused:
        CatchUp.plan(context="ordering", event_type=PRICE_CHANGED, since=now - datetime.timedelta(days=8), now=now)

    message = str(refused.value)
    assert "older than the history kept: the outbox keeps published events for BUS_OUTBOX_RETENTION (7 days" in message
    assert f"from {(now - datetime.timedelta(days=7)).isoformat()} to now can be sent" in message
    assert f"(the oldest {PRICE_CHANGED} kept was published at {oldest.published_at.isoformat()})" in message
    CatchUp.plan(context="ordering", event_type=PRICE_CHANGED, since=now - datetime.timedelta(days=7), now=now)


def test_a_range_older_than_the_inbox_remembers_is_refused_it_could_not_absorb_copies(settings):
    settings.BUS_OUTBOX_RETENTION = datetime.timedelta(days=7)
    settings.BUS_INBOX_RETENTION = datetime.timedelta(days=3)

    with pytest.raises(CatchUpError, match=r"the inbox remembers handled messages for BUS_INBOX_RETENTION \(3 days"):
        CatchUp.plan(context="ordering", event_type=PRICE_CHANGED, since=timezone.now() - datetime.timedelta(days=4))


# The command.


@pytest.mark.parametrize(("args", "error"), [
    (["--to", "ordering", "--last", "60"], "--to and --type go together"),
    (["--type", PRICE_CHANGED, "--last", "60"], "--to and --type go together"),
    (["--rate", "5", "--last", "60"], "--rate paces a catch-up: give it with --to and --type"),
    (["--to", "ordering", "--type", PRICE_CHANGED, "--last", "60", "--rate", "0"], "--rate 0 is not a rate"),
    (["--to", "ordering", "--type", PRICE_CHANGED, "--last", "soon"], "--last 'soon' is not a duration"),
    (["--to", "payment", "--type", PRICE_CHANGED, "--last", "60"], "payment does not subscribe"),
    (["--to", "ordering", "--type", PRICE_CHANGED, "--since", "2000-01-01T00:00:00Z"],
     "--since 2000-01-01T00:00:00[+]00:00 is older than the history kept"),
])
def test_the_command_refuses_what_it_cannot_do_in_one_line(args, error):
    with pytest.raises(CommandError, match=error):
        _call(*args)


def test_the_command_sends_the_history_with_progress_and_says_what_it_did(relay_and_workers, bus):
    history = _history(3)

    out, _ = _call("--to", "ordering", "--type", PRICE_CHANGED, "--last", "PT2H", "--rate", "2")

    lines = out.splitlines()
    assert lines[0].startswith(f"sending 3 {PRICE_CHANGED} published since ") and "to ordering only, 2 per second" \
        in lines[0]
    assert lines[1].startswith("ordering catching up: 2/3 (66%")
    assert lines[2].startswith("ordering catching up: 3/3 (100%")
    assert lines[3].startswith(f"sent 3 {PRICE_CHANGED} published since ")
    assert _handled_by(bus, "ordering") == [str(row.message_id) for row in history]


def test_a_dry_run_counts_what_would_be_sent_and_what_was_sent_before(relay_and_workers):
    _history(5)
    dry = ["--to", "ordering", "--type", PRICE_CHANGED, "--last", "PT2H", "--dry-run"]

    assert _call(*dry)[0].startswith(f"would send 5 {PRICE_CHANGED} published since ")
    assert OutboxMessage.objects.filter(redeliver_to="ordering").count() == 0
    _plan().run(rate=2, stop=lambda: OutboxMessage.objects.filter(redeliver_to="ordering").exists())
    assert _call(*dry)[0].endswith("to ordering only (2 of 5 sent to it before)")


def test_ctrl_c_stops_the_command_cleanly_and_the_same_command_again_sends_the_rest(relay_and_workers, bus):
    history = _history(5)
    relay_and_workers.during_sleep = lambda: signal.raise_signal(signal.SIGINT)
    command = ["--to", "ordering", "--type", PRICE_CHANGED, "--last", "PT2H", "--rate", "2"]
    handler_before = signal.getsignal(signal.SIGINT)

    stopped, _ = _call(*command)
    relay_and_workers.during_sleep = lambda: None
    finished, _ = _call(*command)

    assert stopped.splitlines()[-1].startswith("stopped: 2 of 5 sent")
    assert finished.splitlines()[0].endswith("(2 of 5 sent to it before), 2 per second at most")
    assert finished.splitlines()[-1].startswith(f"sent 3 {PRICE_CHANGED}")
    assert _handled_by(bus, "ordering") == [str(row.message_id) for row in history]
    assert signal.getsignal(signal.SIGINT) is handler_before  # Ctrl-C is pytest's again


def test_the_command_says_when_everything_was_sent_before(relay_and_workers):
    _history(2)
    _plan().run(rate=1000)

    out, _ = _call("--to", "ordering", "--type", PRICE_CHANGED, "--last", "PT2H")

    assert out.startswith(f"nothing to send: 2 {PRICE_CHANGED} published since ")


def test_the_command_says_when_nothing_of_that_type_was_published_in_the_range():
    out, _ = _call("--to", "ordering", "--type", PRICE_CHANGED, "--last", "PT2H")

    assert out.startswith(f"nothing to send: no {PRICE_CHANGED} published since ") and out.endswith("is in the outbox")


def test_the_whole_retention_can_be_asked_for_with_last(settings):
    settings.BUS_OUTBOX_RETENTION = datetime.timedelta(days=7)

    out, _ = _call("--to", "ordering", "--type", PRICE_CHANGED, "--last", "P7D", "--dry-run")

    assert out.startswith(f"would send 0 {PRICE_CHANGED} published since ")


def test_on_a_terminal_the_progress_is_one_bar_redrawn_in_place():
    class Terminal(StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    progress = Progress(OutputWrapper(screen), total=4, label="ordering catching up")

    progress.update(1)
    progress.update(4)
    progress.close()

    redraws = screen.getvalue().split("\r")[1:]
    assert redraws[0].startswith("ordering catching up [#######.......................] 1/4 (25%")
    assert redraws[-1].startswith("ordering catching up [##############################] 4/4 (100%")
    assert screen.getvalue().count("\n") == 1 and screen.getvalue().endswith("\n")
