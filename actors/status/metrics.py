"""Prometheus metrics of one agent, in a registry of its own.

A registry per agent (not prometheus_client's global one) so that two agents in one process,
as a host service or a test may run, do not count into each other. The metric objects are
thread- and greenlet-safe sinks: actors write to them, only the status endpoint reads them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

OUTCOMES = (
    "exited",
    "crashed",
    "failed",
    "not-submitted",
    "deferred",
    "cancelled",
    "interrupted",
)


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
        self.api_errors = Counter(
            "prefect_agent_api_errors",
            "Failed attempts of calls to the Prefect API, by HTTP status (none = no answer)",
            ["status"],
            registry=self.registry,
        )
        self.restarts = Counter(
            "prefect_agent_actor_restarts",
            "Actor restarts, by actor kind",
            ["kind"],
            registry=self.registry,
        )
        for outcome in OUTCOMES:
            self.runs_finished.labels(outcome=outcome)

    def count_api_attempt(self, _method: str, _path: str, status: int | None) -> None:
        if status is None or status >= 400:
            self.api_errors.labels(status="none" if status is None else str(status)).inc()

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
