"""The heartbeat lease, told rather than read: what the Heartbeat tells whoever acts for runs.

An agent may act for its runs (take one, start a process, keep a process whose pid is not
recorded) only while its lease holds (`actors.rules.lease`). The Heartbeat owns the lease and
tells each change; nobody looks at a clock to find out.
"""

from __future__ import annotations

import msgspec


class LeaseChanged(msgspec.Struct, frozen=True):
    """Told by the Heartbeat to the Agent whenever what the lease says changes; the Agent
    passes it on to the Dispatcher (which tells its RunSupervisors) and to Recovery, and gives
    the last one to a child it (re)starts.

    `reconnected` is the fence after a partition: this renewal ends a break (a heartbeat
    failed, or the lease lapsed before it came back), so a peer may have declared this agent
    lost meanwhile; Recovery then checks every run held here against the server."""

    holds: bool  # the agent may act for its runs
    streak_since: float | None  # agent-clock time since heartbeats were answered unbroken
    reconnected: bool = False  # a renewal that ends a break: check the held runs


class LeaseExpiry(msgspec.Struct, frozen=True):
    """Scheduled by the Heartbeat to itself for the moment the lease lapses unless renewed
    meanwhile; `renewed_at` names the renewal it was scheduled for (a later one outdates it)."""

    renewed_at: float


class HeartbeatAnswered(msgspec.Struct, frozen=True):
    """The Heartbeat's own round came back (made off its inbox, so a lapse is told on time
    even while the server holds a call): one heartbeat per pool served, the first sent at
    `sent_at`, the last answered at `answered_at` (agent clock); `pools` those heartbeated
    (empty: the server has none to heartbeat), `missing` those the server says do not exist,
    `refused` those of a type this agent cannot run (not heartbeated), `error` what went
    wrong with the others."""

    sent_at: float
    answered_at: float
    pools: tuple[str, ...]
    error: str | None = None
    missing: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()


class LeavePools(msgspec.Struct, frozen=True):
    """Told by the Agent to the Heartbeat at a clean stop, once the runs in flight are
    reported: beat no more, and remove this agent's worker row from every pool it served, so
    that its peers count it gone at their next reading of the rows (not three heartbeat
    intervals later, when the server would take it OFFLINE). The removal is made after any
    heartbeat still in flight (which would list the agent again), then `done` is set."""

    done: object  # a threading.Event the stopping holder waits on
