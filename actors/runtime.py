"""Starting and stopping one agent: the public handle a launcher or a host service holds.

Nothing here patches anything: inside a host service the actors run on plain threads; the
launcher calls `gevent.monkey.patch_all()` first and the same actors run as greenlets.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pykka

from actors.agent import Agent
from actors.api_client import PrefectApi
from actors.context import AgentContext
from actors.refs import ask
from actors.settings import AgentSettings
from actors.timers import Clock
from messages.control import HeldRuns, InterruptRuns
from messages.runs import Cancel

log = logging.getLogger("prefect_actor_agent.agent")


class AgentHandle:
    """A running agent: stop it, cancel a run through it, or wait for a run-once agent."""

    def __init__(self, settings: AgentSettings, api: PrefectApi | None = None) -> None:
        self.settings = settings
        self.api = api or PrefectApi(
            settings.api_url, settings.api_key, concurrency=settings.api_concurrency
        )
        self.clock = Clock()
        self.finished = threading.Event()
        self.ctx = AgentContext(settings=settings, api=self.api, clock=self.clock)
        self.ref: pykka.ActorRef[Agent] = Agent.start(self.ctx, self.finished)
        self._stopped = False

    @property
    def dispatcher(self) -> pykka.ActorRef[Any]:
        ref: pykka.ActorRef[Any] | None = self.ref.proxy().dispatcher.get()
        if ref is None:
            raise pykka.ActorDeadError("the agent has no Dispatcher (it is not running)")
        return ref

    def cancel(self, flow_run_id: str, reason: str = "cancelled through the embedding API") -> None:
        """Send `Cancel` for one run to the Dispatcher."""
        self.dispatcher.tell(Cancel(flow_run_id, reason))

    def wait_finished(self, timeout: float | None = None) -> bool:
        """For a run-once agent: block until every run it took has ended."""
        return self.finished.wait(timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Block until no run is in flight (every process has exited and been reported)."""
        deadline = time.monotonic() + timeout
        while ask(self.dispatcher, HeldRuns(), int) > 0:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)
        return True

    def stop(self, grace_seconds: float | None = None, timeout: float = 30.0) -> None:
        """Stop polling, end the runs in flight, then stop every actor.

        Runs not started yet are handed back to their queue (Scheduled); running ones are sent
        SIGTERM, then SIGKILL after `grace_seconds`, and proposed Crashed with a message that
        says the agent stopped. Nothing is left Running on the server without a process.
        """
        if self._stopped:
            return
        self._stopped = True
        grace = self.settings.shutdown_grace_seconds if grace_seconds is None else grace_seconds
        deadline = time.monotonic() + timeout
        try:
            dispatcher = self.dispatcher
            self.ref.proxy().on_stop().get(timeout=timeout)  # stop the watchers: no new runs
            supervisors = ask(dispatcher, InterruptRuns(grace), list, timeout)
            if supervisors:
                log.info("stopping: ending %d run(s) in flight", len(supervisors))
            for supervisor in supervisors:
                supervisor.actor_stopped.wait(max(0.0, deadline - time.monotonic()))
            dispatcher.stop(timeout=max(0.1, deadline - time.monotonic()))
        except (pykka.ActorDeadError, pykka.Timeout) as exc:
            log.warning("agent did not stop cleanly: %r", exc)
        finally:
            self.ref.stop(block=False)
            self.clock.stop()
            self.api.close()


def start_agent(settings: AgentSettings, api: PrefectApi | None = None) -> AgentHandle:
    """Start an agent's actor tree inside the calling process."""
    return AgentHandle(settings, api)
