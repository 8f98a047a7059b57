"""Supervision and inspection as a user sees them: restarts, the tree, health, metrics, events."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from actors.edges.prefect_api import PrefectApi
from actors.launcher.local_server import LocalPrefectServer
from examples.harness.agent_logs import lines_with
from examples.harness.agent_status import find_node, free_port, sample_value
from messages.internal.dispatch import RunsFound
from messages.internal.lifecycle import CountHeldRuns
from tests.conftest import ROOT, AgentFactory, LauncherAgent, ThreadAgent, launcher_args
from tests.integration.helpers import (
    command_starts,
    deploy_marker_command,
    process_gone,
)
from tests.support.faults import FaultyTransport
from tests.support.prefect_objects import create_run, read_run, run_state, wait_for

pytestmark = pytest.mark.integration

RESTARTS = "prefect_agent_actor_restarts_total"  # by kind


def test_a_watcher_that_raises_is_restarted_and_polling_resumes(
    library_agent: AgentFactory, api_url: str, queue: str, markers: Path
) -> None:
    deployment = deploy_marker_command(api_url, queue, markers)
    run = create_run(api_url, deployment)
    fault = FaultyTransport("GET", f"/work_queues/name/{queue}", times=2)

    agent = library_agent(work_queues=(queue,), api=PrefectApi(api_url, transport=fault))
    assert isinstance(agent, ThreadAgent)

    wait_for(lambda: command_starts(markers)[run] == 1, 30, "the run to start after restarts")
    assert fault.raised == 2
    assert agent.metric(RESTARTS, kind="QueueWatcher") == 2
    watcher = find_node(agent.handle.tree(), "QueueWatcher", queue)
    assert watcher is not None
    assert watcher.restarts == 2
    assert "injected fault" in (watcher.last_failure or "")


def test_a_run_supervisor_that_fails_mid_run_frees_its_slot_and_orphans_nothing(
    library_agent: AgentFactory, api_url: str, queue: str, markers: Path
) -> None:
    deployment = deploy_marker_command(api_url, queue, markers, "2")
    first = create_run(api_url, deployment)
    second = create_run(api_url, deployment, scheduled_in=1)
    # The pid report of the first run fails inside its supervisor, after its process started.
    fault = FaultyTransport("PATCH", f"/flow_runs/{first}", times=1)

    agent = library_agent(work_queues=(queue,), limit=1, api=PrefectApi(api_url, transport=fault))
    assert isinstance(agent, ThreadAgent)

    wait_for(lambda: agent.metric(RESTARTS, kind="RunSupervisor") == 1, 30, "the handover")
    wait_for(lambda: command_starts(markers)[first] == 1, 30, "the first run's process")
    pid = json.loads(next(markers.glob(f"{first}.*.cmd")).read_text())["pid"]
    wait_for(lambda: run_state(api_url, first)[0] == "CRASHED", 30, "the truth about the run")
    assert process_gone(pid)
    message = run_state(api_url, first)[2] or ""
    assert "supervisor in the agent had failed" in message
    assert "injected fault" in message
    # The slot was freed: the second run (limit 1) runs too.
    wait_for(lambda: command_starts(markers)[second] == 1, 30, "the second run to start")
    wait_for(lambda: agent.handle.dispatcher.ask(CountHeldRuns()) == 0, 30, "every slot free")


def test_restart_intensity_exceeded_makes_the_launcher_exit_non_zero(
    api_url: str, queue: str, tmp_path: Path
) -> None:
    args = launcher_args(api_url, {"work_queues": (queue,), "query_interval": 1.0})
    log_path = tmp_path / "agent.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    with log_path.open("wb") as log:
        process = subprocess.run(
            [
                sys.executable,
                str(ROOT / "tests" / "support" / "faulty_launcher.py"),
                "GET",
                "/work_queues/name/",
                "--",
                *args,
                "--max-restarts",
                "2",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
    logs = log_path.read_text()
    assert process.returncode == 1, logs[-2000:]
    # Why it gave up is the launcher's last word to the user who started it.
    why = "agent giving up: 3 failures within 60s (at most 2 restarts allowed)"
    assert [level for level, _ in lines_with(logs, why)] == ["CRITICAL"], logs[-2000:]
    assert "injected fault" in logs


def test_status_endpoint_tree_text_health_and_metrics_with_a_run_in_flight(
    prefect_server: LocalPrefectServer,
    launcher_agent: AgentFactory,
    api_url: str,
    queue: str,
    markers: Path,
) -> None:
    deployment = deploy_marker_command(api_url, queue, markers, "300")
    run = create_run(api_url, deployment)
    port = free_port()
    agent = launcher_agent(work_queues=(queue,), status_port=port)
    assert isinstance(agent, LauncherAgent)
    status = f"http://127.0.0.1:{port}"
    wait_for(lambda: read_run(api_url, run).get("infrastructure_pid"), 60, "the run's pid")
    pid = int(str(read_run(api_url, run)["infrastructure_pid"]).split(":")[1])

    tree = httpx.get(f"{status}/tree").json()
    assert tree["kind"] == "Agent"
    kinds = {child["kind"] for child in tree["children"]}
    assert kinds == {
        "QueueWatcher",
        "PoolScout",  # of default-agent-pool, where 2.20 keeps plain queues
        "CancelWatcher",
        "EventListener",
        "Heartbeat",
        "Recovery",
        "Dispatcher",
    }
    dispatcher = next(child for child in tree["children"] if child["kind"] == "Dispatcher")
    supervisor = dispatcher["children"][0]
    assert supervisor["name"] == run
    assert supervisor["state"] == f"running pid {pid}"
    assert supervisor["restart"] == "temporary"

    text = httpx.get(f"{status}/tree", params={"format": "text"}).text
    assert f"QueueWatcher {queue}" in text
    assert f"RunSupervisor {run}  [running pid {pid}" in text

    metrics = httpx.get(f"{status}/metrics").text
    assert sample_value(metrics, "prefect_agent_runs_in_flight") == 1
    assert sample_value(metrics, "prefect_agent_runs_submitted_total") == 1
    assert (sample_value(metrics, "prefect_agent_poll_latency_seconds_count") or 0) >= 1

    health = httpx.get(f"{status}/healthz")
    assert health.status_code == 200
    # This 2.20 server has no events (PREFECT_EXPERIMENTAL_EVENTS is off): a healthy mode.
    no_events = "events: polling (the server streams no events"
    wait_for(lambda: no_events in httpx.get(f"{status}/healthz").text, 10, "the events line")

    # SIGUSR1's behaviour is a log line: the tree, for a user with a terminal and no port.
    agent.process.send_signal(signal.SIGUSR1)
    wait_for(lambda: "actor tree:" in agent.logs(), 10, "SIGUSR1 to log the tree")
    assert f"RunSupervisor {run}" in agent.logs().split("actor tree:")[1]

    prefect_server.stop_process()
    try:
        unhealthy = wait_for(
            lambda: (r := httpx.get(f"{status}/healthz")).status_code == 503 and r,
            30,
            "/healthz to report the server gone",
        )
        assert "has not answered" in unhealthy.text
    finally:
        prefect_server.start()
    wait_for(lambda: httpx.get(f"{status}/healthz").status_code == 200, 60, "health to return")
    assert not process_gone(pid)


def test_embedded_example_runs_a_flow_and_receives_its_events(api_url: str, queue: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "embedded.py"),
            "--api",
            api_url,
            "--runs",
            "1",
            "--queue",
            queue,
            "--tree-every",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, (out + result.stderr)[-3000:]
    submitted = [line for line in out.splitlines() if line.startswith("event: RunSubmitted")]
    assert len(submitted) == 1
    run = submitted[0].split()[2]
    assert f"event: RunStarted {run} pid " in out
    assert f"event: RunFinished {run} outcome exited" in out
    assert "all 1 run(s) finished" in out
    assert "Dispatcher" in out
    assert run_state(api_url, run)[0] == "COMPLETED"


def test_a_restarted_dispatcher_takes_back_its_runs_so_no_slot_leaks(
    library_agent: AgentFactory, api_url: str, queue: str, markers: Path
) -> None:
    deployment = deploy_marker_command(api_url, queue, markers, "300")
    first, second = create_run(api_url, deployment), create_run(api_url, deployment)
    agent = library_agent(work_queues=(queue,), limit=2)
    assert isinstance(agent, ThreadAgent)
    wait_for(
        lambda: command_starts(markers)[first] + command_starts(markers)[second] == 2,
        30,
        "both runs to start",
    )

    def running() -> set[str]:
        """The runs the Dispatcher shows with their process's pid."""
        dispatcher = find_node(agent.handle.tree(), "Dispatcher")
        return {c.name for c in dispatcher.children if c.detail.get("pid")} if dispatcher else set()

    wait_for(lambda: running() == {first, second}, 10, "both pids in the tree")

    # A host service hands the Dispatcher something that is not a run: it fails on it.
    agent.handle.dispatcher.tell(RunsFound("from-a-buggy-host", ("not a flow run",)))  # type: ignore[arg-type]

    wait_for(lambda: agent.metric(RESTARTS, kind="Dispatcher") == 1, 30, "the restart")
    wait_for(lambda: running() == {first, second}, 30, "the new Dispatcher to take both back")
    dispatcher = find_node(agent.handle.tree(), "Dispatcher")
    assert dispatcher is not None
    assert dispatcher.restarts == 1
    third = create_run(api_url, deployment)
    agent.handle.cancel(first, "make room")  # routed through the new Dispatcher
    wait_for(lambda: command_starts(markers)[third] == 1, 30, "the freed slot to be used")
    assert command_starts(markers)[first] == 1  # nothing started twice
    assert command_starts(markers)[second] == 1
