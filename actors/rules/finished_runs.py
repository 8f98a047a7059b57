"""Which finished runs a poll must not start again: pure.

A page read a moment before a run finished here may still list it, so the Dispatcher remembers
the runs its supervisors finished and admits none of them again. A run this agent did not get
to take is different: the server refused its Pending because another Pending landed first (a
peer's, or one a killed earlier life of this agent sent just before it died). That run may come
back to its queue, Scheduled, when the agent that took it is found lost (a peer's Recovery, or
this agent's own look for what its earlier life left, hands it back): it is remembered only
for as long as a stale page could list it, so the next poll after the hand-back takes it.
"""

from __future__ import annotations

from collections import OrderedDict

from messages.user.events import RunOutcome

REMEMBERED = 2048  # finished runs remembered (bounded memory: oldest first)
NOT_TAKEN_SECONDS = 15.0  # how long a run another Pending won is not proposed again
# Outcomes that leave the run to someone else, who may hand it back to its queue.
NOT_TAKEN: frozenset[RunOutcome] = frozenset({"not-submitted", "relinquished"})


class FinishedRuns:
    """Run id -> until when (monotonic seconds; None: as long as it is remembered)."""

    def __init__(self, size: int = REMEMBERED, not_taken_seconds: float = NOT_TAKEN_SECONDS):
        self.size = size
        self.not_taken_seconds = not_taken_seconds
        self._until: OrderedDict[str, float | None] = OrderedDict()

    def finished(self, run_id: str, outcome: RunOutcome, now: float) -> None:
        self._until[run_id] = now + self.not_taken_seconds if outcome in NOT_TAKEN else None
        self._until.move_to_end(run_id)
        while len(self._until) > self.size:
            self._until.popitem(last=False)

    def known(self, run_id: str) -> bool:
        """Finished here once (a second report of its end is the same end)."""
        return run_id in self._until

    def blocks(self, run_id: str, now: float) -> bool:
        """A poll's page listing it is stale: not to be admitted."""
        if run_id not in self._until:
            return False
        until = self._until[run_id]
        return until is None or now < until
