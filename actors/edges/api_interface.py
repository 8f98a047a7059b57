"""What the actors and the handle use of the API edge, as a `typing.Protocol`.

`PrefectApi` (the real edge, REST over httpx) satisfies it, and so does the in-memory fake the
actor tests run against (`tests/support/fake_api.py`). Every method named here is called by an
actor or by `AgentHandle`; the signatures are the edge's, exactly. A change to the edge that
breaks it makes mypy fail on `_the_edge_satisfies_the_interface` below, not a test at run time.

Errors are part of the contract too: a call the server refuses or cannot be reached for raises
`actors.edges.prefect_api.ApiError` (with its HTTP status, or None for no answer), a missing
object `NotFoundError` (404), a body that does not decode `messages.wire.prefect.ApiDecodeError`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from actors.rules.retry import RetryPolicy
from actors.rules.server_version import ServerProfile
from messages.wire.prefect import (
    BlockDocument,
    Deployment,
    FlowRun,
    FlowRunFilter,
    OrchestrationResult,
    State,
    StateProposal,
    Worker,
    WorkPool,
    WorkQueue,
)

AttemptHook = Callable[[str, str, int | None], None]  # (method, path, status or None)


class PrefectApiInterface(Protocol):
    """Typed calls to a Prefect server, safe to share between actors (threads or greenlets)."""

    # -- the edge itself ---------------------------------------------------------------------------

    def with_retry(self, policy: RetryPolicy) -> PrefectApiInterface:
        """The same edge (same server, same state), its calls retried by `policy`."""
        ...

    def with_timeout(self, seconds: float) -> PrefectApiInterface:
        """The same edge, each request given up after `seconds`."""
        ...

    @property
    def on_attempt(self) -> AttemptHook | None:
        """Called after every attempt at a call (the metrics hook)."""
        ...

    @on_attempt.setter
    def on_attempt(self, hook: AttemptHook | None) -> None: ...

    @property
    def last_answer(self) -> float | None:
        """When the server last answered (time.monotonic()), or None: for /healthz."""
        ...

    @property
    def last_error(self) -> str | None:
        """The last failure, as a user would read it, or None."""
        ...

    def close(self) -> None:
        """Release the connection; a call made later fails with `ApiError`."""
        ...

    # -- the server --------------------------------------------------------------------------------

    def server_profile(self) -> ServerProfile:
        """The server's version and what it changes; read once, then remembered."""
        ...

    def known_profile(self) -> ServerProfile | None:
        """The profile if the version was read already; never a request."""
        ...

    # -- work pools --------------------------------------------------------------------------------

    def read_work_pool(self, name: str, max_age: float = 1.0) -> WorkPool | None: ...

    def read_pool_queue(self, pool: str, name: str) -> WorkQueue | None: ...

    def create_pool_queue(self, pool: str, name: str) -> WorkQueue: ...

    def pool_queues(self, pool: str) -> list[WorkQueue]: ...

    def get_pool_runs(
        self, pool: str, queue_names: list[str], scheduled_before: datetime, limit: int
    ) -> list[FlowRun]: ...

    # -- work queues -------------------------------------------------------------------------------

    def read_work_queue_by_name(self, name: str) -> WorkQueue | None: ...

    def create_work_queue(self, name: str) -> WorkQueue: ...

    def match_work_queues(self, prefixes: tuple[str, ...]) -> list[WorkQueue]: ...

    def get_runs(self, queue_id: str, scheduled_before: datetime, limit: int) -> list[FlowRun]:
        """Due runs of the queue; the server records the poll."""
        ...

    def scheduled_runs(
        self, queue_name: str, scheduled_before: datetime, limit: int
    ) -> list[FlowRun]:
        """What get_runs answers for a queue without a limit, read without recording a poll."""
        ...

    # -- flow runs ---------------------------------------------------------------------------------

    def read_flow_run(self, flow_run_id: str) -> FlowRun: ...

    def set_state(
        self, flow_run_id: str, proposal: StateProposal, force: bool = False
    ) -> OrchestrationResult:
        """Propose a state; the answer is the server's orchestration result."""
        ...

    def set_infrastructure_pid(self, flow_run_id: str, infrastructure_pid: str) -> None: ...

    def filter_flow_runs(
        self, flow_runs: FlowRunFilter, pool: str | None = None
    ) -> list[FlowRun]: ...

    def runs_in_states(
        self, queue_names: list[str], state_types: list[str], pool: str | None = None
    ) -> list[FlowRun]: ...

    # -- deployments and blocks --------------------------------------------------------------------

    def set_flow_run_labels(self, flow_run_id: str, labels: dict[str, str]) -> None: ...

    def read_flow_run_states(self, flow_run_id: str) -> list[State]: ...

    def send_worker_heartbeat(self, pool: str, name: str, interval_seconds: int) -> None: ...

    def delete_worker(self, pool: str, name: str) -> bool:
        """Remove the worker row `name` of `pool`; False when there is none by that name."""
        ...

    def read_workers(self, pool: str, heartbeat_before: datetime | None = None) -> list[Worker]:
        """The pool's worker rows; with `heartbeat_before`, only those whose last heartbeat is
        older."""
        ...

    def read_deployment(self, deployment_id: str) -> Deployment: ...

    def read_block_document(self, block_document_id: str) -> BlockDocument: ...


if TYPE_CHECKING:
    from actors.edges.prefect_api import PrefectApi

    def _the_edge_satisfies_the_interface(api: PrefectApi) -> PrefectApiInterface:
        return api  # mypy checks every member above against the real edge
