"""A host service that embeds the agent: its own pykka actor receives the agent's run events.

    python examples/embedded.py [--runs 2] [--api URL]

Nothing is monkey-patched: the host and the agent share one process on plain threads, as in
any pykka application. The host schedules demo runs, prints each run event as it happens and
the agent's tree every few seconds, and stops once every run it scheduled has finished.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from pathlib import Path

try:
    import actors  # noqa: F401 - only to see whether the package is installed
except ImportError:  # run from a clone without `pip install`: use the clone's packages
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors import RunListener, render_tree, settings_from_env, start_agent
from actors.launcher.demo import DEMO_FLOW, register_deployment
from actors.launcher.local_server import LocalPrefectServer
from actors.launcher.prefect_objects import PrefectObjects
from messages.user.events import RunFinished, RunStarted, RunSubmitted


class HostService(RunListener):
    """The embedding service's own actor: it learns about runs as they happen."""

    def __init__(self, expected: set[str], done: threading.Event) -> None:
        super().__init__()
        self.expected = expected
        self.finished: set[str] = set()
        self.done = done

    def run_submitted(self, event: RunSubmitted) -> None:
        print(
            f"event: RunSubmitted {event.flow_run_id} ({event.flow_run_name}) "
            f"from queue {event.queue_name!r}",
            flush=True,
        )

    def run_started(self, event: RunStarted) -> None:
        print(f"event: RunStarted {event.flow_run_id} pid {event.infrastructure_pid}", flush=True)

    def run_finished(self, event: RunFinished) -> None:
        print(
            f"event: RunFinished {event.flow_run_id} outcome {event.outcome} ({event.detail})",
            flush=True,
        )
        self.finished.add(event.flow_run_id)
        if self.expected <= self.finished:
            self.done.set()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--api", default=os.environ.get("PREFECT_API_URL"))
    parser.add_argument("--queue", default="embedded")
    parser.add_argument("--tree-every", type=float, default=3.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    server = None
    api_url = args.api
    if not api_url:
        server = LocalPrefectServer()
        server.start()
        api_url = server.api_url
    agent = None
    try:
        with PrefectObjects(api_url, api_key=os.environ.get("PREFECT_API_KEY")) as api:
            deployment = register_deployment(
                api, args.queue, DEMO_FLOW, "demo_flow.py:demo", {"steps": 2}
            )
            run_ids = set(api.create_runs(deployment, args.runs))
        done = threading.Event()
        host = HostService.start(run_ids, done)
        settings = settings_from_env(api_url=api_url, work_queues=(args.queue,))
        agent = start_agent(settings, listeners=(host,))
        while not done.wait(args.tree_every):
            print(render_tree(agent.tree()), flush=True)
        print(render_tree(agent.tree()), flush=True)
        print(f"all {len(run_ids)} run(s) finished", flush=True)
        host.stop()
    finally:
        if agent is not None:
            agent.stop()
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
