"""Measure how long cancellation takes, end to end, at the agent's default settings.

    python examples/cancel_latency.py --runs 10 [--api URL]

Starts a local Prefect server unless --api is given, starts the launcher (examples/agent.py,
default settings) on a fresh queue, runs N sleeping flows with the real engine, then cancels
them one at a time the way the UI does (state Cancelling) and times each until the server
shows the run Cancelled. Prints each latency, the median and the maximum.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from actors.launcher.demo import register_deployment
from actors.launcher.local_server import LocalPrefectServer
from actors.launcher.prefect_objects import PrefectObjects

LAUNCHER = Path(__file__).resolve().parent / "agent.py"


def wait(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def cancelled(api: PrefectObjects, run_id: str) -> bool:
    type_, name, _ = api.run_state(run_id)
    return (type_, name) == ("CANCELLED", "Cancelled")


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
        with PrefectObjects(api_url, api_key=os.environ.get("PREFECT_API_KEY")) as api:
            deployment = register_deployment(
                api, queue, "actor-agent-sleeper", "demo_flow.py:sleeper", {"seconds": 600}
            )
            run_ids = api.create_runs(deployment, runs)

            def all_running() -> bool:
                return set(api.read_states(run_ids).values()) == {"RUNNING"}

            if not wait(all_running, 180, interval=0.5):
                raise RuntimeError("the runs did not all reach Running")
            for run_id in run_ids:
                asked = time.monotonic()
                api.cancel_run(run_id)
                if not wait(functools.partial(cancelled, api, run_id), 60):
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
