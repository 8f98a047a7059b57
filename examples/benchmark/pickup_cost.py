"""What pickup costs: the server requests of idle contenders, and the drain of N due runs.

Idle: every contender of a server at once, each on 10 queues of its own (3.x: 10 queues of
a pool of its own), each through a `RequestCounter` of its own, so a count is one
contender's requests at the server's door; counted over a window after a warm-up (start-up
and the first polls left out). Drain: N runs due now whose command is `true`, created before
the contender starts; runs/s from the first Pending to the last pid on the server's clock,
as the drain part computes it.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from examples.benchmark.contenders import Agent, local_pids
from examples.benchmark.pickup_agents import (
    Entrant,
    Place,
    Target,
    deployment,
    event_metrics,
    events_mode,
    launch,
    make_place,
    wait_ready,
)
from examples.benchmark.procs import ProcessGuard
from examples.benchmark.progress import steady_rate
from examples.benchmark.request_count import RequestCounter
from examples.benchmark.server import BenchServer, Pids

IDLE_QUEUES = 10
Say = Callable[[str], None]


@dataclass
class IdleResult:
    contender: str
    queues: int
    window_seconds: float
    requests: int
    per_minute: float
    per_queue_per_minute: float
    by_endpoint: dict[str, float]  # requests per minute
    sent_bytes_per_minute: float
    received_bytes_per_minute: float
    connections: int  # TCP connections opened in the window
    events_mode: str | None
    event_metrics: dict[str, float] = field(default_factory=dict)


def idle_requests(
    bench: BenchServer,
    target: Target,
    guard: ProcessGuard,
    entrants: list[Entrant],
    work_dir: Path,
    *,
    window: float,
    warmup: float,
    say: Say,
) -> list[IdleResult]:
    """All `entrants` idle at once on `IDLE_QUEUES` queues each, each counted by its proxy."""
    started: list[tuple[Entrant, Place, RequestCounter, Agent]] = []
    try:
        for entrant in entrants:
            place = make_place(bench, target, f"{entrant.name}-idle", IDLE_QUEUES)
            counter = RequestCounter(target.api_url)
            agent = launch(
                guard,
                entrant,
                api_url=counter.api_url,
                place=place,
                work_dir=work_dir,
                log_name=f"{target.major}-{entrant.name}-idle",
            )
            started.append((entrant, place, counter, agent))
        modes = {
            entrant.name: wait_ready(
                bench, agent, entrant, place, polled=functools.partial(has_polled, counter)
            )
            for entrant, place, counter, agent in started
        }
        say(f"  all {len(started)} polled; warm-up {warmup:.0f}s, then a {window:.0f}s window")
        time.sleep(warmup)
        before = [(counter.snapshot(), time.monotonic()) for _, _, counter, _ in started]
        time.sleep(window)
        results = []
        for (entrant, _, counter, agent), ((counts0, up0, down0, conns0), at0) in zip(
            started, before, strict=True
        ):
            agent.check_alive(" during the idle window")
            counts1, up1, down1, conns1 = counter.snapshot()
            minutes = (time.monotonic() - at0) / 60.0
            delta = counts1 - counts0
            requests = sum(delta.values())
            mode = events_mode(agent) or modes.get(entrant.name)
            results.append(
                IdleResult(
                    contender=entrant.label,
                    queues=IDLE_QUEUES,
                    window_seconds=minutes * 60.0,
                    requests=requests,
                    per_minute=requests / minutes,
                    per_queue_per_minute=requests / minutes / IDLE_QUEUES,
                    by_endpoint={name: count / minutes for name, count in sorted(delta.items())},
                    sent_bytes_per_minute=(up1 - up0) / minutes,
                    received_bytes_per_minute=(down1 - down0) / minutes,
                    connections=conns1 - conns0,
                    events_mode=mode,
                    event_metrics=event_metrics(agent),
                )
            )
        return results
    finally:
        for _, _, counter, agent in started:
            guard.stop(agent.process)
            counter.stop()
        guard.kill_flows()


def has_polled(counter: RequestCounter) -> bool:
    """The contender asked its proxy for scheduled runs at least once (any server)."""
    return any(
        "get_runs" in name or "get_scheduled_flow_runs" in name for name in counter.snapshot()[0]
    )


STALL_SECONDS = 30.0  # every run taken and no new pid for this long: the drain is over


@dataclass
class DrainRound:
    contender: str
    runs: int
    runs_with_pid: int
    timed_out: bool
    steady_runs_per_second: float | None
    runs_per_second: float  # from the contender's start, its start-up included
    seconds: float
    events_mode: str | None
    stalled: bool = False  # every run was taken, some never got a pid (STALL_SECONDS)
    # the states of the runs left without a pid ({"CRASHED": 10}: what the contender did)
    without_pid: dict[str, int] = field(default_factory=dict)


@dataclass
class Watch:
    pids: Pids
    timed_out: bool
    stalled: bool
    observed_seconds: float


def watch_drain(
    bench: BenchServer, queue: str, run_ids: list[str], *, timeout: float, agent: Agent
) -> Watch:
    """Every `bench.poll_seconds`: a COUNT of the runs past Scheduled and, once all are, the
    pids of those still without one; until every run has a pid, the timeout, or a stall
    (all taken, no new pid for STALL_SECONDS: the contender failed some runs)."""
    began = time.monotonic()
    pids: Pids = {}
    seen, changed = (-1, -1), began
    while True:
        agent.check_alive(" during its drain")
        tick = time.monotonic()
        if tick - began >= timeout:
            return Watch(pids, True, False, tick - began)
        taken = bench.taken(queue)
        if taken >= len(run_ids):
            pids.update(bench.runs_with_pid(queue, [r for r in run_ids if r not in pids]))
        if len(pids) >= len(run_ids):
            return Watch(pids, False, False, time.monotonic() - began)
        if (taken, len(pids)) != seen:
            seen, changed = (taken, len(pids)), tick
        elif taken >= len(run_ids) and tick - changed >= STALL_SECONDS:
            return Watch(pids, False, True, time.monotonic() - began)
        time.sleep(max(0.0, bench.poll_seconds - (time.monotonic() - tick)))


def drain(
    bench: BenchServer,
    target: Target,
    guard: ProcessGuard,
    entrant: Entrant,
    work_dir: Path,
    *,
    runs: int,
    round_index: int,
    timeout: float,
    query_interval: float | None = None,
) -> DrainRound:
    """`runs` due runs (command `true`) on a fresh queue, then the contender is started."""
    name = f"{entrant.name}-drain{round_index + 1}"
    place = make_place(bench, target, name, 1)
    dep = deployment(
        bench, target=target, place=place, name=f"{name}-{bench.tag}", command=["true"], env={}
    )
    run_ids = bench.create_runs(dep, runs)
    began = datetime.now(UTC)
    agent = launch(
        guard, entrant, api_url=target.api_url, place=place, work_dir=work_dir,
        log_name=f"{target.major}-{name}", query_interval=query_interval,
    )  # fmt: skip
    mode = None
    try:
        watch = watch_drain(bench, place.queues[0], run_ids, timeout=timeout, agent=agent)
        if watch.timed_out:
            watch.pids.update(bench.runs_with_pid(place.queues[0], run_ids))
        mode = events_mode(agent)
        guard.remember_flows(local_pids(pid for pid, _ in watch.pids.values()))
        guard.remember_descendants(agent.process)
    finally:
        guard.stop(agent.process)
        guard.kill_flows()
    pids = watch.pids
    pending = bench.pending_times(list(pids))
    last = max((updated for _, updated in pids.values()), default=None)
    seconds = (last - began).total_seconds() if last and not watch.timed_out else (
        watch.observed_seconds
    )  # fmt: skip
    missing = [r for r in run_ids if r not in pids]
    return DrainRound(
        contender=entrant.label,
        runs=runs,
        runs_with_pid=len(pids),
        timed_out=watch.timed_out,
        steady_runs_per_second=steady_rate(pending, pids),
        runs_per_second=len(pids) / seconds if seconds > 0 else 0.0,
        seconds=seconds,
        events_mode=mode,
        stalled=watch.stalled,
        without_pid=dict(Counter(bench.api.read_states(missing).values())) if missing else {},
    )
