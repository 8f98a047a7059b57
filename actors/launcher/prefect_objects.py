"""Prefect objects over REST: flows, blocks, deployments, flow runs, work queues and pools.

One small client for everything that sets up or watches runs from outside an agent: the
launcher's `--demo`, the examples (the benchmark, cancel latency, the embedded host) and the
tests' set-up. Plain httpx, so a process that uses it imports no Prefect code (the agent's
own process never does); the server does the work a Prefect client would do locally, except
a flow's parameter schema, which a caller that has the flow may pass in.

    with PrefectObjects(api_url) as api:
        deployment = api.deploy("my-flow", "nightly", work_queue="default",
                                path="/srv/flows", entrypoint="flows.py:my_flow",
                                infrastructure_document_id=api.create_process_block())
        runs = api.create_runs(deployment, 10)            # due now
        api.read_states(runs)                             # {run id: "SCHEDULED", ...}

Every call is tried again on a transient answer (a SQLite server answers 503 while another
writer holds its database), waiting as the agent's one `RetryPolicy` (`actors.rules.retry`)
says; an error answer raises `PrefectAPIError`, whose message carries the server's reason.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import httpx

from actors.rules.retry import RetryPolicy

PAGE = 200  # the server's largest page (PREFECT_API_DEFAULT_LIMIT)
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
# Every state type a run can be in once an agent took it (2.20 filters know no "not any of").
TAKEN_STATES = ("PENDING", "RUNNING", "COMPLETED", "FAILED", "CRASHED", "CANCELLING", "CANCELLED")
MISSING = "MISSING"  # the state `read_states` reports for a run the server does not know
# Below uvicorn's 5 s keep-alive: the client drops an idle connection before the server can
# close it under a request in flight.
KEEPALIVE_EXPIRY = 2.0

Json = dict[str, Any]


# 12 tries, the waits growing from 0.05 s to 2 s (at most about 13 s in all, with jitter about
# half that): a SQLite server's lock held by another writer is over by then.
DEFAULT_RETRY = RetryPolicy(base_delay=0.05, max_delay=2.0, attempts=12)


class PrefectAPIError(httpx.HTTPStatusError):
    """An error answer; unlike httpx's own message, this one carries the server's reason."""


@dataclass(frozen=True)
class BlockSchemaRef:
    block_type_id: str
    block_schema_id: str


def parse_time(text: str) -> datetime:
    """A timestamp of the server's (ISO 8601, `Z` or an offset) as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def state_type(run: Mapping[str, Any]) -> str | None:
    """A run's state type (`COMPLETED`, ...) from the run as the server sends it."""
    state = run.get("state") or {}
    value = state.get("type")
    return str(value) if value is not None else None


def _pages(items: Sequence[str], size: int = PAGE) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


class PrefectObjects:
    """The REST calls on one server, over one pooled client that threads may share."""

    def __init__(
        self,
        api_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        retry_statuses: frozenset[int] = TRANSIENT_STATUSES,
        retry_transport_errors: bool = True,
        max_connections: int = 16,
    ) -> None:
        """`retry`: how often and how long apart a call is tried again, on the answers
        `retry_statuses` and, with `retry_transport_errors`, on no answer at all (connection
        refused or reset, timeout)."""
        self.api_url = api_url.rstrip("/")
        self.retry = retry
        self.retry_statuses = retry_statuses
        self.retry_transport_errors = retry_transport_errors
        self.retried = 0  # attempts tried again over this client's life (a drain's 503s)
        self._lock = threading.Lock()
        self._schemas: dict[str, BlockSchemaRef] = {}
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(
            base_url=self.api_url + "/",
            headers=headers,
            timeout=timeout,
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=KEEPALIVE_EXPIRY,
            ),
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> PrefectObjects:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- any call ---------------------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """One request, tried again as `retry` says; the JSON answer (None when empty)."""
        policy = self.retry
        failures = 0
        while True:
            try:
                response = self.http.request(method, path, json=json, params=params)
            except httpx.TransportError:
                failures += 1
                if not self.retry_transport_errors or policy.gives_up(failures):
                    raise
            else:
                if response.status_code not in self.retry_statuses:
                    return _answer(method, path, response)
                failures += 1
                if policy.gives_up(failures):
                    return _answer(method, path, response)
            with self._lock:
                self.retried += 1
            time.sleep(policy.delay(failures))

    def server_version(self) -> str:
        """The server's Prefect version, e.g. `2.20.27`."""
        return str(self.call("GET", "admin/version"))

    # -- flows ------------------------------------------------------------------------------

    def create_flow(self, name: str) -> str:
        """The flow of this name (made if new); its id."""
        return str(self.call("POST", "flows/", json={"name": name})["id"])

    def delete_flow(self, flow_id: str) -> None:
        """Its deployments and runs go with it."""
        self.call("DELETE", f"flows/{flow_id}")

    # -- blocks -----------------------------------------------------------------------------

    def block_schema(
        self, block_type_slug: str, *, register_fields: Sequence[str] | None = None
    ) -> BlockSchemaRef:
        """The block type of this slug and its schema of the server's own Prefect version.

        The server registers Prefect's block types (`process` among them) when it starts. A
        type it does not know is registered here with a schema of `register_fields` (as a
        test may, to hand an agent infrastructure it does not support); without them, a
        missing type is an error.
        """
        known = self._schemas.get(block_type_slug)
        if known is not None:
            return known
        try:
            block_type = self.call("GET", f"block_types/slug/{block_type_slug}")
        except PrefectAPIError as exc:
            if exc.response.status_code != 404 or register_fields is None:
                raise
            title = block_type_slug.replace("-", " ").title()
            block_type = self.call(
                "POST", "block_types/", json={"name": title, "slug": block_type_slug}
            )
        body = {"block_schemas": {"block_type_id": {"any_": [block_type["id"]]}}}
        schemas = self.call("POST", "block_schemas/filter", json=body)
        if schemas:
            version = self.server_version()
            chosen = next((s for s in schemas if s.get("version") == version), schemas[0])
        elif register_fields is not None:
            chosen = self.call(
                "POST",
                "block_schemas/",
                json={
                    "block_type_id": block_type["id"],
                    "capabilities": ["run-infrastructure"],
                    "fields": {
                        "title": block_type["name"],
                        "type": "object",
                        "block_type_slug": block_type_slug,
                        "properties": {name: {"title": name} for name in register_fields},
                    },
                },
            )
        else:
            raise LookupError(f"the server has no schema for the {block_type_slug!r} block type")
        ref = BlockSchemaRef(str(block_type["id"]), str(chosen["id"]))
        self._schemas[block_type_slug] = ref
        return ref

    def create_block_document(
        self,
        block_type_slug: str,
        data: Mapping[str, Any],
        *,
        name: str | None = None,
        register_missing_type: bool = False,
    ) -> str:
        """A block document (anonymous when `name` is None, as a deployment's own block is)."""
        fields = list(data) if register_missing_type else None
        ref = self.block_schema(block_type_slug, register_fields=fields)
        body: Json = {
            "block_type_id": ref.block_type_id,
            "block_schema_id": ref.block_schema_id,
            "data": dict(data),
            "is_anonymous": name is None,
        }
        if name is not None:
            body["name"] = name
        return str(self.call("POST", "block_documents/", json=body)["id"])

    def create_process_block(
        self,
        *,
        command: Sequence[str] | None = None,
        env: Mapping[str, str | None] | None = None,
        working_dir: str | None = None,
        stream_output: bool = True,
        name: str | None = None,
    ) -> str:
        """A `Process` infrastructure block, the document `Process(...).save()` would make."""
        data = {
            "type": "process",
            "command": list(command) if command is not None else None,
            "env": dict(env or {}),
            "labels": {},
            "name": None,
            "stream_output": stream_output,
            "working_dir": working_dir,
        }
        return self.create_block_document("process", data, name=name)

    def delete_block_document(self, block_document_id: str) -> None:
        self.call("DELETE", f"block_documents/{block_document_id}")

    # -- deployments ------------------------------------------------------------------------

    def create_deployment(
        self,
        flow_id: str,
        name: str,
        *,
        work_queue: str | None = None,
        work_pool: str | None = None,
        path: str | None = None,
        entrypoint: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        parameter_openapi_schema: Mapping[str, Any] | None = None,
        infrastructure_document_id: str | None = None,
        job_variables: Mapping[str, Any] | None = None,
        concurrency_limit: int | None = None,
    ) -> str:
        """A deployment (updated in place if the flow has one of this name); its id.

        `job_variables` are a 2.20 deployment's infra overrides (dotted names such as
        `env.NAME`) or a work pool deployment's job variables; a field left None is the
        server's default.
        """
        body: Json = {"name": name, "flow_id": flow_id}
        optional: Json = {
            "work_queue_name": work_queue,
            "work_pool_name": work_pool,
            "path": path,
            "entrypoint": entrypoint,
            "parameters": dict(parameters) if parameters is not None else None,
            "parameter_openapi_schema": (
                dict(parameter_openapi_schema) if parameter_openapi_schema is not None else None
            ),
            "infrastructure_document_id": infrastructure_document_id,
            "job_variables": dict(job_variables) if job_variables is not None else None,
            "concurrency_limit": concurrency_limit,
        }
        body.update({key: value for key, value in optional.items() if value is not None})
        return str(self.call("POST", "deployments/", json=body)["id"])

    def deploy(self, flow_name: str, name: str, **deployment: Any) -> str:
        """The flow (made if new) and its deployment (`create_deployment`'s options); its id."""
        return self.create_deployment(self.create_flow(flow_name), name, **deployment)

    def read_deployment(self, deployment_id: str) -> Json:
        deployment: Json = self.call("GET", f"deployments/{deployment_id}")
        return deployment

    def update_deployment(self, deployment_id: str, **fields: Any) -> None:
        """PATCH the deployment's fields by their API names (`work_pool_name`, ...)."""
        self.call("PATCH", f"deployments/{deployment_id}", json=fields)

    def move_deployment_to_pool(self, deployment_id: str, pool: str, queue: str) -> None:
        """Put a deployment (and the runs created from it afterwards) on a pool's queue."""
        self.update_deployment(deployment_id, work_pool_name=pool, work_queue_name=queue)

    def delete_deployment(self, deployment_id: str) -> None:
        self.call("DELETE", f"deployments/{deployment_id}")

    # -- flow runs --------------------------------------------------------------------------

    def create_run(
        self,
        deployment_id: str,
        *,
        due: datetime | None = None,
        due_in: float = 0.0,
        parameters: Mapping[str, Any] | None = None,
        job_variables: Mapping[str, Any] | None = None,
    ) -> str:
        """A Scheduled run of the deployment due at `due`, or `due_in` seconds from now; its id.

        `job_variables` are the run's own (Prefect 3: they win over the deployment's)."""
        when = due if due is not None else datetime.now(UTC) + timedelta(seconds=due_in)
        body: Json = {
            "state": {
                "type": "SCHEDULED",
                "name": "Scheduled",
                "state_details": {"scheduled_time": when.isoformat()},
            }
        }
        if parameters is not None:
            body["parameters"] = dict(parameters)
        if job_variables is not None:
            body["job_variables"] = dict(job_variables)
        run = self.call("POST", f"deployments/{deployment_id}/create_flow_run", json=body)
        return str(run["id"])

    def create_runs(
        self,
        deployment_id: str,
        count: int,
        *,
        threads: int = 1,
        due: datetime | None = None,
        due_in: float = 0.0,
        parameters: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """`count` runs as `create_run` makes them, by up to `threads` requests at a time.

        Each run's due time is taken as it is created, unless `due` fixes one for all."""

        def one(_: int) -> str:
            return self.create_run(deployment_id, due=due, due_in=due_in, parameters=parameters)

        if threads <= 1:
            return [one(index) for index in range(count)]
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(one, range(count)))

    def read_run(self, run_id: str) -> Json:
        run: Json = self.call("GET", f"flow_runs/{run_id}")
        return run

    def read_runs(
        self, run_ids: Iterable[str], *, work_queue: str | None = None
    ) -> dict[str, Json]:
        """The runs by id (on `work_queue` only, if given), a page of 200 per request; a run
        the server does not know is left out."""
        found: dict[str, Json] = {}
        for page in _pages(list(run_ids)):
            criteria: Json = {"id": {"any_": page}}
            if work_queue is not None:
                criteria["work_queue_name"] = {"any_": [work_queue]}
            body = {"flow_runs": criteria, "limit": len(page), "offset": 0}
            for run in self.call("POST", "flow_runs/filter", json=body):
                found[str(run["id"])] = run
        return found

    def read_states(self, run_ids: Sequence[str]) -> dict[str, str]:
        """Each run's state type, read in pages; `MISSING` for a run the server does not know."""
        runs = self.read_runs(run_ids)
        return {run_id: state_type(runs.get(run_id, {})) or MISSING for run_id in run_ids}

    def run_state(self, run_id: str) -> tuple[str, str | None, str | None]:
        """`(type, name, message)`; the name tells e.g. Late from Scheduled."""
        state = self.read_run(run_id)["state"]
        return str(state["type"]), state.get("name"), state.get("message")

    def count_runs(
        self, *, work_queue: str | None = None, state_types: Iterable[str] | None = None
    ) -> int:
        """How many runs match: one COUNT, cheap enough to ask every second during a drain."""
        criteria: Json = {}
        if work_queue is not None:
            criteria["work_queue_name"] = {"any_": [work_queue]}
        if state_types is not None:
            criteria["state"] = {"type": {"any_": list(state_types)}}
        return int(self.call("POST", "flow_runs/count", json={"flow_runs": criteria}))

    def state_history(self, run_id: str) -> list[Json]:
        """Every state the run has been in, with the server's `timestamp` of each."""
        states: list[Json] = self.call("GET", "flow_run_states/", params={"flow_run_id": run_id})
        return states

    def set_state(
        self,
        run_id: str,
        type_: str,
        name: str | None = None,
        *,
        force: bool = False,
        message: str | None = None,
    ) -> Json:
        """Propose a state; the orchestration result (`status`, `state`, `details`)."""
        state: Json = {"type": type_}
        if name is not None:
            state["name"] = name
        if message is not None:
            state["message"] = message
        result: Json = self.call(
            "POST", f"flow_runs/{run_id}/set_state", json={"state": state, "force": force}
        )
        return result

    def propose_pending(self, run_id: str) -> bool:
        """What an agent does first with a run it took: True when the server accepted."""
        return bool(self.set_state(run_id, "PENDING", "Pending")["status"] == "ACCEPT")

    def cancel_run(self, run_id: str) -> Json:
        """Ask for the run to be cancelled the way the UI does (Cancelling, forced)."""
        return self.set_state(run_id, "CANCELLING", "Cancelling", force=True)

    def set_infrastructure_pid(self, run_id: str, pid: str) -> None:
        """Record where the run's process is (`hostname:pid`), as an agent does."""
        self.call("PATCH", f"flow_runs/{run_id}", json={"infrastructure_pid": pid})

    # -- work queues and pools --------------------------------------------------------------

    def read_work_queue(self, name: str) -> Json:
        queue: Json = self.call("GET", f"work_queues/name/{name}")
        return queue

    def pause_work_queue(self, name: str, paused: bool = True) -> None:
        queue = self.read_work_queue(name)
        self.call("PATCH", f"work_queues/{queue['id']}", json={"is_paused": paused})

    def create_work_pool(
        self, name: str, *, type_: str = "prefect-agent", concurrency_limit: int | None = None
    ) -> Json:
        """A work pool (Prefect 2.10+); the server gives it a queue named "default"."""
        body: Json = {"name": name, "type": type_}
        if concurrency_limit is not None:
            body["concurrency_limit"] = concurrency_limit
        pool: Json = self.call("POST", "work_pools/", json=body)
        return pool

    def create_pool_queue(self, pool: str, name: str, *, priority: int | None = None) -> Json:
        body: Json = {"name": name}
        if priority is not None:
            body["priority"] = priority
        queue: Json = self.call("POST", f"work_pools/{pool}/queues", json=body)
        return queue

    def pause_work_pool(self, pool: str, paused: bool = True) -> None:
        self.call("PATCH", f"work_pools/{pool}", json={"is_paused": paused})


def _answer(method: str, path: str, response: httpx.Response) -> Any:
    if response.is_error:
        raise PrefectAPIError(
            f"{method} {path} -> {response.status_code}: {response.text[:2000]}",
            request=response.request,
            response=response,
        )
    if response.status_code == 204 or not response.content:
        return None
    return response.json()
