"""One broker user per process role, allowed only what that role does (RabbitMQ).

RabbitMQ grants a user three regular expressions per vhost, over exchange and
queue names alike (https://www.rabbitmq.com/docs/access-control): *configure*
(declare or delete), *write* (publish to an exchange; bind a queue, as its
destination) and *read* (consume or get from a queue; bind from an exchange).
Derived here from the registry and the topology's names, they guarantee:

- a context's worker reads its own queues only, and publishes only to the retry
  exchanges (its retries) and Celery's event and reply exchanges: never to the
  command exchange, an event's exchange, or a queue by name;
- the relay publishes to the command and event exchanges and, for a dead
  letter's redelivery to one context's queue, the default exchange; it reads
  the dead-letter queue only;
- neither may declare the bus's exchanges and queues: a user with every right on
  the vhost declares them before they start (``bus_topology --apply``, or any
  platform process running as that user), and they only check that the topology
  is there (``Topology.declare_where_allowed``).

Passive declarations, acks and rejects need no permission; RabbitMQ's own
dead-lettering and TTL expiry are not checked either.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import urllib.parse

from celery import current_app

from messaging.brokers.base import DEAD_LETTER_QUEUE
from messaging.topology import (
    COMMANDS_EXCHANGE,
    Topology,
    command_queue_name,
    event_exchange_name,
    event_queue_name,
)

#: The role of the relay; every other role is a context, whose worker it names.
RELAY = "relay"
#: How a permission check names the default exchange (``""``): the relay's redeliveries go through it.
DEFAULT_EXCHANGE_RESOURCE = "amq.default"
#: An event type as the topology names it, ``<context>.<Name>``.
EVENT_TYPE = r"[A-Za-z_]\w*\.\w+"
#: Grants nothing: the only name it matches is the empty one, which no resource has in a check.
NOTHING = "^$"
#: Stands for a variable part of a name while the topology's naming functions build it.
_PART = "\x00"


@dataclasses.dataclass(frozen=True)
class RolePermissions:
    """What one role's broker user may configure, write and read (anchored RabbitMQ patterns)."""

    role: str
    configure: str
    write: str
    read: str

    def user(self, prefix: str) -> str:
        return f"{prefix}{self.role}"


def url_variable(role: str) -> str:
    """The environment variable holding the broker URL of ``role``'s processes (``workers/__main__.py``
    reads a context's; the relay's is the setting ``BUS_BROKER_URL_RELAY``)."""
    return f"BUS_BROKER_URL_{role.upper()}"


def password_variable(role: str) -> str:
    """The environment variable ``bus_permissions --apply`` takes ``role``'s password from."""
    return f"BUS_BROKER_PASSWORD_{role.upper()}"


def only(*patterns: str) -> str:
    """A RabbitMQ pattern matching exactly these (RabbitMQ searches, so it is anchored)."""
    return f"^({'|'.join(patterns)})$" if patterns else NOTHING


def _shape(name: str, part: str) -> str:
    """The pattern of a name the topology builds, its variable part (``_PART``) matching ``part``."""
    return re.escape(name).replace(re.escape(_PART), part)


def _context_queues(context: str) -> tuple[str, str]:
    """Patterns of every queue ``context``'s worker consumes, including those of subscriptions added later."""
    return re.escape(command_queue_name(context)), _shape(event_queue_name(context, _PART), EVENT_TYPE)


def _celery_objects(context: str) -> tuple[str, str, str, str]:
    """Celery's event exchange, its remote-control and reply exchanges, and the remote-control
    queue of a worker of ``context`` (named ``<context>.<pid>@<host>``, ``workers/__main__.py``)."""
    mailbox = current_app.control.mailbox
    node_queue = mailbox.get_queue(f"{context}.{_PART}").name
    return (re.escape(current_app.conf.event_exchange), re.escape(mailbox.exchange.name),
            re.escape(mailbox.reply_exchange.name), _shape(node_queue, r"[^@]+@.+"))


def _retry_exchanges(context: str, topology: Topology) -> tuple[str, ...]:
    """Every exchange ``context``'s retries may wait behind, whatever the retry settings: the broker says."""
    pattern = topology.broker.retry_exchange_pattern(context)
    return (pattern,) if pattern else ()


def worker_permissions(context: str, topology: Topology) -> RolePermissions:
    events, control, replies, node_queue = _celery_objects(context)
    return RolePermissions(
        role=context,
        # Celery's objects only: Celery declares them at each start (its events' exchange, and
        # its remote-control queue, bound to the control exchange, which replies go back through).
        configure=only(events, control, replies, node_queue),
        # Its retries wait in its own retry exchanges' queues (``Topology.retry_route``); binding its
        # remote-control queue needs write on that queue. No dead-letter exchange: a worker
        # rejects to it through its queue's ``x-dead-letter-exchange``, which RabbitMQ does unchecked.
        write=only(*_retry_exchanges(context, topology), events, replies, node_queue),
        # Its own queues; the control exchange and its own queue for remote control (Flower).
        read=only(*_context_queues(context), control, node_queue),
    )


def relay_permissions() -> RolePermissions:
    events = re.escape(current_app.conf.event_exchange)
    return RolePermissions(
        role=RELAY,
        # The task events of the dead letters it collects (``Relay._event_dispatcher`` declares it).
        configure=only(events),
        write=only(re.escape(COMMANDS_EXCHANGE), _shape(event_exchange_name(_PART), EVENT_TYPE),
                   re.escape(DEFAULT_EXCHANGE_RESOURCE), events),
        read=only(re.escape(DEAD_LETTER_QUEUE)),
    )


def derive(topology: Topology | None = None) -> list[RolePermissions]:
    """The relay's permissions, then those of each context with handlers (each has a worker)."""
    topology = topology or Topology()
    return [relay_permissions(), *(worker_permissions(context, topology) for context in topology.registry.contexts())]


def rabbitmqctl_commands(permissions: list[RolePermissions], *, vhost: str, prefix: str) -> list[str]:
    """The ``rabbitmqctl`` lines that make the users, a placeholder where each password goes."""
    lines = []
    for role in permissions:
        user = role.user(prefix)
        lines.append(f"rabbitmqctl add_user {shlex.quote(user)} {shlex.quote(f'<password of {user}>')}")
        lines.append(f"rabbitmqctl set_permissions -p {shlex.quote(vhost)} {shlex.quote(user)} "
                     f"{shlex.quote(role.configure)} {shlex.quote(role.write)} {shlex.quote(role.read)}")
    return lines


def apply(permissions: list[RolePermissions], api, *, vhost: str, prefix: str, passwords: dict[str, str]) -> None:
    """Create or update each role's user (its password from ``passwords``) and set its permissions
    on ``vhost``, through RabbitMQ's management API (``api``, an administrator's)."""
    quoted_vhost = urllib.parse.quote(vhost, safe="")
    for role in permissions:
        user = urllib.parse.quote(role.user(prefix), safe="")
        api.put(f"users/{user}", {"password": passwords[role.role], "tags": ""})
        api.put(f"permissions/{quoted_vhost}/{user}",
                {"configure": role.configure, "write": role.write, "read": role.read})


def role_url(broker_url: str, *, user: str, password: str, vhost: str) -> str:
    """``broker_url`` with another user and vhost, on each of its hosts (a failover URL names
    several, ``;``-separated): the URL a role's processes connect with."""
    credentials = f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}"
    urls = []
    for url in broker_url.split(";"):
        parts = urllib.parse.urlsplit(url)
        host = parts.netloc.rsplit("@", 1)[-1]
        urls.append(parts._replace(netloc=f"{credentials}@{host}",
                                   path="/" + urllib.parse.quote(vhost, safe="")).geturl())
    return ";".join(urls)
