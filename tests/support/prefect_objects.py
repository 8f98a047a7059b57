"""Create and inspect real Prefect objects on a test server.

Everything takes the server's ``api_url`` explicitly instead of reading
``PREFECT_API_URL``: tests run several servers over a session and must never
fall back to an ephemeral in-process API by accident.

Plain REST calls go through httpx because they are fast and obvious. The
Prefect client is used only where the server cannot do the work alone:
turning a flow into a deployment (parameter schema, entrypoint) and saving a
``Process`` block the way ``prefect deployment build`` would.
"""

from __future__ import annotations

import atexit
import datetime
import json
import os
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx
from prefect.deployments.deployments import Deployment
from prefect.flows import load_flow_from_entrypoint
from prefect.infrastructure import Process
from prefect.settings import PREFECT_API_URL, temporary_settings

T = TypeVar("T")

_TIMEOUT = 30.0
_LOCKED_RETRIES = 8
# Below uvicorn's 5 s keep-alive: the client drops an idle connection before the server can
# close it under a request in flight.
_KEEPALIVE_EXPIRY = 2.0
_FILTER_PAGE = 200  # the server's largest page

__all__ = [
    "call_api",
    "create_pool",
    "create_pool_queue",
    "create_run",
    "create_runs",
    "delete_block_document",
    "delete_deployment",
    "deploy",
    "deploy_with_block_data",
    "move_deployment_to_pool",
    "pause_pool",
    "pause_queue",
    "read_marker",
    "read_run",
    "read_states",
    "run_state",
    "set_run_state",
    "wait_for",
]


_clients: dict[str, httpx.Client] = {}
_clients_lock = threading.Lock()


def _client(api_url: str) -> httpx.Client:
    """One pooled client per server for the session: a new ``httpx.Client`` costs about 30 ms
    (it builds a TLS context), which a test making hundreds of calls used to pay per call."""
    with _clients_lock:
        client = _clients.get(api_url)
        if client is None:
            limits = httpx.Limits(keepalive_expiry=_KEEPALIVE_EXPIRY)
            client = httpx.Client(base_url=api_url, timeout=_TIMEOUT, limits=limits)
            _clients[api_url] = client
        return client


@atexit.register
def _close_clients() -> None:
    with _clients_lock:
        for client in _clients.values():
            client.close()
        _clients.clear()


def _api(api_url: str, method: str, path: str, body: Any = None) -> Any:
    # A SQLite server answers 503 while its database is locked by other writers (an agent
    # under test draining runs): the test's own set-up waits and tries again, a few times.
    client = _client(api_url)
    for attempt in range(_LOCKED_RETRIES):
        response = client.request(method, path, json=body)
        if response.status_code != 503:
            break
        time.sleep(0.2 * (attempt + 1))
    if response.is_error:
        # httpx's own message omits the body, which is where Prefect says why.
        raise httpx.HTTPStatusError(
            f"{method} {path} -> {response.status_code}: {response.text}",
            request=response.request,
            response=response,
        )
    if response.status_code == 204 or not response.content:
        return None
    return response.json()


def call_api(api_url: str, method: str, path: str, body: Any = None) -> Any:
    """A plain REST call for a test's set-up, with the same 503 patience as every helper here."""
    return _api(api_url, method, path, body)


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll until ``predicate()`` is truthy and return that value.

    The only way tests wait: a deadline instead of a fixed sleep keeps fast
    machines fast, and the message says what never happened.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}; last value: {value!r}"
            )
        time.sleep(interval)


def _build_deployment(
    api_url: str,
    flow_file: Path,
    flow_func_name: str,
    *,
    name: str,
    work_queue: str,
    command: list[str] | None = None,
    env: dict[str, str | None] | None = None,
    working_dir: str | None = None,
    infra_overrides: dict[str, Any] | None = None,
    apply: bool,
) -> tuple[Deployment, str | None]:
    flow_file = flow_file.resolve()
    flow = load_flow_from_entrypoint(f"{flow_file}:{flow_func_name}", use_placeholder_flow=False)
    # temporary_settings is a context variable, so nothing leaks to other
    # tests or threads once the block ends. Agents, Process and Deployment
    # are deprecated in 2.20; that is the very API we replace, so keep quiet.
    with (
        temporary_settings(updates={PREFECT_API_URL: api_url}),
        warnings.catch_warnings(),
    ):
        warnings.filterwarnings("ignore", r"prefect\..* has been deprecated", DeprecationWarning)
        infrastructure = Process(command=command, env=env or {}, working_dir=working_dir)
        deployment = cast(
            Deployment,
            Deployment.build_from_flow(
                flow=flow,
                name=name,
                skip_upload=True,
                # build_from_flow touches this file if missing; an existing path
                # keeps it from littering the current directory.
                ignore_file=os.devnull,
                load_existing=False,
                path=str(flow_file.parent),
                entrypoint=f"{flow_file.name}:{flow_func_name}",
                work_queue_name=work_queue,
                infrastructure=infrastructure,
                job_variables=infra_overrides or {},
            ),
        )
        deployment_id = str(deployment.apply()) if apply else None
    return deployment, deployment_id


def _post_deployment(
    api_url: str, deployment: Deployment, infrastructure_document_id: str | None
) -> str:
    flow = _api(api_url, "POST", "/flows/", {"name": deployment.flow_name})
    created = _api(
        api_url,
        "POST",
        "/deployments/",
        {
            "name": deployment.name,
            "flow_id": flow["id"],
            "work_queue_name": deployment.work_queue_name,
            "path": deployment.path,
            "entrypoint": deployment.entrypoint,
            "parameter_openapi_schema": cast(Any, deployment.parameter_openapi_schema).dict(),
            "job_variables": deployment.job_variables,
            "infrastructure_document_id": infrastructure_document_id,
        },
    )
    return str(created["id"])


def deploy(
    api_url: str,
    flow_file: Path,
    flow_func_name: str,
    *,
    name: str,
    work_queue: str,
    command: list[str] | None = None,
    env: dict[str, str | None] | None = None,
    working_dir: str | None = None,
    infra_overrides: dict[str, Any] | None = None,
    infrastructure_block: bool = True,
) -> str:
    """Deploy a flow file with a ``Process`` infrastructure block; return the deployment id.

    ``infrastructure_block=False`` produces a deployment without
    ``infrastructure_document_id`` -- the case where an agent must fall back
    to a default ``Process`` -- which ``Deployment.apply`` can never create.
    """
    deployment, deployment_id = _build_deployment(
        api_url,
        flow_file,
        flow_func_name,
        name=name,
        work_queue=work_queue,
        command=command,
        env=env,
        working_dir=working_dir,
        infra_overrides=infra_overrides,
        apply=infrastructure_block,
    )
    if deployment_id is None:
        deployment_id = _post_deployment(api_url, deployment, None)
    stored = _api(api_url, "GET", f"/deployments/{deployment_id}")
    has_block = stored["infrastructure_document_id"] is not None
    assert has_block == infrastructure_block, f"unexpected deployment: {stored}"
    return deployment_id


def _block_schema_id(api_url: str, block_type_slug: str, fields: list[str]) -> tuple[str, str]:
    try:
        block_type = _api(api_url, "GET", f"/block_types/slug/{block_type_slug}")
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code != 404:
            raise
        block_type = _api(
            api_url,
            "POST",
            "/block_types/",
            {"name": block_type_slug.replace("-", " ").title(), "slug": block_type_slug},
        )
    schemas = _api(
        api_url,
        "POST",
        "/block_schemas/filter",
        {"block_schemas": {"block_type_id": {"any_": [block_type["id"]]}}, "limit": 1},
    )
    if schemas:
        return str(block_type["id"]), str(schemas[0]["id"])
    schema = _api(
        api_url,
        "POST",
        "/block_schemas/",
        {
            "block_type_id": block_type["id"],
            "capabilities": ["run-infrastructure"],
            "fields": {
                "title": block_type["name"],
                "type": "object",
                "block_type_slug": block_type_slug,
                "properties": {field: {"title": field} for field in fields},
            },
        },
    )
    return str(block_type["id"]), str(schema["id"])


def deploy_with_block_data(
    api_url: str,
    flow_file: Path,
    flow_func_name: str,
    *,
    name: str,
    work_queue: str,
    block_type_slug: str,
    data: dict[str, Any],
) -> str:
    """Deploy a flow whose infrastructure document is of an arbitrary block type.

    Lets tests hand the agent infrastructure it does not support (a
    ``docker-container``, or a slug the server has never heard of, which is
    registered here on the fly).
    """
    block_type_id, block_schema_id = _block_schema_id(api_url, block_type_slug, list(data))
    document = _api(
        api_url,
        "POST",
        "/block_documents/",
        {
            "is_anonymous": True,
            "block_type_id": block_type_id,
            "block_schema_id": block_schema_id,
            "data": data,
        },
    )
    deployment, _ = _build_deployment(
        api_url, flow_file, flow_func_name, name=name, work_queue=work_queue, apply=False
    )
    return _post_deployment(api_url, deployment, str(document["id"]))


def create_run(
    api_url: str,
    deployment_id: str,
    *,
    scheduled_in: float = 0.0,
    parameters: dict[str, Any] | None = None,
) -> str:
    """Create a Scheduled flow run due ``scheduled_in`` seconds from now; return its id."""
    when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=scheduled_in)
    body: dict[str, Any] = {
        "state": {
            "type": "SCHEDULED",
            "name": "Scheduled",
            "state_details": {"scheduled_time": when.isoformat()},
        }
    }
    if parameters is not None:
        body["parameters"] = parameters
    run = _api(api_url, "POST", f"/deployments/{deployment_id}/create_flow_run", body)
    return str(run["id"])


def create_runs(
    api_url: str,
    deployment_id: str,
    n: int,
    *,
    scheduled_in: float = 0.0,
    parameters: dict[str, Any] | None = None,
) -> list[str]:
    return [
        create_run(api_url, deployment_id, scheduled_in=scheduled_in, parameters=parameters)
        for _ in range(n)
    ]


def read_run(api_url: str, run_id: str) -> dict[str, Any]:
    run: dict[str, Any] = _api(api_url, "GET", f"/flow_runs/{run_id}")
    return run


def read_states(api_url: str, run_ids: list[str]) -> dict[str, str]:
    """Each run's state type, read a page of runs per request rather than one by one."""
    found: dict[str, str] = {}
    for start in range(0, len(run_ids), _FILTER_PAGE):
        page = run_ids[start : start + _FILTER_PAGE]
        body = {"flow_runs": {"id": {"any_": page}}, "limit": len(page)}
        for run in _api(api_url, "POST", "/flow_runs/filter", body):
            found[str(run["id"])] = run["state"]["type"]
    return {run_id: found.get(run_id, "MISSING") for run_id in run_ids}


def run_state(api_url: str, run_id: str) -> tuple[str, str | None, str | None]:
    """Return ``(type, name, message)``; name distinguishes e.g. Late from Scheduled."""
    state = read_run(api_url, run_id)["state"]
    return state["type"], state.get("name"), state.get("message")


def set_run_state(
    api_url: str,
    run_id: str,
    type_: str,
    name: str | None = None,
    *,
    force: bool = True,
    message: str | None = None,
) -> dict[str, Any]:
    """Propose a state and return the orchestration result (``status``, ``state``, ``details``)."""
    state: dict[str, Any] = {"type": type_}
    if name is not None:
        state["name"] = name
    if message is not None:
        state["message"] = message
    result: dict[str, Any] = _api(
        api_url, "POST", f"/flow_runs/{run_id}/set_state", {"state": state, "force": force}
    )
    return result


def pause_queue(api_url: str, name: str, paused: bool) -> None:
    queue = _api(api_url, "GET", f"/work_queues/name/{name}")
    _api(api_url, "PATCH", f"/work_queues/{queue['id']}", {"is_paused": paused})


def create_pool(
    api_url: str, name: str, *, type_: str = "prefect-agent", concurrency_limit: int | None = None
) -> dict[str, Any]:
    """A work pool (Prefect 2.10+); the server gives it a queue named "default"."""
    body: dict[str, Any] = {"name": name, "type": type_}
    if concurrency_limit is not None:
        body["concurrency_limit"] = concurrency_limit
    pool: dict[str, Any] = _api(api_url, "POST", "/work_pools/", body)
    return pool


def create_pool_queue(
    api_url: str, pool: str, name: str, *, priority: int | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name}
    if priority is not None:
        body["priority"] = priority
    queue: dict[str, Any] = _api(api_url, "POST", f"/work_pools/{pool}/queues", body)
    return queue


def pause_pool(api_url: str, pool: str, paused: bool) -> None:
    _api(api_url, "PATCH", f"/work_pools/{pool}", {"is_paused": paused})


def move_deployment_to_pool(api_url: str, deployment_id: str, pool: str, queue: str) -> None:
    """Put a deployment (and the runs created from it afterwards) on a pool's queue."""
    _api(
        api_url,
        "PATCH",
        f"/deployments/{deployment_id}",
        {"work_pool_name": pool, "work_queue_name": queue},
    )


def delete_deployment(api_url: str, deployment_id: str) -> None:
    _api(api_url, "DELETE", f"/deployments/{deployment_id}")


def delete_block_document(api_url: str, block_document_id: str) -> None:
    _api(api_url, "DELETE", f"/block_documents/{block_document_id}")


def read_marker(marker_dir: Path, run_id: str, suffix: str) -> Any:
    """Return the JSON a test flow wrote (see ``tests/flows/_markers.py``), or None if absent."""
    path = marker_dir / f"{run_id}.{suffix}"
    if not path.exists():
        return None
    return json.loads(path.read_text())
