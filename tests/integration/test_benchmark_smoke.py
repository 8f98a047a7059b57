"""The benchmark still runs end to end: it is an example, so nothing else would notice it rot.

Each test runs it as a user does, `python -m examples.benchmark ...`, and reads what it prints
and the JSON it writes; nothing here imports the benchmark. Small numbers and the two cheapest
contenders keep this quick; it checks the shape of what the benchmark reports and that it
leaves no process behind, never how fast anything was (speed on a shared 2-core CI machine says
nothing about the code). How it reads figures (ours' histogram, any log's levels) is the
harness's, shared with the tests and checked without a server in
`tests/unit/test_harness_readings.py`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from actors.launcher.local_server import LocalPrefectServer
from examples.harness.docker_daemon import DockerDaemon
from examples.harness.flow_image import ImageBuild
from tests.conftest import ROOT
from tests.integration.helpers import run_ok

pytestmark = pytest.mark.integration

BENCH_LABEL = "org.prefect-actor-agent.bench"  # on every container of the containers part


def test_benchmark_reports_ceiling_and_ours_with_positive_rates(
    api_url: str, tmp_path: Path
) -> None:
    report = tmp_path / "benchmark.json"
    result = _run_benchmark(
        [
            "--api",
            api_url,
            "--runs",
            "20",
            "--rounds",
            "2",
            "--first-poll-runs",
            "4",
            "--inflight",
            "20",
            "--cpu-window",
            "2",
            "--contenders",
            "ceiling,ours",
            "--json",
            str(report),
        ]
    )

    table = result.stdout.splitlines()
    assert any(line.startswith("contender") and "drain runs/s" in line for line in table)
    assert any(line.startswith("ceiling ") for line in table)
    assert any(line.startswith("ours ") for line in table)

    data = json.loads(report.read_text())
    assert set(data["contenders"]) == {"ceiling", "ours"}
    for name in ("ceiling", "ours"):
        drain = data["contenders"][name]["drain"]
        assert drain["runs"] == 20
        assert drain["runs_with_pid"] > 0
        assert drain["runs_per_second"] > 0
        assert drain["steady_runs_per_second"] > 0
        rates = data["contenders"][name]["drain_rounds"]
        assert len(rates) == 2 and all(rate > 0 for rate in rates)
        assert drain["steady_runs_per_second"] == min(rates)  # of two rounds, the lower median
    ours = data["contenders"]["ours"]
    # Latency comes from ours' /metrics: a figure, or a "no data" that says why, never a guess.
    for figures, median, p95, samples in (
        (ours["drain"], "median_poll_to_pending_ms", "p95_poll_to_pending_ms", "latency_samples"),
        (ours["first_poll"], "median_ms", "p95_ms", "samples"),
    ):
        assert figures["latency_source"] == "metrics"
        assert (figures[median] is None) == bool(figures["latency_no_data"]), figures
        if figures[median] is not None:  # in ms, from the histogram's buckets
            assert figures[samples] > 0 and 0 < figures[median] <= figures[p95], figures
    assert ours["first_poll"]["runs_with_pid"] == 4
    footprint = ours["footprint"]
    assert footprint["in_flight"] > 0
    assert footprint["rss_mib"] > 0
    assert footprint["leftover_processes"] == 0
    assert data["contenders"]["ceiling"]["footprint"] is None
    assert data["contenders"]["ceiling"]["first_poll"] is None


def test_fleet_part_counts_every_run_started_once_and_leaves_no_process(tmp_path: Path) -> None:
    """`--parts fleet` small: two of our agents on two simulated hosts against a Prefect
    server on PostgreSQL, beside the ceiling (no official agents, no SQLite comparison)."""
    report = tmp_path / "fleet.json"
    # Every process the benchmark starts inherits its environment: this mark finds them all
    # (hosts, agents, the Prefect server, PostgreSQL's) and none of anyone else's.
    mark = f"fleet-smoke-{uuid.uuid4().hex}"
    result = _run_benchmark(
        [
            "--parts",
            "fleet",
            "--fleet-agents",
            "2",
            "--fleet-runs",
            "20",
            "--no-fleet-official",
            "--no-fleet-compare-sqlite",
            "--json",
            str(report),
        ],
        mark=mark,
    )
    assert "fleet: the drains" in result.stdout
    assert "fleet: where the CPU went" in result.stdout

    fleet = json.loads(report.read_text())["fleet"]
    drains = {d["contender"]: d for d in fleet["drains"]}
    assert set(drains) == {"ceiling", "fleet-ours"}
    assert fleet["targets"]["postgresql"]["version"].startswith("2.")
    ours = drains["fleet-ours"]
    assert ours["runs_with_pid"] == 20 and not ours["timed_out"]
    # From the runs' own markers: each run started once, none twice, none never.
    assert (ours["started_once"], ours["started_twice_or_more"], ours["never_started"]) == (
        20,
        0,
        0,
    )
    assert ours["drain_rate"] > 0 and drains["ceiling"]["drain_rate"] > 0
    agents = ours["agent_figures"]
    assert [a["host"] for a in agents] == ["ours-01", "ours-02"]
    assert sum(a["runs_with_pid"] for a in agents) == 20  # every pid names one of the hosts
    assert all(a["rss_mib_max"] > 0 for a in agents)
    assert ours["max_online"] is not None and ours["max_online"] >= 1
    assert ours["cpu"]["seconds"]["server"] > 0 and ours["cpu"]["seconds"]["postgres"] > 0
    assert _processes_marked(mark) == []  # hosts, agents, servers, postgres: all gone


def test_idle_fleet_part_measures_the_server_under_idle_agents_and_leaves_no_process(
    tmp_path: Path,
) -> None:
    """`--parts idle-fleet` small: the 2.20 server on PostgreSQL alone, then under three of our
    idle agents on simulated hosts; a short window each (the official agents' fleet is left
    out here: it takes a minute of the suite to settle)."""
    report = tmp_path / "idle.json"
    mark = f"idle-fleet-smoke-{uuid.uuid4().hex}"
    options = ["--idle-fleet-agents", "3", "--idle-fleet-servers", "2"]
    # a window longer than the query interval (here 3 s): an idle agent's looks come that far
    # apart, and agents started together look together, so a shorter one can see none
    options += ["--idle-fleet-query-interval", "3", "--idle-fleet-seconds", "5"]
    options += ["--idle-fleet-warmup", "2", "--idle-fleet-settle-step", "3"]
    options += ["--no-idle-fleet-official"]  # three official agents take a minute to settle
    result = _run_benchmark(
        ["--parts", "idle-fleet", *options, "--json", str(report)], mark=mark, timeout=300
    )
    assert "idle fleet: 3 agents per contender" in result.stdout

    idle = json.loads(report.read_text())["idle_fleet"]
    assert idle["targets"]["2"]["version"].startswith("2.")
    rows = {r["contender"]: r for r in idle["rows"]}
    assert set(rows) == {"server alone", "ours"}
    assert all(r["error"] is None for r in rows.values())
    for name in ("ours",):
        row = rows[name]
        assert row["agents"] == 3 and row["exited"] == 0, row
        assert row["requests_per_minute"] > 0  # the proxy saw the fleet's polls
        assert len(row["rss_mib"]) == 3 and all(rss > 0 for rss in row["rss_mib"])
    for row in rows.values():
        assert row["window_seconds"] >= 5
        assert row["server_cpu"] > 0 and row["postgres_cpu"] is not None
    assert _processes_marked(mark) == []  # hosts, agents, servers, postgres: all gone


def _run_benchmark(
    args: list[str],
    *,
    mark: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """`python -m examples.benchmark ARGS`, which must succeed. With `mark`, every process the
    benchmark starts inherits FLEET_SMOKE_MARK=mark in its environment, for
    `_processes_marked` to find whatever it left behind; `env` is added to its environment."""
    environ = {**os.environ, **(env or {})}
    if mark is not None:
        environ["FLEET_SMOKE_MARK"] = mark
    return run_ok(
        [sys.executable, "-m", "examples.benchmark", *args],
        timeout=timeout,
        cwd=ROOT,
        env=environ,
    )


def _processes_marked(mark: str) -> list[int]:
    """Live processes (no zombies) whose environment holds FLEET_SMOKE_MARK=mark."""
    wanted = f"FLEET_SMOKE_MARK={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if wanted in environ.split(b"\0") and state != "Z":
            found.append(int(entry.name))
    return found


def test_latency_part_times_ours_with_the_stream_and_without(
    prefect3_server: LocalPrefectServer, tmp_path: Path
) -> None:
    """`--parts latency` small, on the session's Prefect 3 server: ours with the stream and
    with `--events off`, two runs each of run-now and of cancel, and a short idle count."""
    report = tmp_path / "latency.json"
    mark = f"latency-smoke-{uuid.uuid4().hex}"
    options = (
        f"--latency-api {prefect3_server.api_url} --latency-contenders ours,ours-off "
        "--latency-probes run-now,cancel,idle --latency-runs 2 --latency-cancels 2 "
        "--latency-gap-span 0.2 --latency-idle-seconds 3 --latency-idle-warmup 0 "
        f"--latency-query-interval 2 --json {report}"
    ).split()
    result = _run_benchmark(["--parts", "latency", *options], mark=mark)
    table = result.stdout.splitlines()
    assert any(line.startswith("contender") and "now->Pending" in line for line in table)
    latency = json.loads(report.read_text())["latency"]
    assert latency["failures"] == [], latency["failures"]
    now = {r["contender"]: r for r in latency["run_now"]}
    cancels = {r["contender"]: r for r in latency["cancels"]}
    idle = {r["contender"]: r for r in latency["idle"]}
    assert set(now) == set(cancels) == set(idle) == {"3.x ours", "3.x ours-off"}
    assert now["3.x ours"]["events_mode"] == "stream"
    assert now["3.x ours-off"]["events_mode"] == "off"
    for name in now:
        samples = now[name]["samples"]
        assert len(samples) == 2 and now[name]["missed"] == 0
        # Pending comes first, then the process the agent started: both after the run existed.
        assert all(0 < s["to_pending"] <= s["to_start"] for s in samples), samples
        assert cancels[name]["sigterm"]["samples"] == 2 and cancels[name]["missed"] == 0
        assert all(s > 0 for s in cancels[name]["samples"])
        # The idle agents run at a user's defaults (15 s looks, 30 s beats): a 3 s window may
        # see none of their requests, so the smoke checks the count was taken over it (the
        # counting itself is asserted in test_idle_cost.py and the idle-fleet smoke).
        row = idle[name]
        assert row["queues"] == 10 and row["window_seconds"] >= 3, row
        assert row["requests"] == round(row["per_minute"] * row["window_seconds"] / 60), row
    assert idle["3.x ours"]["events_mode"] == "stream"
    assert idle["3.x ours-off"]["events_mode"] == "off"
    assert _processes_marked(mark) == []  # agents and their runs: all gone


@pytest.mark.docker
def test_containers_part_gives_every_contenders_figures(
    prefect_events_server: LocalPrefectServer,
    prefect3_server: LocalPrefectServer,
    docker_daemon: DockerDaemon,
    flow_image: ImageBuild,
    tmp_path: Path,
) -> None:
    """`--parts containers` small, on the session's servers (2.20 with events, 3.x) and its
    Docker daemon: ours and Prefect 2.20's agent with a DockerContainer block, ours and
    Prefect 3's docker worker with a docker pool; one run started and cancelled and two in
    flight each, every contender polling each second."""
    report = tmp_path / "containers.json"
    mark = f"containers-smoke-{uuid.uuid4().hex}"
    options = (
        f"--containers-api2 {prefect_events_server.api_url} "
        f"--containers-api3 {prefect3_server.api_url} --containers-latency-runs 1 "
        f"--containers-inflight 2 --containers-query-interval 1 --json {report}"
    ).split()
    result = _run_benchmark(
        ["--parts", "containers", *options], mark=mark, env=docker_daemon.environ, timeout=240
    )
    assert any(line.startswith("contender") and "Pending->running" in line
               for line in result.stdout.splitlines())  # fmt: skip
    containers = json.loads(report.read_text())["containers"]
    assert containers["failures"] == [], containers["failures"]
    figures = {f["contender"]: f for f in containers["figures"]}
    assert set(figures) == {"2.20 ours", "2.20 official", "3.x ours", "3.x worker"}
    for name, f in figures.items():
        # Each contender started its run's container, after the run's Pending...
        assert f["pending_to_running"]["samples"] == 1, (name, f)
        assert 0 < f["pending_to_running"]["median"] <= f["pending_to_script"]["median"], f
        # ...stopped it when the run was set Cancelling (SIGTERM first, then the stop), except
        # Prefect 3's worker, which leaves a submitted run to its engine in the container...
        if name == "3.x worker":
            assert f["cancel_missed"] == 1, (name, f)
        else:
            assert f["cancel_to_stopped"]["samples"] == 1 and f["cancel_missed"] == 0, (name, f)
            assert 0 < f["cancel_to_sigterm"]["median"] <= f["cancel_to_stopped"]["median"], f
        # ...and held both runs in flight, its RSS read, its drain timed.
        assert f["inflight_reached"] == 2 and not f["inflight_timed_out"], (name, f)
        assert f["rss_mib"] > 0 and f["drain_runs_per_second"] > 0, (name, f)
    checks = {c["target"] for c in containers["target_checks"]}
    assert any("Pending->running" in c for c in checks), checks
    client = docker_daemon.client()
    try:
        left = client.containers.list(all=True, filters={"label": BENCH_LABEL})
    finally:
        client.close()
    assert left == []  # every container of the part removed
    assert _processes_marked(mark) == []  # agents, workers: all gone
