"""Containers outlive agents: a container belongs to its daemon, not to the agent that started it.

Against the real 2.20 server and the real daemon (busybox containers of the plain image, each
waiting for its gate file, `<run id>.go` in the markers directory, and exiting with the code
written in it; the test moves the run to Running and Completed as the engine would):

- an agent SIGKILLed and started again reports what its containers did meanwhile: a non-zero
  exit Crashed with its code, a Completed run left Completed, an exit 0 without a final state
  Crashed; a container still running is watched again and a Cancel stops it;
- a peer sharing the daemon adopts a SIGKILLed agent's containers (not Crashed): the adoption
  is on the server, the peer reports the real exit and cancels what is cancelled;
- an agent cut off from the server while its peer adopts its containers lets them run when it
  is back, and no run's end is reported twice;
- the daemon restarting under a running container ends its run Crashed with what happened,
  once, and the agent goes on serving runs on the daemon that is back; a daemon gone for longer
  than the kind waits ends the wait saying it went away, and a container stopped by someone
  else (`docker stop`) is not blamed on the daemon; one removed (`docker rm -f`) is said so at
  once, without the watch of the daemon that tells a stop from a shutdown.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import pytest

from actors.edges.docker_kind import ContainerJob, DockerKind
from actors.edges.infrastructure import ExitStatus
from examples.harness.agent_status import StatusUnavailableError, find_node
from examples.harness.docker_daemon import DockerDaemon
from examples.harness.flow_image import ImageBuild
from examples.harness.hosts import SimulatedHost
from messages.user.tree import ActorKind
from tests.conftest import AgentFactory, LauncherAgent, ThreadAgent
from tests.integration.helpers import (
    FINAL,
    has_polled,
    history,
    infrastructure_pid,
    run_agent_with_status,
)
from tests.integration.test_docker_kind import block_source
from tests.integration.test_docker_kind import run as kind_run
from tests.integration.test_docker_runs import (  # noqa: F401 - `daemon` is a fixture
    SESSION,
    TEST_LABEL,
    container_of,
    daemon,
    deploy_container,
    ended,
)
from tests.support.prefect_objects import create_run, run_state, set_run_state, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.timeout(240)]

HEARTBEAT, LOST = 2.0, 6.0
GATED = 'while [ ! -f "/markers/$PREFECT__FLOW_RUN_ID.go" ]; do sleep 0.2; done; exit "$(cat "/markers/$PREFECT__FLOW_RUN_ID.go")"'  # noqa: E501


def _gated_deployment(
    api_url: str, queue: str, docker_daemon: DockerDaemon, image: ImageBuild, markers: Path
) -> str:
    return deploy_container(
        api_url,
        queue,
        docker_daemon,
        "gated",
        image=image.tag,
        command=["sh", "-c", GATED],
        volumes=[f"{markers}:/markers"],
    )


def _open_gate(markers: Path, run: str, code: int) -> None:
    (markers / f"{run}.go").write_text(str(code))


def _container_state(client: Any, api_url: str, run: str) -> dict[str, Any] | None:
    """The run's container's state on the daemon (None: no pid recorded, or gone)."""
    pid = infrastructure_pid(api_url, run)
    if pid is None:
        return None
    try:
        state: dict[str, Any] = container_of(client, api_url, run).attrs["State"]
    except docker.errors.NotFound:
        return None
    return state


def _running(client: Any, api_url: str, run: str) -> bool:
    state = _container_state(client, api_url, run)
    return bool(state and state["Running"])


def _exited(client: Any, api_url: str, run: str) -> bool:
    state = _container_state(client, api_url, run)
    return state is not None and state["Status"] == "exited"


def _final_states(api_url: str, run: str) -> list[str]:
    return [str(s["type"]) for s in history(api_url, run) if s["type"] in FINAL]


def _started_as_the_engine_would(client: Any, api_url: str, runs: list[str]) -> None:
    for run in runs:
        wait_for(lambda: _running(client, api_url, run), 60, f"{run}'s container to run")  # noqa: B023
        set_run_state(api_url, run, "RUNNING", "Running")


def _sigkill(agent: Any) -> None:
    assert isinstance(agent, LauncherAgent)
    agent.process.kill()  # SIGKILL: no goodbye
    agent.process.wait(10)


def _agent_options(queue: str, **more: Any) -> dict[str, Any]:
    """An agent of the test's queue that holds its four runs at once and cancels quickly."""
    return {
        "work_queues": (queue,),
        "limit": 4,
        "cancel_grace_seconds": 2,
        "cancel_poll_interval": 1,
        **more,
    }


def test_an_agent_killed_and_restarted_reports_what_its_containers_did_meanwhile(
    launcher_agent: AgentFactory,
    api_url: str,
    queue: str,
    *,
    markers: Path,
    docker_daemon: DockerDaemon,
    daemon: Any,  # noqa: F811
    plain_image: ImageBuild,
) -> None:
    deployment = _gated_deployment(api_url, queue, docker_daemon, plain_image, markers)
    crashing, completed, silent, running = (create_run(api_url, deployment) for _ in range(4))
    options = _agent_options(queue)
    first = launcher_agent(**options)
    _started_as_the_engine_would(daemon, api_url, [crashing, completed, silent, running])

    _sigkill(first)
    _open_gate(markers, crashing, 3)
    set_run_state(api_url, completed, "COMPLETED", "Completed")  # the engine reported its end
    _open_gate(markers, completed, 0)
    _open_gate(markers, silent, 0)  # ended without a final state
    for run in (crashing, completed, silent):
        wait_for(lambda: _exited(daemon, api_url, run), 30, "the container to exit")  # noqa: B023
    assert _running(daemon, api_url, running)

    second = launcher_agent(**options)

    type_, message = ended(api_url, crashing, 60)
    assert type_ == "CRASHED" and "status code 3" in (message or ""), (type_, message)
    type_, message = ended(api_url, silent, 60)
    assert type_ == "CRASHED" and "code 0 without reporting" in (message or ""), message
    wait_for(
        lambda: "watched by pid" in (_supervisor_phase(second, running) or ""),
        30,
        "the running container to be watched again",
    )
    assert run_state(api_url, completed)[0] == "COMPLETED"
    for run in (crashing, completed, silent):
        assert len(_final_states(api_url, run)) == 1, history(api_url, run)

    set_run_state(api_url, running, "CANCELLING", "Cancelling")
    assert ended(api_url, running, 60)[0] == "CANCELLED", run_state(api_url, running)
    assert not _running(daemon, api_url, running)


def _supervisor_phase(agent: Any, run: str) -> str | None:
    """The phase of the agent's supervisor of `run`, from its tree (None: none holds it)."""
    try:
        node = find_node(agent.tree(), ActorKind.RUN_SUPERVISOR, run)
    except StatusUnavailableError:  # not up yet
        return None
    return node.state if node is not None else None


def test_a_peer_on_the_same_daemon_adopts_a_killed_agents_containers(
    launcher_agent: AgentFactory,
    api_url: str,
    queue: str,
    *,
    markers: Path,
    docker_daemon: DockerDaemon,
    daemon: Any,  # noqa: F811
    plain_image: ImageBuild,
) -> None:
    deployment = _gated_deployment(api_url, queue, docker_daemon, plain_image, markers)
    crashing, cancelled, live_cancel, lost_cancel = (
        create_run(api_url, deployment) for _ in range(4)
    )
    options = _agent_options(queue, heartbeat_seconds=HEARTBEAT, lost_agent_seconds=LOST)
    lost = launcher_agent(name=f"lost-{queue}", **options)
    _started_as_the_engine_would(daemon, api_url, [crashing, cancelled, live_cancel, lost_cancel])
    peer = launcher_agent(name=f"peer-{queue}", **options)
    assert isinstance(peer, LauncherAgent)
    wait_for(lambda: has_polled(peer.status, queue), 60, "the peer to serve")
    # The peer's start takes no live agent's container for an earlier life's.
    for run in (crashing, cancelled, live_cancel, lost_cancel):
        assert _supervisor_phase(peer, run) is None

    # A cancel of a live agent's container: that agent's alone, one Cancelled (the peer, on
    # the same daemon, leaves it).
    # (The peer, holding no run, polls for cancellations at the safety net's pace: by then the
    # run is Cancelled by its agent, and there is nothing left for the peer to do.)
    set_run_state(api_url, live_cancel, "CANCELLING", "Cancelling")
    assert ended(api_url, live_cancel, 60)[0] == "CANCELLED"
    assert _final_states(api_url, live_cancel) == ["CANCELLED"], history(api_url, live_cancel)
    assert peer.metric("prefect_agent_runs_finished_total", outcome="cancelled") == 0

    _sigkill(lost)
    killed_at = time.monotonic()
    set_run_state(api_url, lost_cancel, "CANCELLING", "Cancelling")  # asked of a dead agent

    def adopted(run: str) -> bool:
        return any(
            f"Adopted by agent 'peer-{queue}'" in str(s.get("message") or "")
            for s in history(api_url, run)
        )

    wait_for(lambda: adopted(crashing) and adopted(cancelled), 3 * LOST + 30, "the adoption")
    print(f"adopted {time.monotonic() - killed_at:.1f}s after the agent was killed")
    wait_for(
        lambda: peer.metric("prefect_agent_runs_recovered_total", kind="adopted") == 2,
        10,
        "the peer to count two adoptions",
    )
    assert peer.metric("prefect_agent_runs_recovered_total", kind="crashed") == 0
    for run in (crashing, cancelled):
        assert run_state(api_url, run)[0] == "RUNNING"
        assert _running(daemon, api_url, run)  # adopted, not killed
    # The run being cancelled when its agent died: Cancelled by the peer, its container stopped.
    type_, message = ended(api_url, lost_cancel, 30)
    assert type_ == "CANCELLED" and "is stopped" in (message or ""), (type_, message)
    wait_for(lambda: not _running(daemon, api_url, lost_cancel), 30, "its container to stop")
    assert _final_states(api_url, lost_cancel) == ["CANCELLED"], history(api_url, lost_cancel)

    _open_gate(markers, crashing, 3)
    type_, message = ended(api_url, crashing, 60)
    assert type_ == "CRASHED" and "status code 3" in (message or ""), (type_, message)
    assert _final_states(api_url, crashing) == ["CRASHED"], history(api_url, crashing)

    set_run_state(api_url, cancelled, "CANCELLING", "Cancelling")
    assert ended(api_url, cancelled, 60)[0] == "CANCELLED", run_state(api_url, cancelled)
    assert not _running(daemon, api_url, cancelled)
    assert _final_states(api_url, cancelled) == ["CANCELLED"], history(api_url, cancelled)


def test_the_daemon_restarting_under_a_container_crashes_its_run_once_and_the_agent_serves_on(
    library_agent: AgentFactory,
    api_url: str,
    queue: str,
    *,
    markers: Path,
    docker_daemon: DockerDaemon,
    daemon: Any,  # noqa: F811
    plain_image: ImageBuild,
) -> None:
    if not docker_daemon.private:
        pytest.skip("the test restarts its own daemon, not the machine's")
    deployment = _gated_deployment(api_url, queue, docker_daemon, plain_image, markers)
    run = create_run(api_url, deployment)
    agent = library_agent(work_queues=(queue,))
    assert isinstance(agent, ThreadAgent)
    _started_as_the_engine_would(daemon, api_url, [run])

    docker_daemon.restart(down_seconds=2.0)

    type_, message = ended(api_url, run, 90)
    assert type_ == "CRASHED", (type_, message)
    assert "the Docker daemon restarted while the container ran" in (message or ""), message
    assert _final_states(api_url, run) == ["CRASHED"], history(api_url, run)
    assert agent.finished(run) is not None

    later = create_run(api_url, deployment)
    client = docker_daemon.client()
    try:
        wait_for(lambda: _running(client, api_url, later), 60, "a later run's container to run")
        _open_gate(markers, later, 0)
        finished = agent.wait_finished(later, 60, "the later run to end")
    finally:
        client.close()
    assert finished.outcome == "exited", finished


def test_an_agent_cut_off_and_back_leaves_the_containers_its_peer_adopted_alone(
    postgres_api_url: str,
    tmp_path: Path,
    *,
    markers: Path,
    docker_daemon: DockerDaemon,
    daemon: Any,  # noqa: F811
    plain_image: ImageBuild,
) -> None:
    """The fence after an adoption: the cut-off agent, back, lets the adopted containers run
    (the peer watches them) and no run's end is reported twice."""
    api, queue = postgres_api_url, f"fence-{uuid.uuid4().hex[:8]}"
    deployment = _gated_deployment(api, queue, docker_daemon, plain_image, markers)
    args = [
        "-q", queue,
        "--limit", "2",
        "--query-interval", "1",
        "--heartbeat-seconds", str(HEARTBEAT),
        "--lost-agent-seconds", str(LOST),
        "--cancel-poll-interval", "1",
        "--shutdown-grace-seconds", "1",
    ]  # fmt: skip
    with (
        SimulatedHost.for_api("fence-a", api, log_dir=tmp_path) as a,
        SimulatedHost.for_api("fence-b", api, log_dir=tmp_path) as b,
    ):
        status_a = run_agent_with_status(a, args)
        wait_for(lambda: has_polled(status_a, queue), 60, "a to serve")
        during, after = create_run(api, deployment), create_run(api, deployment)
        _started_as_the_engine_would(daemon, api, [during, after])
        status_b = run_agent_with_status(b, args)
        wait_for(lambda: has_polled(status_b, queue), 60, "b to serve")

        a.cut_off()

        def adopted(run: str) -> bool:
            return any("Adopted by agent" in str(s.get("message") or "") for s in history(api, run))

        wait_for(lambda: adopted(during) and adopted(after), 3 * LOST + 30, "b to adopt both")
        # The end of one while a is still cut off: b reports it (a tries, in vain, later).
        _open_gate(markers, during, 3)
        type_, message = ended(api, during, 60)
        assert type_ == "CRASHED" and "status code 3" in (message or ""), message

        a.reconnect()
        relinquished = "prefect_agent_runs_finished_total"
        wait_for(
            lambda: (status_a.sample(relinquished, outcome="relinquished") or 0) >= 1,
            2 * HEARTBEAT + 10,
            "a to let the adopted run go",
        )
        assert _running(daemon, api, after)  # a let it go untouched
        _open_gate(markers, after, 4)
        type_, message = ended(api, after, 60)
        assert type_ == "CRASHED" and "status code 4" in (message or ""), message
        for run, code in ((during, 3), (after, 4)):
            assert _final_states(api, run) == ["CRASHED"], history(api, run)
            state = _container_state(daemon, api, run)
            assert state is not None and state["ExitCode"] == code, state  # never killed


def _waited(job: ContainerJob) -> tuple[threading.Thread, list[ExitStatus]]:
    """The job's wait, in a thread of its own (as the supervisor's helper makes it)."""
    status: list[ExitStatus] = []
    waiter = threading.Thread(target=lambda: status.append(job.wait()), daemon=True)
    waiter.start()
    return waiter, status


def _sleeper_waited(
    kind: DockerKind, plain_image: ImageBuild
) -> tuple[ContainerJob, threading.Thread, list[ExitStatus]]:
    """A started container that sleeps 5 minutes, and its wait under way."""
    source = block_source(kind, kind_run(), image=plain_image.tag, command=["sleep", "300"])
    source.block.data["labels"][TEST_LABEL] = SESSION  # type: ignore[union-attr]
    job = kind.create(kind.prepare(source))
    job.start()
    waiter, status = _waited(job)
    return job, waiter, status


def test_a_daemon_gone_for_longer_than_the_kind_waits_ends_the_wait_saying_so(
    docker_daemon: DockerDaemon,
    daemon: Any,  # noqa: F811
    plain_image: ImageBuild,
) -> None:
    if not docker_daemon.private:
        pytest.skip("the test stops its own daemon, not the machine's")
    kind = DockerKind(docker_daemon.environ, daemon_return_seconds=1.0)
    try:
        _, waiter, status = _sleeper_waited(kind, plain_image)
        docker_daemon.restart(down_seconds=4.0)  # away longer than the kind waits
        waiter.join(60)
        assert status, "the wait did not end"
        assert status[0].cause is not None and "went away while the container ran" in (
            status[0].cause
        ), status
    finally:
        kind.close()


def test_a_container_stopped_from_outside_the_agent_is_not_blamed_on_the_daemon(
    docker_daemon: DockerDaemon,
    daemon: Any,  # noqa: F811
    plain_image: ImageBuild,
) -> None:
    kind = DockerKind(docker_daemon.environ)
    try:
        job, waiter, status = _sleeper_waited(kind, plain_image)
        daemon.api.stop(job.container_id, timeout=1)  # an operator's `docker stop`
        waiter.join(60)
        assert status and status[0].code in (137, 143), status
        assert "stopped from outside the agent (signal" in (status[0].cause or ""), status
        assert "daemon" not in (status[0].cause or ""), status
    finally:
        kind.close()


def test_a_container_removed_from_outside_the_agent_is_reported_at_once(
    docker_daemon: DockerDaemon,
    daemon: Any,  # noqa: F811
    plain_image: ImageBuild,
) -> None:
    """`docker rm -f` under a running container: the daemon still answers and the container
    is gone, which a daemon shutting down never does, so there is nothing to watch the daemon
    for (20 s, for a mere stop) before the run's end is known."""
    kind = DockerKind(docker_daemon.environ)
    try:
        job, waiter, status = _sleeper_waited(kind, plain_image)
        daemon.api.remove_container(job.container_id, force=True)  # an operator's `docker rm -f`
        waiter.join(5)  # the deadline of the answer: well inside the daemon watch's 20 s
        assert status, "the wait did not end within 5 s of the removal"
        assert "removed from outside the agent (signal" in (status[0].cause or ""), status
        assert "daemon" not in (status[0].cause or ""), status
    finally:
        kind.close()
