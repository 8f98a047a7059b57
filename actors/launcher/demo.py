"""The `--demo N` part of the launcher: register a demo deployment, schedule N runs, report.

REST calls through `prefect_objects`, so the launcher's process imports no Prefect code even
here: the runs' own processes import Prefect when the engine loads `demo_flow.py`.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from actors.launcher.prefect_objects import FINAL_STATES, PrefectObjects, state_type

FLOW_DIR = Path(__file__).resolve().parent
FINAL = FINAL_STATES
DEMO_FLOW = "actor-agent-demo"


def register_deployment(
    api: PrefectObjects, queue: str, flow_name: str, entrypoint: str, parameters: dict[str, Any]
) -> str:
    """Create (or update) a deployment "demo" of a flow in `demo_flow.py`; returns its id.

    No infrastructure block: the agent runs it with a default `Process`."""
    return api.deploy(
        flow_name,
        "demo",
        work_queue=queue,
        path=str(FLOW_DIR),
        entrypoint=entrypoint,
        parameters=parameters,
    )


def schedule_demo_runs(
    api_url: str, queue: str, count: int, *, api_key: str | None = None
) -> list[str]:
    """Create the demo flow and deployment (idempotent) and N runs due now."""
    with PrefectObjects(api_url, api_key=api_key) as api:
        deployment = register_deployment(api, queue, DEMO_FLOW, "demo_flow.py:demo", {"steps": 3})
        return api.create_runs(deployment, count)


def wait_for_runs(
    api_url: str,
    run_ids: list[str],
    timeout: float,
    stop: threading.Event,
    *,
    api_key: str | None = None,
) -> list[dict[str, Any]]:
    """Poll the runs until each is in a final state, the deadline passes or a stop is asked;
    the runs as last read, in the order of `run_ids`."""
    deadline = time.monotonic() + timeout
    with PrefectObjects(api_url, api_key=api_key) as api:
        while True:
            found = api.read_runs(run_ids)
            # A run the filter did not name is read by id: a run the server lost is an error.
            runs = [found.get(run_id) or api.read_run(run_id) for run_id in run_ids]
            done = all(state_type(run) in FINAL for run in runs)
            if done or time.monotonic() > deadline or stop.wait(0.5):
                return runs


def all_completed(runs: list[dict[str, Any]]) -> bool:
    return all(state_type(run) == "COMPLETED" for run in runs)


def summary(runs: list[dict[str, Any]]) -> str:
    """One screen: run, state, duration."""
    lines = [f"{'flow run':<38} {'name':<24} {'state':<10} {'duration':>9}"]
    for run in runs:
        state = (run.get("state") or {}).get("name") or "?"
        took = run.get("total_run_time")
        duration = f"{took:.1f}s" if isinstance(took, int | float) else "-"
        lines.append(f"{run['id']:<38} {run.get('name', ''):<24} {state:<10} {duration:>9}")
    completed = sum(1 for run in runs if state_type(run) == "COMPLETED")
    lines.append(f"{completed} of {len(runs)} demo runs completed")
    return "\n".join(lines)
