"""A fake of the Prefect REST API for actor tests: not a mock of a server for integration tests.

`FakePrefectApi` implements `actors.edges.api_interface.PrefectApiInterface` in memory, so an
agent's whole actor tree runs in a test (`start_agent(settings, api=FakePrefectApi(...))`)
with no server, no HTTP and no Prefect installed. It is a *fake*: a small working
implementation of the part of the server the agent relies on, not a recording of answers. The
integration tests (`tests/integration`) are what check the agent against a real Prefect server;
these check how the actors behave when the server is slow, hangs or fails, which a real server
cannot be made to do on cue.

What it holds: work queues (and pools), deployments whose infrastructure is a Process block
with a command the test chooses (runs are real local processes: the agent starts them with
`actors/edges/processes.py`), and flow runs with their states.

What it orchestrates, as the server does for the calls the agent makes:
- Scheduled -> Pending is accepted once: a second Pending proposal is aborted (the lock between
  agents), and a repeat of the accepted proposal (same transition id) is rejected with the run's
  own Pending state, as Prefect's duplicate-transition rule answers;
- a proposal with `force=True` is accepted whatever the state; a run in a final state
  (Completed, Failed, Crashed, Cancelled) refuses every other proposal (ABORT);
- every accepted state is recorded: `history(run_id)`;
- while a deployment's concurrency slot is taken (`take_slot`), a Pending for one of its runs
  is rejected and the run scheduled again a little later (`AwaitingConcurrencySlot`), as
  Prefect 3 does.

What a test does to it:
- `hang(*methods, when=...)`: matching calls block until the returned `Hang` is released (no
  methods: every server call); `blocked()` lists the calls held now; `release_all()`.
- `fail(method, times=N, status=503)`: the next N calls of that method raise the `ApiError` the
  real edge raises (`NotFoundError` for 404), with that status (None: no answer at all).
- `calls()`, `proposals(run_id)`: every call the agent made, with its arguments, when it came
  (`time.monotonic()`), when it was answered, and what it raised.

Retries: the real edge retries a call on no answer, 408, 429 and 5xx by the policy its caller
chose (`with_retry`). The fake's views do the same with the calls that `fail` makes fail, each
attempt recorded as a call (really waiting the policy's delays). A fake made directly, with no
policy, makes one attempt per call.

`known_profile`, `with_retry` and `close` are not server calls: they are never recorded, held or
failed; nor is `server_profile` once the version has been read (the edge remembers it).
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import msgspec

from actors.edges.api_interface import AttemptHook, PrefectApiInterface
from actors.edges.prefect_api import ApiError, NotFoundError
from actors.rules.retry import RetryPolicy
from actors.rules.server_version import ServerProfile, profile_for
from messages.wire.prefect import (
    CANCELLED,
    CANCELLING,
    COMPLETED,
    CRASHED,
    FAILED,
    PENDING,
    RUNNING,
    SCHEDULED,
    BlockDocument,
    BlockTypeRef,
    Deployment,
    FlowRun,
    FlowRunFilter,
    OrchestrationDetails,
    OrchestrationResult,
    State,
    StateDetails,
    StateProposal,
    Worker,
    WorkPool,
    WorkQueue,
)

FINAL_TYPES = frozenset({COMPLETED, FAILED, CRASHED, CANCELLED})
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})  # as the real edge retries
# Every call that reaches the server, by its name in the interface.
SERVER_CALLS = frozenset(
    {
        "server_profile",
        "read_work_pool",
        "read_pool_queue",
        "create_pool_queue",
        "pool_queues",
        "get_pool_runs",
        "read_work_queue_by_name",
        "create_work_queue",
        "match_work_queues",
        "get_runs",
        "scheduled_runs",
        "read_flow_run",
        "set_state",
        "set_infrastructure_pid",
        "filter_flow_runs",
        "runs_in_states",
        "read_deployment",
        "read_block_document",
        "read_flow_run_states",
        "send_worker_heartbeat",
        "read_workers",
        "delete_worker",
        "set_flow_run_labels",
    }
)
ONE_ATTEMPT = RetryPolicy(attempts=1)
DEFAULT_AGENT_POOL = "default-agent-pool"  # where a 2.10+ server keeps the plain queues

T = TypeVar("T")


@dataclass
class Call:
    """One call the agent made (one attempt: a retried call is several)."""

    method: str  # as named in PrefectApiInterface, e.g. "set_state"
    params: dict[str, Any]  # the arguments, by parameter name
    at: float  # time.monotonic() when it arrived
    nth: int  # 1 for the first call of this method, 2 for the next, ...
    thread: str  # the name of the thread that made it
    blocked: bool = False  # held by a hang right now
    answered_at: float | None = None  # time.monotonic() when it returned or raised
    error: ApiError | None = None  # what it raised, if it did

    @property
    def run_id(self) -> str | None:
        value = self.params.get("flow_run_id")
        return value if isinstance(value, str) else None

    @property
    def proposal(self) -> StateProposal | None:
        value = self.params.get("proposal")
        return value if isinstance(value, StateProposal) else None

    @property
    def answered(self) -> bool:
        return self.answered_at is not None

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={_short(v)}" for k, v in self.params.items())
        end = "blocked" if self.blocked else ("error" if self.error else "ok")
        if self.answered_at is None and not self.blocked:
            end = "in progress"
        return f"<{self.method}#{self.nth}({shown}) {end}>"


def _short(value: object) -> str:
    if isinstance(value, StateProposal):
        return f"{value.type}{'' if value.name in (None, value.type.title()) else f'/{value.name}'}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Hang:
    """Calls that match wait in the fake until `release()`."""

    def __init__(self, methods: frozenset[str], when: Callable[[Call], bool] | None) -> None:
        self.methods = methods  # empty: every server call
        self.when = when
        self._released = threading.Event()

    def matches(self, call: Call) -> bool:
        if self.methods and call.method not in self.methods:
            return False
        return self.when is None or self.when(call)

    def release(self) -> None:
        """Let the held calls go on (they are answered then), and hold no later call."""
        self._released.set()

    @property
    def released(self) -> bool:
        return self._released.is_set()

    def wait(self) -> None:
        self._released.wait()


@dataclass
class _Failure:
    method: str
    remaining: int
    status: int | None
    message: str
    retry_after: float | None
    when: Callable[[Call], bool] | None


@dataclass
class _World:
    """Everything a fake and its retry views share: the server's data and the test's levers."""

    version: str
    lock: threading.RLock = field(default_factory=threading.RLock)
    pools: dict[str, WorkPool] = field(default_factory=dict)
    queues: dict[tuple[str | None, str], WorkQueue] = field(default_factory=dict)
    deployments: dict[str, Deployment] = field(default_factory=dict)
    blocks: dict[str, BlockDocument] = field(default_factory=dict)
    runs: dict[str, FlowRun] = field(default_factory=dict)  # in order of creation
    run_pools: dict[str, str | None] = field(default_factory=dict)
    history: dict[str, list[State]] = field(default_factory=dict)
    polled: dict[str, float] = field(default_factory=dict)  # queue id -> last get_runs
    calls: list[Call] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    hangs: list[Hang] = field(default_factory=list)
    failures: list[_Failure] = field(default_factory=list)
    profile: ServerProfile | None = None
    workers: dict[tuple[str, str], Worker] = field(default_factory=dict)  # (pool, name)
    labels: dict[str, dict[str, str]] = field(default_factory=dict)  # run id -> labels
    slots_taken: dict[str, float] = field(default_factory=dict)  # deployment id -> defer by (s)
    on_attempt: AttemptHook | None = None
    last_answer: float | None = None
    last_error: str | None = None
    closed: bool = False


class FakePrefectApi:
    """An in-memory Prefect server behind the API edge's interface (see the module docstring)."""

    def __init__(
        self,
        *,
        version: str = "2.20.27",
        api_url: str = "http://fake-prefect.invalid/api",
    ) -> None:
        self.api_url = api_url
        self._world = _World(version=version)
        self._retry = ONE_ATTEMPT

    # -- building the server's contents ------------------------------------------------------------

    def add_pool(
        self,
        name: str,
        *,
        paused: bool = False,
        concurrency_limit: int | None = None,
        base_job_template: dict[str, Any] | None = None,
        type_: str = "prefect-agent",
    ) -> WorkPool:
        pool = WorkPool(
            id=_new_id(),
            name=name,
            type=type_,
            is_paused=paused,
            concurrency_limit=concurrency_limit,
            base_job_template=base_job_template or {},
        )
        with self._world.lock:
            self._world.pools[name] = pool
        return pool

    def add_queue(
        self,
        name: str = "default",
        *,
        pool: str | None = None,
        paused: bool = False,
        concurrency_limit: int | None = None,
        priority: int | None = None,
    ) -> WorkQueue:
        """A work queue (of work pool `pool`, which must exist, if named). A plain queue (no
        pool) belongs to the pool `default-agent-pool` if the test made one, as on 2.10+."""
        with self._world.lock:
            home = pool if pool is not None else DEFAULT_AGENT_POOL
            pool_id = self._world.pools[home].id if home in self._world.pools else None
            queue = WorkQueue(
                id=_new_id(),
                name=name,
                is_paused=paused,
                concurrency_limit=concurrency_limit,
                work_pool_id=pool_id,
                priority=priority if priority is not None else (1 if pool is not None else None),
            )
            self._world.queues[(pool, name)] = queue
        return queue

    def pause_queue(self, name: str, paused: bool = True, pool: str | None = None) -> None:
        with self._world.lock:
            queue = self._world.queues[(pool, name)]
            self._world.queues[(pool, name)] = msgspec.structs.replace(queue, is_paused=paused)

    def add_deployment(
        self,
        command: Sequence[str] | None,
        *,
        name: str = "fake-deployment",
        env: dict[str, str | None] | None = None,
        working_dir: str | None = None,
        stream_output: bool = False,
        infra_overrides: dict[str, Any] | None = None,
        block_data: dict[str, Any] | None = None,
    ) -> Deployment:
        """A deployment whose infrastructure is a Process block running `command` (an argv
        list; None: the block names no command, so the agent runs the Prefect engine).
        `block_data` replaces the block's fields entirely (to test a bad block)."""
        data: dict[str, Any] = (
            block_data
            if block_data is not None
            else {
                "type": "process",
                "command": list(command) if command is not None else None,
                "env": dict(env or {}),
                "working_dir": working_dir,
                "stream_output": stream_output,
                "name": None,
                "labels": {},
            }
        )
        block = BlockDocument(
            id=_new_id(),
            name=f"{name}-process",
            data=data,
            block_type=BlockTypeRef(slug="process", name="Process"),
        )
        deployment = Deployment(
            id=_new_id(),
            name=name,
            flow_id=_new_id(),
            infrastructure_document_id=block.id,
            infra_overrides=dict(infra_overrides or {}),
            job_variables=dict(infra_overrides or {}),
        )
        with self._world.lock:
            self._world.blocks[block.id] = block
            self._world.deployments[deployment.id] = deployment
        return deployment

    def add_run(
        self,
        deployment: Deployment | None,
        *,
        queue: str = "default",
        pool: str | None = None,
        name: str | None = None,
        scheduled_in: float = 0.0,
        state_type: str = SCHEDULED,
        state_name: str | None = None,
        infrastructure_pid: str | None = None,
    ) -> FlowRun:
        """A flow run of `deployment` in `queue`, due `scheduled_in` seconds from now
        (negative: late), in state `state_type` (Scheduled unless said otherwise)."""
        run_id = _new_id()
        when = datetime.now(UTC) + timedelta(seconds=scheduled_in)
        with self._world.lock:
            number = len(self._world.runs) + 1
            state = _state(
                run_id, state_type, name=state_name or state_type.title(), scheduled_time=when
            )
            run = FlowRun(
                id=run_id,
                name=name or f"fake-run-{number}",
                flow_id=deployment.flow_id if deployment is not None else _new_id(),
                deployment_id=deployment.id if deployment is not None else None,
                work_queue_name=queue,
                state=state,
                next_scheduled_start_time=when,
                expected_start_time=when,
                infrastructure_pid=infrastructure_pid,
            )
            self._world.runs[run_id] = run
            self._world.run_pools[run_id] = pool
            self._world.history[run_id] = [state]
        return run

    def take_slot(self, deployment: Deployment, defer_seconds: float) -> None:
        """The deployment's concurrency slot is taken until `free_slot`: each Pending proposed
        for its runs meanwhile puts the run back in Scheduled, `defer_seconds` later."""
        with self._world.lock:
            self._world.slots_taken[deployment.id] = defer_seconds

    def free_slot(self, deployment: Deployment) -> None:
        with self._world.lock:
            self._world.slots_taken.pop(deployment.id, None)

    def set_run_state(
        self, run_id: str, type_: str, name: str | None = None, message: str | None = None
    ) -> State:
        """Put a run in a state as someone else would (its engine, the UI, another agent):
        not a call of the agent, so not recorded as one."""
        with self._world.lock:
            state = _state(run_id, type_, name=name or type_.title(), message=message)
            self._accept(run_id, state)
            return state

    def request_cancel(self, run_id: str) -> State:
        """What `prefect flow-run cancel` does: the run becomes Cancelling."""
        return self.set_run_state(run_id, CANCELLING, "Cancelling")

    # -- what a test does to the server ------------------------------------------------------------

    def hang(self, *methods: str, when: Callable[[Call], bool] | None = None) -> Hang:
        """Hold every call of `methods` (every server call when none is named) for which
        `when(call)` is true, until the returned Hang is released."""
        _check_names(methods)
        gate = Hang(frozenset(methods), when)
        with self._world.lock:
            self._world.hangs.append(gate)
        return gate

    def release_all(self) -> None:
        """Release every hang, and hold no call from now on."""
        with self._world.lock:
            gates, self._world.hangs = self._world.hangs, []
        for gate in gates:
            gate.release()

    def fail(
        self,
        method: str,
        times: int = 1,
        status: int | None = 503,
        message: str = "made to fail by the test",
        *,
        retry_after: float | None = None,
        when: Callable[[Call], bool] | None = None,
    ) -> None:
        """The next `times` calls of `method` (those for which `when(call)` is true) raise the
        edge's error: `NotFoundError` for 404, else `ApiError` with `status` (None: the server
        did not answer at all)."""
        _check_names((method,))
        with self._world.lock:
            self._world.failures.append(_Failure(method, times, status, message, retry_after, when))

    def worker_names(self, pool: str) -> list[str]:
        """The names of `pool`'s worker rows now, as the server holds them (not a call)."""
        with self._world.lock:
            return [name for (p, name) in self._world.workers if p == pool]

    def add_worker(
        self, pool: str, name: str, status: str = "ONLINE", *, heartbeat_age: float = 0.0
    ) -> None:
        """Another agent's worker row in `pool`, as its heartbeat left it `heartbeat_age`
        seconds ago (0: just now)."""
        with self._world.lock:
            self._world.workers[(pool, name)] = Worker(
                name=name,
                last_heartbeat_time=datetime.now(UTC) - timedelta(seconds=heartbeat_age),
                heartbeat_interval_seconds=30,
                status=status,
            )

    # -- what the agent told the server ------------------------------------------------------------

    def calls(self, method: str | None = None, *, run_id: str | None = None) -> list[Call]:
        """Every call so far (of `method`, about run `run_id`), in the order they arrived."""
        with self._world.lock:
            return [
                call
                for call in self._world.calls
                if (method is None or call.method == method)
                and (run_id is None or call.run_id == run_id)
            ]

    def proposals(self, run_id: str, state_type: str | None = None) -> list[Call]:
        """The set_state calls about `run_id` (proposing `state_type`, if given)."""
        return [
            call
            for call in self.calls("set_state", run_id=run_id)
            if state_type is None
            or (call.proposal is not None and call.proposal.type == state_type)
        ]

    def blocked(self, method: str | None = None) -> list[Call]:
        """The calls a hang holds right now."""
        with self._world.lock:
            return [
                call
                for call in self._world.calls
                if call.blocked and (method is None or call.method == method)
            ]

    def run(self, run_id: str) -> FlowRun:
        with self._world.lock:
            return self._world.runs[run_id]

    def state(self, run_id: str) -> State:
        state = self.run(run_id).state
        if state is None:
            raise AssertionError(f"flow run {run_id} has no state")
        return state

    def history(self, run_id: str) -> list[State]:
        """Every state the run was in, the first (Scheduled, usually) included."""
        with self._world.lock:
            return list(self._world.history[run_id])

    # -- PrefectApiInterface: the edge itself ------------------------------------------------------

    def with_retry(self, policy: RetryPolicy) -> FakePrefectApi:
        view = copy.copy(self)  # shares the world: the same server, calls and levers
        view._retry = policy
        return view

    def with_timeout(self, seconds: float) -> FakePrefectApi:
        return self  # a hang is the test's lever here, not a timeout

    @property
    def on_attempt(self) -> AttemptHook | None:
        return self._world.on_attempt

    @on_attempt.setter
    def on_attempt(self, hook: AttemptHook | None) -> None:
        self._world.on_attempt = hook

    @property
    def last_answer(self) -> float | None:
        return self._world.last_answer

    @property
    def last_error(self) -> str | None:
        return self._world.last_error

    def close(self) -> None:
        with self._world.lock:
            self._world.closed = True

    # -- PrefectApiInterface: the server -----------------------------------------------------------

    def server_profile(self) -> ServerProfile:
        known = self._world.profile
        if known is not None:
            return known  # the edge reads the version once
        return self._serve("server_profile", {}, self._read_profile)

    def known_profile(self) -> ServerProfile | None:
        return self._world.profile

    # -- PrefectApiInterface: work pools -----------------------------------------------------------

    def read_work_pool(self, name: str, max_age: float = 1.0) -> WorkPool | None:
        return self._serve("read_work_pool", {"name": name}, lambda: self._world.pools.get(name))

    def read_pool_queue(self, pool: str, name: str) -> WorkQueue | None:
        def answer() -> WorkQueue | None:
            self._pool(pool)
            return self._world.queues.get((pool, name))

        return self._serve("read_pool_queue", {"pool": pool, "name": name}, answer)

    def create_pool_queue(self, pool: str, name: str) -> WorkQueue:
        def answer() -> WorkQueue:
            self._pool(pool)
            return self._create_queue(pool, name)

        return self._serve("create_pool_queue", {"pool": pool, "name": name}, answer)

    def pool_queues(self, pool: str) -> list[WorkQueue]:
        def answer() -> list[WorkQueue]:
            self._pool(pool)
            return [q for (owner, _), q in self._world.queues.items() if owner == pool]

        return self._serve("pool_queues", {"pool": pool}, answer)

    def get_pool_runs(
        self, pool: str, queue_names: list[str], scheduled_before: datetime, limit: int
    ) -> list[FlowRun]:
        def answer() -> list[FlowRun]:
            found = self._pool(pool)
            if found.is_paused:
                return []
            # The plain queues (and their runs) are the default agent pool's.
            pool_key = None if pool == DEFAULT_AGENT_POOL else pool
            room = limit
            if found.concurrency_limit is not None:
                busy = sum(
                    1
                    for run_id, run in self._world.runs.items()
                    if self._world.run_pools[run_id] == pool_key
                    and _type(run) in (PENDING, RUNNING)
                )
                room = max(0, min(room, found.concurrency_limit - busy))
            queues = {
                name: self._world.queues[(pool_key, name)]
                for name in queue_names
                if (pool_key, name) in self._world.queues
            }
            due = [
                run
                for run_id, run in self._world.runs.items()
                if self._world.run_pools[run_id] == pool_key
                and run.work_queue_name in queues
                and not queues[run.work_queue_name].is_paused
                and _due(run, scheduled_before)
            ]
            due.sort(key=lambda run: (queues[run.work_queue_name or ""].priority or 1, _when(run)))
            return due[:room]

        params = {
            "pool": pool,
            "queue_names": list(queue_names),
            "scheduled_before": scheduled_before,
            "limit": limit,
        }
        return self._serve("get_pool_runs", params, answer)

    # -- PrefectApiInterface: work queues ----------------------------------------------------------

    def read_work_queue_by_name(self, name: str) -> WorkQueue | None:
        return self._serve(
            "read_work_queue_by_name", {"name": name}, lambda: self._world.queues.get((None, name))
        )

    def create_work_queue(self, name: str) -> WorkQueue:
        return self._serve(
            "create_work_queue", {"name": name}, lambda: self._create_queue(None, name)
        )

    def match_work_queues(self, prefixes: tuple[str, ...]) -> list[WorkQueue]:
        def answer() -> list[WorkQueue]:
            return [
                queue
                for (pool, name), queue in self._world.queues.items()
                if pool is None and name.startswith(prefixes)
            ]

        return self._serve("match_work_queues", {"prefixes": tuple(prefixes)}, answer)

    def get_runs(self, queue_id: str, scheduled_before: datetime, limit: int) -> list[FlowRun]:
        def answer() -> list[FlowRun]:
            queue = next((q for q in self._world.queues.values() if q.id == queue_id), None)
            if queue is None:
                raise NotFoundError(_describe(404, "get_runs", f"no work queue {queue_id}"), 404)
            self._world.polled[queue_id] = time.monotonic()
            if queue.is_paused:
                return []
            room = limit
            if queue.concurrency_limit is not None:
                busy = sum(
                    1
                    for run in self._world.runs.values()
                    if run.work_queue_name == queue.name and _type(run) in (PENDING, RUNNING)
                )
                room = max(0, min(room, queue.concurrency_limit - busy))
            return self._due_runs(queue.name, scheduled_before)[:room]

        params = {"queue_id": queue_id, "scheduled_before": scheduled_before, "limit": limit}
        return self._serve("get_runs", params, answer)

    def scheduled_runs(
        self, queue_name: str, scheduled_before: datetime, limit: int
    ) -> list[FlowRun]:
        params = {"queue_name": queue_name, "scheduled_before": scheduled_before, "limit": limit}
        return self._serve(
            "scheduled_runs", params, lambda: self._due_runs(queue_name, scheduled_before)[:limit]
        )

    # -- PrefectApiInterface: flow runs ------------------------------------------------------------

    def read_flow_run(self, flow_run_id: str) -> FlowRun:
        return self._serve(
            "read_flow_run", {"flow_run_id": flow_run_id}, lambda: self._run(flow_run_id)
        )

    def set_state(
        self, flow_run_id: str, proposal: StateProposal, force: bool = False
    ) -> OrchestrationResult:
        params = {"flow_run_id": flow_run_id, "proposal": proposal, "force": force}
        return self._serve(
            "set_state", params, lambda: self._orchestrate(flow_run_id, proposal, force)
        )

    def set_infrastructure_pid(self, flow_run_id: str, infrastructure_pid: str) -> None:
        def answer() -> None:
            run = self._run(flow_run_id)
            self._world.runs[flow_run_id] = msgspec.structs.replace(
                run, infrastructure_pid=infrastructure_pid
            )

        params = {"flow_run_id": flow_run_id, "infrastructure_pid": infrastructure_pid}
        self._serve("set_infrastructure_pid", params, answer)

    def filter_flow_runs(self, flow_runs: FlowRunFilter, pool: str | None = None) -> list[FlowRun]:
        return self._serve(
            "filter_flow_runs",
            {"flow_runs": flow_runs, "pool": pool},
            lambda: self._filter(flow_runs, pool),
        )

    def runs_in_states(
        self, queue_names: list[str], state_types: list[str], pool: str | None = None
    ) -> list[FlowRun]:
        def answer() -> list[FlowRun]:
            return [
                run
                for run_id, run in self._world.runs.items()
                if run.work_queue_name in queue_names
                and _type(run) in state_types
                and (pool is None or self._world.run_pools[run_id] == pool)
            ]

        params = {"queue_names": list(queue_names), "state_types": list(state_types), "pool": pool}
        return self._serve("runs_in_states", params, answer)

    def set_flow_run_labels(self, flow_run_id: str, labels: dict[str, str]) -> None:
        def answer() -> None:
            self._run(flow_run_id)
            self._world.labels.setdefault(flow_run_id, {}).update(labels)

        self._serve("set_flow_run_labels", {"flow_run_id": flow_run_id, "labels": labels}, answer)

    def read_flow_run_states(self, flow_run_id: str) -> list[State]:
        return self._serve(
            "read_flow_run_states",
            {"flow_run_id": flow_run_id},
            lambda: list(self._world.history.get(flow_run_id, [])),
        )

    # -- PrefectApiInterface: workers ------------------------------------------------------------

    def send_worker_heartbeat(self, pool: str, name: str, interval_seconds: int) -> None:
        def answer() -> None:
            self._world.workers[(pool, name)] = Worker(
                name=name,
                last_heartbeat_time=datetime.now(UTC),
                heartbeat_interval_seconds=interval_seconds,
                status="ONLINE",
            )

        params = {"pool": pool, "name": name, "interval_seconds": interval_seconds}
        self._serve("send_worker_heartbeat", params, answer)

    def delete_worker(self, pool: str, name: str) -> bool:
        def answer() -> bool:
            return self._world.workers.pop((pool, name), None) is not None

        return self._serve("delete_worker", {"pool": pool, "name": name}, answer)

    def read_workers(self, pool: str, heartbeat_before: datetime | None = None) -> list[Worker]:
        def answer() -> list[Worker]:
            rows = [w for (p, _), w in self._world.workers.items() if p == pool]
            if heartbeat_before is None:
                return rows
            return [
                w
                for w in rows
                if w.last_heartbeat_time is not None and w.last_heartbeat_time < heartbeat_before
            ]

        params = {"pool": pool, "heartbeat_before": heartbeat_before}
        return self._serve("read_workers", params, answer)

    # -- PrefectApiInterface: deployments and blocks -----------------------------------------------

    def read_deployment(self, deployment_id: str) -> Deployment:
        def answer() -> Deployment:
            found = self._world.deployments.get(deployment_id)
            if found is None:
                raise NotFoundError(
                    _describe(404, "read_deployment", f"no deployment {deployment_id}"), 404
                )
            return found

        return self._serve("read_deployment", {"deployment_id": deployment_id}, answer)

    def read_block_document(self, block_document_id: str) -> BlockDocument:
        def answer() -> BlockDocument:
            found = self._world.blocks.get(block_document_id)
            if found is None:
                raise NotFoundError(
                    _describe(404, "read_block_document", f"no block {block_document_id}"), 404
                )
            return found

        return self._serve("read_block_document", {"block_document_id": block_document_id}, answer)

    # -- serving one call --------------------------------------------------------------------------

    def _serve(self, method: str, params: dict[str, Any], answer: Callable[[], T]) -> T:
        """One call: recorded, held while a hang matches it, failed if the test said so, else
        answered; retried on transient errors as the caller's policy says."""
        world = self._world
        failures = 0
        while True:
            call = self._arrive(method, params)
            if world.closed:
                error = ApiError(f"{method}: the agent's API client is closed")
                self._answered(call, error)
                raise error
            self._hold(call)
            try:
                with world.lock:
                    self._injected_failure(call)
                    value = answer()
            except ApiError as exc:
                self._answered(call, exc)
                retryable = not isinstance(exc, NotFoundError) and (
                    exc.status is None or exc.status in RETRYABLE_STATUSES
                )
                failures += 1
                if not retryable or self._retry.gives_up(failures):
                    raise
                time.sleep(self._retry.delay(failures, getattr(exc, "retry_after", None)))
                continue
            self._answered(call, None)
            return value

    def _arrive(self, method: str, params: dict[str, Any]) -> Call:
        world = self._world
        with world.lock:
            nth = world.counts[method] = world.counts.get(method, 0) + 1
            call = Call(
                method, dict(params), time.monotonic(), nth, threading.current_thread().name
            )
            world.calls.append(call)
            return call

    def _hold(self, call: Call) -> None:
        world = self._world
        while True:
            with world.lock:
                world.hangs = [gate for gate in world.hangs if not gate.released]
                holding = [gate for gate in world.hangs if gate.matches(call)]
                call.blocked = bool(holding)
            if not holding:
                return
            for gate in holding:
                gate.wait()

    def _injected_failure(self, call: Call) -> None:
        for failure in self._world.failures:
            if failure.method != call.method or failure.remaining <= 0:
                continue
            if failure.when is not None and not failure.when(call):
                continue
            failure.remaining -= 1
            if failure.status is None:
                text = f"ConnectError on {call.method}: no answer ({failure.message})"
            else:
                text = _describe(failure.status, call.method, failure.message)
            error = (NotFoundError if failure.status == 404 else ApiError)(text, failure.status)
            error.retry_after = failure.retry_after  # as the edge sets it from Retry-After
            raise error

    def _answered(self, call: Call, error: ApiError | None) -> None:
        world = self._world
        status = 200 if error is None else error.status
        with world.lock:
            call.answered_at = time.monotonic()
            call.error = error
            if status is not None and status < 500:
                world.last_answer = call.answered_at
            else:
                world.last_error = f"{call.method}: " + (
                    f"HTTP {status}" if status is not None else "no answer"
                )
            hook = world.on_attempt
        if hook is not None:
            hook("CALL", call.method, status)

    # -- the server's rules ------------------------------------------------------------------------

    def _read_profile(self) -> ServerProfile:
        profile = profile_for(self._world.version)
        self._world.profile = profile
        return profile

    def _orchestrate(
        self, run_id: str, proposal: StateProposal, force: bool
    ) -> OrchestrationResult:
        current = self._run(run_id).state
        ours = proposal.state_details.transition_id
        if not force and current is not None:
            if ours is not None and current.state_details.transition_id == ours:
                return _refused("REJECT", current, "This transition was already made.")
            if proposal.type == PENDING and current.type != SCHEDULED:
                return _refused(
                    "ABORT",
                    current,
                    f"This run is in a {current.type} state and cannot transition to a "
                    "PENDING state.",
                )
            if current.type in FINAL_TYPES:
                return _refused("ABORT", current, "This run has already terminated.")
            deployment_id = self._run(run_id).deployment_id
            defer = self._world.slots_taken.get(deployment_id or "")
            if proposal.type == PENDING and defer is not None:
                later = datetime.now(UTC) + timedelta(seconds=defer)
                waiting = _state(
                    run_id, SCHEDULED, name="AwaitingConcurrencySlot", scheduled_time=later
                )
                self._accept(run_id, waiting)
                return _refused("REJECT", waiting, "Deployment concurrency limit reached.")
        when = proposal.state_details.scheduled_time
        if proposal.type == SCHEDULED and when is None:
            when = datetime.now(UTC)
        state = _state(
            run_id,
            proposal.type,
            name=proposal.name,
            message=proposal.message,
            scheduled_time=when,
            transition_id=ours,
        )
        self._accept(run_id, state)
        return OrchestrationResult(
            status="ACCEPT", state=state, details=OrchestrationDetails(type="accept_details")
        )

    def _accept(self, run_id: str, state: State) -> None:
        run = self._run(run_id)
        changes: dict[str, Any] = {"state": state}
        if state.type == SCHEDULED and state.state_details.scheduled_time is not None:
            changes["next_scheduled_start_time"] = state.state_details.scheduled_time
        self._world.runs[run_id] = msgspec.structs.replace(run, **changes)
        self._world.history[run_id].append(state)

    def _due_runs(self, queue_name: str, before: datetime) -> list[FlowRun]:
        due = [
            run
            for run in self._world.runs.values()
            if run.work_queue_name == queue_name and _due(run, before)
        ]
        due.sort(key=_when)
        return due

    def _filter(self, flow_runs: FlowRunFilter, pool: str | None) -> list[FlowRun]:
        found = []
        for run_id, run in self._world.runs.items():
            state = run.state
            if pool is not None and self._world.run_pools[run_id] != pool:
                continue
            if flow_runs.id is not None and run.id not in flow_runs.id.any_:
                continue
            if flow_runs.work_queue_name is not None and (
                run.work_queue_name not in flow_runs.work_queue_name.any_
            ):
                continue
            wanted = flow_runs.state
            if (
                wanted is not None
                and wanted.type is not None
                and (state is None or state.type not in wanted.type.any_)
            ):
                continue
            if (
                wanted is not None
                and wanted.name is not None
                and (state is None or state.name not in wanted.name.any_)
            ):
                continue
            before = flow_runs.next_scheduled_start_time
            if before is not None and (
                run.next_scheduled_start_time is None
                or run.next_scheduled_start_time > before.before_
            ):
                continue
            found.append(run)
        return found

    def _run(self, run_id: str) -> FlowRun:
        run = self._world.runs.get(run_id)
        if run is None:
            raise NotFoundError(_describe(404, "flow run", f"no flow run {run_id}"), 404)
        return run

    def _pool(self, name: str) -> WorkPool:
        pool = self._world.pools.get(name)
        if pool is None:
            raise NotFoundError(_describe(404, "work pool", f"no work pool {name!r}"), 404)
        return pool

    def _create_queue(self, pool: str | None, name: str) -> WorkQueue:
        if (pool, name) in self._world.queues:
            raise ApiError(_describe(409, "create queue", f"work queue {name!r} exists"), 409)
        return self.add_queue(name, pool=pool)


def _check_names(methods: Sequence[str]) -> None:
    unknown = sorted(set(methods) - SERVER_CALLS)
    if unknown:
        raise ValueError(f"not a server call of the API edge: {', '.join(unknown)}")


def _new_id() -> str:
    return str(uuid.uuid4())


def _state(
    run_id: str,
    type_: str,
    *,
    name: str | None,
    message: str | None = None,
    scheduled_time: datetime | None = None,
    transition_id: str | None = None,
) -> State:
    return State(
        type=type_,
        name=name,
        message=message,
        id=_new_id(),
        timestamp=datetime.now(UTC),
        state_details=StateDetails(
            flow_run_id=run_id, scheduled_time=scheduled_time, transition_id=transition_id
        ),
    )


def _refused(status: str, current: State, reason: str) -> OrchestrationResult:
    kind = "reject_details" if status == "REJECT" else "abort_details"
    return OrchestrationResult(
        status=status, state=current, details=OrchestrationDetails(type=kind, reason=reason)
    )


def _describe(status: int, what: str, detail: str) -> str:
    return f"HTTP {status} from the fake Prefect API ({what}): {detail}"


def _type(run: FlowRun) -> str | None:
    return run.state.type if run.state is not None else None


def _when(run: FlowRun) -> datetime:
    return run.next_scheduled_start_time or datetime.min.replace(tzinfo=UTC)


def _due(run: FlowRun, before: datetime) -> bool:
    return _type(run) == SCHEDULED and _when(run) <= before


def _satisfies_the_interface(fake: FakePrefectApi) -> PrefectApiInterface:
    return fake  # for mypy: the fake has every member of the edge's interface
