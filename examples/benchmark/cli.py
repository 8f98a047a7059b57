"""The command line: which parts and contenders, in which order, and the report at the end."""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import examples.benchmark as package
from actors.launcher.local_server import LocalPrefectServer
from examples.benchmark.ceiling import drain_ceiling
from examples.benchmark.containers import add_arguments as containers_arguments
from examples.benchmark.containers import run_containers
from examples.benchmark.containers_report import json_report as containers_json
from examples.benchmark.containers_report import render as containers_render
from examples.benchmark.contenders import ALL_CONTENDERS, CONTENDERS, ContenderError
from examples.benchmark.drain import DrainResult, drain_agent
from examples.benchmark.figures import Results, ratios
from examples.benchmark.first_poll import FIRST_POLL_RUNS, first_poll_agent
from examples.benchmark.fleet import run_fleet
from examples.benchmark.fleet_report import footnotes as fleet_footnotes
from examples.benchmark.fleet_report import json_report as fleet_json
from examples.benchmark.fleet_report import render as fleet_render
from examples.benchmark.footprint import footprint_agent
from examples.benchmark.idle_fleet import footnotes as idle_fleet_footnotes
from examples.benchmark.idle_fleet import json_report as idle_fleet_json
from examples.benchmark.idle_fleet import render as idle_fleet_render
from examples.benchmark.idle_fleet import run_idle_fleet
from examples.benchmark.latency_part import LatencyResults, run_latency
from examples.benchmark.latency_part import add_arguments as latency_arguments
from examples.benchmark.pickup_report import json_report as latency_json
from examples.benchmark.pickup_report import render as latency_render
from examples.benchmark.procs import ProcessGuard, load_average
from examples.benchmark.report import footnotes, json_report, render
from examples.benchmark.server import POLL_SECONDS, BenchServer

ALL_PARTS = ("drain", "first-poll", "footprint", "fleet", "idle-fleet", "latency", "containers")
# fleet, idle-fleet, latency and containers: opt-in (servers, hosts, a Docker daemon of their own)
DEFAULT_PARTS = ("drain", "first-poll", "footprint")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m examples.benchmark", description=(package.__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--runs", type=int, default=100, help="runs per contender to drain")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="drain rounds per contender; the table shows the median (the server's pace "
        "varies by a third between drains on a small machine)",
    )
    parser.add_argument(
        "--inflight", type=int, default=200, help="runs in flight for the footprint"
    )
    parser.add_argument(
        "--first-poll-runs",
        type=int,
        default=FIRST_POLL_RUNS,
        help="runs due when the agent starts, for the first-poll latency (up to one page: 8)",
    )
    parser.add_argument(
        "--parts",
        default=",".join(DEFAULT_PARTS),
        help=f"{','.join(ALL_PARTS)} (default {','.join(DEFAULT_PARTS)}; the others opt-in)",
    )
    parser.add_argument(
        "--contenders", default=",".join(ALL_CONTENDERS), help=",".join(ALL_CONTENDERS)
    )
    parser.add_argument("--api", default=None, help="an existing server (default: start one)")
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--footprint-timeout", type=float, default=60.0)
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=POLL_SECONDS,
        help="seconds between the benchmark's looks for recorded pids (it loads the server)",
    )
    parser.add_argument("--cpu-window", type=float, default=10.0)
    parser.add_argument("--json", default=None, metavar="PATH", help="also write results here")
    fleet = parser.add_argument_group(
        "fleet", "--parts fleet: K agents on K simulated hosts, one server on PostgreSQL"
    )
    fleet.add_argument("--fleet-agents", type=int, default=3, metavar="K")
    fleet.add_argument("--fleet-runs", type=int, default=300, metavar="N")
    fleet.add_argument(
        "--fleet-official",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also K official agents (Prefect 3: workers), each on a host of its own",
    )
    fleet.add_argument(
        "--fleet-compare-sqlite",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also one agent on the PostgreSQL server and one on a SQLite-backed one",
    )
    fleet.add_argument(
        "--fleet-compare-runs",
        type=int,
        default=None,
        metavar="N",
        help="runs of each one-agent drain (default: --fleet-runs)",
    )
    fleet.add_argument(
        "--fleet-server",
        choices=("2", "3"),
        default="2",
        help="the Prefect server's major version (3: from .venv-prefect3)",
    )
    fleet.add_argument(
        "--fleet-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="per drain (default: 60 s + 0.5 s per run, at least 180 s)",
    )
    fleet.add_argument(
        "--fleet-pg-durable",
        action="store_true",
        help="PostgreSQL with fsync and synchronous commits (default: off, a throwaway server)",
    )
    fleet.add_argument(
        "--fleet-count-requests",
        action="store_true",
        help="the agents reach the server through a counting proxy: requests per run by "
        "endpoint in the notes (the proxy adds a relay to every request)",
    )
    _idle_fleet_arguments(parser)
    latency_arguments(parser)
    containers_arguments(parser)
    parser.add_argument(
        "--keep-logs", default=None, metavar="DIR", help="keep the agents' logs in DIR"
    )
    args = parser.parse_args(argv)
    args.load_before = load_average()
    args.part_list = _names(args.parts, ALL_PARTS, parser)
    args.contender_list = _names(args.contenders, ALL_CONTENDERS, parser)
    if min(args.runs, args.inflight, args.rounds, args.first_poll_runs) < 1:
        parser.error("--runs, --inflight, --rounds and --first-poll-runs must be at least 1")
    if min(args.fleet_agents, args.fleet_runs, args.fleet_compare_runs or 1) < 1:
        parser.error("--fleet-agents, --fleet-runs and --fleet-compare-runs must be at least 1")
    if min(args.containers_latency_runs, args.containers_inflight) < 1:
        parser.error("--containers-latency-runs and --containers-inflight must be at least 1")
    _check_idle_fleet(args, parser)
    args.idle_fleet_server_list = _names(args.idle_fleet_servers, ("2", "3"), parser)
    return args


def _names(text: str, known: tuple[str, ...], parser: argparse.ArgumentParser) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        parser.error(f"unknown or no names {unknown}: choose from {', '.join(known)}")
    return [n for n in known if n in names]  # a fixed order: the ceiling first


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl+C, so every `finally` here stops what it started."""

    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def drain_order(contenders: list[str], rounds: int) -> list[tuple[int, str]]:
    """(round, contender) in the order they drain: every round turns the order by one, so no
    contender always follows the same one onto a server still busy with its runs; the
    official agent at its defaults drains in the first round only (a 15 s poll sets its pace,
    and a round of it takes minutes)."""
    order = []
    for index in range(rounds):
        shift = index % len(contenders)
        for name in contenders[shift:] + contenders[:shift]:
            if name != "official" or index == 0:
                order.append((index, name))
    return order


def _drain(
    args: argparse.Namespace,
    server: BenchServer,
    guard: ProcessGuard,
    work_dir: Path,
    results: Results,
) -> None:
    for index, name in drain_order(args.contender_list, args.rounds):
        say(f"drain, round {index + 1}/{args.rounds}: {name} ({args.runs} runs)...")
        d: DrainResult
        if name == "ceiling":
            d = drain_ceiling(server, args.runs, index)
        else:
            d = drain_agent(
                server,
                guard,
                CONTENDERS[name],
                runs=args.runs,
                timeout=args.drain_timeout,
                work_dir=work_dir,
                round_index=index,
            )
        results.rounds.setdefault(name, []).append(d)
        steady = "-" if d.steady_runs_per_second is None else f"{d.steady_runs_per_second:.1f}"
        say(
            f"  {d.runs_with_pid}/{d.runs} in {d.elapsed_seconds:.1f}s = "
            f"{d.runs_per_second:.1f} runs/s from start, {steady} runs/s from the first "
            "Pending" + (" (timed out)" if d.timed_out else "")
        )


def _first_poll(
    args: argparse.Namespace,
    server: BenchServer,
    guard: ProcessGuard,
    work_dir: Path,
    results: Results,
) -> None:
    for name in args.contender_list:
        if name == "ceiling":
            continue
        say(f"first poll: {name} ({args.first_poll_runs} runs)...")
        first = first_poll_agent(
            server,
            guard,
            CONTENDERS[name],
            runs=args.first_poll_runs,
            timeout=args.drain_timeout,
            work_dir=work_dir,
        )
        results.first_polls[name] = first
        figure = first.latency_no_data or (
            f"median {first.median_ms:.0f} ms, p95 {first.p95_ms:.0f} ms "
            f"over {first.samples} run(s) ({first.latency_source})"
        )
        say(f"  {first.runs_with_pid}/{first.runs} with a pid after {first.seconds:.1f}s: {figure}")


def _footprint(
    args: argparse.Namespace,
    server: BenchServer,
    guard: ProcessGuard,
    work_dir: Path,
    results: Results,
) -> None:
    for name in args.contender_list:
        if name == "ceiling":
            continue
        say(f"footprint: {name} ({args.inflight} runs in flight)...")
        fp = footprint_agent(
            server,
            guard,
            CONTENDERS[name],
            runs=args.inflight,
            timeout=args.footprint_timeout,
            window=args.cpu_window,
            work_dir=work_dir,
        )
        results.footprints[name] = fp
        say(
            f"  {fp.in_flight}/{fp.target} in flight after {fp.wait_seconds:.1f}s: "
            f"RSS {fp.rss_mib:.1f} MiB, CPU {fp.cpu_percent:.2f}%, "
            f"stopped in {fp.stop_seconds:.1f}s, {fp.leftover_processes} flow(s) left"
        )


PARTS = {"drain": _drain, "first-poll": _first_poll, "footprint": _footprint}


def run(args: argparse.Namespace, api_url: str | None, guard: ProcessGuard, work_dir: Path) -> int:
    """The parts on the shared server (`api_url`: None when only the fleet runs, which starts
    servers of its own), then the fleet; the tables, and the JSON of both."""
    report: dict[str, object] = {}
    if api_url is not None:
        server = BenchServer(api_url, args.poll_interval)
        results = Results()
        try:
            for part in args.part_list:
                if part in PARTS:
                    PARTS[part](args, server, guard, work_dir, results)
        finally:
            if args.api:
                server.delete_everything()
            server.close()
        table = ratios(results)
        notes = footnotes(results, args)
        print(render(results, table, notes), flush=True)
        report = json_report(results, table, notes, args, api_url)
    if "fleet" in args.part_list:
        report["fleet"] = _fleet_part(args, work_dir, after_shared=api_url is not None)
    if "idle-fleet" in args.part_list:
        after = api_url is not None or "fleet" in args.part_list
        report["idle_fleet"] = _idle_fleet_part(args, work_dir, after=after)
    if "latency" in args.part_list:

        def save(partial: LatencyResults) -> None:  # each step's figures, should it be cut
            if args.json:
                text = json.dumps({**report, "latency": latency_json(partial)}, default=str)
                Path(args.json).write_text(text + "\n")

        latency = run_latency(args, work_dir, say, guard, on_step=save)
        if api_url is not None or "fleet" in args.part_list or "idle-fleet" in args.part_list:
            print(flush=True)
        print(latency_render(latency), flush=True)
        report["latency"] = latency_json(latency)
    if "containers" in args.part_list:
        containers = run_containers(args, work_dir, say, guard)
        if report:
            print(flush=True)
        print(containers_render(containers), flush=True)
        report["containers"] = containers_json(containers)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0


def _fleet_part(args: argparse.Namespace, work_dir: Path, *, after_shared: bool) -> object:
    """The fleet part: run, print, and its JSON."""
    fleet = run_fleet(args, work_dir, say)
    fleet.settings["load_before"] = args.load_before
    for drain in fleet.drains:  # the logs stay only where --keep-logs copies them
        for agent in drain.agent_figures:
            name = Path(agent.log_path).name
            agent.log_path = str(Path(args.keep_logs) / name) if args.keep_logs else ""
    fleet_notes = fleet_footnotes(fleet)
    if after_shared:
        print(flush=True)
    print(fleet_render(fleet, fleet_notes), flush=True)
    return fleet_json(fleet, fleet_notes)


def _idle_fleet_part(args: argparse.Namespace, work_dir: Path, *, after: bool) -> object:
    """The idle-fleet part: run, print, and its JSON."""
    idle = run_idle_fleet(args, work_dir, say)
    idle.settings["load_before"] = args.load_before
    idle_notes = idle_fleet_footnotes(idle)
    if after:
        print(flush=True)
    print(idle_fleet_render(idle, idle_notes), flush=True)
    return idle_fleet_json(idle, idle_notes)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    guard = ProcessGuard()
    server: LocalPrefectServer | None = None
    work_dir = Path(tempfile.mkdtemp(prefix="agent-benchmark-"))
    try:
        with stop_on_sigterm():
            try:
                api_url = args.api
                shared = any(part in PARTS for part in args.part_list)
                if api_url is None and shared:
                    say("starting a local Prefect server...")
                    server = LocalPrefectServer()
                    server.start()
                    api_url = server.api_url
                    say(f"  ready at {api_url} after {server.start_seconds or 0:.1f}s")
                return run(args, api_url if shared else None, guard, work_dir)
            finally:
                guard.stop_all()
                if server is not None:
                    server.stop()
    except ContenderError as exc:
        say(f"benchmark failed: {exc}")
        return 1
    except KeyboardInterrupt:
        say("interrupted; every process started here was stopped")
        return 130
    finally:
        if args.keep_logs:
            keep = Path(args.keep_logs)
            keep.mkdir(parents=True, exist_ok=True)
            for log in work_dir.glob("*.log"):
                shutil.copy2(log, keep / log.name)
        shutil.rmtree(work_dir, ignore_errors=True)


def _idle_fleet_arguments(parser: argparse.ArgumentParser) -> None:
    idle = parser.add_argument_group(
        "idle fleet",
        "--parts idle-fleet: N idle agents on N simulated hosts, one server on PostgreSQL, "
        "ours against Prefect's own",
    )
    idle.add_argument("--idle-fleet-agents", type=int, default=100, metavar="N")
    idle.add_argument(
        "--idle-fleet-servers", default="2,3", help="Prefect servers' major versions: 2, 3 or both"
    )
    idle.add_argument("--idle-fleet-seconds", type=float, default=300.0, help="the measured window")
    idle.add_argument(
        "--idle-fleet-warmup", type=float, default=30.0, help="after the agents' CPU settled"
    )
    idle.add_argument(
        "--idle-fleet-query-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="every agent's query interval (default: each contender's own, 15 s or 10 s)",
    )
    idle.add_argument(
        "--idle-fleet-settle-step",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="seconds of the agents' CPU compared with the step before, to see it settled",
    )
    idle.add_argument(
        "--idle-fleet-start-timeout",
        type=float,
        default=600.0,
        help="for the agents' CPU to settle once all are started",
    )
    idle.add_argument(
        "--idle-fleet-official",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also N official agents (Prefect 3: workers)",
    )


def _check_idle_fleet(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.idle_fleet_agents < 1:
        parser.error("--idle-fleet-agents must be at least 1")
    if args.idle_fleet_settle_step <= 0:
        parser.error("--idle-fleet-settle-step must be positive")
    if args.idle_fleet_query_interval is not None and args.idle_fleet_query_interval <= 0:
        parser.error("--idle-fleet-query-interval must be positive")
