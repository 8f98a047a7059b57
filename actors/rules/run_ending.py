"""How did this run end, and what do we tell the server? One pure decision per way of ending.

The RunSupervisor only observes (an exit code, a stop request, the state the server holds)
and acts on the `Ending` these functions return: the outcome it tells the Dispatcher, and the
state it proposes, if any. Exit 0 reports nothing: the engine has reported the run's own state.
"""

from __future__ import annotations

from dataclasses import dataclass

from actors.rules.exit_codes import describe_exit
from actors.rules.proposals import cancelled, crashed, scheduled_now
from messages.internal.dispatch import Cancel, Relinquish
from messages.internal.lifecycle import Interrupt
from messages.user.events import RunOutcome
from messages.wire.prefect import CANCELLED, COMPLETED, CRASHED, FAILED, StateProposal

SIGKILL_EXIT = -9
FINAL_TYPES = frozenset({COMPLETED, FAILED, CRASHED, CANCELLED})


@dataclass(frozen=True)
class Ending:
    outcome: RunOutcome  # what the Dispatcher and the listeners are told
    detail: str  # e.g. "exit code 1"
    report: StateProposal | None = None  # the state to propose, or None: nothing to report
    force: bool = False  # proposed over whatever the server holds (a cancellation)
    # The exit code is unknown (a process watched by pid): read the run's state on the server
    # and decide with `unknown_exit`.
    ask_server: bool = False


def after_exit(
    code: int | None, stop: Cancel | Interrupt | Relinquish | None, cause: str | None = None
) -> Ending:
    """The run's infrastructure ended with `code` (None: unknown, it was watched by pid), and
    a `cause` its kind knows (an OOM kill) or None."""
    shown = "an unknown code" if code is None else f"code {code}"
    if isinstance(stop, Relinquish):
        return Ending("relinquished", f"{stop.reason}; exit {shown}")
    if isinstance(stop, Cancel):
        how = "killed after the grace period" if code == SIGKILL_EXIT else "terminated"
        return Ending(
            "cancelled",
            f"exit {shown}",
            cancelled(f"Cancelled by the agent ({stop.reason}); its process was {how}."),
            force=True,
        )
    if isinstance(stop, Interrupt):
        return Ending(
            "interrupted",
            f"exit {shown}",
            crashed(
                "The agent stopped while this run was in flight; its process was "
                f"terminated (exit {shown})."
            ),
        )
    if code == 0:
        return Ending("exited", "exit code 0")
    if code is None:
        return Ending("crashed", "exit code unknown", ask_server=True)
    return Ending("crashed", f"exit code {code}", crashed(describe_exit(code, cause)))


def before_start(stop: Cancel | Interrupt | Relinquish) -> Ending:
    """A stop request arrived before the process started: nothing starts."""
    if isinstance(stop, Relinquish):
        return Ending("relinquished", f"{stop.reason}; never started")
    if isinstance(stop, Cancel):
        return Ending(
            "cancelled",
            "before start",
            cancelled(f"Cancelled before its process started ({stop.reason})."),
            force=True,
        )
    return Ending(
        "interrupted",
        "before start",
        scheduled_now("The agent stopped before starting this run; handed back to its queue."),
        force=True,
    )


def unknown_exit(state_type: str | None, cause: str, code: int | None = None) -> Ending:
    """Infrastructure watched by pid ended; its exit code is unknowable (or known, `code`, but
    found rather than watched from the start: it says nothing of the run's end), the server's
    state is not: a final state the engine reported is the truth; otherwise the run crashed,
    for `cause`."""
    if state_type in FINAL_TYPES:
        return Ending("exited", f"ended {state_type}")
    if code is not None:
        return Ending(
            "crashed",
            f"exit code {code}",
            crashed(
                f"The run's infrastructure exited with code {code} without reporting a final "
                f"state; {cause}."
            ),
        )
    return Ending(
        "crashed",
        "exit code unknown",
        crashed(
            f"The run's process ended without reporting a final state; {cause}, so its exit "
            "code is unknown."
        ),
    )


def unreachable_process(why: str, stop: Cancel | Interrupt | Relinquish | None) -> Ending:
    """The run's process could not be found (no pid, gone, another host's): what to say."""
    if isinstance(stop, Cancel):
        return Ending(
            "cancelled", why, cancelled(f"Cancelled by the agent, but {why}."), force=True
        )
    return Ending("not-submitted", why)
