"""The server the contenders share: what the benchmark sets up on it and what it reads back.

Every REST call goes through `actors.launcher.prefect_objects`, the helper the demo and the
tests use too; this adds only the benchmark's own naming and its way of watching a drain.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import httpx

from actors.launcher.prefect_objects import TAKEN_STATES, PrefectObjects, parse_time
from examples.benchmark.procs import ROOT

# How often the benchmark looks for runs that got their pid. The drain's end is the server's
# own record of the last pid, so this decides only when the benchmark notices; looking every
# 0.25 s cost the server a fifth of its CPU and slowed the agent it was measuring.
POLL_SECONDS = 1.0
SETUP_THREADS = 2  # setting up is not measured: spare the SQLite lock
FLOW_DIR = ROOT / "actors" / "launcher"  # demo_flow.py: never loaded, the command is not Prefect's

Pids = dict[str, tuple[str, datetime]]  # run id -> (infrastructure_pid, the run's `updated`)


class BenchServer:
    """One benchmark's objects on the server (a flow of its own, tagged) and its looks at them.

    One client shared by threads; it tries a transient answer again (as both agents' clients
    do) and counts those retries, which says how much of the ceiling's time went to them.
    """

    def __init__(self, api_url: str, poll_seconds: float = POLL_SECONDS) -> None:
        self.api = PrefectObjects(
            api_url, api_key=os.environ.get("PREFECT_API_KEY"), timeout=60.0, max_connections=16
        )
        self.api_url = self.api.api_url
        self.poll_seconds = poll_seconds
        self.tag = uuid.uuid4().hex[:8]
        self.flow_id = self.api.create_flow(f"actor-agent-benchmark-{self.tag}")

    def close(self) -> None:
        self.api.close()

    def delete_everything(self) -> None:
        """Deleting the flow deletes its deployments and runs: an existing server stays tidy."""
        with contextlib.suppress(httpx.HTTPError):
            self.api.delete_flow(self.flow_id)

    def deployment(
        self, name: str, queue: str, command: list[str], env: dict[str, str] | None = None
    ) -> str:
        """A deployment on `queue` whose Process block runs `command` (the flow costs nothing)
        with `env` added to its environment."""
        block = self.api.create_process_block(
            command=command, env=env, stream_output=False, name=f"bench-{self.tag}-{name}"
        )
        return self.api.create_deployment(
            self.flow_id,
            name,
            work_queue=queue,
            infrastructure_document_id=block,
            path=str(FLOW_DIR),
            entrypoint="demo_flow.py:demo",
        )

    def pool_deployment(
        self, name: str, pool: str, queue: str, command: str, env: dict[str, str]
    ) -> str:
        """Prefect 3: a deployment on a `process` pool's queue whose job variables say how its
        runs start (`command` a string, as Prefect's process worker splits it)."""
        return self.api.create_deployment(
            self.flow_id,
            name,
            work_pool=pool,
            work_queue=queue,
            path=str(FLOW_DIR),
            entrypoint="demo_flow.py:demo",
            job_variables={"command": command, "env": env},
        )

    def create_runs(
        self, deployment_id: str, count: int, threads: int = SETUP_THREADS
    ) -> list[str]:
        """`count` runs due now (Scheduled, scheduled_time = the moment each is created), by
        `threads` requests at a time (SQLite takes one writer at a time: 2 by default)."""
        return self.api.create_runs(deployment_id, count, threads=threads)

    def runs_with_pid(self, queue: str, run_ids: Iterable[str]) -> Pids:
        """Of `run_ids` on `queue`, those with an infrastructure_pid: pid and the run's `updated`.

        Callers ask only for runs still without a pid (a pid is never taken back), so the
        benchmark's own polling costs the server less and less as a contender progresses.
        """
        return {
            run_id: (str(run["infrastructure_pid"]), parse_time(run["updated"]))
            for run_id, run in self.api.read_runs(run_ids, work_queue=queue).items()
            if run.get("infrastructure_pid")
        }

    def taken(self, queue: str) -> int:
        """How many runs of `queue` are past Scheduled: one COUNT, cheap enough to ask every
        second while a contender drains, where reading the runs themselves is not."""
        return self.api.count_runs(work_queue=queue, state_types=TAKEN_STATES)

    def pending_times(self, run_ids: Iterable[str]) -> dict[str, datetime]:
        """When the server recorded each run's first Pending state (its own clock)."""

        def one(run_id: str) -> tuple[str, datetime | None]:
            states = self.api.state_history(run_id)
            pending = sorted(parse_time(s["timestamp"]) for s in states if s["type"] == "PENDING")
            return run_id, pending[0] if pending else None

        with ThreadPoolExecutor(SETUP_THREADS) as pool:
            return {run_id: ts for run_id, ts in pool.map(one, run_ids) if ts is not None}
