"""A clock for actor tests whose time moves only when the test says so.

`ManualClock` has the interface of `actors.runtime.clock.Clock` (`ClockInterface`: call_later,
tell_later, stop), so an agent started with `start_agent(..., clock=ManualClock())` schedules
every timer on it: poll intervals, grace periods, retries, restart backoffs. Nothing is due
until the test calls `advance(seconds)`, which delivers every timer that falls due within
those seconds, in order of due time (and of scheduling, for equal times), in the calling
thread. A timer that a delivery schedules and that falls due within the same advance is
delivered in that advance too, as if the time had really passed.

Only the timers and the clock's own `monotonic()` (what the heartbeat lease is measured on)
move: `time.monotonic()` and `time.time()` do not, so what the agent measures with them (cache
ages, `since` in the tree) still follows the real clock.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pykka

from actors.runtime.clock import Timer
from actors.runtime.refs import tell_if_alive

log = logging.getLogger("tests.manual_clock")


@dataclass(frozen=True)
class PendingTimer:
    """A timer not delivered yet, as `ManualClock.pending()` shows it."""

    due_in: float  # seconds from the clock's present
    message: object | None  # what tell_later will tell, or None for a plain callback
    ref: pykka.ActorRef[Any] | None  # to whom (tell_later only)


@dataclass(order=True)
class _Entry:
    due: float
    order: int
    timer: Timer = field(compare=False)
    callback: Callable[[], object] = field(compare=False)
    message: object | None = field(compare=False)
    ref: pykka.ActorRef[Any] | None = field(compare=False)


class ManualClock:
    """The Clock's interface, with time that moves only in `advance`."""

    def __init__(self) -> None:
        self._now = 0.0
        self._heap: list[_Entry] = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._stopped = False
        self._advancing = threading.Lock()  # one advance at a time
        self.delivered = 0  # timers delivered so far

    # -- the Clock's interface ---------------------------------------------------------------------

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        return self._schedule(delay, callback, None, None)

    def tell_later(self, delay: float, ref: pykka.ActorRef[Any], message: object) -> Timer:
        return self._schedule(delay, lambda: tell_if_alive(ref, message), message, ref)

    def stop(self) -> None:
        """Deliver nothing more (what the handle does when the agent stops)."""
        with self._changed:
            self._stopped = True
            self._heap.clear()
            self._changed.notify_all()

    def monotonic(self) -> float:
        """The clock's present: the seconds advanced since it was made."""
        return self.now

    # -- what a test does with it ------------------------------------------------------------------

    @property
    def now(self) -> float:
        """Seconds the clock has advanced since it was made."""
        with self._changed:
            return self._now

    def advance(self, seconds: float) -> int:
        """Move the time forward by `seconds`, delivering every timer due by then, in order.
        Returns how many were delivered."""
        if seconds < 0:
            raise ValueError(f"a clock does not go back ({seconds}s)")
        delivered = 0
        with self._advancing:
            with self._changed:
                target = self._now + seconds
            while True:
                with self._changed:
                    entry = self._next_due(target)
                    if entry is None:
                        self._now = max(self._now, target)
                        break
                    self._now = max(self._now, entry.due)
                if entry.timer.cancelled:
                    continue
                try:
                    entry.callback()
                except Exception:
                    log.exception("a timer callback failed")
                delivered += 1
                self.delivered += 1
        return delivered

    def pending(self, message_type: type | None = None) -> list[PendingTimer]:
        """The timers not delivered (nor cancelled) yet, soonest first; with `message_type`,
        only those that will tell a message of that type."""
        with self._changed:
            entries = sorted(entry for entry in self._heap if not entry.timer.cancelled)
            now = self._now
        return [
            PendingTimer(entry.due - now, entry.message, entry.ref)
            for entry in entries
            if message_type is None or isinstance(entry.message, message_type)
        ]

    def wait_for_timer(
        self, predicate: Callable[[PendingTimer], bool], timeout: float
    ) -> PendingTimer:
        """Block until a pending timer matches `predicate` (the actors schedule from their own
        threads); raise AssertionError after `timeout` real seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                now = self._now
                for entry in sorted(self._heap):
                    if entry.timer.cancelled:
                        continue
                    pending = PendingTimer(entry.due - now, entry.message, entry.ref)
                    if predicate(pending):
                        return pending
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching timer was scheduled within {timeout}s")
                self._changed.wait(left)

    # -- inside ------------------------------------------------------------------------------------

    def _schedule(
        self,
        delay: float,
        callback: Callable[[], object],
        message: object | None,
        ref: pykka.ActorRef[Any] | None,
    ) -> Timer:
        timer = Timer()
        with self._changed:
            if not self._stopped:
                entry = _Entry(
                    self._now + max(0.0, delay), next(self._order), timer, callback, message, ref
                )
                heapq.heappush(self._heap, entry)
                self._changed.notify_all()
        return timer

    def _next_due(self, target: float) -> _Entry | None:
        """Pop the earliest timer due by `target` (call with the lock held)."""
        if self._heap and self._heap[0].due <= target:
            return heapq.heappop(self._heap)
        return None
