"""When an agent is lost, and what becomes of its runs: the pure half of the Recovery actor.

An agent is lost when its worker heartbeat is older than the lost window. Only a peer whose own
heartbeats have gone through without a gap for that whole window may say so: after a server
outage or restart every heartbeat looks old, and every peer's own streak is broken too, so
nothing is recovered until the survivors have heartbeated for a full window again, by which
time every live agent has heartbeated as well.

A lost agent's runs are recovered through ordinary state proposals, so the server's answer is
the lock between peers that act at once: a run whose infrastructure (a process, a container)
started is proposed Crashed, and a Cancelling one Cancelled (final states: the server takes one
and refuses the rest); a Pending run whose infrastructure is not known to have started (no
infrastructure pid recorded) goes back to its queue, Scheduled and due now, with a transition
id derived from the run's Pending state, so that the same hand-back sent by two peers is
recognised by the server as one. (A kind that records its pid before the start, a container,
is taken as started once recorded: Crashed, never run twice.)

A run whose infrastructure outlives its agent and is within this peer's reach (a container of
a daemon both agents reach: the same daemon id in its pid) is adopted instead (`adoption_for`):
a Running state whose message carries the adopter's claim, proposed with a transition id every
peer derives alike, so one peer wins; the winner then watches the infrastructure to its end and
reports it. The claim is what the lost agent's fence reads when it comes back: the run is not
its own any more, and its infrastructure is a peer's to watch, not to kill.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from actors.rules.claims import adoption_message, parse_claim
from actors.rules.identity import AgentIdentity
from messages.wire.prefect import (
    CANCELLED,
    CANCELLING,
    CRASHED,
    PENDING,
    RUNNING,
    SCHEDULED,
    FlowRun,
    State,
    StateDetails,
    StateProposal,
    Worker,
)

RecoveryKind = Literal["crashed", "handed-back", "cancelled", "adopted"]
_TRANSITIONS = uuid.UUID("5b0f1a6e-54a1-4b7e-9a43-2c6f0f5e8d11")  # namespace of our ids


@dataclass(frozen=True)
class LostAgent:
    name: str
    last_heartbeat: datetime


@dataclass(frozen=True)
class RecoveryAction:
    """What a peer proposes for one run of a lost agent: which kind of recovery, the state
    proposed, and whether it is forced."""

    kind: RecoveryKind
    proposal: StateProposal
    force: bool = False


def lost_agents(
    workers: Iterable[Worker], now: datetime, lost_after: float, me: str
) -> dict[str, LostAgent]:
    """The pool's workers whose last heartbeat is older than `lost_after` seconds (never this
    agent itself, and never a row without a heartbeat: nothing says when it was alive)."""
    window = timedelta(seconds=lost_after)
    return {
        worker.name: LostAgent(worker.name, worker.last_heartbeat_time)
        for worker in workers
        if worker.name != me
        and worker.last_heartbeat_time is not None
        and now - worker.last_heartbeat_time > window
    }


def may_declare_lost(streak_seconds: float | None, lost_after: float) -> bool:
    """Whether this agent's own heartbeats have gone through without a gap for the window."""
    return streak_seconds is not None and streak_seconds >= lost_after


def latest_claim(states: Iterable[State]) -> tuple[State, AgentIdentity] | None:
    """The state that took the run last (its Pending, or a peer's adoption after it), and the
    claim it carries."""
    found = None
    for state in states:
        claim = parse_claim(state.message)
        if state.type == PENDING:
            found = (state, claim) if claim is not None else None
        elif claim is not None and found is not None:  # an adoption of a claimed run
            found = (state, claim)
    return found


def pending_claim(state: State | None) -> tuple[State, AgentIdentity] | None:
    """The claim of a run whose current state is a Pending: that Pending is the latest state
    that took it, so its claim is read from the run as listed, with no call for its history
    (None: not Pending, or a Pending without a claim, such as Prefect's own agents send)."""
    if state is None or state.type != PENDING:
        return None
    claim = parse_claim(state.message)
    return (state, claim) if claim is not None else None


def adopted(claim_state: State) -> bool:
    """Whether a claim was made by adopting a run (its infrastructure runs on, watched by the
    claimant), not by taking it Pending."""
    return claim_state.type != PENDING


def adoption_for(
    run: FlowRun, claim_state: State, lost: LostAgent, me: AgentIdentity
) -> RecoveryAction | None:
    """A lost agent's run whose recorded infrastructure this agent reaches: adopted, Running
    with this agent's claim (None: it is not Pending or Running any more). The transition id
    is every peer's for this claim, so the server takes one adoption and refuses the rest."""
    state = run.state
    if state is None or state.type not in (PENDING, RUNNING) or not run.infrastructure_pid:
        return None
    tid = transition_id(run.id, claim_state.id or "", "ADOPTED")
    message = adoption_message(me, lost.name, run.infrastructure_pid)
    return RecoveryAction("adopted", _proposal(RUNNING, "Running", message, tid))


def recovery_for(
    run: FlowRun, claim_state: State, lost: LostAgent, host: str, reached: bool = False
) -> RecoveryAction | None:
    """What to propose for a run that a lost agent held (None: nothing, it has moved on);
    `reached`: its recorded infrastructure is within this peer's reach (a container of the
    same daemon), so a Cancelling one is stopped by this peer once Cancelled."""
    state = run.state
    if state is None:
        return None
    since = lost.last_heartbeat.isoformat(timespec="seconds")
    who = f"agent {lost.name!r} on host {host!r}, whose last heartbeat was at {since}"
    tid = transition_id(run.id, claim_state.id or "", state.type)
    cancelling = state.type == CANCELLING or (
        state.type == CANCELLED and state.name == "Cancelling"
    )
    if cancelling and reached:
        message = (
            f"Cancelled by a peer agent: the run was held by {who}, a lost agent; its "
            f"infrastructure {run.infrastructure_pid} is within the peer's reach and is stopped."
        )
        return RecoveryAction("cancelled", _proposal(CANCELLED, "Cancelled", message, tid))
    if cancelling:
        message = (
            f"Cancelled by a peer agent: the run's infrastructure was on a lost host ({who}) "
            "and could not be reached."
        )
        return RecoveryAction("cancelled", _proposal(CANCELLED, "Cancelled", message, tid))
    started = bool(run.infrastructure_pid)  # recorded: its infrastructure started, whatever kind
    if state.type == RUNNING or (state.type == PENDING and started):
        message = f"Crashed: the run was held by {who}; a peer agent declared it lost."
        return RecoveryAction("crashed", _proposal(CRASHED, "Crashed", message, tid))
    if state.type == PENDING:
        message = (
            f"Handed back to its queue by a peer agent: it was taken by {who}, a lost agent, "
            "and no infrastructure of it is known to have started."
        )
        return RecoveryAction("handed-back", handed_back(run.id, claim_state, message))
    return None


def handed_back(run_id: str, claim_state: State, message: str) -> StateProposal:
    """Scheduled, due now, with the transition id every peer would use for this claim."""
    tid = transition_id(run_id, claim_state.id or "", PENDING)
    due = StateDetails(transition_id=tid, scheduled_time=datetime.now(UTC))
    return StateProposal(type=SCHEDULED, name="Scheduled", message=message, state_details=due)


def transition_id(run_id: str, claim_state_id: str, from_type: str) -> str:
    """The same for every peer recovering the same run from the same claim."""
    return str(uuid.uuid5(_TRANSITIONS, f"{run_id}/{claim_state_id}/{from_type}"))


def still_ours(run: FlowRun, claim: AgentIdentity | None, me: AgentIdentity) -> bool:
    """Whether a run this agent holds is still its own on the server: its latest Pending
    claim names this instance, and no peer has ended or handed it back since."""
    if claim is None or claim.instance != me.instance:
        return False
    state = run.state
    if state is None:
        return True
    return not (state.type in (SCHEDULED, CRASHED) and "peer agent" in (state.message or ""))


def _proposal(type_: str, name: str, message: str, tid: str) -> StateProposal:
    details = StateDetails(transition_id=tid)
    return StateProposal(type=type_, name=name, message=message, state_details=details)
