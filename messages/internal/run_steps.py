"""Messages a RunSupervisor sends itself on the way through one flow run's life.

Each step of the submission is its own message, so a `Cancel` that arrives between two steps
is handled before the next one: a run cancelled while Pending never starts its process.
"""

from __future__ import annotations

import msgspec


class ProposePending(msgspec.Struct, frozen=True):
    """First step: ask the server for the run (Scheduled -> Pending)."""


class ResolveInfrastructure(msgspec.Struct, frozen=True):
    """Second step, once Pending was accepted: deployment -> block -> overrides -> process spec."""


class StartProcess(msgspec.Struct, frozen=True):
    """Third step: start the resolved process. A Cancel that came during resolution is first."""


class AdoptRun(msgspec.Struct, frozen=True):
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


class ReportAgain(msgspec.Struct, frozen=True):
    """Scheduled when the run's outcome could not be reported: the server was unreachable."""


class RecordPid(msgspec.Struct, frozen=True):
    """Scheduled when the run's `infrastructure_pid` could not be recorded yet."""

    pid: int
