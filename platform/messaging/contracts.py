"""Message contracts and the envelope every message travels in.

A contract is a pydantic model: its fields are the message's ``data`` and are
validated when the message is written to the outbox and again before it is
handled. The envelope uses CloudEvents attribute names, so a non-Python
consumer reading its own queue understands it.
"""

import datetime
import uuid
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


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
        from messaging.registry import context_of_module

        return context_of_module(cls.__module__)

    @classmethod
    def type_name(cls) -> str:
        return cls.message_type or f"{cls.context()}.{cls.__name__}"

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if cls.__module__ == __name__:
            return  # Command and Event themselves are not contracts.
        from messaging.registry import registry

        registry.register_contract(cls)


class Command(Message):
    """Asks exactly one context (the one that owns it) to do something."""

    kind: ClassVar[str] = "command"


class Event(Message):
    """Says that something happened; any number of contexts may subscribe."""

    kind: ClassVar[str] = "event"


class Envelope(BaseModel):
    """What travels on the broker: routing and tracing attributes plus ``data``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: uuid.UUID
    type: str = Field(min_length=3, pattern=r"^[a-z][a-z0-9_]*\.[A-Za-z][A-Za-z0-9_]*$")
    kind: Literal["command", "event"]
    version: int = Field(ge=1)
    source: str
    time: datetime.datetime
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None = None
    specversion: Literal["1.0"] = "1.0"
    datacontenttype: Literal["application/json"] = "application/json"
    data: dict[str, Any]

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
