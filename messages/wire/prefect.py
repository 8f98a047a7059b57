"""Shapes read from and sent to the Prefect REST API.

Only the fields the agent acts on are declared. msgspec ignores every other field, so a newer
server that adds fields keeps working; a body that lacks a declared field or carries the wrong
type fails to decode, and `decode` turns that into an `ApiDecodeError` naming the shape and the
cause, which fails that one call and nothing more.

State types are kept as plain strings rather than an enum: an unknown type from a newer server
must not make a whole page of runs undecodable.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar, get_args, get_origin

import msgspec


class ApiDecodeError(ValueError):
    """A response body that is not the shape the agent expects."""


# -- states ---------------------------------------------------------------------------------------

SCHEDULED = "SCHEDULED"
PENDING = "PENDING"
RUNNING = "RUNNING"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
CRASHED = "CRASHED"
CANCELLING = "CANCELLING"
CANCELLED = "CANCELLED"
PAUSED = "PAUSED"


class StateDetails(msgspec.Struct, frozen=True, kw_only=True):
    """Details of a state; `transition_id` makes a retried proposal recognisable."""

    flow_run_id: str | None = None  # the run this state belongs to
    scheduled_time: datetime | None = None  # when a Scheduled run is due
    transition_id: str | None = None  # set by the proposer, echoed by the server


class State(msgspec.Struct, frozen=True, kw_only=True):
    """A flow run state as the server reports it."""

    type: str  # SCHEDULED, PENDING, RUNNING, ... (kept open, see module docstring)
    name: str | None = None  # e.g. "Late", "Cancelling", "AwaitingRetry"
    message: str | None = None  # human text attached by whoever set the state
    id: str | None = None
    timestamp: datetime | None = None
    state_details: StateDetails = msgspec.field(default_factory=StateDetails)


class StateProposal(msgspec.Struct, frozen=True, kw_only=True):
    """The `state` body of `POST /flow_runs/{id}/set_state` (Prefect's StateCreate)."""

    type: str
    name: str | None = None
    message: str | None = None
    state_details: StateDetails = msgspec.field(default_factory=StateDetails)


class SetStateRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Body of `POST /flow_runs/{id}/set_state`; `force` bypasses orchestration rules."""

    state: StateProposal
    force: bool = False


class OrchestrationDetails(msgspec.Struct, frozen=True, kw_only=True):
    """Why the server answered as it did (reject/abort reason, wait delay)."""

    type: str | None = None  # accept_details, reject_details, abort_details, wait_details
    reason: str | None = None
    delay_seconds: float | None = None


class OrchestrationResult(msgspec.Struct, frozen=True, kw_only=True):
    """The server's answer to a state proposal: the lock between agents for Scheduled->Pending."""

    status: str  # ACCEPT, REJECT, ABORT, WAIT
    state: State | None = None  # the run's state after orchestration
    details: OrchestrationDetails = msgspec.field(default_factory=OrchestrationDetails)


# -- runs, queues, deployments, blocks -------------------------------------------------------------


class FlowRun(msgspec.Struct, frozen=True, kw_only=True):
    """A flow run as returned by get_runs, the flow run filter and `GET /flow_runs/{id}`."""

    id: str
    name: str = ""
    flow_id: str | None = None
    deployment_id: str | None = None
    work_queue_name: str | None = None
    state: State | None = None
    next_scheduled_start_time: datetime | None = None
    expected_start_time: datetime | None = None
    infrastructure_pid: str | None = None  # "hostname:pid" once an agent started it
    # Prefect 3 (and 2.x work pools): per-run overrides of the deployment's job variables.
    job_variables: dict[str, Any] | None = None


class WorkQueue(msgspec.Struct, frozen=True, kw_only=True):
    """A work queue; `is_paused` makes the watcher skip it."""

    id: str
    name: str
    is_paused: bool = False
    concurrency_limit: int | None = None
    work_pool_id: str | None = None
    priority: int | None = None  # within a work pool: 1 is served first
    # A deprecated tag-based queue (2.x) selects runs by this; only get_runs can apply it.
    filter: dict[str, Any] | None = None


class WorkPool(msgspec.Struct, frozen=True, kw_only=True):
    """A work pool (Prefect 2.10 and later): pausable, with a limit over all of its queues.

    `base_job_template` holds the defaults of the pool's job variables (Prefect 3's process
    pools: env, command, working_dir), the lowest layer under a deployment's own.
    """

    id: str
    name: str
    type: str = ""
    is_paused: bool = False
    concurrency_limit: int | None = None
    base_job_template: dict[str, Any] = msgspec.field(default_factory=dict)


class WorkerFlowRun(msgspec.Struct, frozen=True, kw_only=True):
    """One item of `POST /work_pools/{name}/get_scheduled_flow_runs`: a run and where it is."""

    work_pool_id: str | None = None
    work_queue_id: str | None = None
    flow_run: FlowRun


class Deployment(msgspec.Struct, frozen=True, kw_only=True):
    """The parts of a deployment that decide how its runs are started.

    Servers from 2.16 on call the overrides `job_variables` and still send `infra_overrides`;
    older ones send only `infra_overrides`. `overrides` reads whichever is present.
    """

    id: str
    name: str = ""
    flow_id: str | None = None
    infrastructure_document_id: str | None = None
    infra_overrides: dict[str, Any] | None = None
    job_variables: dict[str, Any] | None = None
    work_pool_name: str | None = None  # Prefect 3: the pool whose job template applies

    @property
    def overrides(self) -> dict[str, Any]:
        return dict(self.job_variables or self.infra_overrides or {})


class BlockTypeRef(msgspec.Struct, frozen=True, kw_only=True):
    """The block type a block document is an instance of."""

    slug: str
    name: str | None = None


class BlockDocument(msgspec.Struct, frozen=True, kw_only=True):
    """A stored block (read with secrets included); `data` holds the block's fields."""

    id: str
    name: str | None = None
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    block_type: BlockTypeRef | None = None


class ProcessBlock(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """The fields of Prefect's `Process` infrastructure block that change how a run starts.

    `env` values may be null: a null unsets that variable in the run's environment.
    """

    type: str = "process"
    command: list[str] | None = None
    env: dict[str, str | None] = msgspec.field(default_factory=dict)
    working_dir: str | None = None
    stream_output: bool = True
    name: str | None = None


# -- request bodies --------------------------------------------------------------------------------


class GetRunsRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Body of `POST /work_queues/{id}/get_runs`."""

    scheduled_before: datetime
    limit: int


class CreateWorkQueueRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Body of `POST /work_queues/` and of `POST /work_pools/{name}/queues/`."""

    name: str


class GetScheduledFlowRunsRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Body of `POST /work_pools/{name}/get_scheduled_flow_runs`: due runs of named queues.

    The server orders them by queue priority and stops at the pool's and the queues' limits.
    """

    work_queue_names: list[str]
    scheduled_before: datetime
    limit: int


class PoolQueueFilterRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Body of `POST /work_pools/{name}/queues/filter`: one page of the pool's queues."""

    limit: int
    offset: int = 0


class NameStartsWith(msgspec.Struct, frozen=True, kw_only=True):
    startswith_: list[str]


class WorkQueueNameFilter(msgspec.Struct, frozen=True, kw_only=True):
    name: NameStartsWith


class WorkQueueFilterRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Body of `POST /work_queues/filter`: queues whose name starts with any prefix, one page."""

    work_queues: WorkQueueNameFilter
    limit: int
    offset: int = 0


class AnyOf(msgspec.Struct, frozen=True, kw_only=True):
    any_: list[str]


class FlowRunStateFilter(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    type: AnyOf | None = None
    name: AnyOf | None = None


class Before(msgspec.Struct, frozen=True, kw_only=True):
    before_: datetime


class FlowRunFilter(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    state: FlowRunStateFilter | None = None
    work_queue_name: AnyOf | None = None
    id: AnyOf | None = None
    next_scheduled_start_time: Before | None = None


class WorkPoolFilter(msgspec.Struct, frozen=True, kw_only=True):
    name: AnyOf


class FlowRunFilterRequest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Body of `POST /flow_runs/filter`, one page; `work_pools` narrows it to named pools
    (queue names repeat across pools: every pool has a "default")."""

    flow_runs: FlowRunFilter
    limit: int
    offset: int = 0
    work_pools: WorkPoolFilter | None = None
    sort: str | None = None  # a FlowRunSort name; the server's default is ID_DESC


class FlowRunUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """Body of `PATCH /flow_runs/{id}` that records where the run's process lives."""

    infrastructure_pid: str


class WorkerHeartbeat(msgspec.Struct, frozen=True, kw_only=True):
    """Body of `POST /work_pools/{pool}/workers/heartbeat` (2.20 and 3.x): the worker row of
    `name` is created or refreshed; the first heartbeat makes a NOT_READY pool READY."""

    name: str
    heartbeat_interval_seconds: int


class Worker(msgspec.Struct, frozen=True, kw_only=True):
    """A row of `POST /work_pools/{pool}/workers/filter`."""

    name: str
    last_heartbeat_time: datetime | None = None
    heartbeat_interval_seconds: int | None = None
    status: str | None = None  # ONLINE or OFFLINE (2.20 and 3.x compute it from heartbeats)


class WorkerHeartbeatFilter(msgspec.Struct, frozen=True, kw_only=True):
    last_heartbeat_time: Before


class WorkerFilterRequest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Body of `POST /work_pools/{pool}/workers/filter`; `workers` narrows it to the rows
    whose last heartbeat is older than a moment (the stale ones: peers that may be lost)."""

    limit: int = 200
    offset: int = 0
    workers: WorkerHeartbeatFilter | None = None


# -- decoding --------------------------------------------------------------------------------------


T = TypeVar("T")


def decode(shape: type[T], body: bytes) -> T:
    """Decode a response body into `shape`, or raise `ApiDecodeError` saying what was wrong."""
    try:
        return msgspec.json.decode(body, type=shape)
    except (msgspec.DecodeError, RecursionError) as exc:
        # RecursionError: msgspec's answer to JSON nested about a thousand levels deep.
        preview = body[:200].decode("utf-8", "replace")
        name = _shape_name(shape)
        raise ApiDecodeError(
            f"response is not a valid {name}: {exc} (body starts {preview!r})"
        ) from exc


def _shape_name(shape: object) -> str:
    args = get_args(shape)
    if args:
        inner = ", ".join(_shape_name(arg) for arg in args)
        return f"{_shape_name(get_origin(shape))}[{inner}]"
    return str(getattr(shape, "__name__", shape))


def encode(value: object) -> bytes:
    """Encode a request body as JSON."""
    return msgspec.json.encode(value)
