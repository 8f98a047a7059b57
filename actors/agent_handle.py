"""Starting and stopping one agent: the public handle a launcher or a host service holds.

This is where an agent is assembled, above the tree it starts: the API edge, the clock and the
context every actor shares (`actors.runtime`), then the Agent (`actors.tree.agent`), which
starts the rest. Nothing below imports this module.

Nothing here patches anything: inside a host service the actors run on plain threads; the
launcher calls `gevent.monkey.patch_all()` first and the same actors run as greenlets.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any

import pykka

from actors.edges.api_interface import PrefectApiInterface
from actors.edges.infrastructure import Infrastructure
from actors.edges.kinds import close_kinds, default_infrastructures
from actors.edges.prefect_api import PrefectApi
from actors.edges.processes import HOSTNAME
from actors.rules.identity import AgentIdentity, default_agent_name, new_instance_id
from actors.runtime.clock import Clock, ClockInterface
from actors.runtime.context import AgentContext
from actors.runtime.refs import ask
from actors.runtime.settings import AgentSettings
from actors.tree.agent import Agent
from actors.tree.switchboard import ChildActors
from messages.internal.dispatch import Cancel, Subscribe, Unsubscribe
from messages.internal.lifecycle import CountHeldRuns, GetDispatcher, GetTree, InterruptRuns
from messages.user.tree import ActorNode

log = logging.getLogger("prefect_actor_agent.agent")

REPORTS_PER_SECOND = 20.0  # a cautious pace for a SQLite server taking state proposals


class AgentHandle:
    """A running agent: inspect it, cancel a run through it, subscribe to its events, stop it."""

    def __init__(
        self,
        settings: AgentSettings,
        api: PrefectApiInterface | None = None,
        listeners: tuple[pykka.ActorRef[Any], ...] = (),
        clock: ClockInterface | None = None,
        actors: ChildActors | None = None,
        *,
        infrastructures: tuple[Infrastructure, ...] | None = None,
    ) -> None:
        self.settings = settings
        self._own_kinds = infrastructures is None  # made here, so closed here at the stop
        self.api: PrefectApiInterface = api or PrefectApi(
            settings.api_url,
            settings.api_key,
            concurrency=settings.api_concurrency,
            timeout=settings.api_timeout,
        )
        # Every timer of the agent; a test may pass a clock whose time it moves by hand.
        self.clock: ClockInterface = clock if clock is not None else Clock()
        self.ctx = AgentContext(
            settings=settings,
            api=self.api,
            clock=self.clock,
            identity=identity_for(settings),
            listeners=listeners,
            infrastructures=(
                default_infrastructures() if infrastructures is None else infrastructures
            ),
        )
        self.api.on_attempt = self.ctx.metrics.count_api_attempt
        self.outcome = self.ctx.outcome
        self.started = time.monotonic()
        self.ref: pykka.ActorRef[Agent] = Agent.start(self.ctx, actors)
        self.ref.proxy().state.get(timeout=30)  # answered once on_start has built the tree
        self._stopped = False

    @property
    def dispatcher(self) -> pykka.ActorRef[Any]:
        """The Dispatcher now, as the Agent says (ActorDeadError while it is being restarted,
        or once the agent has stopped)."""
        ref = self.ref.ask(GetDispatcher(), timeout=10.0)
        if not isinstance(ref, pykka.ActorRef):
            raise pykka.ActorDeadError("the agent has no Dispatcher now (it is being restarted)")
        return ref

    @property
    def metrics(self) -> Any:
        return self.ctx.metrics

    @property
    def failure(self) -> str | None:
        """Why the agent gave up (restart intensity exceeded), or None while it is healthy."""
        return self.outcome.failure if self.outcome.failed.is_set() else None

    def tree(self, timeout: float = 10.0) -> ActorNode:
        """The live actor tree (see `messages.user.tree.ActorNode`)."""
        return ask(self.ref, GetTree(), ActorNode, timeout)

    def cancel(self, flow_run_id: str, reason: str = "cancelled through the embedding API") -> None:
        """Send `Cancel` for one run to the Dispatcher."""
        self.dispatcher.tell(Cancel(flow_run_id, reason))

    def subscribe(self, listener: pykka.ActorRef[Any]) -> None:
        """Tell `listener` every run event: RunSubmitted, RunStarted, RunFinished. The Agent
        keeps the subscription, so it outlives a restart of the Dispatcher."""
        self.ref.tell(Subscribe(listener))

    def unsubscribe(self, listener: pykka.ActorRef[Any]) -> None:
        self.ref.tell(Unsubscribe(listener))

    def health(self) -> tuple[bool, str]:
        """Healthy while the server answers: unhealthy after three poll intervals of silence.
        The reason names the agent, so that a fleet's health checks say which one."""
        ok, reason = self._health()
        me = self.ctx.identity
        return ok, f"agent {me.name!r} (instance {me.instance}, host {me.host}): {reason}"

    def _health(self) -> tuple[bool, str]:
        allowed = 3 * self.settings.query_interval
        last = self.api.last_answer
        now = time.monotonic()
        if self.failure is not None:
            return False, f"the agent gave up: {self.failure}"
        if last is None:
            if now - self.started <= allowed:
                return True, "starting"
            return False, (
                f"the Prefect server at {self.settings.api_url} has not answered "
                f"since the agent started ({self.api.last_error or 'no attempt'})"
            )
        silent = now - last
        if silent > allowed:
            return False, (
                f"the Prefect server at {self.settings.api_url} has not answered for "
                f"{silent:.0f}s (last error: {self.api.last_error})"
            )
        return True, f"the Prefect server answered {silent:.1f}s ago"

    def wait_finished(self, timeout: float | None = None) -> bool:
        """For a run-once agent: block until every run it took has ended."""
        return self.outcome.finished.wait(timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Block until no run is in flight (every process has exited and been reported)."""
        deadline = time.monotonic() + timeout
        # An ask from outside the tree, with a timeout: the Dispatcher answers at once.
        while ask(self.dispatcher, CountHeldRuns(), int, timeout=10.0) > 0:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)
        return True

    def stop(self, grace_seconds: float | None = None, timeout: float = 30.0) -> None:
        """Stop polling, end the runs in flight, then stop every actor.

        Runs not started yet are handed back to their queue (Scheduled); running ones are sent
        SIGTERM, then SIGKILL after `grace_seconds`, and proposed Crashed with a message that
        says the agent stopped. Nothing is left Running on the server without a process.
        Then, every run reported, the agent leaves its work pools (its worker rows removed).
        Works too after the agent gave up.
        """
        if self._stopped:
            return
        self._stopped = True
        grace = self.settings.shutdown_grace_seconds if grace_seconds is None else grace_seconds
        deadline = time.monotonic() + timeout
        reported = False  # every run in flight ended and reported: the agent may leave its pools
        with contextlib.suppress(pykka.ActorDeadError, pykka.Timeout):
            self.ref.proxy().stop_taking_runs().get(timeout=timeout)  # no new runs
        try:
            dispatcher = self.dispatcher
            supervisors = ask(dispatcher, InterruptRuns(grace), list, timeout)
            if supervisors:
                log.info("stopping: ending %d run(s) in flight", len(supervisors))
            # Each ended run is one state report, at the server's pace: allow for that.
            needed = grace + 5.0 + len(supervisors) / REPORTS_PER_SECOND
            deadline = max(deadline, time.monotonic() + needed)
            for supervisor in supervisors:
                supervisor.actor_stopped.wait(max(0.0, deadline - time.monotonic()))
            unfinished = sum(1 for s in supervisors if not s.actor_stopped.is_set())
            if unfinished:
                log.warning(
                    "%d run(s) could not be reported before the stop deadline; the next start "
                    "of an agent for their queues on this host reconciles them",
                    unfinished,
                )
            dispatcher.stop(timeout=max(0.1, deadline - time.monotonic()))
            reported = not unfinished
        except (pykka.ActorDeadError, pykka.Timeout) as exc:
            log.warning("agent did not stop cleanly: %r", exc)
        finally:
            if reported:
                self._leave_pools(deadline)
            else:  # its stale row lets peers find it lost and recover what it could not report
                log.warning("keeping this agent's worker rows: peers recover what it left")
            self.ref.stop(block=False)
            self.clock.stop()
            self.api.close()
            self.ctx.calls.stop()
            self.ctx.infra_calls.stop()
            if self._own_kinds:
                close_kinds(self.ctx.infrastructures)

    def _leave_pools(self, deadline: float) -> None:
        """Every run is reported: stop the heartbeats and remove the worker rows, so that
        peers sharing a queue take this agent's share at once (see `Heartbeat`). Not when a
        run was left unreported: the stale row is how peers find it lost and recover it."""
        with contextlib.suppress(pykka.ActorDeadError, pykka.Timeout):
            left = self.ref.proxy().leave_pools().get(timeout=10.0)
            # A heartbeat in flight is waited for first (it would list the agent again).
            allowed = max(deadline - time.monotonic(), self.settings.heartbeat_seconds + 5.0)
            if left is not None and not left.wait(allowed):
                log.warning(
                    "the agent's worker rows were not removed within %.0fs; the server lists it "
                    "until its last heartbeat is three intervals old",
                    allowed,
                )


def identity_for(settings: AgentSettings) -> AgentIdentity:
    """This start's identity: the configured or derived name, a new instance id, the host."""
    name = settings.name or default_agent_name(
        HOSTNAME, settings.work_pools, settings.work_queues, settings.queue_prefixes
    )
    return AgentIdentity(name=name, instance=new_instance_id(), host=HOSTNAME, pid=os.getpid())


def start_agent(
    settings: AgentSettings,
    api: PrefectApiInterface | None = None,
    listeners: tuple[pykka.ActorRef[Any], ...] = (),
    clock: ClockInterface | None = None,
    actors: ChildActors | None = None,
    *,
    infrastructures: tuple[Infrastructure, ...] | None = None,
) -> AgentHandle:
    """Start an agent's actor tree inside the calling process; `listeners` (RunListener refs)
    hear every run event from the first poll on. `clock` serves every timer of the agent
    (default: a real `Clock`); `actors`, the classes of its children (a test's fakes);
    `infrastructures`, the kinds runs are started on (default: the Process kind, and the
    Docker kind, loaded on the first Docker run)."""
    return AgentHandle(settings, api, listeners, clock, actors, infrastructures=infrastructures)
