"""RunSupervisor: owns one flow run from the moment the Dispatcher admits it until it ends.

The life of a run, one message at a time (so a Cancel is handled between any two steps):

    ProposePending         the server's answer is the lock between agents; anything but an
                           accepted Pending ends the supervisor quietly: another agent has it.
    ResolveInfrastructure  deployment -> infrastructure block -> overrides -> argv and
                           environment; any error fails the run ("Submission failed." + reason).
    StartProcess           the process starts in its own process group; its pid is reported.
                           A Cancel that arrived before this step means it never starts.
    ProcessExited          sent by a helper that waits on the process, so the inbox stays free.
                           0: the engine reported the run's state itself; non-zero: Crashed.

A supervisor can also be started for a run this agent does not hold (the agent restarted since
it started it): `AdoptRun` finds the process by the recorded `hostname:pid`, checks that it
really is that run's process, and then watches it like its own.

Who may stop a run: the Dispatcher, with Cancel (the server or a host service asked) or
Interrupt (the agent is stopping), and nobody else. A supervisor always ends by telling the
Dispatcher `RunFinished`, which frees the run's slot.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from types import TracebackType
from typing import Any, Protocol

import pykka

from actors.edges.prefect_api import ApiError, NotFoundError
from actors.edges.processes import (
    HOSTNAME,
    SIGKILL,
    SIGTERM,
    AdoptedProcess,
    RunProcess,
    belongs_to_run,
    group_members,
    infrastructure_pid,
    parse_infrastructure_pid,
)
from actors.rules.exit_codes import describe_exit
from actors.rules.infrastructure import ProcessSpec, SubmissionError, process_spec
from actors.rules.proposals import (
    accepted_as,
    cancelled,
    crashed,
    failed,
    pending,
    refusal,
    rescheduled,
    scheduled_now,
)
from actors.runtime.context import AgentContext
from actors.runtime.refs import tell_if_alive
from messages.internal.dispatch import Cancel, RunStatus
from messages.internal.lifecycle import Interrupt, Rehome, SupervisorFailed
from messages.internal.run_steps import (
    AdoptRun,
    CheckProcess,
    GraceExpired,
    ProcessExited,
    ProposePending,
    RecordPid,
    ReportAgain,
    ResolveInfrastructure,
    StartProcess,
)
from messages.user.events import RunFinished, RunOutcome
from messages.wire.prefect import (
    CANCELLED,
    COMPLETED,
    CRASHED,
    FAILED,
    PENDING,
    ApiDecodeError,
    BlockDocument,
    Deployment,
    FlowRun,
    OrchestrationResult,
    StateProposal,
)

log = logging.getLogger("prefect_actor_agent.run_supervisor")

MAX_WAIT_SECONDS = 30.0
MAX_REPORT_DELAY = 10.0
ADOPTED_CHECK_SECONDS = 0.25
FINAL_TYPES = frozenset({COMPLETED, FAILED, CRASHED, CANCELLED})


class SupervisedProcess(Protocol):
    pid: int

    @property
    def running(self) -> bool: ...

    def signal_group(self, signum: int) -> bool: ...


class RunSupervisor(pykka.ThreadingActor):
    """One flow run's owner: submission, process, exit, cancellation (temporary child)."""

    def __init__(  # noqa: PLR0917 - pykka passes constructor arguments positionally
        self,
        ctx: AgentContext,
        run_id: str,
        dispatcher: pykka.ActorRef[Any],
        flow_run: FlowRun | None = None,
        cancel: Cancel | None = None,
        inherited_failure: str | None = None,
        known_pid: int | None = None,
        lost_by_earlier_agent: bool = False,
    ) -> None:
        """Supervise `flow_run` from submission on; or, without it, find the run's process and
        watch it: to carry out `cancel` (a run this agent no longer holds), or to take over
        the process `known_pid` from a supervisor that failed with `inherited_failure`."""
        super().__init__()
        self.ctx = ctx
        self.run_id = run_id
        self.flow_run = flow_run
        self.dispatcher = dispatcher
        self.phase = "admitted"
        self.since = time.time()
        self.spec: ProcessSpec | None = None
        self.process: SupervisedProcess | None = None
        self.stop_request: Cancel | Interrupt | None = cancel  # why the run is ending early
        self.inherited_failure = inherited_failure
        self.pending_report: tuple[StateProposal, tuple[RunOutcome, str], bool] | None = None
        self.report_attempts = 0
        self.pending_proposal: StateProposal | None = None
        self.past_pending = flow_run is None  # adopted runs never propose Pending
        self.known_pid = known_pid
        self.lost_by_earlier_agent = lost_by_earlier_agent
        self.finished = False

    # -- lifecycle ---------------------------------------------------------------------------------

    def on_start(self) -> None:
        self._set_phase("admitted" if self.flow_run is not None else "looking for its process")
        self.actor_ref.tell(ProposePending() if self.flow_run is not None else AdoptRun())

    def on_receive(self, message: Any) -> Any:
        match message:
            case ProposePending():
                self._propose_pending()
            case ResolveInfrastructure():
                self._resolve_infrastructure()
            case StartProcess():
                self._start_process()
            case AdoptRun():
                self._adopt()
            case CheckProcess():
                self._check_adopted()
            case ProcessExited(pid=pid, returncode=code):
                self._on_exit(pid, code)
            case Cancel() | Interrupt():
                self._on_stop_request(message)
            case GraceExpired(pid=pid):
                self._on_grace_expired(pid)
            case ReportAgain():
                self._report_again()
            case RecordPid(pid=pid):
                self._record_pid(pid)
            case Rehome(dispatcher=ref, agent_id=agent_id):
                return self._rehome(ref, agent_id)
            case _:
                log.warning("flow run %s: unexpected message %r", self.run_id, message)
        return None

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """A bug in this supervisor must neither orphan the process nor leak the slot.

        A running process is handed to a replacement supervisor (through the Dispatcher) that
        watches it by pid; a run not started yet is failed with the reason.
        """
        reason = f"{exception_type.__name__ if exception_type else 'error'}: {exception_value}"
        log.error("flow run %s: its supervisor failed: %s", self.run_id, reason)
        if self.finished:
            return
        process = self.process
        if process is not None and process.running:
            self.finished = True
            tell_if_alive(self.dispatcher, SupervisorFailed(self.run_id, process.pid, reason))
            return
        if process is None and self.flow_run is not None:
            self._report(
                failed(f"the agent failed while submitting it ({reason})"),
                outcome=("failed", f"supervisor failed: {reason}"),
            )
        else:
            self._finish("crashed", f"supervisor failed: {reason}")

    def _set_phase(self, phase: str) -> None:
        self.phase = phase
        self.since = time.time()
        pid = self.process.pid if self.process is not None else None
        status = RunStatus(self.run_id, phase, self.since, pid, self.past_pending)
        tell_if_alive(self.dispatcher, status)

    def _rehome(self, dispatcher: object, agent_id: int) -> RunStatus | None:
        if agent_id != id(self.ctx) or self.finished or not isinstance(dispatcher, pykka.ActorRef):
            return None
        self.dispatcher = dispatcher
        pid = self.process.pid if self.process is not None else None
        return RunStatus(self.run_id, self.phase, self.since, pid, self.past_pending)

    def _finish(self, outcome: RunOutcome, detail: str = "") -> None:
        if self.finished:
            return
        self.finished = True
        self._set_phase(f"finished ({outcome})")
        tell_if_alive(self.dispatcher, RunFinished(self.run_id, outcome, detail))
        self.stop()

    # -- submission --------------------------------------------------------------------------------

    def _propose_pending(self) -> None:
        if self.stop_request is not None:
            self._end_before_start()
            return
        self._set_phase("proposing Pending")
        # One proposal, one transition id, however often it is sent: if a lost answer hid an
        # acceptance, the server recognises the repeat and answers with our own Pending.
        proposal = self.pending_proposal = self.pending_proposal or pending()
        try:
            result = self.ctx.api.set_state(self.run_id, proposal)
        except ApiError as exc:
            if not exc.transient:
                log.warning("flow run %s: Pending refused: %s", self.run_id, exc)
                self._finish("not-submitted", str(exc))
                return
            self._retry_later("proposing Pending (the same proposal)", ProposePending(), exc)
            return
        except ApiDecodeError as exc:
            log.error("flow run %s: unreadable answer to Pending: %s", self.run_id, exc)
            self._finish("not-submitted", str(exc))
            return
        if result.status == "WAIT":
            delay = min(float(result.details.delay_seconds or 1.0), MAX_WAIT_SECONDS)
            self._set_phase(f"waiting {delay:.0f}s to propose Pending")
            self.ctx.clock.tell_later(delay, self.actor_ref, ProposePending())
            return
        if rescheduled(result):
            self._deferred(result)
            return
        if not accepted_as(result, PENDING) and not self._pending_is_ours(result, proposal):
            log.debug("flow run %s not taken: %s", self.run_id, refusal(result))
            self._finish("not-submitted", refusal(result))
            return
        self.report_attempts = 0
        self.past_pending = True
        self.actor_ref.tell(ResolveInfrastructure())

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
        self._finish("deferred", result.details.reason or "rescheduled by the server")

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

    def _resolve_infrastructure(self) -> None:
        if self.stop_request is not None:
            self._end_before_start()
            return
        self._set_phase("resolving infrastructure")
        try:
            self.spec = self._resolve()
        except (SubmissionError, ApiError, ApiDecodeError) as exc:
            self._submission_failed(str(exc))
            return
        self.actor_ref.tell(StartProcess())

    def _start_process(self) -> None:
        if self.stop_request is not None:
            self._end_before_start()
            return
        spec = self.spec
        if spec is None:
            raise RuntimeError("StartProcess before the infrastructure was resolved")
        self._set_phase("starting process")
        try:
            process = RunProcess(spec)
        except SubmissionError as exc:
            self._submission_failed(str(exc))
            return
        self.process = process
        self._set_phase(f"running pid {process.pid}")
        log.info(
            "flow run %s started as pid %d: %s", self.run_id, process.pid, " ".join(spec.command)
        )
        self._wait_in_helper(process)
        self._record_pid(process.pid)

    def _record_pid(self, pid: int) -> None:
        """Tell the server where the run's process lives; retried while the run lasts, since
        cancellation after an agent restart depends on it."""
        if self.finished or self.process is None or self.process.pid != pid:
            return
        try:
            self.ctx.api.set_infrastructure_pid(self.run_id, infrastructure_pid(pid))
        except ApiError as exc:
            log.warning(
                "flow run %s: could not record infrastructure_pid %s yet (retrying in %.0fs; "
                "this agent can cancel it meanwhile): %s",
                self.run_id,
                infrastructure_pid(pid),
                MAX_REPORT_DELAY,
                exc,
            )
            self.ctx.clock.tell_later(MAX_REPORT_DELAY, self.actor_ref, RecordPid(pid))

    def _submission_failed(self, reason: str) -> None:
        log.error("flow run %s: submission failed: %s", self.run_id, reason)
        self._report(failed(reason), outcome=("failed", reason))

    def _resolve(self) -> ProcessSpec:
        if self.flow_run is None:
            raise RuntimeError("an adopted run is never started again")
        deployment: Deployment | None = None
        block: BlockDocument | None = None
        if self.flow_run.deployment_id:
            try:
                deployment = self.ctx.api.read_deployment(self.flow_run.deployment_id)
            except NotFoundError:
                raise SubmissionError(
                    f"deployment {self.flow_run.deployment_id} no longer exists"
                ) from None
        if deployment is not None and deployment.infrastructure_document_id:
            try:
                block = self.ctx.api.read_block_document(deployment.infrastructure_document_id)
            except NotFoundError:
                raise SubmissionError(
                    f"infrastructure block document {deployment.infrastructure_document_id} "
                    f"of deployment {deployment.name!r} no longer exists"
                ) from None
        settings = self.ctx.settings
        job_variables = block is None and self.ctx.api.server_profile().job_variables_style
        pool = None
        if job_variables and deployment is not None and deployment.work_pool_name:
            pool = self.ctx.api.read_work_pool(deployment.work_pool_name)
        return process_spec(
            self.flow_run,
            deployment,
            block,
            api_url=settings.api_url,
            api_key=settings.api_key,
            job_variables=job_variables,
            pool=pool,
        )

    def _wait_in_helper(self, process: RunProcess) -> None:
        """Wait for the exit in a helper (a greenlet under gevent) and report it as a message."""
        ref = self.actor_ref

        def wait() -> None:
            tell_if_alive(ref, ProcessExited(process.pid, process.wait()))

        threading.Thread(target=wait, name=f"wait-{process.pid}", daemon=True).start()

    # -- a run this agent does not hold ------------------------------------------------------------

    def _adopt(self) -> None:
        """Find the process of a run started by an earlier life of this agent."""
        self._set_phase("looking for the run's process")
        try:
            run = self.ctx.api.read_flow_run(self.run_id)
        except (ApiError, ApiDecodeError) as exc:
            log.error("flow run %s: cannot read it to find its process: %s", self.run_id, exc)
            self._finish("not-submitted", str(exc))
            return
        state = run.state.type if run.state is not None else "unknown"
        if state in FINAL_TYPES:
            log.info("flow run %s already ended (%s); nothing to cancel", self.run_id, state)
            self._finish("not-submitted", f"already {state}")
            return
        pid = self._known_pid(run) if self.known_pid is not None else self._verified_pid(run)
        if pid is None:
            return
        self.process = AdoptedProcess(pid)
        self._set_phase(f"running pid {pid} (watched by pid)")
        log.info("flow run %s: found its process %d on this host", self.run_id, pid)
        self.ctx.clock.tell_later(ADOPTED_CHECK_SECONDS, self.actor_ref, CheckProcess())
        if self.stop_request is not None:
            request, self.stop_request = self.stop_request, None
            self._on_stop_request(request)

    def _known_pid(self, run: FlowRun) -> int | None:
        """The pid handed over by a failed supervisor, recorded on the server if it was not."""
        pid = self.known_pid
        if pid is None or not belongs_to_run(pid, self.run_id):
            self._adopted_process_ended()  # it ended before the handover completed
            return None
        if run.infrastructure_pid != infrastructure_pid(pid):
            try:
                self.ctx.api.set_infrastructure_pid(self.run_id, infrastructure_pid(pid))
            except (ApiError, ApiDecodeError) as exc:
                log.warning("flow run %s: could not record its pid %d: %s", self.run_id, pid, exc)
        return pid

    def _verified_pid(self, run: FlowRun) -> int | None:
        """The run's pid on this host, or None after dealing with a run that has none."""
        if not run.infrastructure_pid:
            self._mark_cancelled_without_process(
                "no infrastructure pid was recorded for it, so its process could not be found "
                "and cancellation cannot be guaranteed"
            )
            return None
        try:
            host, pid = parse_infrastructure_pid(run.infrastructure_pid)
        except ValueError as exc:
            self._mark_cancelled_without_process(str(exc))
            return None
        if host != HOSTNAME:
            log.warning(
                "flow run %s runs on host %r, not on this one (%r): leaving it to an agent there",
                self.run_id,
                host,
                HOSTNAME,
            )
            self._finish("not-submitted", f"process on host {host}")
            return None
        if not belongs_to_run(pid, self.run_id):
            self._mark_cancelled_without_process(
                f"its process {pid} is gone (that pid is free or belongs to another process, "
                "which was left alone)"
            )
            return None
        return pid

    def _mark_cancelled_without_process(self, why: str) -> None:
        if isinstance(self.stop_request, Cancel):
            log.warning("flow run %s: %s; marking it Cancelled", self.run_id, why)
            self._report(
                cancelled(f"Cancelled by the agent, but {why}."),
                force=True,
                outcome=("cancelled", why),
            )
        elif self.lost_by_earlier_agent:
            self._adopted_process_ended()  # gone while no agent watched: tell the truth
        else:
            log.warning("flow run %s: %s", self.run_id, why)
            self._finish("not-submitted", why)

    def _check_adopted(self) -> None:
        process = self.process
        if process is None or self.finished:
            return
        if process.running:
            self.ctx.clock.tell_later(ADOPTED_CHECK_SECONDS, self.actor_ref, CheckProcess())
        else:
            self.actor_ref.tell(ProcessExited(process.pid, None))

    # -- the end of a run --------------------------------------------------------------------------

    def _on_exit(self, pid: int, code: int | None) -> None:
        shown = "an unknown code" if code is None else f"code {code}"
        log.info("flow run %s: process %d exited with %s", self.run_id, pid, shown)
        request = self.stop_request
        if request is not None:
            leftovers = group_members(pid)
            if leftovers:
                log.info(
                    "flow run %s: killing %d process(es) left in its group",
                    self.run_id,
                    len(leftovers),
                )
                if self.process is not None:
                    self.process.signal_group(SIGKILL)
        if isinstance(request, Cancel):
            how = "killed after the grace period" if code == -SIGKILL else "terminated"
            self._report(
                cancelled(f"Cancelled by the agent ({request.reason}); its process was {how}."),
                force=True,
                outcome=("cancelled", f"exit {shown}"),
            )
        elif isinstance(request, Interrupt):
            self._report(
                crashed(
                    "The agent stopped while this run was in flight; its process was "
                    f"terminated (exit {shown})."
                ),
                outcome=("interrupted", f"exit {shown}"),
            )
        elif code == 0:
            self._finish("exited", "exit code 0")
        elif code is None:
            self._adopted_process_ended()
        else:
            message = describe_exit(code)
            log.warning("flow run %s crashed: %s", self.run_id, message)
            self._report(crashed(message), outcome=("crashed", f"exit code {code}"))

    def _adopted_process_ended(self) -> None:
        """A process watched by pid ended; its exit code is unknowable, the server's state is
        not: if the engine reported a final state, that is the truth; otherwise Crashed."""
        try:
            run = self.ctx.api.read_flow_run(self.run_id)
            state = run.state.type if run.state is not None else "unknown"
        except (ApiError, ApiDecodeError) as exc:
            state = f"unknown ({exc})"
        if state in FINAL_TYPES:
            self._finish("exited", f"ended {state}")
            return
        if self.inherited_failure:
            cause = f"its supervisor in the agent had failed ({self.inherited_failure})"
        elif self.lost_by_earlier_agent:
            cause = "the agent that started it had stopped unexpectedly and lost it"
        elif isinstance(self.process, RunProcess):
            cause = "something else in the agent's process collected its exit status"
        else:
            cause = "the agent was not watching it"
        message = (
            f"The run's process ended without reporting a final state; {cause}, so its exit "
            "code is unknown."
        )
        log.warning("flow run %s: %s", self.run_id, message)
        self._report(crashed(message), outcome=("crashed", "exit code unknown"))

    def _on_stop_request(self, request: Cancel | Interrupt) -> None:
        if self.finished:
            return
        if self.stop_request is not None and self.process is not None:
            log.debug("flow run %s: already stopping (%s)", self.run_id, self.phase)
            return
        self.stop_request = request
        process = self.process
        if process is None:
            # Not started yet: the next step sees the request and starts nothing.
            log.info(
                "flow run %s: %s before its process started; it will not start",
                self.run_id,
                _what(request),
            )
            self._set_phase("stopping before start")
            return
        grace = (
            request.grace_seconds
            if isinstance(request, Interrupt)
            else self.ctx.settings.cancel_grace_seconds
        )
        self._set_phase(f"stopping pid {process.pid}")
        log.info(
            "flow run %s: %s; SIGTERM to process group %d (SIGKILL after %.0fs)",
            self.run_id,
            _what(request),
            process.pid,
            grace,
        )
        process.signal_group(SIGTERM)
        self.ctx.clock.tell_later(grace, self.actor_ref, GraceExpired(process.pid))

    def _on_grace_expired(self, pid: int) -> None:
        if self.process is not None and self.process.running:
            log.warning(
                "flow run %s: process group %d outlived the grace period; sending SIGKILL",
                self.run_id,
                pid,
            )
            self.process.signal_group(SIGKILL)

    def _end_before_start(self) -> None:
        """A stop request arrived before the process started: start nothing."""
        request = self.stop_request
        if isinstance(request, Cancel):
            self._report(
                cancelled(f"Cancelled before its process started ({request.reason})."),
                force=True,
                outcome=("cancelled", "before start"),
            )
        else:
            self._report(
                scheduled_now(
                    "The agent stopped before starting this run; handed back to its queue."
                ),
                force=True,
                outcome=("interrupted", "before start"),
            )

    def _report(
        self, proposal: StateProposal, outcome: tuple[RunOutcome, str], force: bool = False
    ) -> None:
        """Report how the run ended, then finish. While the server cannot be reached the
        report is kept and tried again with backoff: an outcome is never dropped. A refusal
        is logged, not retried: the server already knows better (e.g. the run is final)."""
        self.pending_report = (proposal, outcome, force)
        try:
            result = self.ctx.api.set_state(self.run_id, proposal, force=force)
        except ApiError as exc:
            if not exc.transient:
                log.error("flow run %s: %s was refused: %s", self.run_id, proposal.name, exc)
                self._finish(*outcome)
                return
            self._retry_later(f"reporting {proposal.name}", ReportAgain(), exc)
            return
        except ApiDecodeError as exc:
            log.error(
                "flow run %s: the answer to %s was unreadable: %s", self.run_id, proposal.name, exc
            )
            self._finish(*outcome)
            return
        if result.status == "ACCEPT":
            log.info("flow run %s: reported %s", self.run_id, proposal.name)
        else:
            log.info(
                "flow run %s: %s not recorded: %s", self.run_id, proposal.name, refusal(result)
            )
        self._finish(*outcome)

    def _retry_later(self, doing: str, step: object, exc: ApiError) -> None:
        """The server cannot be reached: do `step` again later (backoff with jitter)."""
        self.report_attempts += 1
        delay = _backoff(self.report_attempts)
        self._set_phase(f"{doing}: server unreachable, retry in {delay:.0f}s")
        log.warning(
            "flow run %s: %s failed, trying again in %.0fs: %s", self.run_id, doing, delay, exc
        )
        self.ctx.clock.tell_later(delay, self.actor_ref, step)

    def _report_again(self) -> None:
        if self.pending_report is not None and not self.finished:
            proposal, outcome, force = self.pending_report
            self._report(proposal, outcome, force)


def _backoff(attempt: int) -> float:
    """Retry delay for reports: exponential, capped, with jitter so that the runs that ended
    during an outage do not all report in the same instant when the server comes back."""
    return random.uniform(0.5, 1.0) * min(2.0**attempt, MAX_REPORT_DELAY)  # noqa: S311


def _what(request: Cancel | Interrupt) -> str:
    if isinstance(request, Cancel):
        return f"cancel requested ({request.reason})"
    return "the agent is stopping"
