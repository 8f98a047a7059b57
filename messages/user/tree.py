"""The live actor tree, as `Agent.tree()`, the status endpoint and SIGUSR1 show it."""

from __future__ import annotations

from enum import StrEnum

import msgspec


class ActorKind(StrEnum):
    """The kinds of actor in the tree, spelt once: as `/tree`, the log and `ChildFailed` name
    them (a member is the string itself, so a node's `kind` reads and compares as text)."""

    AGENT = "Agent"
    QUEUE_WATCHER = "QueueWatcher"
    QUEUE_MATCHER = "QueueMatcher"
    POOL_SCOUT = "PoolScout"
    CANCEL_WATCHER = "CancelWatcher"
    EVENT_LISTENER = "EventListener"
    HEARTBEAT = "Heartbeat"
    RECOVERY = "Recovery"
    DISPATCHER = "Dispatcher"
    RUN_SUPERVISOR = "RunSupervisor"


class ActorNode(msgspec.Struct, frozen=True, kw_only=True):
    """One actor as a supervisor sees it; `children` are the actors it supervises."""

    kind: str  # an `ActorKind`
    name: str  # queue name, flow run id, or the kind for singletons
    state: str  # polling, paused, waiting for a free slot, running pid N, cancelling...
    since: float  # when it entered that state (Unix time)
    restart: str = "permanent"  # OTP restart type: permanent or temporary
    restarts: int = 0  # restarts so far
    last_failure: str | None = None  # the last failure, as a user would read it
    detail: dict[str, str] = msgspec.field(default_factory=dict)
    children: tuple[ActorNode, ...] = ()

