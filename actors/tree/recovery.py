"""Recovery: takes over what a lost peer left, and gives up what a peer took from this agent
(permanent child of the Agent).

Each round (every heartbeat interval) it reads the worker rows of each pool it serves. A peer
whose heartbeat is older than `--lost-agent-seconds` is lost, but only once this agent's own
heartbeats have gone through without a gap for that whole window (`actors.rules.recovery`):
after a server outage nobody recovers anything until the survivors have proved themselves
for a full window. The lost peer's runs in this agent's queues of that pool (a peer is judged
by its row in each pool, and recovered from there), found by the claim their
Pending state carries, are then proposed Crashed, handed back (Scheduled, due now) or
Cancelled; the server's answer decides which of several peers did it. A run whose
infrastructure outlives its agent and is within this agent's reach (a container of the daemon
this agent uses) is adopted instead: Running with this agent's claim, then supervised here by
its pid to its end (`SuperviseLeftRun`), its exit reported, cancellable as any run here.

After this agent was cut off from the server (the Heartbeat's renewal that ends a break says
so: `LeaseChanged.reconnected`), it asks the Dispatcher which runs it holds and reads each on
the server: a run a peer recovered meanwhile is relinquished at once (its process group
killed, nothing reported; a run a peer adopted is let go without touching its container, which
the peer watches). It checks again one heartbeat interval later, for a recovery a peer
had under way when the partition healed, and at every round until a check gets through.

It also tells the Dispatcher who the live peers are (`Peers`: each pool's ONLINE workers,
from the same worker rows as the round's), from which each watcher tells the runs it owns in
a fleet from those a peer owns (`actors.rules.share`). It reads them at start, again two
seconds after every change (a fleet starting shows up within seconds, not a heartbeat
interval later), else every round; and, at most once a second, when a watcher finds only
peers' runs waiting (`PeersInDoubt`): a peer that stopped cleanly has removed its row, so it
is known gone at once and its runs are taken without their grace.

Its round is the tick of a periodic child (`actors.tree.periodic`): like a watcher, it waits on
the server in its own inbox (polling is its only job) and tells the Agent its phase, so nobody
waits on it.
"""

from __future__ import annotations

import logging
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pykka

from actors.edges.infrastructure import RunJob
from actors.edges.kinds import kind_of_pid, outlives_agents, reach
from actors.edges.prefect_api import ApiError
from actors.edges.served_pools import refused
from actors.rules.claims import parse_claim
from actors.rules.identity import AgentIdentity
from actors.rules.pools import queues_by_pool
from actors.rules.recovery import (
    LostAgent,
    adopted,
    adoption_for,
    latest_claim,
    lost_agents,
    may_declare_lost,
    pending_claim,
    recovery_for,
    still_ours,
)
from actors.rules.retry import ONCE
from actors.rules.share import CONTESTED_SECONDS, live_peers
from actors.runtime.clock import Timer
from actors.runtime.context import AgentContext
from actors.runtime.request_purpose import requests_for
from actors.tree.periodic import PeriodicChild
from messages.internal.dispatch import (
    CheckHeldRuns,
    HeldRunIds,
    HeldRunsAre,
    Peers,
    PeersInDoubt,
    ReadPeers,
    Relinquish,
)
from messages.internal.lease import LeaseChanged
from messages.internal.lifecycle import (
    SuperviseLeftRun,
    WatchedQueue,
    WatchedQueues,
)
from messages.user.tree import ActorKind
from messages.wire.prefect import (
    CANCELLING,
    PENDING,
    RUNNING,
    AnyOf,
    ApiDecodeError,
    FlowRun,
    FlowRunFilter,
    FlowRunStateFilter,
    State,
    Worker,
)

log = logging.getLogger("prefect_actor_agent.recovery")

PEERS_SETTLE_SECONDS = 2.0  # after the live peers changed, read them again this soon
PEERS_DOUBT_SECONDS = 1.0  # a watcher waiting on peers' runs has them read at most this often
# The live peers are wanted this long after the last ask (a race lost, a watcher waiting on
# peers' runs): as long as a queue stays shared (`actors/rules/share.py`, `Contests`). Else a
# round reads only the stale rows, the peers that may be lost.
PEERS_WANTED_SECONDS = CONTESTED_SECONDS


class Recovery(PeriodicChild):
    """Recovers lost peers' runs; relinquishes runs recovered from this agent."""

    KIND = ActorKind.RECOVERY
    NAME = "recovery"  # its name in the tree: there is one

    def __init__(
        self,
        ctx: AgentContext,
        agent: pykka.ActorRef[Any],
        dispatcher: pykka.ActorRef[Any] | None,
        queues: tuple[WatchedQueue, ...] = (),
        lease: LeaseChanged | None = None,
    ) -> None:
        super().__init__(ctx, agent, self.NAME, dispatcher)
        # The next round is the retry; a round must not hang past its interval.
        self.api = ctx.api.with_retry(ONCE).with_timeout(ctx.settings.heartbeat_seconds)
        self.queues = queues
        # Since when this agent's own heartbeats went through unbroken (agent clock), as the
        # Heartbeat's lease last said; None while they fail.
        self.streak_since = lease.streak_since if lease is not None else None
        self.check_due = False  # the held runs are to be checked against the server
        self.declared: set[str] = set()  # peers declared lost (each counted once)
        self.claims: dict[str, tuple[str | None, AgentIdentity | None, State | None]] = {}
        # Pool served (None: plain queues) -> its live peers as last read.
        self.peers: dict[str | None, tuple[str, ...]] = {}
        self.next_peers: Timer | None = None
        self.peers_read_at: float | None = None  # agent-clock time of the last reading
        self.peers_wanted_until: float | None = None  # agent-clock time; None: never asked
        self.last_action = ""
        self.round_lost: set[str] | None = None  # the peers found lost in every pool this round

    def clean_up(self) -> None:
        super().clean_up()
        if self.next_peers is not None:
            self.next_peers.cancel()

    def on_receive(self, message: Any) -> Any:
        with requests_for("recovery"):  # its reads of runs, counted by kind in /metrics
            return super().on_receive(message)

    def tick(self) -> float:
        try:
            self._round()
        except (ApiError, ApiDecodeError) as exc:
            self.set_phase(f"error: {exc}")
        # A little jitter, so that two peers seldom act in the same instant.
        return self.ctx.settings.heartbeat_seconds * random.uniform(0.8, 1.0)  # noqa: S311

    def handle(self, message: object) -> bool:
        match message:
            case ReadPeers():
                self.next_peers = None
                self._read_peers()
            case PeersInDoubt():
                last, now = self.peers_read_at, self.ctx.clock.monotonic()
                self.peers_wanted_until = now + PEERS_WANTED_SECONDS
                if last is None or now - last >= PEERS_DOUBT_SECONDS:
                    self._read_peers()
            case LeaseChanged(streak_since=since, reconnected=reconnected):
                self.streak_since = since
                if reconnected:
                    self._check_held_runs()
                    self.ctx.clock.tell_later(
                        self.ctx.settings.heartbeat_seconds, self.actor_ref, CheckHeldRuns()
                    )
            case CheckHeldRuns():
                self._check_held_runs()
            case HeldRunsAre(flow_run_ids=ids):
                self._check_own(ids)
            case WatchedQueues(queues=queues):
                self.queues = queues
            case _:
                return False
        return True

    def dispatcher_changed(self) -> None:
        for served, peers in self.peers.items():
            self.tell_dispatcher(Peers(peers, served))

    # -- one round ---------------------------------------------------------------------------------

    def _served_pools(self) -> list[tuple[str | None, str]]:
        """Each pool served (None: plain queues) with the pool its workers are listed in; a
        refused pool is not served (its runs' infrastructure is of a kind this agent lacks)."""
        profile, kinds = self.api.server_profile(), self.ctx.infrastructures
        served = ((pool, profile.heartbeat_pool(pool)) for pool in self.ctx.settings.pools)
        return [
            (pool, rows)
            for pool, rows in served
            if rows is not None and (pool is None or not refused(self.api, pool, kinds))
        ]

    def _round(self) -> None:
        if self.check_due:  # the last check did not get through
            self._check_held_runs()
        pools = self._served_pools()
        if not pools:
            self.set_phase("no work pool, no peers to watch")
            return
        phases, failed = [], None
        self.round_lost = set()  # None once a pool was not judged
        for served, pool in pools:  # a pool that cannot be read leaves the others' rounds be
            try:
                phases.append(self._pool_round(served, pool))
            except (ApiError, ApiDecodeError) as exc:
                failed = exc
                phases.append(f"{pool!r}: error: {exc}")
        if failed is not None and len(pools) == 1:
            raise failed
        if failed is None and self.round_lost is not None:
            self.declared &= self.round_lost  # a peer that came back may be lost again later
        self.set_phase("; ".join(phases))

    def _pool_round(self, served: str | None, pool: str) -> str:
        """One pool's round: its live peers, its lost ones and their runs; the phase."""
        settings = self.ctx.settings
        if self._peers_wanted():
            workers = self.api.read_workers(pool)  # one read serves the live peers and the lost
            self._note_peers(served, pool, workers)
        else:  # no queue shared: only the rows of peers that may be lost
            stale = datetime.now(UTC) - timedelta(seconds=settings.lost_agent_seconds)
            workers = self.api.read_workers(pool, heartbeat_before=stale)
        if self.streak_since is None:
            self.round_lost = None
            return "waiting for this agent's own heartbeats"
        streak = self.ctx.clock.monotonic() - self.streak_since
        lost_after = settings.lost_agent_seconds
        if not may_declare_lost(streak, lost_after):
            self.round_lost = None
            return (
                f"own heartbeats unbroken for {streak:.0f}s of the {lost_after:g}s needed "
                "to declare a peer lost"
            )
        lost = lost_agents(workers, datetime.now(UTC), lost_after, self.ctx.identity.name)
        for name, peer in lost.items():
            if name not in self.declared:
                self.declared.add(name)
                self.ctx.metrics.peers_lost.inc()
                log.warning(
                    "agent %r is lost (or was stopped): its last heartbeat was at %s, more than "
                    "%gs ago; recovering any run it still holds in this agent's queues",
                    name,
                    peer.last_heartbeat.isoformat(timespec="seconds"),
                    lost_after,
                )
        if self.round_lost is not None:
            self.round_lost |= set(lost)
        queues = queues_by_pool(self.queues).get(served, ())
        if lost and queues:
            self._recover(lost, served, queues)
        return f"watching {pool!r}: " + (f"{len(lost)} lost peer(s)" if lost else "no lost peer")

    def _recover(
        self, lost: dict[str, LostAgent], pool: str | None, queues: tuple[str, ...]
    ) -> None:
        candidates = self.api.filter_flow_runs(
            FlowRunFilter(
                state=FlowRunStateFilter(type=AnyOf(any_=[PENDING, RUNNING, CANCELLING])),
                work_queue_name=AnyOf(any_=list(queues)),
            ),
            pool,
        )
        for run in candidates:
            claimed = self._claim(run)
            if claimed is None:
                continue
            claim, claim_state = claimed
            peer = lost.get(claim.name)
            if peer is not None:
                self._recover_run(run, claim, claim_state, peer)

    def _claim(self, run: FlowRun) -> tuple[AgentIdentity, State] | None:
        """The claim of the run's latest Pending, or of a peer's adoption after it (read once
        per state of the run: a claim only changes with the state; a run Pending now carries
        it in the state listed, and costs no read)."""
        if run.state is not None and run.state.type == PENDING:
            pending = pending_claim(run.state)
            return (pending[1], pending[0]) if pending is not None else None
        state_id = run.state.id if run.state is not None else None
        cached = self.claims.get(run.id)
        if cached is None or (state_id is not None and cached[0] != state_id):
            found = latest_claim(self.api.read_flow_run_states(run.id))
            cached = (
                state_id,
                found[1] if found else None,
                found[0] if found else None,
            )
            self.claims[run.id] = cached
            if len(self.claims) > 4096:
                self.claims.pop(next(iter(self.claims)))
        _, claim, claim_state = cached
        return (claim, claim_state) if claim is not None and claim_state is not None else None

    def _recover_run(
        self, run: FlowRun, claim: AgentIdentity, claim_state: State, peer: LostAgent
    ) -> None:
        fresh = self.api.read_flow_run(run.id)  # what it is now, just before proposing
        if fresh.state is None or run.state is None or fresh.state.id != run.state.id:
            return
        reached = self._reached(fresh)
        action = (
            adoption_for(fresh, claim_state, peer, self.ctx.identity) if reached else None
        ) or recovery_for(fresh, claim_state, peer, claim.host, reached)
        if action is None:
            return
        result = self.api.set_state(run.id, action.proposal, force=action.force)
        if result.status != "ACCEPT":
            log.debug("flow run %s: another peer recovered it first (%s)", run.id, result.status)
            return
        self.ctx.metrics.runs_recovered.labels(kind=action.kind).inc()
        self.last_action = (
            f"{action.kind} flow run {run.id} of lost agent {claim.name!r} "
            f"at {time.strftime('%H:%M:%S')}"
        )
        log.warning(
            "flow run %s (%s) of lost agent %r on host %r: %s (it was %s; last heartbeat %s)",
            run.id,
            run.name,
            claim.name,
            claim.host,
            action.kind,
            fresh.state.type,
            peer.last_heartbeat.isoformat(timespec="seconds"),
        )
        if action.kind == "cancelled" and reached:
            self._stop_reached(run.id, fresh.infrastructure_pid or "")
        if action.kind == "adopted":
            pid = fresh.infrastructure_pid
            log.warning(
                "flow run %s: its infrastructure %s runs on within this agent's reach: "
                "watching it to its end",
                run.id,
                pid,
            )
            if not self.tell_dispatcher(SuperviseLeftRun(run.id, pid, claim.name)):
                log.warning(
                    "flow run %s: adopted, but the Dispatcher is being restarted; the next "
                    "start of this agent takes it over",
                    run.id,
                )

    def _reached(self, run: FlowRun) -> bool:
        """Whether the run's infrastructure outlives its agent (a container) and this agent
        reaches it (the same daemon): then it is adopted, or stopped if it is being cancelled,
        rather than recovered as a lost host's run is."""
        pid = run.infrastructure_pid
        kinds = self.ctx.infrastructures
        return pid is not None and outlives_agents(pid, kinds) and reach(pid, kinds) == "here"

    def _stop_reached(self, run_id: str, pid: str) -> None:
        """A lost peer's run Cancelled here, its container within reach: stopped as a Cancel
        stops one (its stop signal, then a kill after the grace), off this inbox."""
        kind = kind_of_pid(pid, self.ctx.infrastructures)
        if kind is None:
            return
        grace = self.ctx.settings.cancel_grace_seconds
        pool, clock = self.ctx.infra_calls, self.ctx.clock

        def stop() -> None:
            try:
                job = kind.find(run_id, pid)
                if job is None or not job.terminate():
                    return
            except Exception as exc:  # noqa: BLE001 - the daemon's trouble, said once
                log.warning("flow run %s: could not stop its container %s: %s", run_id, pid, exc)
                return
            log.info("flow run %s: stopping %s (killed after %.0fs)", run_id, job.label, grace)
            clock.call_later(grace, lambda: pool.submit(lambda: _kill_quietly(job, run_id)))

        pool.submit(stop)

    # -- the live peers ----------------------------------------------------------------------------

    def _peers_wanted(self) -> bool:
        """Whether a round reads the live peers too: only while a queue may be shared (a race
        lost, a watcher waiting on peers' runs, within `PEERS_WANTED_SECONDS`). Every agent of
        a 100-agent pool reading all 100 rows every heartbeat was a quarter of the fleet's
        idle requests to a 2.20 server, and the dearest of them."""
        until = self.peers_wanted_until
        return until is not None and self.ctx.clock.monotonic() < until

    def _read_peers(self) -> None:
        """Read the pools' live workers again, between rounds: soon after they changed."""
        try:
            for served, pool in self._served_pools():
                self._note_peers(served, pool, self.api.read_workers(pool))
        except (ApiError, ApiDecodeError) as exc:
            log.debug("could not read the live peers: %s", exc)

    def _note_peers(self, served: str | None, pool: str, workers: list[Worker]) -> None:
        """The live peers among a pool's workers: told to the Dispatcher when they changed,
        and read again `PEERS_SETTLE_SECONDS` later (a fleet starting shows up within seconds,
        not a round later)."""
        settings = self.ctx.settings
        me = self.ctx.identity.name
        self.peers_read_at = self.ctx.clock.monotonic()
        peers = live_peers(workers, me, datetime.now(UTC), settings.lost_agent_seconds)
        known = self.peers.get(served)
        if peers == known:
            return
        if known is not None or len(peers) > 1:
            log.info("%d live agent(s) share the pool %r: %s", len(peers), pool, ", ".join(peers))
        self.peers[served] = peers
        self.tell_dispatcher(Peers(peers, served))
        if self.next_peers is None:
            self.next_peers = self.ctx.clock.tell_later(
                PEERS_SETTLE_SECONDS, self.actor_ref, ReadPeers()
            )

    # -- after this agent was cut off ------------------------------------------------------------

    def _check_held_runs(self) -> None:
        """Ask the Dispatcher for the runs it holds; each is then read on the server."""
        self.check_due = False
        self.tell_dispatcher(HeldRunIds(self.actor_ref))

    def _check_own(self, run_ids: tuple[str, ...]) -> None:
        """Each run held here that the server no longer has as this instance's: relinquished.

        One filter reads them all; only a run past its Pending (whose claim is in its history,
        not its state) costs a read of its states."""
        if not run_ids:
            return
        me = self.ctx.identity
        checked = 0
        try:
            held = FlowRunFilter(id=AnyOf(any_=list(run_ids)))
            runs = {run.id: run for run in self.api.filter_flow_runs(held)}
            for checked, run_id in enumerate(run_ids):  # noqa: B007 - counted for the warning
                run = runs.get(run_id)
                if run is None:
                    self._relinquish(run_id, "the server no longer has it")
                    continue
                claim, by_adoption = self._current_claim(run)
                if still_ours(run, claim, me):
                    continue
                state = run.state.type if run.state is not None else "unknown"
                holder = f"; now held by {claim.name!r}" if claim is not None else ""
                if by_adoption and claim is not None:
                    self._relinquish(
                        run_id,
                        f"agent {claim.name!r} adopted it while this agent was cut off from "
                        "the server; its infrastructure runs on, watched there",
                        kill=False,
                    )
                    continue
                self._relinquish(
                    run_id,
                    f"a peer recovered it while this agent was cut off from the server (it is "
                    f"{state} there{holder})",
                )
        except (ApiError, ApiDecodeError) as exc:
            # The rest would fail alike (a server struggling again, or the agent stopping): one
            # line, and every held run is checked again at the next round that reaches the
            # server.
            log.warning(
                "could not check that %d held flow run(s) are still ours (%s): checking "
                "again once the server answers",
                len(run_ids) - checked,
                exc,
            )
            self.check_due = True

    def _current_claim(self, run: FlowRun) -> tuple[AgentIdentity | None, bool]:
        """The claim of the run's latest Pending (its state's own while it is Pending), or of
        a peer's adoption after it; and whether it was made by an adoption."""
        state = run.state
        if state is not None and state.type == PENDING:
            claim = parse_claim(state.message)
            if claim is not None:
                return claim, False
        found = latest_claim(self.api.read_flow_run_states(run.id))
        return (found[1], adopted(found[0])) if found else (None, False)

    def _relinquish(self, run_id: str, reason: str, kill: bool = True) -> None:
        self.last_action = f"relinquished flow run {run_id} at {time.strftime('%H:%M:%S')}"
        self.tell_dispatcher(Relinquish(run_id, reason, kill))

    # -- the tree ----------------------------------------------------------------------------------

    def detail(self) -> dict[str, str]:
        detail = {"lost after": f"{self.ctx.settings.lost_agent_seconds:g}s"}
        if self.last_action:
            detail["last recovery"] = self.last_action
        if self.declared:
            detail["lost peers"] = ", ".join(sorted(self.declared))
        return detail


def _kill_quietly(job: RunJob, run_id: str) -> None:
    """The grace after a stop passed: killed if it still runs."""
    try:
        if job.grace_over():
            log.warning("flow run %s: %s outlived the grace period; killed it", run_id, job.label)
    except Exception as exc:  # noqa: BLE001 - the daemon's trouble, said once
        log.warning("flow run %s: could not kill %s: %s", run_id, job.label, exc)
