"""RunSupervisor: owns one flow run from the moment the Dispatcher admits it until it ends.

The life of a run, one message at a time (so a Cancel is handled between any two steps):

    ProposePending   the server's answer is the lock between agents; anything but an accepted
                     Pending ends the supervisor quietly: another agent has the run.
    StartProcess     deployment -> infrastructure block -> overrides -> argv and environment;
                     any error here fails the run ("Submission failed." and the reason).
                     The process starts in its own process group; its pid is reported.
    ProcessExited    sent by a helper that waits on the process, so the inbox stays free.
                     0: the engine reported the run's state itself; non-zero: Crashed.

Who may stop it: the Dispatcher (Cancel, Interrupt when the agent stops) and nobody else. It
always ends by telling the Dispatcher `RunFinished`, which frees the run's slot.
"""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType
from typing import Any

import pykka

from actors.api_client import ApiError, NotFoundError
from actors.context import AgentContext
from actors.exit_codes import describe_exit
from actors.infrastructure import ProcessSpec, SubmissionError, process_spec
from actors.process_infrastructure import SIGKILL, SIGTERM, RunProcess, infrastructure_pid
from actors.proposals import (
    accepted_as,
    cancelled,
    crashed,
    failed,
    pending,
    refusal,
    scheduled_now,
)
from actors.refs import tell_if_alive
from messages.api import PENDING, ApiDecodeError, BlockDocument, Deployment, FlowRun, StateProposal
from messages.control import Interrupt
from messages.runs import Cancel, RunFinished, RunOutcome
from messages.supervision import GraceExpired, ProcessExited, ProposePending, StartProcess

log = logging.getLogger("prefect_actor_agent.run_supervisor")

MAX_WAIT_SECONDS = 30.0


class RunSupervisor(pykka.ThreadingActor):
    """One flow run's owner: submission, process, exit, cancellation (temporary child)."""

    def __init__(
        self, ctx: AgentContext, flow_run: FlowRun, dispatcher: pykka.ActorRef[Any]
    ) -> None:
        super().__init__()
        self.ctx = ctx
        self.flow_run = flow_run
        self.run_id = flow_run.id
        self.dispatcher = dispatcher
        self.phase = "admitted"
        self.since = time.time()
        self.process: RunProcess | None = None
        self.stop_request: Cancel | Interrupt | None = None  # why we are ending the run early
        self.finished = False

    # -- lifecycle ---------------------------------------------------------------------------------

    def on_start(self) -> None:
        self.actor_ref.tell(ProposePending())

    def on_receive(self, message: Any) -> Any:
        match message:
            case ProposePending():
                self._propose_pending()
            case StartProcess():
                self._start_process()
            case ProcessExited(pid=pid, returncode=code):
                self._on_exit(pid, code)
            case Cancel() | Interrupt():
                self._on_stop_request(message)
            case GraceExpired(pid=pid):
                self._on_grace_expired(pid)
            case _:
                log.warning("flow run %s: unexpected message %r", self.run_id, message)
        return None

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """A bug in this supervisor must not orphan the process or leak the slot."""
        reason = f"{exception_type.__name__ if exception_type else 'error'}: {exception_value}"
        if self.process is not None and self.process.returncode is None:
            self.process.signal_group(SIGKILL)
            self._propose(
                crashed(
                    f"The agent's supervisor for this run failed ({reason}); "
                    "its process was killed."
                )
            )
        self._finish("crashed", f"supervisor failed: {reason}")

    def _set_phase(self, phase: str) -> None:
        self.phase = phase
        self.since = time.time()

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
        try:
            result = self.ctx.api.set_state(self.run_id, pending())
        except (ApiError, ApiDecodeError) as exc:
            log.warning(
                "flow run %s: could not propose Pending, leaving it for a later poll: %s",
                self.run_id,
                exc,
            )
            self._finish("not-submitted", str(exc))
            return
        if result.status == "WAIT":
            delay = min(float(result.details.delay_seconds or 1.0), MAX_WAIT_SECONDS)
            self._set_phase(f"waiting {delay:.0f}s to propose Pending")
            self.ctx.clock.tell_later(delay, self.actor_ref, ProposePending())
            return
        if not accepted_as(result, PENDING):
            log.debug("flow run %s not taken: %s", self.run_id, refusal(result))
            self._finish("not-submitted", refusal(result))
            return
        self.actor_ref.tell(StartProcess())

    def _start_process(self) -> None:
        if self.stop_request is not None:
            self._end_before_start()
            return
        self._set_phase("starting process")
        try:
            spec = self._resolve()
            process = RunProcess(spec)
        except (SubmissionError, ApiError, ApiDecodeError) as exc:
            reason = str(exc)
            log.error("flow run %s: submission failed: %s", self.run_id, reason)
            self._propose(failed(reason))
            self._finish("failed", reason)
            return
        self.process = process
        pid_text = infrastructure_pid(process.pid)
        self._set_phase(f"running pid {process.pid}")
        log.info("flow run %s started as pid %d: %s", self.run_id, process.pid, _show(spec))
        self._watch(process)
        try:
            self.ctx.api.set_infrastructure_pid(self.run_id, pid_text)
        except (ApiError, ApiDecodeError) as exc:
            log.warning(
                "flow run %s: could not record infrastructure_pid %s (the run can still "
                "be cancelled through this agent): %s",
                self.run_id,
                pid_text,
                exc,
            )

    def _resolve(self) -> ProcessSpec:
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
        return process_spec(
            self.flow_run, deployment, block, api_url=settings.api_url, api_key=settings.api_key
        )

    def _watch(self, process: RunProcess) -> None:
        """Wait for the exit in a helper (a greenlet under gevent) and report it as a message."""
        ref = self.actor_ref

        def wait() -> None:
            tell_if_alive(ref, ProcessExited(process.pid, process.wait()))

        threading.Thread(target=wait, name=f"wait-{process.pid}", daemon=True).start()

    # -- the end of a run --------------------------------------------------------------------------

    def _on_exit(self, pid: int, code: int) -> None:
        log.info("flow run %s: process %d exited with code %d", self.run_id, pid, code)
        request = self.stop_request
        if isinstance(request, Cancel):
            how = "terminated" if code != -SIGKILL else "killed after the grace period"
            self._propose(
                cancelled(f"Cancelled by the agent: {request.reason}; process {how}."), force=True
            )
            self._finish("cancelled", f"exit code {code}")
        elif isinstance(request, Interrupt):
            self._propose(
                crashed(
                    "The agent stopped while this run was in flight; its process "
                    f"was terminated (exit code {code})."
                )
            )
            self._finish("interrupted", f"exit code {code}")
        elif code == 0:
            self._finish("exited", "exit code 0")
        else:
            message = describe_exit(code)
            log.warning("flow run %s crashed: %s", self.run_id, message)
            self._propose(crashed(message))
            self._finish("crashed", f"exit code {code}")

    def _on_stop_request(self, request: Cancel | Interrupt) -> None:
        if self.finished:
            return
        if self.stop_request is not None:
            log.info("flow run %s: already stopping (%s)", self.run_id, self.phase)
            return
        self.stop_request = request
        process = self.process
        if process is None:
            # Not started yet: the next submission step sees the request and starts nothing.
            self._set_phase("stopping before start")
            return
        grace = (
            request.grace_seconds
            if isinstance(request, Interrupt)
            else self.ctx.settings.cancel_grace_seconds
        )
        self._set_phase(f"stopping pid {process.pid}")
        log.info(
            "flow run %s: sending SIGTERM to process group %d (grace %.0fs)",
            self.run_id,
            process.pid,
            grace,
        )
        process.signal_group(SIGTERM)
        self.ctx.clock.tell_later(grace, self.actor_ref, GraceExpired(process.pid))

    def _on_grace_expired(self, pid: int) -> None:
        if self.process is not None and self.process.returncode is None:
            log.warning(
                "flow run %s: process group %d outlived the grace period, sending SIGKILL",
                self.run_id,
                pid,
            )
            self.process.signal_group(SIGKILL)

    def _end_before_start(self) -> None:
        """A stop request arrived before the process started: start nothing."""
        request = self.stop_request
        if isinstance(request, Cancel):
            self._propose(
                cancelled(f"Cancelled before its process started: {request.reason}."), force=True
            )
            self._finish("cancelled", "before start")
        else:
            self._propose(
                scheduled_now(
                    "The agent stopped before starting this run; handed back to its queue."
                ),
                force=True,
            )
            self._finish("interrupted", "before start")

    def _propose(self, proposal: StateProposal, force: bool = False) -> None:
        """Report an outcome; a refusal is logged, never raised: the run is over for us."""
        try:
            result = self.ctx.api.set_state(self.run_id, proposal, force=force)
        except (ApiError, ApiDecodeError) as exc:
            log.error("flow run %s: could not report %s: %s", self.run_id, proposal.type, exc)
            return
        if result.status == "ACCEPT":
            log.info("flow run %s: reported %s", self.run_id, proposal.name)
        else:
            log.info(
                "flow run %s: %s not recorded: %s", self.run_id, proposal.name, refusal(result)
            )


def _show(spec: ProcessSpec) -> str:
    return " ".join(spec.command)
