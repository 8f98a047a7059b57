"""Create and inspect real Prefect objects on a test server: conveniences for the tests.

Everything takes the server's ``api_url`` explicitly instead of reading
``PREFECT_API_URL``: tests run several servers over a session and must never
fall back to an ephemeral in-process API by accident.

Every REST call goes through ``actors.launcher.prefect_objects`` (one pooled
client per server). Prefect itself is used only for what the server cannot do:
loading a flow file for its flow's name and parameter schema, the way
``prefect deployment build`` would.
"""

from __future__ import annotations

import atexit
import json
import threading
from pathlib import Path
from typing import Any

from prefect.flows import load_flow_from_entrypoint
from prefect.utilities.callables import parameter_schema

from actors.launcher.prefect_objects import PrefectObjects
from actors.rules.retry import RetryPolicy
from tests.support.waiting import wait_for

# A SQLite server answers 503 while its database is locked by other writers (an agent under
# test draining runs): the test's own set-up waits and tries again, a few times (on 503 only,
# about 5 s in all).
TEST_RETRY = RetryPolicy(base_delay=0.2, max_delay=1.0, attempts=8, jitter=False)

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
    "prefect_objects",
    "read_marker",
    "read_run",
    "read_states",
    "run_state",
    "set_run_state",
    "wait_for",
]


_clients: dict[str, PrefectObjects] = {}
_clients_lock = threading.Lock()


def prefect_objects(api_url: str) -> PrefectObjects:
    """One pooled client per server for the session: a new ``httpx.Client`` costs about 30 ms
    (it builds a TLS context), which a test making hundreds of calls used to pay per call."""
    with _clients_lock:
        client = _clients.get(api_url)
        if client is None:
            client = PrefectObjects(
                api_url,
                retry=TEST_RETRY,
                retry_statuses=frozenset({503}),
                retry_transport_errors=False,
            )
            _clients[api_url] = client
        return client


@atexit.register
def _close_clients() -> None:
    with _clients_lock:
        for client in _clients.values():
            client.close()
        _clients.clear()


def call_api(api_url: str, method: str, path: str, body: Any = None) -> Any:
    """A plain REST call for a test's set-up, with the same 503 patience as every helper here."""
    return prefect_objects(api_url).call(method, path, json=body)


def _flow_of(flow_file: Path, flow_func_name: str) -> tuple[str, dict[str, Any]]:
    """The flow's name and its parameter schema, from the flow file itself."""
    flow = load_flow_from_entrypoint(f"{flow_file}:{flow_func_name}", use_placeholder_flow=False)
    return flow.name, parameter_schema(flow).dict()


def _deploy(
    api_url: str,
    flow_file: Path,
    flow_func_name: str,
    *,
    name: str,
    work_queue: str,
    infrastructure_document_id: str | None,
    infra_overrides: dict[str, Any] | None = None,
) -> str:
    flow_file = flow_file.resolve()
    flow_name, schema = _flow_of(flow_file, flow_func_name)
    return prefect_objects(api_url).deploy(
        flow_name,
        name,
        work_queue=work_queue,
        path=str(flow_file.parent),
        entrypoint=f"{flow_file.name}:{flow_func_name}",
        parameter_openapi_schema=schema,
        job_variables=infra_overrides or {},
        infrastructure_document_id=infrastructure_document_id,
    )


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
    block = None
    if infrastructure_block:
        block = prefect_objects(api_url).create_process_block(
            command=command, env=env, working_dir=working_dir
        )
    return _deploy(
        api_url,
        flow_file,
        flow_func_name,
        name=name,
        work_queue=work_queue,
        infrastructure_document_id=block,
        infra_overrides=infra_overrides,
    )


def deploy_with_block_data(
    api_url: str,
    flow_file: Path,
    flow_func_name: str,
    *,
    name: str,
    work_queue: str,
    block_type_slug: str,
    data: dict[str, Any],
    infra_overrides: dict[str, Any] | None = None,
) -> str:
    """Deploy a flow whose infrastructure document is of an arbitrary block type (and the
    deployment's `infra_overrides` of its fields).

    Lets tests hand the agent infrastructure it does not support (a
    ``docker-container``, or a slug the server has never heard of, which is
    registered here on the fly).
    """
    block = prefect_objects(api_url).create_block_document(
        block_type_slug, data, register_missing_type=True
    )
    return _deploy(
        api_url,
        flow_file,
        flow_func_name,
        name=name,
        work_queue=work_queue,
        infrastructure_document_id=block,
        infra_overrides=infra_overrides,
    )


def create_run(
    api_url: str,
    deployment_id: str,
    *,
    scheduled_in: float = 0.0,
    parameters: dict[str, Any] | None = None,
) -> str:
    """Create a Scheduled flow run due ``scheduled_in`` seconds from now; return its id."""
    return prefect_objects(api_url).create_run(
        deployment_id, due_in=scheduled_in, parameters=parameters
    )


def create_runs(
    api_url: str,
    deployment_id: str,
    n: int,
    *,
    scheduled_in: float = 0.0,
    parameters: dict[str, Any] | None = None,
) -> list[str]:
    return prefect_objects(api_url).create_runs(
        deployment_id, n, due_in=scheduled_in, parameters=parameters
    )


def read_run(api_url: str, run_id: str) -> dict[str, Any]:
    return prefect_objects(api_url).read_run(run_id)


def read_states(api_url: str, run_ids: list[str]) -> dict[str, str]:
    """Each run's state type, read a page of runs per request rather than one by one."""
    return prefect_objects(api_url).read_states(run_ids)


def run_state(api_url: str, run_id: str) -> tuple[str, str | None, str | None]:
    """Return ``(type, name, message)``; name distinguishes e.g. Late from Scheduled."""
    return prefect_objects(api_url).run_state(run_id)


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
    return prefect_objects(api_url).set_state(run_id, type_, name, force=force, message=message)


def pause_queue(api_url: str, name: str, paused: bool) -> None:
    prefect_objects(api_url).pause_work_queue(name, paused)


def create_pool(
    api_url: str, name: str, *, type_: str = "prefect-agent", concurrency_limit: int | None = None
) -> dict[str, Any]:
    """A work pool (Prefect 2.10+); the server gives it a queue named "default"."""
    return prefect_objects(api_url).create_work_pool(
        name, type_=type_, concurrency_limit=concurrency_limit
    )


def create_pool_queue(
    api_url: str, pool: str, name: str, *, priority: int | None = None
) -> dict[str, Any]:
    return prefect_objects(api_url).create_pool_queue(pool, name, priority=priority)


def pause_pool(api_url: str, pool: str, paused: bool) -> None:
    prefect_objects(api_url).pause_work_pool(pool, paused)


def move_deployment_to_pool(api_url: str, deployment_id: str, pool: str, queue: str) -> None:
    """Put a deployment (and the runs created from it afterwards) on a pool's queue."""
    prefect_objects(api_url).move_deployment_to_pool(deployment_id, pool, queue)


def delete_deployment(api_url: str, deployment_id: str) -> None:
    prefect_objects(api_url).delete_deployment(deployment_id)


def delete_block_document(api_url: str, block_document_id: str) -> None:
    prefect_objects(api_url).delete_block_document(block_document_id)


def read_marker(marker_dir: Path, run_id: str, suffix: str) -> Any:
    """Return the JSON a test flow wrote (see ``tests/flows/_markers.py``), or None if absent."""
    path = marker_dir / f"{run_id}.{suffix}"
    if not path.exists():
        return None
    return json.loads(path.read_text())
