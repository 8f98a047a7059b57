"""One agent serving a Prefect 3 `process` pool and a `docker` pool at once (`-p` twice): the
process pool's run runs on the host as a process, the docker pool's in a container of the
real daemon, each by its own pool's type, both Completed; the agent is a worker of both.

Prefect's own workers serve exactly one pool of one type (PrefectHQ/prefect#19050 asks for
more). The actor tests (`tests/actors/test_many_pools.py`) cover the rest in milliseconds:
a refused pool alone, the lease, the limits, cancellation and recovery in every pool.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from actors.edges.processes import HOSTNAME
from actors.launcher.local_server import LocalPrefectServer
from examples.harness import prefect3
from examples.harness.docker_daemon import DockerDaemon
from examples.harness.flow_image import PREFECT3_PYTHON, ImageBuild
from tests.conftest import AgentFactory, ThreadAgent
from tests.integration import test_docker_runs as docker_runs
from tests.integration.helpers import FLOWS, infrastructure_pid
from tests.support.prefect_objects import call_api, read_marker, run_state

pytestmark = [pytest.mark.integration, pytest.mark.docker]

daemon = docker_runs.daemon  # the daemon as the agent finds it; the test's containers removed


def pool_deployment(api_url: str, pool: str, queue: str, job_variables: dict[str, Any]) -> str:
    """A 3.x deployment of the `hello` flow on `pool`'s queue `queue`."""
    flow_id = call_api(api_url, "POST", "/flows/", {"name": "hello"})["id"]
    body = {
        "name": f"{pool}-{queue}",
        "flow_id": flow_id,
        "work_pool_name": pool,
        "work_queue_name": queue,
        "entrypoint": "hello.py:hello",
        "path": str(FLOWS),
        "job_variables": job_variables,
    }
    return str(call_api(api_url, "POST", "/deployments/", body)["id"])


def run_of(api_url: str, deployment: str, markers: Path) -> str:
    params = {"marker_dir": str(markers), "env_name": "GREETING"}
    path = f"/deployments/{deployment}/create_flow_run"
    return str(call_api(api_url, "POST", path, {"parameters": params})["id"])


def workers_of(api_url: str, pool: str) -> set[str]:
    rows = call_api(api_url, "POST", f"/work_pools/{pool}/workers/filter", {})
    return {row["name"] for row in rows}


def test_one_agent_serves_a_process_pool_and_a_docker_pool_each_run_on_its_own_kind(
    prefect3_server: LocalPrefectServer,
    library_agent: AgentFactory,
    markers: Path,
    *,
    docker_daemon: DockerDaemon,
    daemon: Any,
    flow_image: ImageBuild,
) -> None:
    api_url, tag = prefect3_server.api_url, uuid.uuid4().hex[:8]
    process_pool, docker_pool, queue = f"process-{tag}", f"docker-{tag}", f"q-{tag}"
    call_api(api_url, "POST", "/work_pools/", {"name": process_pool, "type": "process"})
    template = docker_runs.docker_pool_template()
    body = {"name": docker_pool, "type": "docker", "base_job_template": template}
    call_api(api_url, "POST", "/work_pools/", body)
    on_host = pool_deployment(
        api_url,
        process_pool,
        queue,
        {
            "command": f"{prefect3.PYTHON} -m prefect.engine",
            "working_dir": str(FLOWS),
            "env": {"GREETING": "from the process pool"},
        },
    )
    in_container = pool_deployment(
        api_url,
        docker_pool,
        queue,
        {
            "image": flow_image.tag,
            "image_pull_policy": "Never",
            "command": f"{PREFECT3_PYTHON} -m prefect.engine",
            "volumes": [f"{FLOWS}:{FLOWS}:ro", f"{markers}:{markers}"],
            "env": {"GREETING": "from the docker pool"},
            "labels": {**docker_daemon.labels, docker_runs.TEST_LABEL: docker_runs.SESSION},
        },
    )
    process_run = run_of(api_url, on_host, markers)
    container_run = run_of(api_url, in_container, markers)

    agent = library_agent(
        api_url=api_url, work_queues=(queue,), work_pools=(process_pool, docker_pool)
    )

    for run in (process_run, container_run):
        assert docker_runs.ended(api_url, run, 180)[0] == "COMPLETED", run_state(api_url, run)
    assert isinstance(agent, ThreadAgent)
    for run in (process_run, container_run):  # each exit read: nothing in flight at the stop
        agent.wait_finished(run, 60, "the agent to read the exit")
    assert read_marker(markers, process_run, "env")["value"] == "from the process pool"
    assert read_marker(markers, container_run, "env")["value"] == "from the docker pool"

    # The process pool's run ran on the host, as a process: a `host:pid` pid, no container.
    pid = infrastructure_pid(api_url, process_run)
    assert pid is not None and re.fullmatch(rf"{re.escape(HOSTNAME)}:\d+", pid), pid
    label = {"label": f"io.prefect.flow-run-id={process_run}"}
    assert daemon.containers.list(all=True, filters=label) == []
    # The docker pool's run ran in a container of the daemon, from the pool's image.
    container = docker_runs.container_of(daemon, api_url, container_run)
    assert container.labels["io.prefect.flow-run-id"] == container_run
    assert container.attrs["Config"]["Image"] == flow_image.tag
    assert container.attrs["State"]["ExitCode"] == 0

    # One agent, one name, a worker of both pools; a watcher per pool, neither refused.
    name = agent.tree().detail["name"]
    for pool in (process_pool, docker_pool):
        assert name in workers_of(api_url, pool), pool
    watchers = {n.name: n for n in agent.tree().children if n.kind == "QueueWatcher"}
    assert set(watchers) == {f"{process_pool}/{queue}", f"{docker_pool}/{queue}"}
    assert not any("refused" in n.detail for n in watchers.values())
