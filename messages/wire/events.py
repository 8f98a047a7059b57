"""Shapes of the Prefect server's event stream (`GET /api/events/out`, a websocket).

The protocol, read in the code of the 2.20 and 3.x servers and seen on both: the client
offers the subprotocol `prefect` and sends `{"type": "auth", "token": KEY}` first; the server
answers `{"type": "auth_success"}` (or closes with a reason); the client sends one `filter`
message, which the server applies to every event before it goes out; then each event comes
as `{"type": "event", "event": {...}}`. A flow run's state change is the event
`prefect.flow-run.<state name>`, whose resource is the run (`prefect.resource.id`:
`prefect.flow-run.<id>`, with its state's type and name as labels) and whose related
resources name its flow, deployment, work queue and work pool (`prefect.work-queue.<id>`,
role `work-queue`). It carries no scheduled time.

Only what the agent acts on is declared; everything else is ignored, so a newer server that
adds fields keeps working. Labels are kept as the server sent them (`dict[str, Any]`): one
label of an unexpected type must not make a whole event undecodable.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

FLOW_RUN_PREFIX = "prefect.flow-run."
WORK_QUEUE_PREFIX = "prefect.work-queue."


class EventDecodeError(ValueError):
    """A message of the stream that is not the shape the agent expects."""


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One event as the stream sends it."""

    id: str  # for a state change: the id of the state (the same event sent twice has it twice)
    event: str  # e.g. "prefect.flow-run.Scheduled"
    occurred: datetime | None = None
    resource: dict[str, Any] = msgspec.field(default_factory=dict)  # the run: id, state labels
    related: tuple[dict[str, Any], ...] = ()  # flow, deployment, work-queue, work-pool, tags

    def label(self, name: str) -> str | None:
        """A label of the event's own resource, when it is a string."""
        value = self.resource.get(name)
        return value if isinstance(value, str) else None

    def related_ids(self, role: str) -> tuple[str, ...]:
        """The `prefect.resource.id` of each related resource in `role`."""
        return tuple(
            resource_id
            for labels in self.related
            if labels.get("prefect.resource.role") == role
            for resource_id in [labels.get("prefect.resource.id")]
            if isinstance(resource_id, str)
        )


class StreamMessage(msgspec.Struct, frozen=True, kw_only=True):
    """Any message the server sends on the stream: `auth_success`, `event`, ..."""

    type: str
    event: Event | None = None  # with type "event"
    reason: str | None = None  # some refusals say why


class OccurredFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Both bounds are needed: a bound left out defaults, on the server, to the moment the
    filter was read, which would exclude every later event."""

    since: datetime
    until: datetime


class EventNameFilter(msgspec.Struct, frozen=True, kw_only=True):
    name: list[str]  # exact event names


class AnyResourceFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Events with one of these resource ids among their own or their related resources:
    the one resource filter both servers apply to the live stream (the `related` filter is
    applied to stored events only)."""

    id: list[str]


class EventFilter(msgspec.Struct, frozen=True, kw_only=True):
    occurred: OccurredFilter
    event: EventNameFilter
    any_resource: AnyResourceFilter


class FilterMessage(msgspec.Struct, frozen=True, kw_only=True):
    """The second message the client sends; `backfill` off: past events are not replayed."""

    filter: EventFilter
    type: str = "filter"
    backfill: bool = False


class AuthMessage(msgspec.Struct, frozen=True, kw_only=True):
    """The first message the client sends; the token is the API key (None for a server
    without authentication). Never logged."""

    token: str | None
    type: str = "auth"


_decoder = msgspec.json.Decoder(StreamMessage)


def decode_message(raw: str | bytes) -> StreamMessage:
    """One message of the stream, or an `EventDecodeError` that says what was wrong."""
    try:
        return _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise EventDecodeError(f"an event stream message that does not decode: {exc}") from exc


def encode(message: FilterMessage | AuthMessage) -> str:
    return msgspec.json.encode(message).decode()
