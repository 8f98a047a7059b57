"""The state proposals the agent makes, and how it reads the server's answers.

Each proposal carries a fresh transition id, so a proposal retried after a lost response can be
recognised by the server's state (same transition id) rather than mistaken for a rival's.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from messages.wire.prefect import (
    CANCELLED,
    CRASHED,
    FAILED,
    PENDING,
    SCHEDULED,
    OrchestrationResult,
    StateDetails,
    StateProposal,
)


def _proposal(
    type_: str, name: str, message: str | None = None, **details: object
) -> StateProposal:
    state_details = StateDetails(transition_id=str(uuid.uuid4()), **details)  # type: ignore[arg-type]
    return StateProposal(type=type_, name=name, message=message, state_details=state_details)


def pending(message: str | None = None) -> StateProposal:
    """Taking a run; `message` carries the claim (see `actors.rules.claims`)."""
    return _proposal(PENDING, "Pending", message)


def crashed(message: str) -> StateProposal:
    return _proposal(CRASHED, "Crashed", message)


def failed(reason: str) -> StateProposal:
    return _proposal(FAILED, "Failed", f"Submission failed. {reason}")


def cancelled(message: str) -> StateProposal:
    return _proposal(CANCELLED, "Cancelled", message)


def scheduled_now(message: str) -> StateProposal:
    """Hand a run back to the queue: due at once, for this or another agent to take."""
    return _proposal(SCHEDULED, "Scheduled", message, scheduled_time=datetime.now(UTC))


def accepted_as(result: OrchestrationResult, type_: str) -> bool:
    """True when the server accepted the proposal and the run is now of `type_`."""
    return result.status == "ACCEPT" and result.state is not None and result.state.type == type_


def refusal(result: OrchestrationResult) -> str:
    """The server's answer to a refused proposal, as a log line can say it."""
    now = result.state.type if result.state is not None else "unknown"
    reason = result.details.reason or "no reason given"
    return f"server answered {result.status} (run is {now}): {reason}"


def rescheduled(result: OrchestrationResult) -> bool:
    """A refused Pending that left the run Scheduled for later, as Prefect 3 answers when the
    deployment's concurrency limit is reached ("AwaitingConcurrencySlot"): not another
    agent's run, and not an error; a later poll brings it back when it is due again."""
    state = result.state
    return result.status == "REJECT" and state is not None and state.type == "SCHEDULED"
