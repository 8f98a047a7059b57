"""When a queue is polled for its next page of runs during a drain: the Dispatcher's decision,
kept pure.

A poll that filled its page probably left more runs due. Asking again at once would bring the
same runs back (still Scheduled until their Pending lands); asking only once all of them are
taken leaves the server a poll's round trip with next to nothing of this agent's to do, a
quarter of a drain's time on a 2-core SQLite server (see the benchmark). So a queue is polled
again once no more than half of its page's runs wait: the answer arrives while the last of
them are still with the server. Those runs are still listed as Scheduled, so the
next poll asks for them on top of its page and the Dispatcher leaves them out.

On a queue shared with peers (`actors/rules/share.py`) the next page waits until all of this
one is taken: each poll then reads a window as many pages long as there are peers, and one
that came while half the page was still Scheduled would bring half as many new runs of
this agent's for the same rows; the peers keep the server busy meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterable


class PageTracker:
    """Runs of full pages whose Pending has not settled yet, per queue."""

    def __init__(self) -> None:
        self._waiting: dict[str, set[str]] = {}
        self._woken: set[str] = set()
        self._wake_at: dict[str, int] = {}

    def sized(self, queue: str, page: int, shared: bool = False) -> None:
        """The page the queue's next poll asks for: once no more than half of it waits, the
        queue is polled again (the half still with the server keeps it busy meanwhile); once
        none does, on a queue `shared` with peers."""
        self._wake_at[queue] = 0 if shared else page // 2

    def repeated(self, queue: str) -> int:
        """Runs the queue's next poll will see again: its taken runs not yet past Scheduled."""
        return len(self._waiting.get(queue, ()))

    def found(self, queue: str, admitted: Iterable[str], full_page: bool) -> None:
        """A poll's runs were admitted. A page that was not full means the queue is drained:
        nothing to poll for early."""
        if not full_page:
            self._waiting.pop(queue, None)
            self._woken.discard(queue)
            return
        fresh = set(admitted)
        if fresh:
            self._waiting.setdefault(queue, set()).update(fresh)
            self._woken.discard(queue)

    def taken(self, run_id: str) -> list[str]:
        """A run's Pending settled (accepted, refused, or the run ended): the queues to poll
        now, each once per page."""
        wake = []
        for queue, waiting in list(self._waiting.items()):
            if run_id not in waiting:
                continue
            waiting.discard(run_id)
            if not waiting:
                del self._waiting[queue]
            if len(waiting) <= self._wake_at.get(queue, 0) and queue not in self._woken:
                self._woken.add(queue)
                wake.append(queue)
        return wake

    def forget(self, queue: str) -> None:
        """The queue is no longer watched."""
        self._waiting.pop(queue, None)
        self._woken.discard(queue)
        self._wake_at.pop(queue, None)
