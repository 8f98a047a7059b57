"""The launcher as users run it: --run-once, a clean stop on SIGTERM, the demo, and the
installed command (`prefect-actor-agent start`, `python -m actors`)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import LAUNCHER, ROOT, AgentFactory, LauncherAgent, ThreadAgent
from tests.integration.helpers import (
    command_markers,
    command_starts,
    deploy_marker_command,
    infrastructure_pid,
    process_gone,
    run_ok,
)
from tests.support.prefect_objects import create_run, create_runs, read_states, run_state, wait_for

pytestmark = pytest.mark.integration

COMMAND = Path(sys.executable).parent / "prefect-actor-agent"  # what `pip install` puts there
# The options of `prefect agent start`, as the help writes them.
PREFECT_FLAGS = (
    "-q NAME, --work-queue NAME",
    "-m PREFIX, --match PREFIX",
    "-p NAME, --pool NAME",
    "-l N, --limit N",
    "--prefetch-seconds SECONDS",
    "--run-once, --no-run-once",
    "--api URL",
)
# Prefect's console layout: 12:03:44.518 | INFO    | prefect_actor_agent.dispatcher - ...
PREFECT_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} \| [A-Z]+ *\| \S+ - ")


def test_run_once_takes_the_due_runs_waits_for_them_and_exits(
    launcher_agent: AgentFactory, api_url: str, queue: str, markers: Path
) -> None:
    deployment = deploy_marker_command(api_url, queue, markers, "1")
    runs = create_runs(api_url, deployment, 3)
    later = create_run(api_url, deployment, scheduled_in=300)

    agent = launcher_agent(work_queues=(queue,), run_once=True)
    assert isinstance(agent, LauncherAgent)

    assert agent.process.wait(timeout=60) == 0
    starts = command_starts(markers)
    assert all(starts[run] == 1 for run in runs)
    assert starts[later] == 0
    # It waited for them: no run's process outlived the agent.
    pids = [marker["pid"] for run in runs for marker in command_markers(markers, run)]
    assert pids and all(process_gone(pid) for pid in pids), pids


def test_run_once_as_a_library_finishes(
    library_agent: AgentFactory, api_url: str, queue: str, markers: Path
) -> None:
    deployment = deploy_marker_command(api_url, queue, markers)
    runs = create_runs(api_url, deployment, 2)
    agent = library_agent(work_queues=(queue,), run_once=True)
    assert isinstance(agent, ThreadAgent)
    assert agent.handle.wait_finished(timeout=60)
    assert all(command_starts(markers)[run] == 1 for run in runs)


def test_sigterm_stops_the_agent_and_leaves_no_run_running_without_a_process(
    launcher_agent: AgentFactory, api_url: str, queue: str, markers: Path
) -> None:
    deployment = deploy_marker_command(api_url, queue, markers, "300")
    running = create_run(api_url, deployment)

    agent = launcher_agent(work_queues=(queue,), shutdown_grace_seconds=2)
    assert isinstance(agent, LauncherAgent)
    wait_for(lambda: command_starts(markers)[running] == 1, 60, "the long run to start")
    wait_for(lambda: infrastructure_pid(api_url, running), 10, "the pid to be recorded")
    pid = json.loads(next(markers.glob(f"{running}.*.cmd")).read_text())["pid"]

    agent.process.send_signal(signal.SIGTERM)
    assert agent.process.wait(timeout=15) == 0

    wait_for(lambda: process_gone(pid), 10, f"the run's process {pid} to be gone")
    type_, _, message = run_state(api_url, running)
    assert type_ == "CRASHED"
    assert message is not None
    assert "agent stopped" in message


def test_demo_starts_its_own_server_runs_the_demo_flow_and_prints_a_summary(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    result = run_ok(
        [sys.executable, str(LAUNCHER), "--demo", "2", "--server-home", str(tmp_path / "home")],
        timeout=240,
        cwd=ROOT,
        env=env,
    )
    output = result.stdout + result.stderr
    # What the demo prints is its behaviour: a summary, and the server it started.
    assert "2 of 2 demo runs completed" in result.stdout
    assert result.stdout.count("Completed") >= 2
    assert "starting a local Prefect server" in output


@pytest.mark.parametrize(
    "argv",
    [[sys.executable, "-m", "actors", "--help"], [str(COMMAND), "start", "--help"]],
    ids=["python -m actors", "prefect-actor-agent start"],
)
def test_help_lists_the_options_of_prefect_agent_start(argv: list[str], tmp_path: Path) -> None:
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " start [OPTIONS]" in result.stdout
    missing = [flag for flag in (*PREFECT_FLAGS, "--log-format") if flag not in result.stdout]
    assert not missing, result.stdout


def test_the_installed_command_serves_a_queue_on_gevent_and_logs_like_prefect(
    api_url: str, queue: str, markers: Path, tmp_path: Path
) -> None:
    deployment = deploy_marker_command(api_url, queue, markers, env={"MARKER_COMPLETE": "1"})
    runs = create_runs(api_url, deployment, 2)
    key = "pnu_test0123456789-never-logged"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_API_KEY"] = key  # the test server ignores it; the log must not show it
    assert COMMAND.is_file(), f"no {COMMAND}: `pip install -e .` installs the command"

    result = run_ok(
        [str(COMMAND), "start", "-q", queue, "--api", api_url, "--run-once"],
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    output = result.stdout + result.stderr
    assert read_states(api_url, runs) == dict.fromkeys(runs, "COMPLETED")
    assert all(command_starts(markers)[run] == 1 for run in runs)
    # The log is the subject here: its layout (Prefect's), the runtime it names, no key in it.
    assert "the actors run on gevent greenlets" in output
    ours = [line for line in output.splitlines() if "prefect_actor_agent." in line]
    assert any(f"submitting flow run {runs[0]}" in line for line in ours)
    assert ours, output
    assert all(PREFECT_LINE.match(line) for line in ours), ours
    assert key not in output


def test_the_entry_point_imports_nothing_gevent_must_patch_first(tmp_path: Path) -> None:
    """What a console script does before `main()`: import the entry module (so its package)."""
    probe = (
        "import sys; from actors.__main__ import main; import actors; "
        "print(sorted(set(actors.__all__) & set(vars(actors))), "
        "sorted({'pykka', 'httpx', 'gevent', 'threading', 'actors.runtime'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[] []"
