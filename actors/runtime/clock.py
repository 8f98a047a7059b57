"""Delayed messages: how an actor waits without sleeping in `on_receive`.

One `Clock` thread (a greenlet under gevent) serves every timer of an agent from a heap, so a
thousand pending timers cost a thousand heap entries, not a thousand threads. A timer delivers
a message with `tell`; a timer whose actor has stopped is dropped silently.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import pykka

from actors.runtime.refs import tell_if_alive

log = logging.getLogger("prefect_actor_agent.clock")


class Timer:
    """A pending delivery; `cancel` makes it a no-op."""

    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ClockInterface(Protocol):
    """What the actors use of a clock: `Clock` here, a test's manual clock elsewhere."""

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        """Run `callback` once `delay` seconds have passed, unless the timer is cancelled."""
        ...

    def tell_later(self, delay: float, ref: pykka.ActorRef[Any], message: object) -> Timer:
        """Tell `message` to `ref` once `delay` seconds have passed, unless cancelled or the
        actor has stopped."""
        ...

    def stop(self) -> None:
        """Deliver nothing more."""
        ...

    def monotonic(self) -> float:
        """The clock's present, in seconds (only differences mean anything): what the agent
        measures on this clock (the heartbeat lease) moves as its timers do."""
        ...


class Clock:
    """A single thread that runs callbacks at their due time."""

    def __init__(self, name: str = "agent-clock") -> None:
        self._heap: list[tuple[float, int, Timer, Callable[[], object]]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        timer = Timer()
        with self._wake:
            heapq.heappush(
                self._heap, (time.monotonic() + max(0.0, delay), next(self._order), timer, callback)
            )
            self._wake.notify()
        return timer

    def tell_later(self, delay: float, ref: pykka.ActorRef[Any], message: object) -> Timer:
        """Deliver `message` to `ref` after `delay` seconds, unless cancelled or the actor died."""

        return self.call_later(delay, lambda: tell_if_alive(ref, message))

    def monotonic(self) -> float:
        return time.monotonic()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopped:
                    if self._heap and self._heap[0][0] <= time.monotonic():
                        break
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._wake.wait(timeout)
                if self._stopped:
                    return
                _, _, timer, callback = heapq.heappop(self._heap)
            if timer.cancelled:
                continue
            try:
                callback()
            except Exception:
                log.exception("a timer callback failed")
