"""Outages, error bursts, several agents, an agent killed and restarted, bad input, secrets:
no run lost, none doubled, and the agent says why when it cannot do better."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from actors.edges.prefect_api import PrefectApi, RetryPolicy
from actors.launcher.local_server import LocalPrefectServer
from examples.harness.agent_logs import lines_with
from examples.harness.agent_status import find_node, free_port
from examples.harness.fault_proxy import FaultProxy
from messages.user.tree import ActorNode
from tests.conftest import ROOT, AgentFactory, LauncherAgent, ThreadAgent, launcher_args
from tests.integration.helpers import (
    FINAL,
    FLOWS,
    command_markers,
    command_starts,
    deploy_marker_command,
    history,
    process_gone,
    states,
)
from tests.support.prefect_objects import (
    create_run,
    create_runs,
    deploy,
    read_marker,
    read_run,
    run_state,
    wait_for,
)

pytestmark = pytest.mark.integration

SUBMITTED = "prefect_agent_runs_submitted_total"
FINISHED = "prefect_agent_runs_finished_total"  # by outcome (messages/user/events.py)
API_ERRORS = "prefect_agent_api_errors_total"  # failed attempts, by status ("none": no answer)


def test_server_outage_loses_no_exit_and_starts_no_run_twice(
    prefect_server: LocalPrefectServer,
    library_agent: AgentFactory,
    api_url: str,
    queue: str,
    markers: Path,
) -> None:
    deployment = deploy_marker_command(api_url, queue, markers, "4", "3")  # 4 s, then exit 3
    in_flight = create_runs(api_url, deployment, 3)
    due_later = create_runs(api_url, deployment, 2, scheduled_in=8)  # due during the outage
    agent = library_agent(work_queues=(queue,), query_interval=1.0, prefetch_seconds=0)
    assert isinstance(agent, ThreadAgent)
    wait_for(
        lambda: all(read_run(api_url, r).get("infrastructure_pid") for r in in_flight),
        30,
        "the first runs to start",
    )

    prefect_server.stop_process()
    outage_ends = time.monotonic() + 20
    try:
        wait_for(lambda: not agent.handle.health()[0], 15, "health to turn bad")
        time.sleep(max(0.0, outage_ends - time.monotonic()))  # the outage itself, not a wait
        assert all(command_starts(markers)[r] == 1 for r in in_flight)  # they exited meanwhile
    finally:
        prefect_server.start()

    every = in_flight + due_later
    wait_for(
        lambda: all(run_state(api_url, r)[0] in FINAL for r in every),
        90,
        "every outcome to be reported after the outage",
    )
    for run in every:
        type_, _, message = run_state(api_url, run)
        assert type_ == "CRASHED", (run, type_, message)
        assert "status code 3" in (message or "")
    assert {run: command_starts(markers)[run] for run in every} == dict.fromkeys(every, 1)
    wait_for(lambda: agent.handle.health()[0], 30, "health to recover")
    assert agent.handle.failure is None


class LostAnswerTransport(httpx.HTTPTransport):
    """The server receives and accepts the first Pending proposal; its answer is lost on the
    way back (a read timeout), as on a flaky network (#10263)."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        pending = request.url.path.endswith("/set_state") and b"PENDING" in request.content
        if pending and self.lost == 0:
            self.lost += 1
            response.read()
            raise httpx.ReadTimeout("answer lost on the way back", request=request)
        return response


def test_a_pending_proposal_whose_answer_was_lost_is_recognised_and_the_run_starts(
    library_agent: AgentFactory, api_url: str, queue: str, markers: Path
) -> None:
    deployment = deploy_marker_command(api_url, queue, markers)
    run = create_run(api_url, deployment)
    transport = LostAnswerTransport()
    api = PrefectApi(api_url, transport=transport, retry=RetryPolicy(base_delay=0.05))
    agent = library_agent(work_queues=(queue,), api=api)
    wait_for(lambda: command_starts(markers)[run] == 1, 30, "the run to start")
    assert transport.lost == 1
    # Its own Pending recognised: one Pending on the server, and the run not given up.
    assert [s["type"] for s in history(api_url, run)].count("PENDING") == 1, history(api_url, run)
    assert agent.metric(FINISHED, outcome="not-submitted") == 0
    assert agent.metric(API_ERRORS, status="none") >= 1  # the lost answer


def test_error_bursts_are_ridden_out_and_every_run_starts_once(
    library_agent: AgentFactory,
    api_url: str,
    queue: str,
    markers: Path,
) -> None:
    upstream = urlsplit(api_url)
    deployment = deploy_marker_command(api_url, queue, markers)
    with FaultProxy(upstream.hostname or "127.0.0.1", upstream.port or 80) as proxy:
        proxy.set_mode("http_status", status=503)
        agent = library_agent(
            work_queues=(queue,),
            query_interval=0.5,
            api=PrefectApi(proxy.url + "/api", retry=RetryPolicy(base_delay=0.1)),
        )
        runs = create_runs(api_url, deployment, 10)
        wait_for(lambda: agent.metric(API_ERRORS, status="503") > 5, 15, "the agent to meet 503s")
        proxy.set_mode("http_status", status=429, retry_after=1)
        wait_for(lambda: agent.metric(API_ERRORS, status="429") >= 3, 15, "and then 429s")
        proxy.set_mode("reset")
        wait_for(lambda: agent.metric(API_ERRORS, status="none") > 0, 20, "the resets to be seen")
        proxy.set_mode("pass")
        wait_for(lambda: set(command_starts(markers)) >= set(runs), 60, "every run to start")
        assert {r: command_starts(markers)[r] for r in runs} == dict.fromkeys(runs, 1)
        assert "SCHEDULED" not in states(api_url, runs).values()
        agent.stop()  # while the proxy still forwards: a stop after it closed waits out its timeout


def test_three_agents_on_one_queue_start_each_of_150_runs_exactly_once(
    launcher_agent: AgentFactory,
    library_agent: AgentFactory,
    api_url: str,
    queue: str,
    markers: Path,
) -> None:
    deployment = deploy_marker_command(api_url, queue, markers)
    runs = create_runs(api_url, deployment, 150)
    agents = [
        launcher_agent(work_queues=(queue,), query_interval=0.5),
        launcher_agent(work_queues=(queue,), query_interval=0.5),
        library_agent(work_queues=(queue,), query_interval=0.5),
    ]
    wait_for(lambda: set(command_starts(markers)) >= set(runs), 240, "every run to start")
    wait_for(lambda: "SCHEDULED" not in states(api_url, runs).values(), 60, "none Scheduled")
    starts = command_starts(markers)
    doubled = {run: starts[run] for run in runs if starts[run] != 1}
    assert doubled == {}
    taken = [agent.metric(SUBMITTED) for agent in agents]
    assert all(taken), f"an agent took no run: {taken}"


def test_an_agent_killed_and_restarted_adopts_live_runs_and_reports_lost_ones(
    launcher_agent: AgentFactory,
    library_agent: AgentFactory,
    api_url: str,
    queue: str,
    markers: Path,
) -> None:
    flow_deployment = deploy(
        api_url, FLOWS / "hello.py", "hello", name=f"h-{queue}", work_queue=queue
    )
    alive = create_run(
        api_url, flow_deployment, parameters={"marker_dir": str(markers), "sleep": 12}
    )
    short = deploy_marker_command(api_url, queue, markers)  # exits at once, reports nothing
    lost = create_run(api_url, short)

    first = launcher_agent(work_queues=(queue,))
    assert isinstance(first, LauncherAgent)
    wait_for(lambda: read_marker(markers, alive, "start"), 90, "the long flow to be running")
    wait_for(lambda: read_run(api_url, lost).get("infrastructure_pid"), 30, "the short run's pid")
    pid = read_marker(markers, alive, "start")["pid"]
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(timeout=10)
    assert not process_gone(pid)

    second = library_agent(work_queues=(queue,))

    wait_for(lambda: run_state(api_url, lost)[0] == "CRASHED", 30, "the lost run's truth")
    assert "lost it" in (run_state(api_url, lost)[2] or "")
    assert isinstance(second, ThreadAgent)

    def watching() -> ActorNode | None:
        supervisor = find_node(second.tree(), "RunSupervisor", alive)
        return supervisor if supervisor is not None and supervisor.detail.get("pid") else None

    adopted = wait_for(watching, 30, "the live run to be adopted")
    assert adopted.detail["pid"] == f"{socket.gethostname()}:{pid}", adopted
    wait_for(lambda: run_state(api_url, alive)[0] in FINAL, 90, "the adopted run to end")
    assert run_state(api_url, alive)[0] == "COMPLETED"
    ended = second.wait_finished(alive, 30, "its supervisor to end")
    assert ended.outcome == "exited", ended  # the engine's own Completed stands
    assert process_gone(pid)


class DeletingTransport(httpx.HTTPTransport):
    """Deletes a deployment on the real server just before the agent reads it: the moment a
    user deletes it while its run is being submitted."""

    def __init__(self, api_url: str, deployment_id: str) -> None:
        super().__init__()
        self.api_url = api_url
        self.deployment_id = deployment_id

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path.endswith(f"/{self.deployment_id}"):
            httpx.delete(f"{self.api_url}/deployments/{self.deployment_id}").raise_for_status()
        return super().handle_request(request)


def test_a_deployment_deleted_during_submission_fails_only_that_run(
    library_agent: AgentFactory, api_url: str, queue: str, markers: Path
) -> None:
    """On a 2.20 server, deleting a deployment (or its block) deletes its runs too, so the
    broken run vanishes; the agent must say why it stopped and serve every other run."""
    doomed = deploy_marker_command(api_url, queue, markers, name="doomed")
    fine = deploy_marker_command(api_url, queue, markers, name="fine")
    doomed_run = create_run(api_url, doomed)
    fine_run = create_run(api_url, fine, scheduled_in=1)
    api = PrefectApi(api_url, transport=DeletingTransport(api_url, doomed))

    agent = library_agent(work_queues=(queue,), api=api)

    assert isinstance(agent, ThreadAgent)
    wait_for(lambda: command_starts(markers)[fine_run] == 1, 30, "the good run to start")
    ended = agent.wait_finished(doomed_run, 30, "the doomed run")
    assert ended.outcome == "failed", ended
    assert f"deployment {doomed} no longer exists" in ended.detail, ended
    # The run went with its deployment: no state on the server can say why it stopped, so the
    # agent's error line is what a user has.
    why = f"flow run {doomed_run}: submission failed: deployment {doomed} no longer exists"
    assert [level for level, _ in lines_with(agent.logs(), why)] == ["ERROR"]
    assert command_starts(markers)[doomed_run] == 0
    assert agent.handle.failure is None


def test_the_api_key_never_shows_and_runs_do_not_share_environments(
    api_url: str, queue: str, markers: Path, tmp_path: Path
) -> None:
    secret = "pnu_do-not-leak-0123456789"  # noqa: S105 - the fake key whose absence we check
    first = deploy_marker_command(
        api_url,
        queue,
        markers,
        name="one",
        env={"ONLY_ONE": "1", "MARKER_ENV_NAMES": "ONLY_ONE,ONLY_TWO"},
    )
    second = deploy_marker_command(
        api_url,
        queue,
        markers,
        name="two",
        env={"ONLY_TWO": "2", "MARKER_ENV_NAMES": "ONLY_ONE,ONLY_TWO"},
    )
    run_one, run_two = create_run(api_url, first), create_run(api_url, second)
    broken = deploy_marker_command(api_url, queue, markers, name="bad")
    httpx.patch(
        f"{api_url}/deployments/{broken}",
        json={"job_variables": {"command": ["no-such-command-xyz"]}},
    ).raise_for_status()
    bad_run = create_run(api_url, broken)

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_API_KEY"] = secret
    log_path = tmp_path / "agent.log"
    args = launcher_args(
        api_url, {"work_queues": (queue,), "query_interval": 1.0, "status_port": port}
    )
    with log_path.open("wb") as log:
        agent = subprocess.Popen(
            [sys.executable, str(ROOT / "examples" / "agent.py"), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
        try:
            wait_for(
                lambda: command_starts(markers)[run_one] and command_starts(markers)[run_two],
                30,
                "both runs to start",
            )
            wait_for(lambda: run_state(api_url, bad_run)[0] == "FAILED", 30, "the bad run")
            tree = httpx.get(f"http://127.0.0.1:{port}/tree").text
            text = httpx.get(f"http://127.0.0.1:{port}/tree?format=text").text
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=30)
    output = log_path.read_text()
    for where, text_seen in (
        ("log", output),
        ("tree", tree),
        ("text tree", text),
        ("metrics", metrics),
        ("failure", run_state(api_url, bad_run)[2]),
    ):
        assert secret not in (text_seen or ""), f"the API key leaked into the {where}"
    assert "DEBUG" in output  # the check covered the most talkative level
    one = command_markers(markers, run_one)[0]["env"]
    two = command_markers(markers, run_two)[0]["env"]
    assert one == {"ONLY_ONE": "1", "ONLY_TWO": None}
    assert two == {"ONLY_ONE": None, "ONLY_TWO": "2"}
