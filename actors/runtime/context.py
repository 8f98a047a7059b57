"""What every actor of one agent shares: settings, the API edge, the clock and the kinds of
infrastructure.

These are services, not state: the settings are frozen, the API client and the clock are safe
to call from any actor. Mutable state lives only inside an actor and changes only in its inbox.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from actors.edges.api_interface import PrefectApiInterface
from actors.edges.infrastructure import Infrastructure
from actors.edges.kinds import default_infrastructures
from actors.rules.identity import AgentIdentity
from actors.runtime.calls import CallPool
from actors.runtime.clock import ClockInterface
from actors.runtime.settings import AgentSettings
from actors.status.metrics import AgentMetrics


@dataclass
class AgentOutcome:
    """What the Agent tells the handle that started it: the boundary between the actor tree
    and the code that holds it (a launcher, a host service). Written by the Agent only."""

    finished: threading.Event = field(default_factory=threading.Event)  # run-once: all done
    failed: threading.Event = field(default_factory=threading.Event)  # gave up (escalated)
    failure: str | None = None


@dataclass(frozen=True)
class AgentContext:
    settings: AgentSettings
    api: PrefectApiInterface
    clock: ClockInterface
    identity: AgentIdentity  # name, instance, host: shown in the tree, carried by claims
    calls: CallPool = field(default_factory=CallPool)  # server calls made off the inboxes
    # The kinds of infrastructure runs are started on (`actors.edges.kinds`); a test's fake.
    infrastructures: tuple[Infrastructure, ...] = field(default_factory=default_infrastructures)
    # Infrastructure calls that block (a daemon's HTTP), off the inboxes and never queued
    # behind a server that hangs.
    infra_calls: CallPool = field(default_factory=lambda: CallPool(8, "agent-infrastructure"))
    metrics: AgentMetrics = field(default_factory=AgentMetrics)
    outcome: AgentOutcome = field(default_factory=AgentOutcome)
    listeners: tuple[Any, ...] = ()  # actor refs told every run event from the first one on
