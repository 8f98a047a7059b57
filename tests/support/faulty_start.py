"""Fakes of the Agent's children whose start-up fails, for the actor tests of supervision.

`faulty_start(QueueWatcher, times=1)` is a class named `FaultyStartQueueWatcher`: a real
QueueWatcher whose start-up raises `FaultyStartError` the first `times` times one of it starts
(as a bug in its `start_up` would: an exception in pykka's `on_start`), and that starts as the
real one does after that. The agent is handed it as the class of that child
(`start_agent(..., actors=ChildActors(queue_watcher=...))`); nothing of the real actor is
patched.
"""

from __future__ import annotations

import threading
from typing import Any, TypeVar

from actors.tree.permanent import PermanentChild

C = TypeVar("C", bound=type[PermanentChild])


class FaultyStartError(RuntimeError):
    """What a FaultyStart child raises in its start-up, on cue."""


class _Faults:
    """How many more start-ups are to fail (shared by every life of one fake class)."""

    def __init__(self, times: int) -> None:
        self.left = times
        self.raised = 0
        self._lock = threading.Lock()

    def next_start(self, what: str) -> None:
        with self._lock:
            if self.left <= 0:
                return
            self.left -= 1
            self.raised += 1
        raise FaultyStartError(f"injected fault: the start-up of {what} fails")


def faulty_start(actor: C, times: int) -> C:
    """A subclass of `actor` whose start-up fails the first `times` times; its `faults` say
    how many it raised."""
    faults = _Faults(times)

    class FaultyStart(actor):  # type: ignore[valid-type,misc]
        def start_up(self) -> Any:
            faults.next_start(f"{self.KIND} {self.name!r}")
            return super().start_up()

    FaultyStart.faults = faults
    FaultyStart.__name__ = FaultyStart.__qualname__ = f"FaultyStart{actor.__name__}"
    return FaultyStart  # type: ignore[return-value]
