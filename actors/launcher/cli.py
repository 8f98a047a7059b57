"""The command: `prefect-actor-agent start`, as `prefect agent start` is used.

    prefect-actor-agent start -q default --api http://127.0.0.1:4200/api
    prefect-actor-agent start --demo 3      # no server? one is started here, with a demo flow
    python -m actors start ...              # the same command
    python examples/agent.py ...            # the same, from a clone; `start` may be left out

Importing this module patches nothing: the entry point (`actors.__main__.main`, which the
installed command, `python -m actors` and `examples/agent.py` all call) applies
`gevent.monkey.patch_all()` before this module and the agent's are imported, so that every
actor, timer, HTTP request and process wait is a greenlet; `--threads` skips the patch. Called
without the patch, `main` runs the actors on threads and says so in the log.

SIGINT and SIGTERM stop the agent: runs not started yet go back to their queue, running ones
are terminated and reported Crashed; SIGUSR1 writes the actor tree to the log. Exit codes: 0
after a clean stop (or a demo whose runs all completed), 1 when the agent gave up (restart
intensity exceeded), a demo run did not complete or the local server could not start, 2 for a
usage or settings error.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

import gevent
import pykka
from gevent import monkey

from actors.agent_handle import AgentHandle, start_agent
from actors.launcher import demo
from actors.launcher import logs as log_setup
from actors.launcher.local_server import LocalPrefectServer
from actors.runtime.settings import AgentSettings, SettingsError, settings_from_env
from actors.status.http import StatusServer
from actors.status.text import render_tree

__all__ = ["COMMAND", "build_parser", "main", "parse_args"]

log = logging.getLogger("prefect_actor_agent.launcher")

COMMAND = "start"  # the only command; it may be left out
DEFAULT_SERVER_HOME = Path.home() / ".prefect-actor-agent" / "server"


def version() -> str:
    try:
        return metadata.version("prefect-actor-agent")
    except metadata.PackageNotFoundError:  # run from a clone that was never installed
        return "unknown"


class _HelpFormatter(argparse.HelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The flags of `prefect agent start`, then this agent's own."""
    parser = argparse.ArgumentParser(
        prog=prog,
        usage=f"%(prog)s {COMMAND} [OPTIONS]",
        description=(
            "Start an agent process to poll one or more work queues for flow runs, and run "
            "each on the infrastructure its deployment names (a local process, or a Docker "
            "container). A drop-in for `prefect agent start` (its options come "
            f"first below), built as a tree of actors. `{COMMAND}` is the only command and may "
            "be left out."
        ),
        epilog=(
            "With neither --api nor PREFECT_API_URL, a local Prefect server is started (it "
            "needs the `prefect` extra: pip install 'prefect-actor-agent[prefect]'). "
            "PREFECT_API_KEY is sent as a Bearer token and never written to the log."
        ),
        formatter_class=_HelpFormatter,
        # The entry point looks for `--threads` before parsing (gevent must patch first): an
        # abbreviation would slip past it.
        allow_abbrev=False,
        add_help=False,
    )
    parser.add_argument("-h", "--help", action="help", help="Show this message and exit.")
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {version()}",
        help="Show the version and exit.",
    )

    prefect = parser.add_argument_group("options of `prefect agent start`")
    prefect.add_argument(
        "-q",
        "--work-queue",
        action="append",
        default=[],
        dest="work_queues",
        metavar="NAME",
        help="One or more work queue names for the agent to pull from; repeat the option for "
        "each. A queue that does not exist is created. [default: default, unless -m or -p]",
    )
    prefect.add_argument(
        "-m",
        "--match",
        action="append",
        default=[],
        dest="prefixes",
        metavar="PREFIX",
        help="Pull from every work queue whose name starts with PREFIX; for example `dev-` "
        "matches `dev-etl` and `dev-ml`. Queues created later are picked up too "
        "(see --rematch-interval). Repeatable.",
    )
    prefect.add_argument(
        "-n",
        "--name",
        default=None,
        metavar="NAME",
        help="The name the server lists this agent by as a worker of its pools, and that every "
        "flow run it takes names as its holder. [default: actor-agent@HOST and the pool or "
        "queues it serves, the same at every start on this host]",
    )
    prefect.add_argument(
        "-p",
        "--pool",
        action="append",
        default=[],
        dest="pools",
        metavar="NAME",
        help="A work pool to pull from (Prefect 2.10+ and 3.x): the queues named with -q, "
        "or else every queue of the pool. Repeat it to serve several pools at once, each "
        "run on its own pool's kind (a process pool's as a process, a docker pool's in a "
        "container); -q and -m then apply to each pool, and a pool of a type this agent "
        "cannot run is refused alone.",
    )
    prefect.add_argument(
        "-l",
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="Maximum number of flow runs to have in flight at once, all queues and pools "
        "together. [default: no limit]",
    )
    prefect.add_argument(
        "--prefetch-seconds",
        type=float,
        default=None,
        metavar="SECONDS",
        help="Pull flow runs scheduled up to this many seconds ahead. "
        "[default: (from PREFECT_AGENT_PREFETCH_SECONDS) 15]",
    )
    prefect.add_argument(
        "--run-once",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Poll each work queue once, wait for the flow runs taken to end, then exit, "
        "instead of running forever. [default: no-run-once]",
    )
    prefect.add_argument(
        "--api",
        default=None,
        metavar="URL",
        help="The Prefect API URL. With neither this nor PREFECT_API_URL, a local Prefect "
        "server is started (see --server-home). [default: (from PREFECT_API_URL)]",
    )
    prefect.add_argument(
        "--hide-welcome",
        action="store_true",
        help="Accepted for compatibility; this agent prints no welcome banner.",
    )

    ours = parser.add_argument_group("options of this agent")
    ours.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help="The API key (Prefect Cloud), sent as a Bearer token and replaced by *** in the "
        "log. Prefer the environment variable: a command line is visible to other users of "
        "the machine. [default: (from PREFECT_API_KEY)]",
    )
    ours.add_argument(
        "--heartbeat-seconds",
        type=float,
        default=None,
        metavar="SECONDS",
        help="Seconds between worker heartbeats to each pool it serves. "
        "[default: (from PREFECT_WORKER_HEARTBEAT_SECONDS) 30]",
    )
    ours.add_argument(
        "--lost-agent-seconds",
        type=float,
        default=None,
        metavar="SECONDS",
        help="A peer agent whose heartbeat is older than this is lost: its runs in this "
        "agent's queues are recovered (Crashed, handed back, Cancelled). At least three "
        "heartbeat intervals. [default: (from PREFECT_ACTOR_AGENT_LOST_SECONDS) 90]",
    )
    ours.add_argument(
        "--query-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="Seconds between polls of a drained work queue. "
        "[default: (from PREFECT_AGENT_QUERY_INTERVAL) 15]",
    )
    ours.add_argument(
        "--rematch-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="With -m, or -p and no -q: seconds between re-reads of the queues to serve. "
        "[default: 30]",
    )
    ours.add_argument(
        "--cancel-poll-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="Seconds between looks for flow runs to cancel. "
        "[default: (from PREFECT_AGENT_CANCEL_POLL_SECONDS) 2]",
    )
    ours.add_argument(
        "--events",
        choices=("auto", "off"),
        default=None,
        help="auto: take runs and cancellations as the server's event stream announces them, "
        "where the server has one (Prefect 3, or 2.20 with PREFECT_EXPERIMENTAL_EVENTS), and "
        "poll otherwise; off: poll only. The polls stay the authority either way. "
        "[default: (from PREFECT_ACTOR_AGENT_EVENTS) auto]",
    )
    ours.add_argument(
        "--stream-cancel-poll-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="Seconds between looks for flow runs to cancel while the event stream is "
        "healthy (the safety net; --cancel-poll-interval applies while polling). "
        "[default: (from PREFECT_ACTOR_AGENT_STREAM_CANCEL_POLL_SECONDS) 30]",
    )
    ours.add_argument(
        "--event-ping-seconds",
        type=float,
        default=None,
        metavar="SECONDS",
        help="A quiet event stream is pinged after this many seconds, and given up (the agent "
        "polls and reconnects) when no answer comes within as long again. [default: 10]",
    )
    ours.add_argument(
        "--cancel-grace-seconds",
        type=float,
        default=None,
        metavar="SECONDS",
        help="Delay between SIGTERM and SIGKILL when a flow run is cancelled. "
        "[default: (from PREFECT_AGENT_CANCEL_GRACE_SECONDS) 30]",
    )
    ours.add_argument(
        "--shutdown-grace-seconds",
        type=float,
        default=None,
        metavar="SECONDS",
        help="Delay between SIGTERM and SIGKILL for the flow runs in flight when the agent "
        "stops. [default: 5]",
    )
    ours.add_argument(
        "--max-restarts",
        type=int,
        default=None,
        metavar="N",
        help="Restart intensity: at most N actor restarts per --restart-window, or the agent "
        "gives up and exits 1. [default: 10]",
    )
    ours.add_argument(
        "--restart-window",
        type=float,
        default=None,
        metavar="SECONDS",
        help="The window of the restart intensity. [default: 60]",
    )
    ours.add_argument(
        "--status-port",
        type=int,
        default=None,
        metavar="PORT",
        help="Serve /tree, /healthz and /metrics on this port (0: any free port). [default: off]",
    )
    ours.add_argument(
        "--status-host",
        default="127.0.0.1",
        metavar="HOST",
        help="The address of the status endpoint. [default: 127.0.0.1, this machine only]",
    )
    ours.add_argument(
        "--server-home",
        default=None,
        metavar="DIR",
        help="PREFECT_HOME of the local server started when there is no API URL. "
        "[default: ~/.prefect-actor-agent/server]",
    )
    ours.add_argument(
        "--demo",
        type=int,
        default=0,
        metavar="N",
        help="Register a demo deployment, schedule N flow runs of it, run them, print a "
        "summary and exit.",
    )
    ours.add_argument(
        "--threads",
        action="store_true",
        help="Run the actors on plain threads instead of gevent greenlets.",
    )

    logging_options = parser.add_argument_group("logging")
    logging_options.add_argument(
        "--log-level",
        type=str.upper,
        default=os.environ.get("PREFECT_AGENT_LOG_LEVEL", "INFO"),
        metavar="LEVEL",
        help="The least severe level logged: DEBUG, INFO, WARNING, ERROR or CRITICAL. "
        "[default: (from PREFECT_AGENT_LOG_LEVEL) INFO]",
    )
    logging_options.add_argument(
        "--log-format",
        choices=log_setup.FORMATS,
        default="prefect",
        help="`prefect`: lines laid out as Prefect's own (HH:MM:SS.mmm | LEVEL | logger - "
        "message); `json`: one JSON object a line (timestamp, level, logger, message, "
        "exception), for log shippers. [default: prefect]",
    )
    return parser


def parse_args(argv: Sequence[str], prog: str | None = None) -> argparse.Namespace:
    """The arguments of `start`, with or without the word itself."""
    parser = build_parser(prog)
    args = list(argv)
    if args and args[0] == COMMAND:
        args = args[1:]
    elif args and not args[0].startswith("-"):
        parser.error(f"unknown command {args[0]!r}: the command is `{COMMAND}`")
    parsed = parser.parse_args(args)
    if parsed.log_level.upper() not in log_setup.LEVELS:  # the default from the environment
        parser.error(f"--log-level must be one of {', '.join(log_setup.LEVELS)}")
    return parsed


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
    home = Path(server_home) if server_home else DEFAULT_SERVER_HOME
    home.mkdir(parents=True, exist_ok=True)
    server = LocalPrefectServer(home=home)
    log.info("no PREFECT_API_URL: starting a local Prefect server (home %s)...", home)
    server.start()
    log.info("local Prefect server ready at %s", server.api_url)
    return server


def _runtime(threads: bool) -> tuple[bool, str]:
    """Whether the actors run on gevent, and the words for the log."""
    patched = bool(monkey.is_module_patched("threading"))
    if patched:
        return True, "gevent greenlets"
    if not threads:
        log.warning(
            "gevent was not patched in before the agent was imported, so the actors run on "
            "threads; start the agent as `prefect-actor-agent start` or `python -m actors "
            "start` to run them on gevent"
        )
    return False, "threads"


def settings_from_args(
    args: argparse.Namespace, api_url: str, api_key: str | None
) -> AgentSettings:
    """The agent's settings: the flags, over Prefect's environment variables."""
    return settings_from_env(
        api_url=api_url,
        api_key=api_key,
        work_queues=queues_of(args),
        queue_prefixes=tuple(args.prefixes),
        work_pools=tuple(args.pools),
        limit=args.limit,
        prefetch_seconds=args.prefetch_seconds,
        query_interval=args.query_interval,
        cancel_grace_seconds=args.cancel_grace_seconds,
        shutdown_grace_seconds=args.shutdown_grace_seconds,
        rematch_interval=args.rematch_interval,
        cancel_poll_interval=args.cancel_poll_interval,
        max_restarts=args.max_restarts,
        restart_window_seconds=args.restart_window,
        run_once=bool(args.run_once),
        name=args.name,
        heartbeat_seconds=args.heartbeat_seconds,
        lost_agent_seconds=args.lost_agent_seconds,
        events=args.events,
        stream_cancel_poll_interval=args.stream_cancel_poll_interval,
        event_ping_seconds=args.event_ping_seconds,
    )


def queues_of(args: argparse.Namespace) -> tuple[str, ...]:
    """The queues named with -q; with no -q, -m or -p, Prefect's `default`."""
    return tuple(args.work_queues) or (() if args.prefixes or args.pools else ("default",))


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Run `start` with these arguments (default: the command line); returns the exit code."""
    args = parse_args(sys.argv[1:] if argv is None else argv, prog)
    api_url = args.api or os.environ.get("PREFECT_API_URL")
    api_key = args.api_key or os.environ.get("PREFECT_API_KEY") or None
    log_setup.configure(args.log_level, args.log_format, log_setup.secrets_of(api_key, api_url))
    gevent_mode, runtime = _runtime(args.threads)

    server = None
    if not api_url:
        try:
            server = start_local_server(args.server_home)
        except RuntimeError as exc:
            log.error(
                "%s\n(a local server needs Prefect: pip install "
                "'prefect-actor-agent[prefect]'; or give a server with --api or PREFECT_API_URL)",
                exc,
            )
            return 1
        api_url = server.api_url

    try:
        settings = settings_from_args(args, api_url, api_key)
    except SettingsError as exc:
        log.error("%s", exc)
        if server is not None:
            server.stop()
        return 2

    try:
        return run(args, settings, gevent_mode, runtime)
    finally:
        if server is not None:
            server.stop()


def run(args: argparse.Namespace, settings: AgentSettings, gevent_mode: bool, runtime: str) -> int:
    """Start the agent, serve (or run the demo) until done or stopped, stop it; exit code."""
    api_url = settings.api_url
    log.info(
        "starting prefect-actor-agent %s connected to %s; the actors run on %s",
        version(),
        api_url,
        runtime,
    )
    signals = Signals(gevent_mode=gevent_mode)
    demo_runs: list[str] = []
    if args.demo:
        queue = settings.work_queues[0] if settings.work_queues else "default"
        demo_runs = demo.schedule_demo_runs(api_url, queue, args.demo, api_key=settings.api_key)
        log.info("demo: scheduled %d run(s) of the demo flow on queue %r", len(demo_runs), queue)

    agent = start_agent(settings)
    status = None
    exit_code = 0
    try:
        if args.status_port is not None:
            status = StatusServer(agent, args.status_host, args.status_port).start()
        if demo_runs:
            runs = demo.wait_for_runs(
                api_url, demo_runs, timeout=300, stop=signals.stop, api_key=settings.api_key
            )
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
        pykka.ActorRegistry.stop_all()
        if agent.failure is not None:
            log.error("agent exited because it gave up: %s", agent.failure)
            exit_code = 1
        else:
            log.info("agent stopped")
    return exit_code
