"""Cancellation: the run's whole process tree is gone and the run is Cancelled, within 5 s at
default settings. Processes are checked in /proc, never by trusting the agent; what the agent
made of each run is read from its run events (RunFinished and its outcome) and metrics."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from actors.edges.prefect_api import PrefectApi
from examples.harness.agent_logs import lines_with
from messages.internal.lifecycle import CountHeldRuns
from messages.user.events import RunFinished, RunStarted
from tests.conftest import AgentFactory, LauncherAgent, ThreadAgent
from tests.integration.helpers import (
    FINAL,
    FLOWS,
    command_markers,
    command_starts,
    deploy_marker_command,
    history,
    infrastructure_pid,
    process_gone,
)
from tests.support.prefect_objects import (
    create_run,
    deploy,
    read_marker,
    run_state,
    set_run_state,
    wait_for,
)

pytestmark = pytest.mark.integration

FINISHED = "prefect_agent_runs_finished_total"  # by outcome (messages/user/events.py)

CANCEL_FORMS = {
    "cancelling": ("CANCELLING", "Cancelling"),  # Prefect 2.8 and later
    "cancelled-named-cancelling": ("CANCELLED", "Cancelling"),  # the seed's servers
}


def ask_to_cancel(api_url: str, run_id: str, form: str = "cancelling") -> None:
    """What the UI and `prefect flow-run cancel` do: put the run in a 'please cancel' state."""
    type_, name = CANCEL_FORMS[form]
    set_run_state(api_url, run_id, type_, name, force=True)


def is_cancelled(api_url: str, run_id: str) -> bool:
    type_, name, _ = run_state(api_url, run_id)
    return type_ == "CANCELLED" and name == "Cancelled"


@pytest.mark.parametrize("form", sorted(CANCEL_FORMS))
def test_running_flow_cancelled_on_the_server_ends_within_5s_with_its_child_gone(
    agent_factory: AgentFactory, api_url: str, queue: str, markers: Path, form: str
) -> None:
    deployment = deploy(
        api_url, FLOWS / "spawn_child.py", "spawn_child", name=f"c-{queue}", work_queue=queue
    )
    run = create_run(api_url, deployment, parameters={"marker_dir": str(markers)})
    agent_factory(work_queues=(queue,), query_interval=15.0)  # default settings
    wait_for(lambda: read_marker(markers, run, "child"), 60, "the flow to spawn its child")
    flow_pid = read_marker(markers, run, "pid")["pid"]
    child_pid = read_marker(markers, run, "child")["pid"]
    assert not process_gone(flow_pid)
    assert not process_gone(child_pid)

    asked = time.monotonic()
    ask_to_cancel(api_url, run, form)
    wait_for(lambda: is_cancelled(api_url, run), 10, "the run to be Cancelled")
    took = time.monotonic() - asked

    assert took < 5.0, f"cancellation took {took:.1f}s"
    assert process_gone(flow_pid)
    wait_for(lambda: process_gone(child_pid), 2, "the flow's child process to be gone")
    message = run_state(api_url, run)[2] or ""
    assert "terminated" in message


def test_flow_that_ignores_sigterm_is_killed_after_the_grace_period(
    library_agent: AgentFactory, api_url: str, queue: str, markers: Path
) -> None:
    deployment = deploy(
        api_url, FLOWS / "ignore_sigterm.py", "ignore_sigterm", name=f"i-{queue}", work_queue=queue
    )
    run = create_run(api_url, deployment, parameters={"marker_dir": str(markers)})
    agent = library_agent(work_queues=(queue,), cancel_grace_seconds=2)
    wait_for(lambda: read_marker(markers, run, "pid"), 60, "the flow to start")
    pid = read_marker(markers, run, "pid")["pid"]

    ask_to_cancel(api_url, run)
    wait_for(lambda: is_cancelled(api_url, run), 25, "the SIGKILL, then the run Cancelled")
    assert process_gone(pid)
    assert "killed after the grace period" in (run_state(api_url, run)[2] or "")
    assert agent.metric(FINISHED, outcome="cancelled") == 1


def test_cancel_sent_through_the_embedding_api(
    library_agent: AgentFactory, api_url: str, queue: str, markers: Path
) -> None:
    deployment = deploy_marker_command(api_url, queue, markers, "300")
    run = create_run(api_url, deployment)
    agent = library_agent(work_queues=(queue,))
    assert isinstance(agent, ThreadAgent)
    started = wait_for(
        lambda: next((e for e in agent.events() if isinstance(e, RunStarted)), None),
        30,
        "the run's process to start",
    )
    assert started.flow_run_id == run
    host, _, shown = started.infrastructure_pid.rpartition(":")
    pid = int(shown)
    assert host == socket.gethostname()
    assert wait_for(lambda: command_markers(markers, run), 10, "its marker")[0]["pid"] == pid

    agent.handle.cancel(run, "the host service decided so")

    wait_for(lambda: is_cancelled(api_url, run), 10, "the run to be Cancelled")
    assert process_gone(pid)
    assert "the host service decided so" in (run_state(api_url, run)[2] or "")
    ended = agent.wait_finished(run, 10, "the run's RunFinished")
    assert ended.outcome == "cancelled", ended


def test_cancel_after_the_agent_was_killed_and_restarted_kills_the_orphaned_process(
    launcher_agent: AgentFactory,
    library_agent: AgentFactory,
    api_url: str,
    queue: str,
    markers: Path,
) -> None:
    deployment = deploy_marker_command(api_url, queue, markers, "300")
    run = create_run(api_url, deployment)
    first = launcher_agent(work_queues=(queue,))
    assert isinstance(first, LauncherAgent)
    wait_for(lambda: run_state(api_url, run)[0] == "PENDING", 30, "the run to be taken")
    wait_for(lambda: infrastructure_pid(api_url, run), 30, "its process to start")
    pid = wait_for(lambda: command_markers(markers, run), 10, "its marker")[0]["pid"]
    assert infrastructure_pid(api_url, run) == f"{socket.gethostname()}:{pid}"
    first.process.kill()  # the agent dies; the run's process (its own session) lives on
    first.process.wait(timeout=10)
    assert not process_gone(pid)

    second = library_agent(work_queues=(queue,))
    assert isinstance(second, ThreadAgent)
    ask_to_cancel(api_url, run)

    wait_for(lambda: is_cancelled(api_url, run), 10, "the orphaned run to be Cancelled")
    assert process_gone(pid)
    # The second agent took the run over (a supervisor of its own found the process) and that
    # supervisor ended it: no other way to Cancelled goes through a RunFinished.
    ended = second.wait_finished(run, 10, "the second agent's RunFinished")
    assert ended.outcome == "cancelled", ended


@pytest.fixture
def unrelated_process() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(["sleep", "120"])
    yield process
    process.kill()
    process.wait()


def test_runs_whose_process_cannot_be_ours_are_never_killed(
    library_agent: AgentFactory,
    api_url: str,
    queue: str,
    markers: Path,
    unrelated_process: subprocess.Popen[bytes],
) -> None:
    deployment = deploy_marker_command(api_url, queue, markers)
    reused, elsewhere, no_pid = (create_run(api_url, deployment, scheduled_in=600) for _ in "abc")
    here = socket.gethostname()
    for run, pid in (
        (reused, f"{here}:{unrelated_process.pid}"),
        (elsewhere, "far-away-host:4242"),
    ):
        httpx.patch(
            f"{api_url}/flow_runs/{run}", json={"infrastructure_pid": pid}
        ).raise_for_status()
    for run in (reused, elsewhere, no_pid):
        set_run_state(api_url, run, "RUNNING", "Running", force=True)
        ask_to_cancel(api_url, run)

    agent = library_agent(work_queues=(queue,))
    assert isinstance(agent, ThreadAgent)

    wait_for(lambda: is_cancelled(api_url, reused), 15, "the reused-pid run to be Cancelled")
    assert unrelated_process.poll() is None, "an unrelated process was killed"
    assert "belongs to another process" in (run_state(api_url, reused)[2] or "")
    wait_for(lambda: is_cancelled(api_url, no_pid), 15, "the pid-less run to be Cancelled")
    assert "could not be found" in (run_state(api_url, no_pid)[2] or "")
    left = agent.wait_finished(elsewhere, 15, "the other host's run to be left")
    assert (left.outcome, left.detail) == ("not-submitted", "out of reach: far-away-host:4242")
    assert run_state(api_url, elsewhere)[0] == "CANCELLING"
    # Left Cancelling on the server: the user must be told which host's agent is to end it.
    notices = lines_with(agent.logs(), "runs at far-away-host:4242, out of this agent's reach")
    assert notices and {level for level, _ in notices} == {"WARNING"}, notices


class GatedTransport(httpx.HTTPTransport):
    """Holds reads of deployments until the test opens the gate: the real server still answers,
    the agent only hears later, so a test can act while a run is between Pending and start."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.held = threading.Event()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if "/deployments/" in request.url.path:
            self.held.set()
            self.gate.wait(30)
        return super().handle_request(request)


def test_pending_run_cancelled_before_its_process_starts_never_starts(
    library_agent: AgentFactory, api_url: str, queue: str, markers: Path
) -> None:
    deployment = deploy_marker_command(api_url, queue, markers)
    run = create_run(api_url, deployment)
    transport = GatedTransport()
    agent = library_agent(work_queues=(queue,), api=PrefectApi(api_url, transport=transport))
    assert isinstance(agent, ThreadAgent)
    assert transport.held.wait(30), "the agent never read the deployment"
    # The deployment is read while Pending is with the server: Pending goes on meanwhile.
    wait_for(lambda: run_state(api_url, run)[0] == "PENDING", 15, "the run to be Pending")

    agent.handle.cancel(run, "cancelled while pending")
    agent.handle.dispatcher.ask(CountHeldRuns())  # the Cancel is in the supervisor's inbox now
    transport.gate.set()

    wait_for(lambda: is_cancelled(api_url, run), 15, "the pending run to be Cancelled")
    assert command_starts(markers)[run] == 0
    ended = agent.wait_finished(run, 10, "the run's RunFinished")
    assert ended.outcome == "cancelled", ended
    assert not any(isinstance(e, RunStarted) for e in agent.events()), agent.events()


def test_cancelling_an_already_finished_run_changes_nothing(
    library_agent: AgentFactory, api_url: str, queue: str, markers: Path
) -> None:
    deployment = deploy(api_url, FLOWS / "hello.py", "hello", name=f"h-{queue}", work_queue=queue)
    run = create_run(api_url, deployment, parameters={"marker_dir": str(markers)})
    agent = library_agent(work_queues=(queue,))
    assert isinstance(agent, ThreadAgent)
    wait_for(lambda: run_state(api_url, run)[0] in FINAL, 60, "the run to finish")
    agent.wait_finished(run, 30, "its process to exit")
    states_before = len(history(api_url, run))

    agent.handle.cancel(run, "too late")

    def answers() -> list[RunFinished]:
        return [e for e in agent.events() if isinstance(e, RunFinished) and e.flow_run_id == run]

    wait_for(lambda: len(answers()) == 2, 10, "the agent to find there is nothing to do")
    assert [(e.outcome, e.detail) for e in answers()][1] == ("not-submitted", "already COMPLETED")
    assert agent.handle.dispatcher.ask(CountHeldRuns()) == 0
    assert run_state(api_url, run)[0] == "COMPLETED"
    assert len(history(api_url, run)) == states_before  # nothing proposed
