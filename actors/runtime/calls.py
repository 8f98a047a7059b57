"""Server calls made off an actor's inbox: why a Cancel never waits behind the server.

An actor that must answer control messages at once (the RunSupervisor: Cancel, Interrupt; the
Agent: GetTree, child failures) never calls the server in `on_receive`. It hands the call to
`Calls.start(call, then, failed)`; one of a few pool workers (greenlets under gevent, threads
otherwise) makes it, retries included, and the answer comes back to the actor as a
`CallAnswered` message, whose continuation then runs in the actor's own inbox, in order with
everything else it receives. While the server hangs or refuses, the actor goes on receiving.

The pool is bounded, and urgent calls (a Pending proposal: who takes a run) are taken before
the others, as the API edge's request slots also do.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import pykka

from actors.runtime.refs import tell_if_alive
from messages.internal.lifecycle import CallAnswered

log = logging.getLogger("prefect_actor_agent.calls")

T = TypeVar("T")
Job = Callable[[], None]


class CallPool:
    """A few workers that make blocking calls for the actors of one agent, urgent ones first."""

    def __init__(self, workers: int = 16, name: str = "agent-calls") -> None:
        self._jobs: queue.PriorityQueue[tuple[int, int, Job | None]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._workers = [
            threading.Thread(target=self._work, name=f"{name}-{n}", daemon=True)
            for n in range(workers)
        ]
        for worker in self._workers:
            worker.start()

    def submit(self, job: Job, urgent: bool = False) -> None:
        self._jobs.put((0 if urgent else 1, next(self._order), job))

    def stop(self) -> None:
        """Let the workers end once the calls already queued are made (they are daemons)."""
        for _ in self._workers:
            self._jobs.put((2, next(self._order), None))

    def _work(self) -> None:
        while True:
            _, _, job = self._jobs.get()
            if job is None:
                return
            try:
                job()
            except Exception:  # a job reports its own errors; this is a bug in one
                log.exception("a call made for an actor failed unexpectedly")


class Calls:
    """One actor's calls in flight, and what to do with each answer (in that actor's inbox)."""

    def __init__(self, pool: CallPool, actor_ref: pykka.ActorRef[Any]) -> None:
        self._pool = pool
        self._ref = actor_ref
        self._tokens = itertools.count()
        self._waiting: dict[int, tuple[Callable[[Any], None], Callable[[Exception], None]]] = {}

    @property
    def in_flight(self) -> int:
        return len(self._waiting)

    def start(
        self,
        call: Callable[[], T],
        then: Callable[[T], None],
        failed: Callable[[Exception], None],
        urgent: bool = False,
        pool: CallPool | None = None,
    ) -> None:
        """Make `call` in the pool (or in `pool`: infrastructure calls have their own);
        `then(value)` or `failed(error)` runs later in the inbox."""
        token = next(self._tokens)
        self._waiting[token] = (then, failed)
        ref = self._ref

        def job() -> None:
            try:
                answer = CallAnswered(token, call(), None)
            except Exception as exc:  # noqa: BLE001 - the continuation decides what it means
                answer = CallAnswered(token, None, exc)
            tell_if_alive(ref, answer)

        (pool or self._pool).submit(job, urgent)

    def answered(self, message: CallAnswered) -> None:
        """Run the continuation of the call that `message` answers (in the actor's inbox)."""
        handlers = self._waiting.pop(message.token, None)
        if handlers is None:
            return
        then, failed = handlers
        if isinstance(message.error, Exception):
            failed(message.error)
        else:
            then(message.value)

    def forget(self) -> None:
        """Drop every continuation: answers that come later are ignored."""
        self._waiting.clear()
