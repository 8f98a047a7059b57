"""Messages a RunSupervisor sends itself on the way through one flow run's life.

Each step of the submission is its own message, so a `Cancel` that arrives between two steps
is handled before the next one: a run cancelled while Pending never starts its process.
"""

from __future__ import annotations

import msgspec

from messages.internal.dispatch import Cancel
from messages.wire.prefect import FlowRun


class ProposePending(msgspec.Struct, frozen=True):
    """First step: ask the server for the run (Scheduled -> Pending)."""


class StartProcess(msgspec.Struct, frozen=True):
    """Sent by a supervisor to itself once the infrastructure is resolved (deployment ->
    block -> overrides): start the process. A Cancel that came during resolution is first."""

    spec: object  # the ProcessSpec (actors.rules.infrastructure) to start


class FindProcess(msgspec.Struct, frozen=True):
    """First step of a supervisor for a run this agent does not hold (it restarted since):
    read the run and find its process by the recorded `hostname:pid`."""


class CheckProcess(msgspec.Struct, frozen=True):
    """Scheduled by a supervisor of an adopted process to itself: is the process still there?"""


class ProcessExited(msgspec.Struct, frozen=True):
    """Sent when the run's process has exited (by the helper that waits on it)."""

    pid: int
    returncode: int | None  # negative: killed by that signal; None: not our child, unknown


class GraceExpired(msgspec.Struct, frozen=True):
    """Scheduled after SIGTERM: if the process group is still alive, SIGKILL it."""

    pid: int


# -- the plan a RunSupervisor is started with: one per way a run comes to have a supervisor ------


class SubmitRun(msgspec.Struct, frozen=True):
    """A run a poll found and the Dispatcher admitted: propose Pending, resolve, start, watch."""

    flow_run: FlowRun


class LeftByEarlierLife(msgspec.Struct, frozen=True):
    """A run an earlier life of this agent left Pending or Running on this host (found at
    start by `FindEarlierLifeRuns`): find its process by the recorded pid and watch it to its
    end, or report it Crashed when its process is gone."""

    pid: int | None = None  # found on this host by its environment (no pid was recorded)


class LeftByFailedSupervisor(msgspec.Struct, frozen=True):
    """A run whose supervisor failed (a bug) while its process ran: watch that process by pid."""

    pid: int
    failure: str  # why the earlier supervisor failed, for the run's final message


class CancelUnheld(msgspec.Struct, frozen=True):
    """A Cancel for a run this agent does not hold: find its process on this host and kill it,
    or mark it Cancelled saying why it could not be."""

    cancel: Cancel


RunPlan = SubmitRun | LeftByEarlierLife | LeftByFailedSupervisor | CancelUnheld
