"""The launcher: `prefect agent start`, as a tree of pykka actors on gevent.

    python examples/agent.py -q default --api http://127.0.0.1:4200/api
    python examples/agent.py --demo 3        # no server? one is started here, with a demo flow

gevent is patched in before anything else is imported, so every actor, timer, HTTP request
and process wait is a greenlet. SIGINT and SIGTERM stop the agent: runs not started yet go
back to their queue, running ones are terminated and reported Crashed (see README).
"""

from __future__ import annotations

import os
import sys

if "--threads" not in sys.argv:
    from gevent import monkey

    monkey.patch_all()

import argparse
import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path

try:
    import actors  # noqa: F401 - only to see whether the package is installed
except ImportError:  # run from a clone without `pip install`: use the clone's packages
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gevent
import pykka

from actors import (
    AgentHandle,
    SettingsError,
    StatusServer,
    render_tree,
    settings_from_env,
    start_agent,
)
from actors.launcher import demo
from actors.launcher.local_server import LocalPrefectServer

log = logging.getLogger("prefect_actor_agent.launcher")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="agent.py",
        description="Run flow runs of Prefect work queues as local processes (an actor tree).",
    )
    parser.add_argument(
        "-q",
        "--work-queue",
        action="append",
        default=[],
        dest="work_queues",
        help="a work queue to take runs from (repeatable)",
    )
    parser.add_argument(
        "-m",
        "--match",
        action="append",
        default=[],
        dest="prefixes",
        help="take runs from every queue whose name starts with this (repeatable)",
    )
    parser.add_argument(
        "-p",
        "--pool",
        default=None,
        dest="pool",
        help="a work pool (Prefect 2.10+ and 3.x): its queues named with -q, or all of them",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="most flow runs in flight at once (default: no limit)",
    )
    parser.add_argument(
        "--prefetch-seconds",
        type=float,
        default=None,
        help="take runs scheduled up to this many seconds ahead "
        "(default: PREFECT_AGENT_PREFETCH_SECONDS or 15)",
    )
    parser.add_argument(
        "--query-interval",
        type=float,
        default=None,
        help="seconds between polls (default: PREFECT_AGENT_QUERY_INTERVAL or 15)",
    )
    parser.add_argument(
        "--cancel-grace-seconds",
        type=float,
        default=None,
        help="SIGTERM to SIGKILL delay when a run is cancelled "
        "(default: PREFECT_AGENT_CANCEL_GRACE_SECONDS or 30)",
    )
    parser.add_argument(
        "--shutdown-grace-seconds",
        type=float,
        default=None,
        help="SIGTERM to SIGKILL delay for runs in flight when the agent stops (default 5)",
    )
    parser.add_argument(
        "--cancel-poll-interval",
        type=float,
        default=None,
        help="seconds between looks for runs to cancel "
        "(default: PREFECT_AGENT_CANCEL_POLL_SECONDS or 2)",
    )
    parser.add_argument(
        "--status-port",
        type=int,
        default=None,
        help="serve /tree, /healthz and /metrics on this port (0: any free port)",
    )
    parser.add_argument(
        "--status-host",
        default="127.0.0.1",
        help="address of the status endpoint (default 127.0.0.1: this machine only)",
    )
    parser.add_argument(
        "--max-restarts",
        type=int,
        default=None,
        help="restart intensity: at most this many actor restarts per --restart-window "
        "(default 10), or the agent exits non-zero",
    )
    parser.add_argument(
        "--restart-window",
        type=float,
        default=None,
        help="the restart intensity's window in seconds (default 60)",
    )
    parser.add_argument(
        "--rematch-interval",
        type=float,
        default=None,
        help="with -m: seconds between re-reads of the matching queues (default 30)",
    )
    parser.add_argument(
        "--run-once", action="store_true", help="poll once, wait for the runs taken, then exit"
    )
    parser.add_argument(
        "--api",
        default=None,
        help="the Prefect API URL (default: PREFECT_API_URL; if neither is set, "
        "a local Prefect server is started)",
    )
    parser.add_argument(
        "--server-home",
        default=None,
        help="PREFECT_HOME of the local server started when there is no API URL "
        "(default: ~/.prefect-actor-agent/server)",
    )
    parser.add_argument(
        "--demo",
        type=int,
        default=0,
        metavar="N",
        help="register a demo deployment, schedule N runs, run them, print a summary and exit",
    )
    parser.add_argument(
        "--threads",
        action="store_true",
        help="run the actors on plain threads instead of gevent greenlets",
    )
    parser.add_argument("--log-level", default=os.environ.get("PREFECT_AGENT_LOG_LEVEL", "INFO"))
    return parser.parse_args(argv)


class Signals:
    """What the signals asked for; handlers only set flags, the main loop acts on them."""

    def __init__(self, gevent_mode: bool) -> None:
        self.stop = threading.Event()
        self.dump_tree = threading.Event()
        self._install(signal.SIGINT, self._on_stop, gevent_mode)
        self._install(signal.SIGTERM, self._on_stop, gevent_mode)
        self._install(signal.SIGUSR1, lambda *_: self.dump_tree.set(), gevent_mode)

    def _on_stop(self, *_: object) -> None:
        log.info("stop requested")
        self.stop.set()

    @staticmethod
    def _install(signum: int, handler: Callable[..., object], gevent_mode: bool) -> None:
        if gevent_mode:
            gevent.signal_handler(signum, handler)
        else:
            signal.signal(signum, handler)


def serve(agent: AgentHandle, signals: Signals, done: Callable[[], bool]) -> None:
    """Wait until `done()`, a stop signal or the agent giving up; dump the tree on SIGUSR1."""
    while not signals.stop.wait(0.5) and not done() and agent.failure is None:
        if signals.dump_tree.is_set():
            signals.dump_tree.clear()
            try:
                log.info("actor tree:\n%s", render_tree(agent.tree()))
            except (pykka.ActorDeadError, pykka.Timeout) as exc:
                log.warning("the agent did not answer for its tree: %r", exc)


def start_local_server(server_home: str | None) -> LocalPrefectServer:
    """The embedded default: a Prefect server of our own, when no API URL is given."""
    home = Path(server_home or Path.home() / ".prefect-actor-agent" / "server")
    home.mkdir(parents=True, exist_ok=True)
    server = LocalPrefectServer(home=home)
    log.info("no PREFECT_API_URL: starting a local Prefect server (home %s)...", home)
    server.start()
    log.info("local Prefect server ready at %s", server.api_url)
    return server


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    logging.getLogger("pykka").setLevel(logging.WARNING)

    server = None
    api_url = args.api or os.environ.get("PREFECT_API_URL")
    if not api_url:
        server = start_local_server(args.server_home)
        api_url = server.api_url

    queues = tuple(args.work_queues) or (() if args.prefixes or args.pool else ("default",))
    try:
        settings = settings_from_env(
            api_url=api_url,
            work_queues=queues,
            queue_prefixes=tuple(args.prefixes),
            work_pool=args.pool,
            limit=args.limit,
            prefetch_seconds=args.prefetch_seconds,
            query_interval=args.query_interval,
            cancel_grace_seconds=args.cancel_grace_seconds,
            shutdown_grace_seconds=args.shutdown_grace_seconds,
            rematch_interval=args.rematch_interval,
            cancel_poll_interval=args.cancel_poll_interval,
            max_restarts=args.max_restarts,
            restart_window_seconds=args.restart_window,
            run_once=args.run_once,
        )
    except SettingsError as exc:
        log.error("%s", exc)
        if server is not None:
            server.stop()
        return 2

    signals = Signals(gevent_mode=not args.threads)
    demo_runs: list[str] = []
    if args.demo:
        queue = queues[0] if queues else "default"
        demo_runs = demo.schedule_demo_runs(api_url, queue, args.demo)
        log.info("demo: scheduled %d run(s) of the demo flow on queue %r", len(demo_runs), queue)

    agent = start_agent(settings)
    status = None
    exit_code = 0
    try:
        if args.status_port is not None:
            status = StatusServer(agent, args.status_host, args.status_port).start()
        if demo_runs:
            runs = demo.wait_for_runs(api_url, demo_runs, timeout=300, stop=signals.stop)
            agent.wait_idle(timeout=60)  # let the runs' processes exit before stopping
            print(demo.summary(runs), flush=True)
            exit_code = 0 if demo.all_completed(runs) else 1
        else:
            serve(agent, signals, agent.outcome.finished.is_set)
    finally:
        log.info("stopping the agent...")
        agent.stop()
        if status is not None:
            status.stop()
        if server is not None:
            server.stop()
        pykka.ActorRegistry.stop_all()
        if agent.failure is not None:
            log.error("agent exited because it gave up: %s", agent.failure)
            exit_code = 1
        else:
            log.info("agent stopped")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
