"""Every message that crosses a boundary: between actors, and on the wire to the Prefect API."""

from messages.api import ApiDecodeError, BlockDocument, Deployment, FlowRun, State, WorkQueue
from messages.runs import Cancel, FreeSlots, RunFinished, RunOutcome, RunsFound

__all__ = [
    "ApiDecodeError",
    "BlockDocument",
    "Cancel",
    "Deployment",
    "FlowRun",
    "FreeSlots",
    "RunFinished",
    "RunOutcome",
    "RunsFound",
    "State",
    "WorkQueue",
]
