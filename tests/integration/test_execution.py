"""Flow runs taken from a queue, run by the real Prefect engine, and reported as users see them.

Execution, crash and the limit run here through the launcher (gevent); the same behaviour in
the library runtime (threads) is `test_across_servers.py`'s 2.20 half, so it is not run twice.
"""

from __future__ import annotations

import socket
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from examples.harness.agent_status import find_node
from tests.conftest import AgentFactory
from tests.integration.helpers import (
    FINAL,
    FLOWS,
    all_in,
    command_starts,
    deploy_marker_command,
    infrastructure_pid,
    process_gone,
    states,
)
from tests.support.prefect_objects import (
    create_run,
    create_runs,
    deploy,
    deploy_with_block_data,
    read_marker,
    run_state,
    wait_for,
)

pytestmark = pytest.mark.integration

SUBMITTED = "prefect_agent_runs_submitted_total"
FINISHED = "prefect_agent_runs_finished_total"  # by outcome (messages/user/events.py)


def test_runs_complete_with_host_pid_and_override_env(
    launcher_agent: AgentFactory, api_url: str, queue: str, markers: Path
) -> None:
    deployment = deploy(
        api_url,
        FLOWS / "hello.py",
        "hello",
        name=f"hello-{queue}",
        work_queue=queue,
        infra_overrides={"env.GREETING": "hello from infra_overrides"},
    )
    params = {"marker_dir": str(markers), "env_name": "GREETING"}
    runs = create_runs(api_url, deployment, 2, parameters=params)

    agent = launcher_agent(work_queues=(queue,))

    wait_for(lambda: all_in(api_url, runs, FINAL), 120, "both runs to end")
    assert states(api_url, runs) == dict.fromkeys(runs, "COMPLETED")
    for run in runs:
        started = read_marker(markers, run, "start")
        assert infrastructure_pid(api_url, run) == f"{socket.gethostname()}:{started['pid']}"
        assert read_marker(markers, run, "env")["value"] == "hello from infra_overrides"
    assert agent.metric(SUBMITTED) == 2
    # Each process's exit (code 0) is seen by the agent, not only reported by the engine.
    wait_for(lambda: agent.metric(FINISHED, outcome="exited") == 2, 30, "both exits seen")
    assert all(process_gone(read_marker(markers, run, "start")["pid"]) for run in runs)


def test_nonzero_exit_marks_run_crashed_naming_the_code(
    launcher_agent: AgentFactory, api_url: str, queue: str
) -> None:
    deployment = deploy(
        api_url, FLOWS / "crash.py", "crash", name=f"crash-{queue}", work_queue=queue
    )
    run = create_run(api_url, deployment, parameters={"code": 3})

    agent = launcher_agent(work_queues=(queue,))

    wait_for(lambda: run_state(api_url, run)[0] in FINAL, 120, "the crashing run to end")
    type_, _, message = run_state(api_url, run)
    assert type_ == "CRASHED"
    assert message is not None
    assert "non-zero status code 3" in message
    wait_for(lambda: agent.metric(FINISHED, outcome="crashed") == 1, 10, "the crash counted")


def test_limit_never_lets_more_runs_at_once_and_the_rest_run_later(
    launcher_agent: AgentFactory, api_url: str, queue: str, markers: Path
) -> None:
    deployment = deploy(api_url, FLOWS / "hello.py", "hello", name=f"lim-{queue}", work_queue=queue)
    runs = create_runs(api_url, deployment, 4, parameters={"marker_dir": str(markers), "sleep": 2})

    launcher_agent(work_queues=(queue,), limit=2)

    wait_for(lambda: all_in(api_url, runs, FINAL), 180, "all four runs to end")
    assert states(api_url, runs) == dict.fromkeys(runs, "COMPLETED")
    events = []
    for run in runs:
        events.append((read_marker(markers, run, "start")["time"], +1))
        events.append((read_marker(markers, run, "end")["time"], -1))
    running = most = 0
    for _, change in sorted(events, key=lambda event: (event[0], event[1])):
        running += change
        most = max(most, running)
    assert most <= 2


def test_each_submission_failure_fails_its_run_with_the_reason_and_others_go_on(
    agent_factory: AgentFactory, api_url: str, queue: str, markers: Path
) -> None:
    hello = FLOWS / "hello.py"
    bad = {
        "type 'kubernetes-job'": deploy_with_block_data(
            api_url,
            hello,
            "hello",
            name=f"k8s-{queue}",
            work_queue=queue,
            block_type_slug="kubernetes-job",
            data={"image": "python:3.11"},
        ),
        "has no field 'nonsense'": deploy(
            api_url,
            hello,
            "hello",
            name=f"path-{queue}",
            work_queue=queue,
            infra_overrides={"nonsense.deep": "x"},
        ),
        "'no-such-command-xyz' was not found": deploy(
            api_url,
            hello,
            "hello",
            name=f"cmd-{queue}",
            work_queue=queue,
            command=["no-such-command-xyz"],
        ),
        "working directory '/no/such/dir' does not exist": deploy(
            api_url,
            hello,
            "hello",
            name=f"cwd-{queue}",
            work_queue=queue,
            working_dir="/no/such/dir",
        ),
        "invalid Process infrastructure": deploy_with_block_data(
            api_url,
            hello,
            "hello",
            name=f"block-{queue}",
            work_queue=queue,
            block_type_slug="process",
            data={"type": "process", "command": "echo not-a-list"},
        ),
    }
    failing = {reason: create_run(api_url, dep) for reason, dep in bad.items()}
    good_deployment = deploy(api_url, hello, "hello", name=f"good-{queue}", work_queue=queue)
    good = create_run(
        api_url, good_deployment, scheduled_in=1, parameters={"marker_dir": str(markers)}
    )

    agent = agent_factory(work_queues=(queue,))

    every = [*failing.values(), good]
    wait_for(lambda: all_in(api_url, every, FINAL), 120, "every run to end")
    for reason, run in failing.items():
        type_, _, message = run_state(api_url, run)
        assert type_ == "FAILED", (reason, type_, message)
        assert message is not None
        assert message.startswith("Submission failed.")
        assert reason in message
    assert run_state(api_url, good)[0] == "COMPLETED"
    wait_for(lambda: agent.metric(FINISHED, outcome="failed") == len(failing), 10, "the failures")


def test_missing_queue_is_created(library_agent: AgentFactory, api_url: str, queue: str) -> None:
    def queue_exists() -> bool:
        return httpx.get(f"{api_url}/work_queues/name/{queue}").status_code == 200

    assert not queue_exists()
    agent = library_agent(work_queues=(queue,))
    wait_for(queue_exists, 30, f"work queue {queue} to be created")
    queue_id = httpx.get(f"{api_url}/work_queues/name/{queue}").json()["id"]
    # The watcher serves the queue it created.
    wait_for(
        lambda: (
            (w := find_node(agent.tree(), "QueueWatcher", queue)) is not None
            and w.detail.get("queue id") == queue_id
        ),
        10,
        "the watcher to hold the created queue",
    )


def test_prefetch_submits_a_run_before_its_scheduled_time(
    library_agent: AgentFactory, api_url: str, queue: str, markers: Path
) -> None:
    deployment = deploy_marker_command(api_url, queue, markers)
    soon = create_run(api_url, deployment, scheduled_in=10)
    later = create_run(api_url, deployment, scheduled_in=120)
    due = httpx.get(f"{api_url}/flow_runs/{soon}").json()["expected_start_time"]

    library_agent(work_queues=(queue,), prefetch_seconds=15)

    wait_for(lambda: command_starts(markers)[soon] == 1, 8, "the prefetched run to start")
    started = next(markers.glob(f"{soon}.*.cmd")).stat().st_mtime
    assert started < datetime.fromisoformat(due).timestamp() - 2
    assert command_starts(markers)[later] == 0
    assert run_state(api_url, later)[0] == "SCHEDULED"
