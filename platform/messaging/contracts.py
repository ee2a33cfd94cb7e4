"""Message contracts and the envelope every message travels in.

A contract is a pydantic model: its fields are the message's ``data`` and are
validated when the message is written to the outbox and again before it is
handled. The envelope is a CloudEvent (JSON event format, specversion 1.0):
its own attributes are extensions with valid CloudEvents names (lower-case
letters and digits), so a non-Python consumer reading its own queue parses it
with any CloudEvents SDK.

A contract keeps its version history next to it: ``version`` is the one its
code writes, and each upcaster (a plain function registered with
``@Contract.upcaster(from_version=N)``) turns version N's data into N + 1's.
A consumer reads every version from the oldest its upcasters reach, and its
handlers only ever see the current one (``messaging.delivery.accept``). The
schema of each version is kept in the contracts' lock file
(``messaging.contract_lock``), which ``bus_contracts check`` compares with the
code.

A contract is only a class: defining one registers nothing. The registry
collects every ``Command`` and ``Event`` subclass of the installed apps once
they are loaded (``Registry.collect_contracts``).
"""

import datetime
import uuid
from collections.abc import Callable
from typing import Any, ClassVar, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from messaging.contexts import context_of_module


class Message(BaseModel):
    """Base of every contract. Subclass ``Command`` or ``Event``, not this."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: "command" or "event", fixed by the two subclasses below.
    kind: ClassVar[str]
    #: The stable dotted name; derived as ``<app label>.<ClassName>`` unless set.
    message_type: ClassVar[str] = ""
    #: The contract's version, the one its publishers write; bump it on an incompatible change
    #: and register an upcaster from the previous one.
    version: ClassVar[int] = 1
    #: Functions turning version N's data into version N + 1's, by N (``upcaster``); each
    #: contract has its own.
    upcasters: ClassVar[dict[int, Callable[[dict[str, Any]], dict[str, Any]]]] = {}

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls.upcasters = {}

    @classmethod
    def upcaster(cls, *, from_version: int) -> Callable:
        """Register the decorated function as the upcaster from ``from_version`` to the next version.

        It takes the data (a dict, as it travelled) and returns the next version's; it may
        not fail for data its own version accepted.
        """

        def register(func: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable:
            if not 1 <= from_version < cls.version:
                raise ValueError(f"{cls.__qualname__} is at version {cls.version}: an upcaster from version "
                                 f"{from_version} would lead to no version it has")
            if from_version in cls.upcasters:
                raise ValueError(f"{cls.__qualname__} already has an upcaster from version {from_version}: "
                                 f"{cls.upcasters[from_version].__qualname__}")
            cls.upcasters[from_version] = func
            return func

        return register

    @classmethod
    def oldest_readable_version(cls) -> int:
        """The oldest version a consumer of this code reads: the chain of upcasters ends there."""
        version = cls.version
        while version - 1 in cls.upcasters:
            version -= 1
        return version

    @classmethod
    def readable_versions(cls) -> list[int]:
        return list(range(cls.oldest_readable_version(), cls.version + 1))

    @classmethod
    def upcast(cls, data: dict[str, Any], version: int) -> dict[str, Any]:
        """``data`` of ``version`` as the current version's (unvalidated): each upcaster in turn."""
        if not cls.oldest_readable_version() <= version <= cls.version:
            raise ValueError(f"{cls.type_name()} reads versions {cls.oldest_readable_version()} to "
                             f"{cls.version}, not {version}")
        for step in range(version, cls.version):
            data = cls.upcasters[step](data)
        return data

    @classmethod
    def context(cls) -> str | None:
        """The context that owns this contract: the app whose module defines it."""
        return context_of_module(cls.__module__)

    @classmethod
    def type_name(cls) -> str:
        return cls.message_type or f"{cls.context()}.{cls.__name__}"


class Command(Message):
    """Asks exactly one context (the one that owns it) to do something."""

    kind: ClassVar[str] = "command"


class Event(Message):
    """Says that something happened; any number of contexts may subscribe."""

    kind: ClassVar[str] = "event"


class Envelope(BaseModel):
    """What travels on the broker: routing and tracing attributes plus ``data``.

    ``kind``, ``version``, ``correlationid`` and ``causationid`` are CloudEvents
    extension attributes; the rest are the specification's own.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: uuid.UUID
    type: str = Field(min_length=3, pattern=r"^[a-z][a-z0-9_]*\.[A-Za-z][A-Za-z0-9_]*$")
    kind: Literal["command", "event"]
    version: int = Field(ge=1)
    source: str
    time: datetime.datetime
    #: The business conversation: the first message's id, inherited by every message it causes.
    #: Also read under its former name, so envelopes written before the rename are still handled.
    correlationid: uuid.UUID = Field(validation_alias=AliasChoices("correlationid", "correlation_id"))
    #: The message being handled when this one was sent; absent for the first of a conversation.
    causationid: uuid.UUID | None = Field(default=None, validation_alias=AliasChoices("causationid", "causation_id"))
    specversion: Literal["1.0"] = "1.0"
    datacontenttype: Literal["application/json"] = "application/json"
    #: W3C trace context of the span that wrote the message, when tracing is on (the
    #: CloudEvents distributed-tracing extension; ``messaging.tracing``). Advisory, never a
    #: reason to refuse a message: one the trace propagator cannot read starts a trace of its own.
    traceparent: str | None = None
    tracestate: str | None = None
    data: dict[str, Any]

    def to_json_dict(self) -> dict[str, Any]:
        # An absent attribute is left out rather than written as null: CloudEvents
        # attributes have no null value.
        return self.model_dump(mode="json", exclude={name for name in _OPTIONAL_ATTRIBUTES if getattr(self, name) is None})


#: Envelope attributes that may be absent.
_OPTIONAL_ATTRIBUTES = ("causationid", "traceparent", "tracestate")
