"""Every message that crosses a boundary, grouped by protocol.

- `messages.user`: what a user receives: run events and the live tree (exported here);
- `messages.internal`: what the actors say to each other;
- `messages.wire`: the Prefect REST API's request and answer shapes.
"""

from messages.internal.dispatch import Cancel
from messages.user.events import RunFinished, RunOutcome, RunStarted, RunSubmitted
from messages.user.tree import ActorNode

__all__ = [
    "ActorNode",
    "Cancel",
    "RunFinished",
    "RunOutcome",
    "RunStarted",
    "RunSubmitted",
]
