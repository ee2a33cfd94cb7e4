"""Message contracts and the envelope every message travels in.

A contract is a pydantic model: its fields are the message's ``data`` and are
validated when the message is written to the outbox and again before it is
handled. The envelope is a CloudEvent (JSON event format, specversion 1.0):
its own attributes are extensions with valid CloudEvents names (lower-case
letters and digits), so a non-Python consumer reading its own queue parses it
with any CloudEvents SDK.

A contract is only a class: defining one registers nothing. The registry
collects every ``Command`` and ``Event`` subclass of the installed apps once
they are loaded (``Registry.collect_contracts``).
"""

import datetime
import uuid
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
    #: The contract's version; bump it on an incompatible change.
    version: ClassVar[int] = 1

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
    data: dict[str, Any]

    def to_json_dict(self) -> dict[str, Any]:
        # An absent causation is left out rather than written as null: CloudEvents
        # attributes have no null value.
        return self.model_dump(mode="json", exclude={"causationid"} if self.causationid is None else None)
