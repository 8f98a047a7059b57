"""The live actor tree, as `Agent.tree()`, the status endpoint and SIGUSR1 show it."""

from __future__ import annotations

import msgspec


class ActorNode(msgspec.Struct, frozen=True, kw_only=True):
    """One actor as a supervisor sees it; `children` are the actors it supervises."""

    kind: str  # Agent, QueueWatcher, CancelWatcher, Dispatcher, RunSupervisor
    name: str  # queue name, flow run id, or the kind for singletons
    state: str  # polling, paused, waiting for a free slot, running pid N, cancelling...
    since: float  # when it entered that state (Unix time)
    restart: str = "permanent"  # OTP restart type: permanent or temporary
    restarts: int = 0  # restarts so far
    last_failure: str | None = None  # the last failure, as a user would read it
    detail: dict[str, str] = msgspec.field(default_factory=dict)
    children: tuple[ActorNode, ...] = ()


class GetTree(msgspec.Struct, frozen=True):
    """Asked of the Agent; the answer is the root `ActorNode`."""


class Describe(msgspec.Struct, frozen=True):
    """Asked of a child by its supervisor; the answer is the child's `ActorNode`."""


class RunStatus(msgspec.Struct, frozen=True):
    """Sent by a RunSupervisor to the Dispatcher when its run changes phase.

    The Dispatcher keeps the latest per run, so the tree is answered without asking a
    supervisor that may be busy in an HTTP call; `pid` also feeds the RunStarted event.
    """

    flow_run_id: str
    state: str
    since: float
    pid: int | None = None
    past_pending: bool = False  # the Pending proposal is settled (taken, or not ours)
