"""The `--demo N` part of the launcher: register a demo deployment, schedule N runs, report.

Plain REST calls through httpx, so the launcher's process imports no Prefect code even here:
the runs' own processes import Prefect when the engine loads `demo_flow.py`.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

FLOW_DIR = Path(__file__).resolve().parent
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _check(response: httpx.Response) -> Any:
    response.raise_for_status()
    return response.json()


def register_deployment(
    http: httpx.Client, queue: str, flow_name: str, entrypoint: str, parameters: dict[str, Any]
) -> str:
    """Create (or update) a deployment of a flow in `demo_flow.py`; returns its id."""
    flow = _check(http.post("flows/", json={"name": flow_name}))
    deployment = _check(
        http.post(
            "deployments/",
            json={
                "name": "demo",
                "flow_id": flow["id"],
                "work_queue_name": queue,
                "path": str(FLOW_DIR),
                "entrypoint": entrypoint,
                "parameters": parameters,
            },
        )
    )
    return str(deployment["id"])


def create_runs(http: httpx.Client, deployment_id: str, count: int) -> list[str]:
    """N runs of the deployment, due now."""
    now = datetime.now(UTC).isoformat()
    state = {"type": "SCHEDULED", "state_details": {"scheduled_time": now}}
    create = f"deployments/{deployment_id}/create_flow_run"
    return [str(_check(http.post(create, json={"state": state}))["id"]) for _ in range(count)]


def schedule_demo_runs(api_url: str, queue: str, count: int) -> list[str]:
    """Create the demo flow and deployment (idempotent) and N runs due now."""
    with httpx.Client(base_url=api_url.rstrip("/") + "/", timeout=30) as http:
        deployment = register_deployment(
            http, queue, "actor-agent-demo", "demo_flow.py:demo", {"steps": 3}
        )
        return create_runs(http, deployment, count)


def wait_for_runs(
    api_url: str, run_ids: list[str], timeout: float, stop: threading.Event
) -> list[dict[str, Any]]:
    """Poll the runs until each is in a final state, the deadline passes or a stop is asked."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=api_url.rstrip("/") + "/", timeout=30) as http:
        while True:
            runs = [_check(http.get(f"flow_runs/{run_id}")) for run_id in run_ids]
            done = all(_type(run) in FINAL for run in runs)
            if done or time.monotonic() > deadline or stop.wait(0.5):
                return runs


def _type(run: dict[str, Any]) -> str | None:
    state = run.get("state") or {}
    return state.get("type")


def all_completed(runs: list[dict[str, Any]]) -> bool:
    return all(_type(run) == "COMPLETED" for run in runs)


def summary(runs: list[dict[str, Any]]) -> str:
    """One screen: run, state, duration."""
    lines = [f"{'flow run':<38} {'name':<24} {'state':<10} {'duration':>9}"]
    for run in runs:
        state = (run.get("state") or {}).get("name") or "?"
        took = run.get("total_run_time")
        duration = f"{took:.1f}s" if isinstance(took, int | float) else "-"
        lines.append(f"{run['id']:<38} {run.get('name', ''):<24} {state:<10} {duration:>9}")
    completed = sum(1 for run in runs if _type(run) == "COMPLETED")
    lines.append(f"{completed} of {len(runs)} demo runs completed")
    return "\n".join(lines)
