"""What an earlier life of this agent left within its reach: taken over, or handed back.

An agent that was killed leaves runs behind: Pending or Running runs of its queues whose
infrastructure it started (a process on this host, a container of its daemon), and runs it
had taken (Pending, its claim in the state) but never recorded a pid for. At start, and for
every queue matched later, the Agent has them looked for here (`FindEarlierLifeRuns`):

- a run whose recorded infrastructure is within reach (the kind's `reach`) and no other live
  agent's (for a container, whose daemon other agents may share: its claim names an earlier
  instance of this agent, or nobody) is taken over: the Dispatcher supervises it by that pid
  to its end, or reports it Crashed if it is gone (`SuperviseLeftRun`);
- a run left Pending with no pid recorded, whose claim names an earlier instance of this agent
  on this host (whose process is gone), is taken over if its infrastructure is found by the
  run's id (the kinds' `find`), and otherwise goes back to its queue, Scheduled, by the same
  proposal a peer recovering it would make (`actors.rules.recovery.handed_back`).

Peers recover a lost agent's runs (`Recovery`); this is an agent's own, after a restart. It is
a controller of the Agent, not an actor: its server calls and its looks at the infrastructure
are made off the Agent's inbox (`actors.runtime.calls`), and only what they found comes back
to it.

It looks twice, the second time `EARLIER_LIFE_SECOND_LOOK` seconds after the first: a Pending
proposal of the killed life may be applied by a busy server after the first look.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pykka

from actors.edges.kinds import find_unrecorded, outlives_agents, reach, watched
from actors.edges.processes import process_alive
from actors.rules.claims import parse_claim
from actors.rules.identity import AgentIdentity
from actors.rules.reconcile import left_behind
from actors.rules.recovery import handed_back, latest_claim, pending_claim
from actors.rules.retry import SERVER_CALLS
from actors.runtime.calls import Calls
from actors.runtime.context import AgentContext
from actors.runtime.refs import tell_if_alive
from actors.runtime.request_purpose import requests_for
from messages.internal.lifecycle import SuperviseLeftRun
from messages.wire.prefect import PENDING, RUNNING, FlowRun, State

log = logging.getLogger("prefect_actor_agent.agent")

# Seconds from the first look to the second: longer than a busy server takes to apply a state
# proposal the killed life sent just before it died (after the first look, such a run would be
# left Pending with its claim, and no poll, peer or later look would ever see it again).
EARLIER_LIFE_SECOND_LOOK = 10.0


@dataclass
class LeftBehind:
    """What one look found: runs whose recorded infrastructure is within reach and nobody's,
    and runs an earlier life left Pending with no pid recorded, each with the Pending that
    took it and the pid of its infrastructure found by the run's id (None: there is none)."""

    recorded: list[FlowRun] = field(default_factory=list)
    unrecorded: list[tuple[FlowRun, State, str | None]] = field(default_factory=list)


class EarlierLife:
    """Looks for what an earlier life of this agent left, for the Agent (in its call pool)."""

    def __init__(
        self,
        ctx: AgentContext,
        calls: Calls,
        dispatcher: Callable[[], pykka.ActorRef[Any] | None],
    ) -> None:
        self.ctx = ctx
        self.api = ctx.api.with_retry(SERVER_CALLS)
        self.calls = calls
        self.dispatcher = dispatcher  # the Agent's Dispatcher now (None while it restarts)

    def reconcile(self, queue_names: tuple[str, ...], pool: str | None = None) -> None:
        """Look for the runs of these queues of a pool (None: plain queues) an earlier life
        left; take over or hand back. Each pool served is looked at for its own queues."""

        def unreadable(exc: Exception) -> None:
            log.warning("could not look for runs left by an earlier agent: %s", exc)

        self.calls.start(lambda: self._look(queue_names, pool), self._found, unreadable)

    def _look(self, queue_names: tuple[str, ...], pool: str | None) -> LeftBehind:
        """In the call pool: the server's runs of these queues, then their infrastructure."""
        with requests_for("recovery"):  # counted by kind in /metrics
            runs = self.api.runs_in_states(list(queue_names), [PENDING, RUNNING], pool)
        kinds = self.ctx.infrastructures
        found = LeftBehind(
            recorded=[
                run
                for run in left_behind(
                    runs,
                    here=lambda pid: reach(pid, kinds) == "here",
                    watched=lambda pid: watched(pid, kinds),
                )
                if not self._this_lifes(run) and self._not_a_peers(run)
            ]
        )
        for run in runs:
            if run.infrastructure_pid or run.state is None or run.state.type != PENDING:
                continue
            if self._this_lifes(run):  # being started here now: its pid is on its way
                continue
            # Pending now: the claim is the listed state's (in a fleet's drain, a look finds
            # dozens of peers' runs Pending whose pid is on its way; none costs a read).
            claimed = pending_claim(run.state)
            if claimed is None or not self._earlier_life(claimed[1]):
                continue
            job = find_unrecorded(run.id, kinds)
            pid = job.infrastructure_pid if job is not None else None
            if pid is None or not watched(pid, kinds):
                found.unrecorded.append((run, claimed[0], pid))
        return found

    def _this_lifes(self, run: FlowRun) -> bool:
        """A run this very life took: its state is still the Pending that carries this
        instance's claim (its process ended, exit 0, with no engine to move it on; its
        supervisor here has reported what there was). The second look would otherwise take
        it for an earlier life's and report it Crashed. Read from the run as listed: no call."""
        state = run.state
        if state is None or state.type != PENDING:
            return False
        claim = parse_claim(state.message)
        return claim is not None and claim.instance == self.ctx.identity.instance

    def _not_a_peers(self, run: FlowRun) -> bool:
        """A run whose infrastructure outlives its agent (a container of a daemon other agents
        may share) is an earlier life's only when its claim says so: a live peer's run is the
        peer's, and a lost peer's is the Recovery's to adopt. (A process within reach is on
        this host, and its kind says whether a live agent watches it.)"""
        pid = run.infrastructure_pid
        if not pid or not outlives_agents(pid, self.ctx.infrastructures):
            return True
        claimed = latest_claim(self.api.read_flow_run_states(run.id))
        return claimed is None or self._earlier_life(claimed[1])

    def _earlier_life(self, claim: AgentIdentity) -> bool:
        """A claim of an instance of this agent on this host whose process is gone (another
        agent of the same name on this host may be alive: its runs are its own)."""
        me = self.ctx.identity
        return (
            claim.name == me.name
            and claim.host == me.host
            and claim.instance != me.instance
            and claim.pid is not None
            and not process_alive(claim.pid)
        )

    def _found(self, found: LeftBehind) -> None:
        for run in found.recorded:
            log.info(
                "flow run %s (%s) was left %s by an earlier agent on this host: taking it over",
                run.id,
                run.name,
                run.state.type if run.state else "?",
            )
            self._take_over(SuperviseLeftRun(run.id))
        for run, claim_state, pid in found.unrecorded:
            if pid is None:
                self._hand_back(run, claim_state)
            else:
                log.info(
                    "flow run %s (%s) was left Pending by an earlier life of this agent, its "
                    "pid unrecorded; its infrastructure %s is alive: taking it over",
                    run.id,
                    run.name,
                    pid,
                )
                self._take_over(SuperviseLeftRun(run.id, pid))

    def _take_over(self, take_over: SuperviseLeftRun) -> None:
        dispatcher = self.dispatcher()
        if dispatcher is None or not tell_if_alive(dispatcher, take_over):
            log.warning(
                "flow run %s: not taken over (the Dispatcher is being restarted); the next "
                "start of this agent looks for it again",
                take_over.flow_run_id,
            )

    def _hand_back(self, run: FlowRun, claim_state: State) -> None:
        """A run an earlier life took (Pending) but never started: back to its queue.

        In the call pool, in this order: no infrastructure of the run found, then the run
        still in the same Pending, then the proposal. A process that ended meanwhile reported
        its final state before it exited, so the read after the search sees it: a Scheduled
        proposal, which the server would take even over Completed, is never sent then."""
        proposal = handed_back(
            run.id,
            claim_state,
            "Handed back to its queue by its agent after a restart: the agent's earlier life "
            "took it but no process of it was started.",
        )

        def hand_back() -> str:
            if find_unrecorded(run.id, self.ctx.infrastructures) is not None:
                return "its infrastructure is alive"
            now = self.api.read_flow_run(run.id)
            if now.state is None or now.state.id != claim_state.id:
                return "it moved on"
            result = self.api.set_state(run.id, proposal)
            return "handed back" if result.status == "ACCEPT" else f"refused ({result.status})"

        def done(what: str) -> None:
            log.info("flow run %s (%s), left Pending unstarted: %s", run.id, run.name, what)

        def failed(exc: Exception) -> None:
            log.warning("flow run %s: could not hand it back: %s", run.id, exc)

        self.calls.start(hand_back, done, failed)
