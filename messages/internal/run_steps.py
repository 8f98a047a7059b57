"""Messages a RunSupervisor sends itself on the way through one flow run's life.

Each step of the submission is its own message, so a `Cancel` that arrives between two steps
is handled before the next one: a run cancelled while Pending never starts its infrastructure.
Nothing here is kind-specific: the run's infrastructure is driven through the seam
(`actors.edges.infrastructure`), and its pid is the string the kind records.
"""

from __future__ import annotations

import msgspec

from messages.internal.dispatch import Cancel
from messages.wire.prefect import FlowRun


class ProposePending(msgspec.Struct, frozen=True):
    """First step: ask the server for the run (Scheduled -> Pending)."""


class Prepared(msgspec.Struct, frozen=True):
    """Sent by a supervisor to itself once the run's infrastructure is resolved and its spec
    prepared (deployment -> block or job variables -> spec): create and start it. A Cancel
    that came during resolution is handled first."""

    kind: object  # the Infrastructure kind (actors.edges.infrastructure) that runs it
    spec: object  # what that kind's `prepare` made


class FindInfrastructure(msgspec.Struct, frozen=True):
    """First step of a supervisor for a run this agent does not hold (it restarted since):
    read the run and find its infrastructure again by the recorded infrastructure pid."""


class InfrastructureEnded(msgspec.Struct, frozen=True):
    """Sent by the helper that waits on the run's infrastructure once it ended, and was
    cleaned up after (`RunJob.after_exit`)."""

    code: int | None  # negative: killed by that signal; None: unknowable (watched, not waited)
    cause: str | None = None  # what the code alone does not say ("out of memory (...)")
    cleaned: tuple[str, ...] = ()  # what `after_exit` did, for the log


class GraceExpired(msgspec.Struct, frozen=True):
    """Scheduled after the start of a stop (`terminate`): if it still runs, kill it."""


# -- the plan a RunSupervisor is started with: one per way a run comes to have a supervisor ------


class SubmitRun(msgspec.Struct, frozen=True):
    """A run a poll found and the Dispatcher admitted: propose Pending, resolve, start, watch."""

    flow_run: FlowRun
    pool: str | None = None  # the work pool whose queue it was found in (its runs' labels)


class LeftByEarlierLife(msgspec.Struct, frozen=True):
    """A run an earlier life of this agent left Pending or Running within its reach (found at
    start by `FindEarlierLifeRuns`): find its infrastructure by the recorded pid and watch it
    to its end, or report it Crashed when it is gone."""

    pid: str | None = None  # its infrastructure pid, found by the run's id (none was recorded)
    peer: str | None = None  # adopted from this lost agent (None: an earlier life of this one)


class LeftByFailedSupervisor(msgspec.Struct, frozen=True):
    """A run whose supervisor failed (a bug) while its infrastructure ran: watch it by pid."""

    pid: str  # the infrastructure pid the failed supervisor held
    failure: str  # why the earlier supervisor failed, for the run's final message


class CancelUnheld(msgspec.Struct, frozen=True):
    """A Cancel for a run this agent does not hold: find its infrastructure within this
    agent's reach and stop it, or mark it Cancelled saying why it could not be."""

    cancel: Cancel


RunPlan = SubmitRun | LeftByEarlierLife | LeftByFailedSupervisor | CancelUnheld
