"""The test support works end to end: a real server, a real deployment, a real engine.

This runs one flow the way an agent would, by hand, so that when an agent
test fails we know the harness is not the culprit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actors.launcher.local_server import LocalPrefectServer
from tests.support.prefect_objects import (
    create_run,
    deploy,
    read_marker,
    run_state,
    set_run_state,
    wait_for,
)

FLOWS = Path(__file__).parent / "flows"

pytestmark = pytest.mark.integration


def test_engine_completes_a_run_proposed_pending_by_hand(
    prefect_server: LocalPrefectServer, tmp_path: Path
) -> None:
    api_url = prefect_server.api_url
    marker_dir = tmp_path / "markers"
    marker_dir.mkdir()
    workdir = tmp_path / "work"
    workdir.mkdir()

    deployment_id = deploy(api_url, FLOWS / "hello.py", "hello", name="smoke", work_queue="smoke")
    run_id = create_run(api_url, deployment_id, parameters={"marker_dir": str(marker_dir)})
    assert run_state(api_url, run_id)[0] == "SCHEDULED"

    proposal = set_run_state(api_url, run_id, "PENDING", force=False)
    assert proposal["status"] == "ACCEPT", proposal

    env = {**os.environ, "PREFECT__FLOW_RUN_ID": run_id, "PREFECT_API_URL": api_url}
    log_path = tmp_path / "engine.log"
    began = time.monotonic()
    with log_path.open("wb") as log:
        engine = subprocess.Popen(
            [sys.executable, "-m", "prefect.engine"],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(
                lambda: run_state(api_url, run_id)[0] == "COMPLETED",
                timeout=120,
                what=f"flow run {run_id} to complete",
            )
            wait_for(lambda: engine.poll() is not None, timeout=30, what="the engine to exit")
        finally:
            if engine.poll() is None:
                engine.kill()
                engine.wait()
    elapsed = time.monotonic() - began
    print(f"engine ran one flow in {elapsed:.2f}s")

    assert engine.returncode == 0, log_path.read_text()
    start = read_marker(marker_dir, run_id, "start")
    end = read_marker(marker_dir, run_id, "end")
    assert start is not None
    assert end is not None
    assert start["pid"] == engine.pid
    assert start["time"] <= end["time"]
