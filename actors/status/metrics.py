"""Prometheus metrics of one agent, in a registry of its own.

A registry per agent (not prometheus_client's global one) so that two agents in one process,
as a host service or a test may run, do not count into each other. The metric objects are
thread- and greenlet-safe sinks: actors write to them, only the status endpoint reads them.
"""

from __future__ import annotations

from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from actors.rules.request_kinds import REQUEST_KINDS, request_kind
from actors.runtime.request_purpose import current_purpose
from messages.user.events import RunOutcome

# From a few ms (a run proposed at once on a quiet server) to a server that holds its Pending
# back for seconds: fine at the low end, where a benchmark reads its median and p95.
PENDING_LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.02,
    0.03,
    0.04,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    2.0,
    5.0,
    10.0,
    30.0,
)

EVENT_MODES = ("stream", "polling", "off", "connecting")

# Every outcome a run can end with, each counted from 0: the one list is `RunOutcome`'s.
OUTCOMES: tuple[RunOutcome, ...] = get_args(RunOutcome)


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.runs_submitted = Counter(
            "prefect_agent_runs_submitted",
            "Runs admitted and handed to a RunSupervisor",
            registry=self.registry,
        )
        self.runs_finished = Counter(
            "prefect_agent_runs_finished",
            "Runs whose supervisor ended, by outcome (exited = exit code 0)",
            ["outcome"],
            registry=self.registry,
        )
        self.runs_in_flight = Gauge(
            "prefect_agent_runs_in_flight",
            "Runs held by the Dispatcher now",
            registry=self.registry,
        )
        self.poll_latency = Histogram(
            "prefect_agent_poll_latency_seconds",
            "Time a QueueWatcher's poll took (queue read + get_runs)",
            registry=self.registry,
        )
        self.pending_latency = Histogram(
            "prefect_agent_pending_latency_seconds",
            "From admission of a run found by a poll to the server's accepted Pending",
            buckets=PENDING_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.api_errors = Counter(
            "prefect_agent_api_errors",
            "Failed attempts of calls to the Prefect API, by HTTP status (none = no answer)",
            ["status"],
            registry=self.registry,
        )
        self.api_requests = Counter(
            "prefect_agent_api_requests",
            "Requests sent to the Prefect API (every attempt, retries included), by what they "
            "are for: " + ", ".join(REQUEST_KINDS),
            ["kind"],
            registry=self.registry,
        )
        self.restarts = Counter(
            "prefect_agent_actor_restarts",
            "Actor restarts, by actor kind",
            ["kind"],
            registry=self.registry,
        )
        self.heartbeats = Counter(
            "prefect_agent_worker_heartbeats",
            "Worker heartbeats, by result (sent, failed)",
            ["result"],
            registry=self.registry,
        )
        self.runs_recovered = Counter(
            "prefect_agent_runs_recovered",
            "Runs of lost peers this agent recovered, by kind "
            "(crashed, handed-back, cancelled, adopted)",
            ["kind"],
            registry=self.registry,
        )
        self.peers_lost = Counter(
            "prefect_agent_peers_declared_lost",
            "Peer agents this agent declared lost (heartbeat older than the lost window)",
            registry=self.registry,
        )
        self.events_received = Counter(
            "prefect_actor_agent_events_received",
            "Events received on the server's event stream",
            registry=self.registry,
        )
        self.event_wakes = Counter(
            "prefect_actor_agent_event_wakes",
            "Queue polls started by an event (a run announced that may be due)",
            registry=self.registry,
        )
        self.event_connects = Counter(
            "prefect_actor_agent_event_stream_connects",
            "Event stream sessions opened (connected, authenticated, subscribed)",
            registry=self.registry,
        )
        self.event_mode_gauge = Gauge(
            "prefect_actor_agent_event_mode",
            "1 for the event mode the agent is in (stream, polling, off, connecting), else 0",
            ["mode"],
            registry=self.registry,
        )
        self.set_event_mode("off")
        for kind in ("crashed", "handed-back", "cancelled", "adopted"):
            self.runs_recovered.labels(kind=kind)
        for result in ("sent", "failed"):
            self.heartbeats.labels(result=result)
        for outcome in OUTCOMES:
            self.runs_finished.labels(outcome=outcome)
        for kind in REQUEST_KINDS:
            self.api_requests.labels(kind=kind)

    def set_event_mode(self, mode: str) -> None:
        """The EventListener's mode, for /metrics (/healthz reads it off the tree)."""
        for known in EVENT_MODES:
            self.event_mode_gauge.labels(mode=known).set(1 if known == mode else 0)

    def count_api_attempt(self, method: str, path: str, status: int | None) -> None:
        """The edge's hook, called after every attempt, in the thread that made it."""
        self.api_requests.labels(kind=request_kind(method, path, current_purpose())).inc()
        if status is None or status >= 400:
            self.api_errors.labels(status="none" if status is None else str(status)).inc()

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
