"""Measure how long cancellation takes, end to end, at the agent's default settings.

    python examples/cancel_latency.py --runs 10 [--api URL]

Starts a local Prefect server unless --api is given, starts the launcher (examples/agent.py,
default settings) on a fresh queue, runs N sleeping flows with the real engine, then cancels
them one at a time the way the UI does (state Cancelling) and times each until the server
shows the run Cancelled. Prints each latency, the median and the maximum.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from actors.launcher.demo import create_runs, register_deployment
from actors.launcher.local_server import LocalPrefectServer

LAUNCHER = Path(__file__).resolve().parent / "agent.py"


def state_of(http: httpx.Client, run_id: str) -> tuple[str, str]:
    state = http.get(f"flow_runs/{run_id}").json()["state"]
    return state["type"], state.get("name") or ""


def wait(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def measure(api_url: str, runs: int) -> list[float]:
    queue = f"cancel-latency-{uuid.uuid4().hex[:6]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_AGENT_")}
    agent = subprocess.Popen(
        [sys.executable, str(LAUNCHER), "--api", api_url, "-q", queue],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    latencies = []
    try:
        with httpx.Client(base_url=api_url.rstrip("/") + "/", timeout=30) as http:
            deployment = register_deployment(
                http, queue, "actor-agent-sleeper", "demo_flow.py:sleeper", {"seconds": 600}
            )
            run_ids = create_runs(http, deployment, runs)
            if not wait(lambda: all(state_of(http, r)[0] == "RUNNING" for r in run_ids), 180):
                raise RuntimeError("the runs did not all reach Running")
            for run_id in run_ids:
                body = {"state": {"type": "CANCELLING", "name": "Cancelling"}, "force": True}
                asked = time.monotonic()
                http.post(f"flow_runs/{run_id}/set_state", json=body).raise_for_status()
                if not wait(lambda r=run_id: state_of(http, r) == ("CANCELLED", "Cancelled"), 60):
                    raise RuntimeError(f"run {run_id} was not cancelled within 60 s")
                latencies.append(time.monotonic() - asked)
                print(f"{run_id}: cancelled in {latencies[-1]:.2f}s", flush=True)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--api", default=None)
    args = parser.parse_args()
    server = None
    api_url = args.api
    if api_url is None:
        server = LocalPrefectServer()
        server.start()
        api_url = server.api_url
    try:
        latencies = measure(api_url, args.runs)
    finally:
        if server is not None:
            server.stop()
    print(
        f"cancel latency over {len(latencies)} runs: median {statistics.median(latencies):.2f}s, "
        f"max {max(latencies):.2f}s, min {min(latencies):.2f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
