"""Run events for a host service that embeds the agent (listener style, as in Mopidy).

A host actor subscribes with `AgentHandle.subscribe(ref)`; the Dispatcher tells it each event
as it happens. `RunFinished` (in messages.runs) is the last event of every run.
"""

from __future__ import annotations

import msgspec


class RunSubmitted(msgspec.Struct, frozen=True):
    """A run was admitted and its supervisor started (Pending is being proposed)."""

    flow_run_id: str
    flow_run_name: str
    queue_name: str


class RunStarted(msgspec.Struct, frozen=True):
    """The run's process started; `pid` is its process (and process group) id."""

    flow_run_id: str
    pid: int


class Subscribe(msgspec.Struct, frozen=True):
    """Sent to the Dispatcher: tell `listener` (a pykka.ActorRef) every run event."""

    listener: object


class Unsubscribe(msgspec.Struct, frozen=True):
    listener: object
