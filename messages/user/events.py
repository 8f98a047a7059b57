"""Run events for a host service that embeds the agent (listener style, as in Mopidy).

A host actor subscribes with `AgentHandle.subscribe(ref)`; the Dispatcher tells it each event
as it happens. `RunFinished` (in messages.internal.dispatch) is the last event of every run.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

RunOutcome = Literal[
    "exited",  # the process exited 0; the engine reported the run's own final state
    "crashed",  # the process exited non-zero; the agent proposed Crashed
    "failed",  # submission failed before a process started; the agent proposed Failed
    "not-submitted",  # the server did not let this agent take the run (another agent did)
    "deferred",  # the server rescheduled the run (e.g. its deployment's concurrency limit)
    "cancelled",  # a Cancel stopped the run
    "interrupted",  # the agent stopped while the run was in flight
    "relinquished",  # a peer recovered the run while this agent was cut off; process killed
]


class RunSubmitted(msgspec.Struct, frozen=True):
    """A run was admitted and its supervisor started (Pending is being proposed)."""

    flow_run_id: str
    flow_run_name: str
    queue_name: str


class RunStarted(msgspec.Struct, frozen=True):
    """The run's infrastructure started; `infrastructure_pid` is where it runs, as recorded
    on the server (`host:pid` for a process, the leader of its process group)."""

    flow_run_id: str
    infrastructure_pid: str


class RunFinished(msgspec.Struct, frozen=True):
    """Sent by a RunSupervisor to the Dispatcher as its last act, whatever the outcome.

    The Dispatcher frees the run's slot; the supervisor then stops itself.
    """

    flow_run_id: str
    outcome: RunOutcome
    detail: str = ""  # e.g. "exit code 1", the submission error, the abort reason
    # The server refused this agent's Pending: another agent (or a person) changed the run
    # first. The Dispatcher counts such a queue as shared (`actors/rules/share.py`).
    contested: bool = False
    queue: str | None = None  # the work queue a poll found the run in (None: taken over)
    # A deferred run: when the server scheduled it again (its watcher polls for it then).
    rescheduled_for: datetime | None = None
