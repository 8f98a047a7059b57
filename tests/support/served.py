"""A server under test as a test suite serves it: its version, its API, a queue of the test's
own and, on 3.x, the suite's process pool.

Each suite subclasses `BaseServed` with its own pool (`pool`) and its own ways of deploying:
the session's 3.x server is shared, so a pool per suite keeps one suite's workers and
deployments out of another's.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import httpx

from actors.launcher.local_server import LocalPrefectServer
from tests.support.prefect_objects import call_api


@dataclass
class BaseServed:
    """One server, a queue of this test's own on it, and the agent options that serve it."""

    pool: ClassVar[str]  # the 3.x process pool the suite deploys to

    version: str  # "3.x", or a 2.20 flavour ("2.20", "2.20-events")
    api_url: str
    queue: str = field(default_factory=lambda: f"q-{uuid.uuid4().hex[:10]}")

    @classmethod
    def on_3x(cls, server: LocalPrefectServer) -> Self:
        """The server with the suite's pool on it, made by the first test that needs it."""
        if httpx.get(f"{server.api_url}/work_pools/{cls.pool}", timeout=30).status_code == 404:
            call_api(server.api_url, "POST", "/work_pools/", {"name": cls.pool, "type": "process"})
        return cls("3.x", server.api_url)

    def agent_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"api_url": self.api_url, "work_queues": (self.queue,)}
        if self.version == "3.x":
            options["work_pool"] = self.pool
        return options

    def deploy_on_pool(
        self,
        flow: str,
        *,
        name: str,
        entrypoint: str,
        directory: Path,
        command: str,
        env: dict[str, str],
        concurrency_limit: int | None = None,
    ) -> str:
        """A 3.x deployment on the suite's pool and this test's queue, as a 3.x user makes one:
        its job variables (env, command, working_dir) say how its runs start."""
        flow_id = call_api(self.api_url, "POST", "/flows/", {"name": flow})["id"]
        body: dict[str, Any] = {
            "name": name,
            "flow_id": flow_id,
            "work_pool_name": self.pool,
            "work_queue_name": self.queue,
            "entrypoint": entrypoint,
            "path": str(directory),
            "job_variables": {"env": env, "command": command, "working_dir": str(directory)},
        }
        if concurrency_limit is not None:
            body["concurrency_limit"] = concurrency_limit
        return str(call_api(self.api_url, "POST", "/deployments/", body)["id"])
