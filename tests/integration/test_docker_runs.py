"""Docker runs end to end: a 2.20 deployment whose infrastructure is a `DockerContainer` block
document runs in a container of a real daemon, through the agent as a library with its default
kinds (the Docker kind loaded on the first Docker run, its daemon found from DOCKER_HOST as
Docker's own tools find it).

- The real Prefect 2.20 engine in the flow image (`/opt/prefect2/bin/python -m prefect.engine`,
  the host's network, the flow's code and the markers reached through volumes) completes the
  run; the block's env reaches the flow.
- On a Prefect 3 server, a `docker` work pool (its template Prefect's own, from the server's
  worker metadata) runs its flow run by the Prefect 3 engine in a container, never on the host.
- A busybox command in the plain image: the container carries the run's label and the block's
  env; the run's infrastructure pid on the server is `docker:<daemon>:<container>`; a non-zero
  exit is Crashed with its code; Cancelling the run stops its container and the run is
  Cancelled.

Every container carries the harness's labels and this module's, and is removed after each test.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from actors.launcher.local_server import LocalPrefectServer
from examples.harness import prefect3
from examples.harness.docker_daemon import DockerDaemon
from examples.harness.flow_image import PREFECT2_PYTHON, PREFECT3_PYTHON, ImageBuild
from tests.conftest import AgentFactory, ThreadAgent
from tests.integration.helpers import FINAL, FLOWS, infrastructure_pid, state_type
from tests.support.docker_fixtures import daemon_seen_by_agents
from tests.support.prefect_objects import (
    call_api,
    create_run,
    deploy_with_block_data,
    read_marker,
    run_state,
    set_run_state,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.docker]

TEST_LABEL = "prefect-actor-agent.test-runs"
SESSION = uuid.uuid4().hex


@pytest.fixture
def daemon(docker_daemon: DockerDaemon, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The daemon as the agent finds it (its environment names it); a client for the test;
    every container of the test removed afterwards."""
    with daemon_seen_by_agents(docker_daemon, monkeypatch, TEST_LABEL, SESSION) as client:
        yield client


def deploy_container(
    api_url: str, queue: str, docker_daemon: DockerDaemon, name: str, **data: Any
) -> str:
    """A deployment whose infrastructure is a `docker-container` block document."""
    data.setdefault("image_pull_policy", "NEVER")
    data["labels"] = {**docker_daemon.labels, TEST_LABEL: SESSION, **data.get("labels", {})}
    return deploy_with_block_data(
        api_url,
        FLOWS / "hello.py",
        "hello",
        name=f"{name}-{queue}",
        work_queue=queue,
        block_type_slug="docker-container",
        data=data,
    )


def container_of(client: Any, api_url: str, run_id: str) -> Any:
    """The run's container, by the infrastructure pid the server recorded."""
    pid = infrastructure_pid(api_url, run_id)
    assert pid is not None and pid.startswith("docker:"), pid
    return client.containers.get(pid.rsplit(":", 1)[1])


def ended(api_url: str, run: str, timeout: float) -> tuple[str, str | None]:
    """The run's final state type and message, once it has one."""
    wait_for(lambda: state_type(api_url, run) in FINAL, timeout, "the run to end")
    type_, _, message = run_state(api_url, run)
    return type_, message


def test_a_docker_container_block_runs_the_real_engine_in_a_container(
    library_agent: AgentFactory,
    api_url: str,
    queue: str,
    *,
    markers: Path,
    docker_daemon: DockerDaemon,
    daemon: Any,
    flow_image: ImageBuild,
) -> None:
    deployment = deploy_container(
        api_url,
        queue,
        docker_daemon,
        "engine",
        image=flow_image.tag,
        command=[PREFECT2_PYTHON, "-m", "prefect.engine"],
        network_mode="host",
        volumes=[f"{FLOWS}:{FLOWS}:ro", f"{markers}:{markers}"],
        env={"GREETING": "hello from the block"},
        auto_remove=False,
    )
    run = create_run(
        api_url, deployment, parameters={"marker_dir": str(markers), "env_name": "GREETING"}
    )
    agent = library_agent(work_queues=(queue,))
    assert isinstance(agent, ThreadAgent)

    assert ended(api_url, run, 180)[0] == "COMPLETED", run_state(api_url, run)
    assert read_marker(markers, run, "env")["value"] == "hello from the block"
    # The engine reports Completed a moment before its container exits: the agent reads the
    # exit (so the run is not in flight when the test ends and the agent stops).
    agent.wait_finished(run, 60, "the agent to read the exit")
    container = container_of(daemon, api_url, run)
    assert container.labels["io.prefect.flow-run-id"] == run
    assert container.attrs["State"]["ExitCode"] == 0


def test_a_busybox_container_carries_the_runs_label_and_the_blocks_env(
    library_agent: AgentFactory,
    api_url: str,
    queue: str,
    *,
    markers: Path,
    docker_daemon: DockerDaemon,
    daemon: Any,
    plain_image: ImageBuild,
) -> None:
    deployment = deploy_container(
        api_url,
        queue,
        docker_daemon,
        "busybox",
        image=plain_image.tag,
        command=["sh", "-c", 'env > "/markers/$PREFECT__FLOW_RUN_ID.env"'],
        volumes=[f"{markers}:/markers"],
        env={"GREETING": "from the block"},
    )
    run = create_run(api_url, deployment)
    agent = library_agent(work_queues=(queue,))
    assert isinstance(agent, ThreadAgent)

    agent.wait_finished(run, 60, "the run's container to exit")
    env = (markers / f"{run}.env").read_text().splitlines()
    assert "GREETING=from the block" in env
    assert f"PREFECT__FLOW_RUN_ID={run}" in env
    pid = infrastructure_pid(api_url, run)
    assert pid is not None and pid.startswith(f"docker:{daemon.info()['ID']}:"), pid
    container = container_of(daemon, api_url, run)
    assert container.labels["io.prefect.flow-run-id"] == run
    assert container.attrs["State"]["ExitCode"] == 0
    assert "Submission failed" not in (run_state(api_url, run)[2] or "")


def test_a_non_zero_exit_of_a_container_is_crashed_with_its_code(
    library_agent: AgentFactory,
    api_url: str,
    queue: str,
    *,
    docker_daemon: DockerDaemon,
    daemon: Any,
    plain_image: ImageBuild,
) -> None:
    deployment = deploy_container(
        api_url,
        queue,
        docker_daemon,
        "exit3",
        image=plain_image.tag,
        command=["sh", "-c", "exit 3"],
    )
    run = create_run(api_url, deployment)
    library_agent(work_queues=(queue,))

    type_, message = ended(api_url, run, 60)
    assert type_ == "CRASHED", (type_, message)
    assert message is not None and "3" in message, message
    assert container_of(daemon, api_url, run).attrs["State"]["ExitCode"] == 3


def test_a_container_that_cannot_start_fails_its_run_and_is_removed(
    library_agent: AgentFactory,
    api_url: str,
    queue: str,
    *,
    docker_daemon: DockerDaemon,
    daemon: Any,
    plain_image: ImageBuild,
) -> None:
    deployment = deploy_container(
        api_url,
        queue,
        docker_daemon,
        "nostart",
        image=plain_image.tag,
        command=["/no/such/program"],
    )
    run = create_run(api_url, deployment)
    library_agent(work_queues=(queue,))

    type_, message = ended(api_url, run, 60)
    assert type_ == "FAILED", (type_, message)
    assert message is not None and message.startswith("Submission failed."), message
    assert "could not start" in message and "/no/such/program" in message, message
    left = daemon.containers.list(all=True, filters={"label": f"io.prefect.flow-run-id={run}"})
    assert left == []


def test_cancelling_a_run_stops_its_container_and_the_run_is_cancelled(
    library_agent: AgentFactory,
    api_url: str,
    queue: str,
    *,
    docker_daemon: DockerDaemon,
    daemon: Any,
    plain_image: ImageBuild,
) -> None:
    deployment = deploy_container(
        api_url, queue, docker_daemon, "sleeper", image=plain_image.tag, command=["sleep", "300"]
    )
    run = create_run(api_url, deployment)
    library_agent(work_queues=(queue,), cancel_grace_seconds=2)

    def running() -> bool:
        pid = infrastructure_pid(api_url, run)
        if pid is None:
            return False
        try:
            return bool(container_of(daemon, api_url, run).attrs["State"]["Running"])
        except docker.errors.NotFound:
            return False

    wait_for(running, 60, "the run's container to run")
    set_run_state(api_url, run, "CANCELLING", "Cancelling")

    wait_for(lambda: state_type(api_url, run) == "CANCELLED", 60, "the run to be Cancelled")
    try:
        state = container_of(daemon, api_url, run).attrs["State"]
    except docker.errors.NotFound:
        return  # gone from the daemon: stopped
    assert not state["Running"], state


def docker_pool_template() -> dict[str, Any]:
    """Prefect's own template of a `docker` pool, as the 3.x server offers it to its UI (the
    worker metadata it ships with)."""
    found = sorted(
        prefect3.VENV.glob(
            "lib/python*/site-packages/prefect/server/api/collections_data/views/"
            "aggregate-worker-metadata.json"
        )
    )
    assert found, f"no worker metadata in {prefect3.VENV}"
    metadata = json.loads(found[0].read_text())
    template: dict[str, Any] = metadata["prefect-docker"]["docker"][
        "default_base_job_configuration"
    ]
    return template


def test_a_3x_docker_pool_runs_its_flow_in_a_container_never_on_the_host(
    prefect3_server: LocalPrefectServer,
    library_agent: AgentFactory,
    markers: Path,
    *,
    docker_daemon: DockerDaemon,
    daemon: Any,
    flow_image: ImageBuild,
) -> None:
    api_url = prefect3_server.api_url
    pool = f"docker-{uuid.uuid4().hex[:8]}"
    queue = f"q-{uuid.uuid4().hex[:8]}"
    call_api(
        api_url,
        "POST",
        "/work_pools/",
        {"name": pool, "type": "docker", "base_job_template": docker_pool_template()},
    )
    flow_id = call_api(api_url, "POST", "/flows/", {"name": "hello"})["id"]
    body = {
        "name": f"docker-{queue}",
        "flow_id": flow_id,
        "work_pool_name": pool,
        "work_queue_name": queue,
        "entrypoint": "hello.py:hello",
        "path": str(FLOWS),
        "job_variables": {
            "image": flow_image.tag,
            "image_pull_policy": "Never",
            "command": f"{PREFECT3_PYTHON} -m prefect.engine",
            "volumes": [f"{FLOWS}:{FLOWS}:ro", f"{markers}:{markers}"],
            "env": {"GREETING": "from the pool's job variables"},
            "labels": {**docker_daemon.labels, TEST_LABEL: SESSION},
        },
    }
    deployment = str(call_api(api_url, "POST", "/deployments/", body)["id"])
    params = {"marker_dir": str(markers), "env_name": "GREETING"}
    run = str(
        call_api(
            api_url, "POST", f"/deployments/{deployment}/create_flow_run", {"parameters": params}
        )["id"]
    )
    agent = library_agent(api_url=api_url, work_queues=(queue,), work_pool=pool)
    assert isinstance(agent, ThreadAgent)

    assert ended(api_url, run, 180)[0] == "COMPLETED", run_state(api_url, run)
    agent.wait_finished(run, 60, "the agent to read the exit")
    assert read_marker(markers, run, "env")["value"] == "from the pool's job variables"
    container = container_of(daemon, api_url, run)  # its pid a container's, not the host's
    assert container.labels["io.prefect.flow-run-id"] == run
    assert container.attrs["Config"]["Image"] == flow_image.tag
    assert container.attrs["State"]["ExitCode"] == 0
