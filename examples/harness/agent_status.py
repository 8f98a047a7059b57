"""An agent's status endpoint, read as a monitor reads it: `/metrics` and `/tree`.

An agent started with `--status-port P` serves on 127.0.0.1:P (`actors/status/http.py`)

    GET /metrics    the Prometheus text of its counters, gauges and histograms
    GET /tree       the live actor tree as JSON (`messages.user.tree.ActorNode`)

The tests read it to judge an agent in another process (the launcher, an agent in a simulated
host) by its figures and its tree rather than by its log; the benchmark reads ours' figures
(`examples/benchmark/agent_metrics.py`). A histogram's quantiles are of bucket resolution
(linear within a bucket, as Prometheus' `histogram_quantile` does).
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import msgspec
from prometheus_client.parser import text_string_to_metric_families

from messages.user.tree import ActorNode

STATUS_HOST = "127.0.0.1"  # where an agent's status endpoint listens unless told otherwise


class StatusUnavailableError(RuntimeError):
    """The status endpoint did not answer (yet), or answered with an error."""


def free_port(host: str = STATUS_HOST) -> int:
    """A loopback port nobody listens on now, for an agent's status endpoint."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def read_metrics(status_url: str, *, timeout: float = 10.0) -> str:
    """GET /metrics, tried again for up to `timeout` (the endpoint starts after the agent)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = httpx.get(f"{status_url}/metrics", timeout=5.0)
            response.raise_for_status()
            return response.text
        except httpx.HTTPError as exc:
            if time.monotonic() >= deadline:
                raise StatusUnavailableError(f"{status_url}/metrics: {exc!r}") from exc
        time.sleep(0.2)  # between attempts of this bounded retry


def sample_value(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """The sample `name` (a counter's with its `_total`) with exactly `labels` in a Prometheus
    exposition; None when absent (as `CollectorRegistry.get_sample_value`)."""
    wanted = labels or {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == wanted:
                return float(sample.value)
    return None


def counter_total(text: str, name: str) -> int | None:
    """A counter's value summed over its labels (`name` without `_total`); None when absent."""
    for family in text_string_to_metric_families(text):
        if family.name == name and family.type == "counter":
            return int(sum(s.value for s in family.samples if s.name == f"{name}_total"))
    return None


@dataclass(frozen=True)
class Histogram:
    """A Prometheus histogram: cumulative counts at each bucket's upper bound (+Inf last)."""

    name: str
    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]
    count: float
    sum: float

    def quantile(self, q: float) -> float | None:
        """The q-quantile, linear within its bucket (from the bucket below's bound, 0 for the
        first); a rank in the +Inf bucket is the largest finite bound. None when empty."""
        if self.count <= 0:
            return None
        rank = q * self.count
        below_bound, below_count = 0.0, 0.0
        for bound, cumulative in zip(self.bounds, self.cumulative, strict=True):
            if cumulative >= rank and cumulative > below_count:
                if math.isinf(bound):
                    return below_bound
                share = (rank - below_count) / (cumulative - below_count)
                return below_bound + (bound - below_bound) * share
            below_bound, below_count = bound, cumulative
        return below_bound


def parse_histogram(text: str, name: str) -> Histogram | None:
    """The histogram `name` (unlabelled) in a Prometheus exposition; None when absent."""
    for family in text_string_to_metric_families(text):
        if family.name != name or family.type != "histogram":
            continue
        buckets: list[tuple[float, float]] = []
        count = total = 0.0
        for sample in family.samples:
            if sample.name == f"{name}_bucket":
                buckets.append((float(sample.labels["le"]), float(sample.value)))
            elif sample.name == f"{name}_count":
                count = float(sample.value)
            elif sample.name == f"{name}_sum":
                total = float(sample.value)
        buckets.sort()
        return Histogram(
            name,
            tuple(bound for bound, _ in buckets),
            tuple(value for _, value in buckets),
            count,
            total,
        )
    return None


def walk(node: ActorNode) -> Iterator[ActorNode]:
    """The node and every node below it, depth first."""
    yield node
    for child in node.children:
        yield from walk(child)


def find_node(tree: ActorNode, kind: str, name: str | None = None) -> ActorNode | None:
    """The first actor of `kind` (and `name`, when given) anywhere in the tree."""
    return next(
        (n for n in walk(tree) if n.kind == kind and (name is None or n.name == name)), None
    )


class AgentStatus:
    """One agent's status endpoint, at `url` (`http://127.0.0.1:P`)."""

    def __init__(self, url: str) -> None:
        self.url = url

    @classmethod
    def on_port(cls, port: int, host: str = STATUS_HOST) -> AgentStatus:
        return cls(f"http://{host}:{port}")

    def metrics(self, timeout: float = 10.0) -> str:
        return read_metrics(self.url, timeout=timeout)

    def sample(self, name: str, **labels: str) -> float | None:
        """One sample of /metrics now (see `sample_value`)."""
        return sample_value(self.metrics(), name, labels)

    def tree(self, timeout: float = 10.0) -> ActorNode:
        """The live tree now; tried again for up to `timeout` while the endpoint is not up."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                answer = httpx.get(f"{self.url}/tree", timeout=5.0)
                answer.raise_for_status()
                return msgspec.json.decode(answer.content, type=ActorNode)
            except httpx.HTTPError as exc:
                if time.monotonic() >= deadline:
                    raise StatusUnavailableError(f"{self.url}/tree: {exc!r}") from exc
            time.sleep(0.2)  # between attempts of this bounded retry

    def __repr__(self) -> str:
        return f"AgentStatus({self.url!r})"
