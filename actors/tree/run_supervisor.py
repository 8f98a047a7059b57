"""RunSupervisor: owns one flow run from the moment the Dispatcher hands it over until it ends.

How it comes to exist is its plan (`messages.internal.run_steps.RunPlan`):

    SubmitRun        a poll found the run: propose Pending (the server's answer is the lock
                     between agents) and, while the server weighs it, resolve the
                     infrastructure and create it (removed if Pending is refused); then
                     record its pid and start it (or start it, then record the pid, for a
                     kind that learns it only by starting), wait for the end.
    LeftByEarlierLife      an earlier life of this agent left the run within its reach: find
    LeftByFailedSupervisor   its infrastructure by pid (or take the one a failed supervisor
    CancelUnheld     hands over) and watch it to its end; or, for a Cancel of a run not held,
                     stop it.

The run's infrastructure is driven through the seam (`actors.edges.infrastructure`): the
supervisor never asks which kind it holds (a process, a container); the kind is chosen from
the run's block or pool (`actors.edges.kinds`), and its pid is the string the kind records.

Every server call is made off the inbox (`actors.runtime.calls`) and answers as a message, and
so is every infrastructure call that may block (in a pool of its own, never behind a hung
server); the wait for the end is a helper's. So a Cancel or an Interrupt is handled at once,
whatever the server does: a run cancelled while its Pending is with the server never starts,
and a running one is stopped while the server hangs (its Cancelled report goes when the
server answers). How a run ended and what the
server is told is decided by `actors.rules.run_ending`.

Who may stop a run: the Dispatcher, with Cancel (the server or a host service asked) or
Interrupt (the agent is stopping), and nobody else. A supervisor always ends by telling the
Dispatcher `RunFinished`, which frees the run's slot.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, TypeVar, runtime_checkable

import pykka

from actors.edges.infrastructure import Infrastructure, RunJob
from actors.edges.kinds import kind_for, kind_of_pid, outlives_agents
from actors.edges.prefect_api import ApiError, NotFoundError
from actors.edges.run_infrastructure import read_run_source
from actors.rules import run_ending
from actors.rules.claims import claim_message, worker_labels
from actors.rules.identity import AgentIdentity
from actors.rules.infrastructure import SubmissionError
from actors.rules.proposals import accepted_as, failed, pending, refusal, rescheduled
from actors.rules.recovery import latest_claim
from actors.rules.retry import SERVER_CALLS
from actors.runtime.calls import Calls
from actors.runtime.context import AgentContext
from actors.runtime.refs import tell_if_alive
from messages.internal.dispatch import Cancel, Relinquish, RunStatus
from messages.internal.lease import LeaseChanged
from messages.internal.lifecycle import CallAnswered, Interrupt, Rehome, SupervisorFailed
from messages.internal.run_steps import (
    CancelUnheld,
    FindInfrastructure,
    GraceExpired,
    InfrastructureEnded,
    LeftByEarlierLife,
    LeftByFailedSupervisor,
    Prepared,
    ProposePending,
    RunPlan,
    SubmitRun,
)
from messages.user.events import RunFinished, RunOutcome
from messages.wire.prefect import (
    PENDING,
    ApiDecodeError,
    FlowRun,
    OrchestrationResult,
    State,
    StateProposal,
)

log = logging.getLogger("prefect_actor_agent.run_supervisor")

T = TypeVar("T")
MAX_WAIT_SECONDS = 30.0
REHOME_WAIT_SECONDS = 10.0  # a finished run waits this long for a new Dispatcher to tell


class RunSupervisor(pykka.ThreadingActor):
    """One flow run's owner: submission, infrastructure, end, cancellation (temporary child)."""

    def __init__(
        self,
        ctx: AgentContext,
        run_id: str,
        dispatcher: pykka.ActorRef[Any],
        plan: RunPlan,
        lease_holds: bool = True,
    ) -> None:
        super().__init__()
        self.ctx = ctx
        self.api = ctx.api.with_retry(SERVER_CALLS)  # an outcome is never dropped
        self.run_id = run_id
        self.plan = plan
        self.dispatcher = dispatcher
        self.undelivered: list[object] = []  # told while the Dispatcher was being restarted
        self.calls: Calls | None = None
        self.phase = "admitted"
        self.since = time.time()
        self.started = time.monotonic()
        self.admitted_at = time.time()
        self.kinds = ctx.infrastructures
        self.job: RunJob | None = None  # the run's infrastructure, once created or found
        self.pid: str | None = None  # its infrastructure pid, once it runs
        self.creating = False  # `create` or `start` is under way
        self.started_here = False  # this supervisor started it (and waits for its end)
        # Why the run is ending early; a Cancel for a run not held is known from the start.
        self.stop_request: Cancel | Interrupt | Relinquish | None = (
            plan.cancel if isinstance(plan, CancelUnheld) else None
        )
        self.pending_proposal: StateProposal | None = None
        self.past_pending = not isinstance(plan, SubmitRun)  # others never propose Pending
        self.reporting = False
        self.finished = False
        self.pid_recorded = False
        self.waiting: Prepared | None = None  # resolved, waiting for a valid lease
        self.confirming = False  # after a lapse: reading whether the run is still ours
        self.lease_holds = lease_holds  # as the Dispatcher tells it (`LeaseChanged`)
        # Made while Pending is with the server (see `_get_ahead`): the resolution, then the
        # created (not started) infrastructure, or why either failed; what ends the run once
        # a creation under way is answered (its job is removed first).
        self.getting_ahead = False
        self.creating_ahead = False
        self.prepared: Prepared | None = None
        self.failed_ahead: Callable[[], None] | None = None
        self.finish_after_create: tuple[RunOutcome, str, bool, datetime | None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def on_start(self) -> None:
        self.calls = Calls(self.ctx.calls, self.actor_ref)
        if isinstance(self.plan, SubmitRun):
            self._set_phase("admitted")
            self.actor_ref.tell(ProposePending())
        else:
            self._set_phase("looking for its infrastructure")
            self.actor_ref.tell(FindInfrastructure())

    def on_receive(self, message: Any) -> Any:
        match message:
            case CallAnswered():
                self._calls().answered(message)
            case Cancel() | Interrupt():
                self._on_stop_request(message)
            case Relinquish():
                self._relinquish(message)
            case LeaseChanged(holds=holds):
                self._lease_changed(holds)
            case ProposePending():
                self._propose_pending()
            case Prepared():
                self._create(message)
            case FindInfrastructure():
                self._adopt()
            case InfrastructureEnded():
                self._on_exit(message)
            case GraceExpired():
                self._on_grace_expired()
            case Rehome(dispatcher=ref, agent_id=agent_id) if isinstance(ref, pykka.ActorRef):
                self._rehome(ref, agent_id)
            case _:
                log.warning("flow run %s: unexpected message %r", self.run_id, message)
        return None

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """A bug in this supervisor must neither orphan the infrastructure nor leak the slot.

        Running infrastructure is handed to a replacement supervisor (through the Dispatcher)
        that watches it by pid; a run not started yet is failed with the reason.
        """
        reason = f"{exception_type.__name__ if exception_type else 'error'}: {exception_value}"
        log.error("flow run %s: its supervisor failed: %s", self.run_id, reason)
        if self.finished:
            return
        self.finished = True
        job, pid = self.job, self.pid
        if job is not None and pid is not None and job.running:
            self._tell_dispatcher(SupervisorFailed(self.run_id, pid, reason))
            return
        if job is not None and not self.started_here and isinstance(self.plan, SubmitRun):
            self.ctx.infra_calls.submit(lambda: _ignore(job.after_exit()))  # never started: removed
        if pid is None and isinstance(self.plan, SubmitRun):
            proposal = failed(f"the agent failed while submitting it ({reason})")
            try:  # the actor is gone: this one report is made here, with the edge's retries
                self.ctx.api.set_state(self.run_id, proposal)
            except (ApiError, ApiDecodeError) as exc:
                log.error("flow run %s: could not report Failed: %s", self.run_id, exc)
        self._tell_dispatcher(RunFinished(self.run_id, "failed", f"supervisor failed: {reason}"))

    def _calls(self) -> Calls:
        if self.calls is None:
            raise RuntimeError("the supervisor has not started")
        return self.calls

    def _call(
        self,
        call: Callable[[], T],
        then: Callable[[T], None],
        failed: Callable[[Exception], None],
        urgent: bool = False,
    ) -> None:
        self._calls().start(call, then, _only_server_errors(failed), urgent)

    def _infra(
        self,
        call: Callable[[], T],
        then: Callable[[T], None],
        failed: Callable[[Exception], None],
    ) -> None:
        """An infrastructure call that may block (a daemon's HTTP), made in the agent's pool
        for those; whatever it raises is the continuation's to handle."""
        self._calls().start(call, then, failed, pool=self.ctx.infra_calls)

    def _status(self) -> RunStatus:
        return RunStatus(
            self.run_id, self.phase, self.since, self.pid, self.past_pending, self.actor_ref
        )

    def _set_phase(self, phase: str) -> None:
        self.phase = phase
        self.since = time.time()
        self._tell_dispatcher(self._status())

    def _tell_dispatcher(self, message: object) -> None:
        """Tell the Dispatcher; while it is being restarted, keep the message for the new one."""
        if not tell_if_alive(self.dispatcher, message):
            self.undelivered.append(message)

    def _rehome(self, dispatcher: pykka.ActorRef[Any], agent_id: int) -> None:
        """A restarted Dispatcher of this agent: tell it where the run is, and what it missed."""
        if agent_id != id(self.ctx):
            return
        self.dispatcher = dispatcher
        waiting, self.undelivered = self.undelivered, []
        if not self.finished:
            self._tell_dispatcher(self._status())
        for message in waiting:
            if not isinstance(message, RunStatus):
                self._tell_dispatcher(message)
        if self.finished and not self.undelivered:
            self.stop()

    def _finish(
        self,
        outcome: RunOutcome,
        detail: str = "",
        contested: bool = False,
        rescheduled_for: datetime | None = None,
    ) -> None:
        if self.finished:
            return
        if isinstance(self.plan, SubmitRun) and not self.started_here:
            if self.creating_ahead:  # what is being made ahead is removed once answered
                self.finish_after_create = (outcome, detail, contested, rescheduled_for)
                return
            if self.job is not None:  # created, never started: nothing of it is left
                job, self.job = self.job, None
                self._infra(job.after_exit, _ignore, _ignore)
        self._set_phase(f"finished ({outcome})")
        self.finished = True
        queue = self.plan.flow_run.work_queue_name if isinstance(self.plan, SubmitRun) else None
        self._tell_dispatcher(
            RunFinished(self.run_id, outcome, detail, contested, queue, rescheduled_for)
        )
        if not self.undelivered:
            self.stop()
            return
        # The Dispatcher is being restarted: its successor tells Rehome, and hears the end.
        log.info("flow run %s: ended while the Dispatcher restarts; waiting for it", self.run_id)
        self.ctx.clock.call_later(REHOME_WAIT_SECONDS, lambda: self.actor_ref.stop(block=False))

    # -- submission --------------------------------------------------------------------------------

    def _flow_run(self) -> FlowRun:
        if not isinstance(self.plan, SubmitRun):
            raise RuntimeError("only a submitted run is proposed Pending or started")
        return self.plan.flow_run

    def _propose_pending(self) -> None:
        if self.stop_request is not None:
            self._end_before_start()
            return
        self._set_phase("proposing Pending")
        # One proposal, one transition id, however often it is sent: if a lost answer hid an
        # acceptance, the server recognises the repeat and answers with our own Pending.
        proposal = self.pending_proposal = self.pending_proposal or pending(
            claim_message(self.ctx.identity)  # who holds the run, for people and peers
        )
        self._call(
            lambda: self.api.set_state(self.run_id, proposal),
            self._pending_answered,
            self._pending_failed,
            urgent=True,
        )
        self._get_ahead()

    def _get_ahead(self) -> None:
        """While Pending is with the server: resolve the infrastructure and create it (a
        container created, not started), so that once the server accepts, only the pid's
        record and the start are left. A refused Pending removes what was created; nothing
        runs before the pid is recorded, as before."""
        if self.getting_ahead:
            return
        self.getting_ahead = True

        def resolved(prepared: Prepared) -> None:
            self.prepared = prepared
            if self.past_pending:
                self.actor_ref.tell(prepared)  # the usual way, behind a Cancel that came first
            elif self.lease_holds and self.stop_request is None and not self.finished:
                self._create_ahead(prepared)

        def unresolved(exc: Exception) -> None:
            if self.past_pending:
                self._resolve_failed(exc)
            else:
                self.failed_ahead = lambda: self._resolve_failed(exc)

        self._call(self._resolve, resolved, unresolved)

    def _create_ahead(self, prepared: Prepared) -> None:
        kind = prepared.kind
        if not isinstance(kind, _KindLike):
            raise TypeError(f"not a kind of infrastructure: {kind!r}")
        self.creating = self.creating_ahead = True
        spec = prepared.spec

        def created(job: RunJob) -> None:
            self.creating = self.creating_ahead = False
            self.job = job
            if self.finish_after_create is not None:
                self._finish(*self.finish_after_create)  # removes the job first
            elif self.past_pending:
                self._after_pending_with(job)

        def not_created(exc: Exception) -> None:
            self.creating = self.creating_ahead = False
            if self.finish_after_create is not None:
                self._finish(*self.finish_after_create)
            elif self.past_pending:
                self._start_failed(exc)
            else:
                self.failed_ahead = lambda: self._start_failed(exc)

        self._infra(lambda: kind.create(spec), created, not_created)

    def _after_pending_with(self, job: RunJob) -> None:
        """Pending accepted and the infrastructure created ahead: record its pid and start it
        (unless the lease lapsed meanwhile: then it is removed and made again once the server
        says the run is still ours)."""
        if self.lease_holds or self.prepared is None:
            self._created(job)
            return
        self.job = None
        self._infra(job.after_exit, _ignore, _ignore)
        self._create(self.prepared)

    def _pending_failed(self, exc: Exception) -> None:
        if isinstance(exc, NotFoundError) and self.failed_ahead is not None:
            # The run is gone and its infrastructure could not be resolved either (a deployment
            # deleted with its runs fails both): that reason is the one a user can act on. Only
            # then: a Pending merely unanswered may be another agent's by now.
            self.failed_ahead()
            return
        if isinstance(exc, ApiError):
            log.warning("flow run %s: Pending refused: %s", self.run_id, exc)
        else:
            log.error("flow run %s: unreadable answer to Pending: %s", self.run_id, exc)
        self._finish("not-submitted", str(exc))

    def _pending_answered(self, result: OrchestrationResult) -> None:
        proposal = self.pending_proposal
        if result.status == "WAIT":
            delay = min(float(result.details.delay_seconds or 1.0), MAX_WAIT_SECONDS)
            self._set_phase(f"waiting {delay:.0f}s to propose Pending")
            self.ctx.clock.tell_later(delay, self.actor_ref, ProposePending())
            return
        if rescheduled(result):
            self._deferred(result)
            return
        if proposal is None or (
            not accepted_as(result, PENDING) and not self._pending_is_ours(result, proposal)
        ):
            log.debug("flow run %s not taken: %s", self.run_id, refusal(result))
            self._finish("not-submitted", refusal(result), contested=True)
            return
        self.past_pending = True
        self._observe_pending_latency(result)
        if self.stop_request is not None:
            self._end_before_start()
            return
        if self.failed_ahead is not None:
            self.failed_ahead()
        elif self.job is not None:
            self._after_pending_with(self.job)
        elif self.prepared is not None and not self.creating:
            self._create(self.prepared)
        elif not self.creating:
            self._set_phase("resolving infrastructure")  # `_get_ahead`'s answer goes on

    def _label_run(self) -> None:
        """On Prefect 3, the labels Prefect's workers give their runs (for the UI)."""
        profile = self.ctx.api.known_profile()
        if profile is None or not profile.has_run_labels:
            return
        pool = self.plan.pool if isinstance(self.plan, SubmitRun) else None  # its queue's
        labels = worker_labels(self.ctx.identity, pool)

        def unlabelled(exc: Exception) -> None:
            log.warning("flow run %s: could not label it with its worker: %s", self.run_id, exc)

        self._call(lambda: self.api.set_flow_run_labels(self.run_id, labels), _ignore, unlabelled)

    def _observe_pending_latency(self, result: OrchestrationResult) -> None:
        """From admission to the Pending state's timestamp on the server (the span Prefect's
        agent shows between its "Submitting" line and the state), the answer's trip back
        excluded; our own clock when the server sent no timestamp."""
        stamp = result.state.timestamp if result.state is not None else None
        if stamp is not None:
            waited = stamp.timestamp() - self.admitted_at
        else:
            waited = time.monotonic() - self.started
        self.ctx.metrics.pending_latency.observe(max(0.0, waited))

    def _deferred(self, result: OrchestrationResult) -> None:
        state = result.state
        when = state.state_details.scheduled_time if state is not None else None
        log.info(
            "flow run %s waits: %s (state %s); it stays Scheduled%s and a later poll takes it",
            self.run_id,
            result.details.reason or "the server rescheduled it",
            state.name if state is not None else "Scheduled",
            f" until {when.isoformat(timespec='seconds')}" if when is not None else "",
        )
        self._finish("deferred", result.details.reason or "rescheduled by the server", False, when)

    def _pending_is_ours(self, result: OrchestrationResult, proposal: StateProposal) -> bool:
        """A refused Pending may be our own earlier one, accepted behind a lost answer.

        The server checks for a repeated transition id before it checks Pending -> Pending,
        so a repeat of our accepted proposal is answered REJECT with our own Pending state;
        an ABORT always means another agent's state, and costs no extra read.
        """
        ours = proposal.state_details.transition_id
        state = result.state
        if state is None or state.type != PENDING or state.state_details.transition_id != ours:
            return False
        log.info(
            "flow run %s: the server had already accepted our Pending (transition %s)",
            self.run_id,
            ours,
        )
        return True

    def _resolve(self) -> Prepared:
        """Made in the call pool: the server's reads, then the kind and its pure `prepare`."""
        settings = self.ctx.settings
        source = read_run_source(
            self.api,
            self._flow_run(),
            api_url=settings.api_url,
            api_key=settings.api_key,
            worker_name=self.ctx.identity.name,
        )
        kind = kind_for(source, self.kinds)
        return Prepared(kind, kind.prepare(source))

    def _resolve_failed(self, exc: Exception) -> None:
        self._submission_failed(str(exc))

    def _create(self, prepared: Prepared) -> None:
        if self.stop_request is not None:
            self._end_before_start()
            return
        if self.job is not None or self.creating or self.finished:
            return
        if not self.lease_holds:
            # Cut off from the server for long enough that peers may recover the run: start
            # nothing until the server is back and says the run is still ours.
            if self.waiting is None:
                log.warning(
                    "flow run %s: not starting it while this agent cannot reach the server "
                    "(its heartbeat lease lapsed); a peer may recover it",
                    self.run_id,
                )
            self.waiting = prepared
            self._set_phase("waiting for the server before starting (lease lapsed)")
            return
        if self.waiting is not None:
            if not self.confirming:
                self.confirming = True
                self._confirm_then_start(prepared)
            return
        kind = prepared.kind
        if not isinstance(kind, _KindLike):
            raise TypeError(f"not a kind of infrastructure: {kind!r}")
        self.creating = True
        self._set_phase(f"creating its {kind.kind}")
        spec = prepared.spec
        self._infra(lambda: kind.create(spec), self._created, self._start_failed)

    def _created(self, job: RunJob) -> None:
        self.job = job
        if self.stop_request is not None:
            self._discard(job)
            return
        pid = job.infrastructure_pid
        if pid is None:  # known only once it runs (a process): start, then record
            self._start_job(job)
            return
        # Known before the start (a container): recorded first, so no window is left in
        # which the run's infrastructure runs and the server cannot say where.
        self._set_phase(f"recording {pid}")
        self._record_pid(pid, lambda: self._start_job(job))

    def _start_job(self, job: RunJob) -> None:
        if self.finished:
            return
        if self.stop_request is not None:
            self._discard(job)
            return
        self._set_phase("starting")
        self._infra(job.start, lambda _: self._started(job), self._start_failed)

    def _start_failed(self, exc: Exception) -> None:
        self.creating = False
        if self.job is not None:
            job, self.job = self.job, None
            self._infra(job.after_exit, _ignore, _ignore)  # what was created is removed
        self._submission_failed(str(exc))

    def _discard(self, job: RunJob) -> None:
        """Created but not started, and a stop came: remove what was made, start nothing."""
        self.creating = False
        self.job = None
        self._infra(job.after_exit, _ignore, _ignore)
        self._end_before_start()

    def _started(self, job: RunJob) -> None:
        self.creating = False
        self.started_here = True
        self.pid = pid = job.infrastructure_pid
        self._set_phase(f"running {job.label}")
        log.info("flow run %s started as %s (infrastructure pid %s)", self.run_id, job.label, pid)
        self._label_run()  # after the start: the pid's record and the start go first
        self._wait_in_helper(job)
        if pid is not None and not self.pid_recorded:
            self._record_pid(pid)
        if self.stop_request is not None:  # it came while the start was under way
            request, self.stop_request = self.stop_request, None
            self._stop_now(request)

    def _record_pid(self, pid: str, then: Callable[[], None] | None = None) -> None:
        """Tell the server where the run's infrastructure lives; cancellation after an agent
        restart depends on it. Retried until the server answers; the agent can cancel it
        meanwhile. `then` runs once the server answered, either way."""

        def not_recorded(exc: Exception) -> None:
            log.warning(
                "flow run %s: could not record infrastructure_pid %s: %s", self.run_id, pid, exc
            )
            if then is not None:
                then()

        def recorded(_: object) -> None:
            self.pid_recorded = True
            if then is not None:
                then()

        self._call(
            lambda: self.api.set_infrastructure_pid(self.run_id, pid),
            recorded,
            not_recorded,
            urgent=True,  # a start waits on it, as on a Pending
        )

    def _confirm_then_start(self, prepared: Prepared) -> None:
        """After a lapsed lease: start only if the server still holds our Pending."""
        ours = self.pending_proposal.state_details.transition_id if self.pending_proposal else None

        def read(run: FlowRun) -> None:
            state = run.state
            self.confirming = False
            if (
                state is not None
                and state.type == PENDING
                and (state.state_details.transition_id == ours)
            ):
                self.waiting = None
                self._create(prepared)
                return
            shown = state.type if state is not None else "unknown"
            log.warning(
                "flow run %s is no longer this agent's (now %s): not starting it",
                self.run_id,
                shown,
            )
            self._finish("not-submitted", f"no longer ours ({shown})")

        def unreadable(exc: Exception) -> None:
            self.confirming = False  # asked again in a second, through the inbox
            self.ctx.clock.tell_later(1.0, self.actor_ref, prepared)

        self._call(lambda: self.api.read_flow_run(self.run_id), read, unreadable)

    def _lease_changed(self, holds: bool) -> None:
        """Waiting to start: start once the lease holds again (and the server says the run is
        still ours). Holding infrastructure whose pid the server has not recorded: kill it as
        the lease lapses, before a peer hands the run back and it starts elsewhere too."""
        self.lease_holds = holds
        if self.finished:
            return
        if holds:
            if self.waiting is not None and self.job is None:
                self._create(self.waiting)
            return
        if self.pid is None or self.pid_recorded or not self.started_here:
            return
        self._relinquish(
            Relinquish(
                self.run_id,
                "this agent was cut off from the server before it could record the run's pid, "
                "so a peer will hand the run back",
            )
        )

    def _relinquish(self, request: Relinquish) -> None:
        """The run is not ours any more (see `Relinquish`): kill at once, report nothing."""
        if self.finished:
            return
        self.stop_request = request
        job = self.job
        if not request.kill and job is not None:
            # A peer adopted it: its infrastructure runs on, the peer's to watch and report.
            log.warning(
                "flow run %s: %s; no longer watching %s, left as it is",
                self.run_id,
                request.reason,
                job.label,
            )
            self._finish("relinquished", request.reason)
            return
        if job is None or self.pid is None:
            log.warning("flow run %s: %s; it will not start", self.run_id, request.reason)
            if self.creating:  # what is being made is removed as it comes back
                self._set_phase("stopping before start")
                return
            self._calls().forget()
            self._report(run_ending.before_start(request))
            return
        log.warning("flow run %s: %s; killing %s", self.run_id, request.reason, job.label)
        self._set_phase(f"killing {job.label}: not ours any more")
        self._infra(job.kill, _ignore, self._stop_failed)

    def _submission_failed(self, reason: str) -> None:
        log.error("flow run %s: submission failed: %s", self.run_id, reason)
        self._report(run_ending.Ending("failed", reason, failed(reason)))

    def _wait_in_helper(self, job: RunJob) -> None:
        """Wait for the end in a helper (a greenlet under gevent), clean up after it, and
        report both as one message."""
        ref = self.actor_ref
        run_id = self.run_id

        def wait() -> None:
            status = job.wait()
            try:
                cleaned = tuple(job.after_exit())
            except Exception as exc:  # noqa: BLE001 - the end is reported whatever the clean-up
                log.warning("flow run %s: cleaning up after its end failed: %s", run_id, exc)
                cleaned = ()
            tell_if_alive(ref, InfrastructureEnded(status.code, status.cause, cleaned))

        threading.Thread(target=wait, name=f"wait-{run_id}", daemon=True).start()

    # -- a run this agent does not hold ------------------------------------------------------------

    def _adopt(self) -> None:
        """Find the infrastructure of a run this supervisor did not start: read the run first."""
        self._set_phase("looking for the run's infrastructure")

        def unreadable(exc: Exception) -> None:
            log.error(
                "flow run %s: cannot read it to find its infrastructure: %s", self.run_id, exc
            )
            self._finish("not-submitted", str(exc))

        self._call(lambda: self.api.read_flow_run(self.run_id), self._adopt_read, unreadable)

    def _adopt_read(self, run: FlowRun) -> None:
        state = run.state.type if run.state is not None else None
        if state in run_ending.FINAL_TYPES:
            log.info("flow run %s already ended (%s); nothing to cancel", self.run_id, state)
            self._finish("not-submitted", f"already {state}")
            return
        plan = self.plan
        handed = plan.pid if isinstance(plan, LeftByFailedSupervisor | LeftByEarlierLife) else None
        pid = handed or run.infrastructure_pid
        if not pid:
            self._unreachable(
                "no infrastructure pid was recorded for it, so its infrastructure could not be "
                "found and cancellation cannot be guaranteed"
            )
            return
        kind = kind_of_pid(pid, self.kinds)
        if kind is None:
            self._unreachable(f"infrastructure_pid {pid!r} is of no kind this agent runs")
            return
        if kind.reach(pid) == "elsewhere":
            log.warning(
                "flow run %s runs at %s, out of this agent's reach (another host or daemon): "
                "leaving it to an agent there",
                self.run_id,
                pid,
            )
            self._finish("not-submitted", f"out of reach: {pid}")
            return
        if isinstance(plan, CancelUnheld) and outlives_agents(pid, self.kinds):
            # A daemon may be shared: a container another agent claimed is that agent's to
            # cancel (or, that agent lost, its peers' Recovery's), never this one's too.
            def claimed(found: tuple[State, AgentIdentity] | None) -> None:
                holder = found[1].name if found is not None else None
                if holder is None or holder == self.ctx.identity.name:
                    self._find(run, pid, kind, handed is not None)
                    return
                log.info(
                    "flow run %s: its container %s is agent %r's (its claim): leaving the "
                    "cancel to it",
                    self.run_id,
                    pid,
                    holder,
                )
                self._finish("not-submitted", f"held by agent {holder!r}")

            self._call(
                lambda: latest_claim(self.api.read_flow_run_states(self.run_id)),
                claimed,
                lambda exc: self._unreachable(f"its claim could not be read ({exc})"),
            )
            return
        self._find(run, pid, kind, handed is not None)

    def _find(self, run: FlowRun, pid: str, kind: Infrastructure, handed: bool) -> None:
        def found(job: RunJob | None) -> None:
            self._found(run, pid, job, handed)

        def unfindable(exc: Exception) -> None:
            self._unreachable(f"its infrastructure {pid} could not be looked for ({exc})")

        self._infra(lambda: kind.find(self.run_id, pid), found, unfindable)

    def _found(self, run: FlowRun, pid: str, job: RunJob | None, handed: bool) -> None:
        if self.finished:
            return
        if job is None:
            if handed:  # it ended before the handover completed
                self._ended_unwatched()
            else:
                self._unreachable(
                    f"its infrastructure {pid} is gone (that pid is free or belongs to "
                    "another process, which was left alone)"
                )
            return
        self.job = job
        self.pid = job.infrastructure_pid or pid
        if run.infrastructure_pid != self.pid:
            self._record_pid(self.pid)
        self._set_phase(f"running {job.label} (watched by pid)")
        log.info("flow run %s: found its infrastructure %s", self.run_id, self.pid)
        self._wait_in_helper(job)
        if self.stop_request is not None:
            request, self.stop_request = self.stop_request, None
            self._stop_now(request)

    def _unreachable(self, why: str) -> None:
        if isinstance(self.plan, LeftByEarlierLife) and self.stop_request is None:
            self._ended_unwatched()  # gone while no agent watched: tell the truth
            return
        ending = run_ending.unreachable_process(why, self.stop_request)
        log.warning(
            "flow run %s: %s%s",
            self.run_id,
            why,
            "; marking it Cancelled" if ending.report is not None else "",
        )
        self._report(ending)

    # -- the end of a run --------------------------------------------------------------------------

    def _on_exit(self, ended: InfrastructureEnded) -> None:
        if self.finished or self.reporting:
            return
        code = ended.code
        shown = "an unknown code" if code is None else f"code {code}"
        what = self.job.label if self.job is not None else "its infrastructure"
        cause = f" ({ended.cause})" if ended.cause else ""
        log.info("flow run %s: %s exited with %s%s", self.run_id, what, shown, cause)
        for done in ended.cleaned:
            log.info("flow run %s: after its end, %s", self.run_id, done)
        ending = run_ending.after_exit(code, self.stop_request, ended.cause)
        if ending.outcome == "exited" and not self.started_here and self.stop_request is None:
            # Exit 0 of what this supervisor found (after a restart, from a lost peer): the
            # engine reported the run's end, or nobody did; the server's state says which.
            ending = run_ending.Ending("crashed", "exit code 0", ask_server=True)
        if ending.ask_server:
            self._ended_unwatched(ended.cause, code)
            return
        if ending.outcome == "crashed" and ending.report is not None:
            log.warning("flow run %s crashed: %s", self.run_id, ending.report.message)
        self._report(ending)

    def _ended_unwatched(self, cause: str | None = None, code: int | None = None) -> None:
        """Infrastructure watched by pid ended: its exit code is unknowable (or said nothing
        of the run's end), so the server's state decides (see `run_ending.unknown_exit`); the
        kind's `cause` when it knows one (the daemon went away)."""
        self.reporting = True
        cause = cause or self._cause_of_unknown_exit()

        def decide(run: FlowRun) -> None:
            state = run.state.type if run.state is not None else None
            self._report_unknown_exit(state, cause, code)

        def unreadable(exc: Exception) -> None:
            self._report_unknown_exit(None, cause, code)

        self._call(lambda: self.api.read_flow_run(self.run_id), decide, unreadable)

    def _report_unknown_exit(
        self, state_type: str | None, cause: str, code: int | None = None
    ) -> None:
        ending = run_ending.unknown_exit(state_type, cause, code)
        if ending.report is not None:
            log.warning("flow run %s: %s", self.run_id, ending.report.message)
        self.reporting = False
        self._report(ending)

    def _cause_of_unknown_exit(self) -> str:
        if isinstance(self.plan, LeftByFailedSupervisor):
            return f"its supervisor in the agent had failed ({self.plan.failure})"
        if isinstance(self.plan, LeftByEarlierLife) and self.plan.peer is not None:
            return f"agent {self.plan.peer!r}, which started it, was lost"
        if isinstance(self.plan, LeftByEarlierLife):
            return "the agent that started it had stopped unexpectedly and lost it"
        if self.started_here:
            return "something else in the agent's process collected its exit status"
        return "the agent was not watching it"

    def _on_stop_request(self, request: Cancel | Interrupt) -> None:
        if self.finished:
            return
        if self.stop_request is not None and self.job is not None:
            log.debug("flow run %s: already stopping (%s)", self.run_id, self.phase)
            return
        self.stop_request = request
        if self.job is None or self.pid is None:
            # Not started yet: the next step sees the request and starts nothing.
            log.info(
                "flow run %s: %s before its infrastructure started; it will not start",
                self.run_id,
                _what(request),
            )
            self._set_phase("stopping before start")
            return
        self._stop_now(request)

    def _stop_now(self, request: Cancel | Interrupt | Relinquish) -> None:
        """Stop the running infrastructure: `terminate`, the grace on the agent's clock, then
        `grace_over`; a run not ours any more is killed at once."""
        self.stop_request = request
        job = self.job
        if job is None:
            return
        if isinstance(request, Relinquish):
            self._relinquish(request)
            return
        grace = (
            request.grace_seconds
            if isinstance(request, Interrupt)
            else self.ctx.settings.cancel_grace_seconds
        )
        self._set_phase(f"stopping {job.label}")
        log.info(
            "flow run %s: %s; terminating %s (killed after %.0fs)",
            self.run_id,
            _what(request),
            job.label,
            grace,
        )
        self._infra(job.terminate, _ignore, self._stop_failed)
        self.ctx.clock.tell_later(grace, self.actor_ref, GraceExpired())

    def _on_grace_expired(self) -> None:
        job = self.job
        if job is None or self.finished:
            return

        def killed(outlived: bool) -> None:
            if outlived:
                log.warning(
                    "flow run %s: %s outlived the grace period; killed it", self.run_id, job.label
                )

        self._infra(job.grace_over, killed, self._stop_failed)

    def _stop_failed(self, exc: Exception) -> None:
        log.error("flow run %s: could not stop its infrastructure: %s", self.run_id, exc)

    def _end_before_start(self) -> None:
        """A stop request arrived before the infrastructure started: start nothing."""
        if self.stop_request is not None and not self.reporting:
            self._report(run_ending.before_start(self.stop_request))

    def _report(self, ending: run_ending.Ending) -> None:
        """Tell the server how the run ended (retried until it answers: an outcome is never
        dropped), then finish. A refusal is logged, not retried: the server knows better."""
        proposal = ending.report
        if proposal is None:
            self._finish(ending.outcome, ending.detail)
            return
        self.reporting = True
        self._set_phase(f"reporting {proposal.name}")

        def answered(result: OrchestrationResult) -> None:
            if result.status == "ACCEPT":
                log.info("flow run %s: reported %s", self.run_id, proposal.name)
            else:
                log.info(
                    "flow run %s: %s not recorded: %s",
                    self.run_id,
                    proposal.name,
                    refusal(result),
                )
            self._finish(ending.outcome, ending.detail)

        def refused(exc: Exception) -> None:
            log.error("flow run %s: %s was not recorded: %s", self.run_id, proposal.name, exc)
            self._finish(ending.outcome, ending.detail)

        self._call(
            lambda: self.api.set_state(self.run_id, proposal, force=ending.force),
            answered,
            refused,
        )


def _only_server_errors(failed: Callable[[Exception], None]) -> Callable[[Exception], None]:
    """What the server (or the run's own definition) said is the continuation's to handle;
    any other exception is a bug, raised in the inbox so that the supervisor fails and
    `on_failure` hands the run on (its infrastructure to a replacement, or the run Failed)."""

    def handle(exc: Exception) -> None:
        if not isinstance(exc, ApiError | ApiDecodeError | SubmissionError):
            raise exc
        failed(exc)

    return handle


def _ignore(_: object) -> None:
    return None


@runtime_checkable
class _KindLike(Infrastructure, Protocol):
    """What `Prepared.kind` must be (a message holds it as an object)."""


def _what(request: Cancel | Interrupt) -> str:
    if isinstance(request, Cancel):
        return f"cancel requested ({request.reason})"
    return "the agent is stopping"
