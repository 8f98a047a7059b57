"""How the tests and the benchmark read a running agent (`examples/harness/agent_status.py`,
`examples/harness/agent_logs.py`): its /metrics text, its histogram's quantiles, the level of
its log lines. Checked here without a server, against the agent's own metrics registry."""

from __future__ import annotations

import math

import pytest

from actors.status.metrics import AgentMetrics
from examples.harness.agent_logs import line_level, lines_with
from examples.harness.agent_status import parse_histogram, sample_value

PENDING_LATENCY = "prefect_agent_pending_latency_seconds"


def test_latency_quantiles_come_from_the_histogram_buckets() -> None:
    metrics = AgentMetrics()
    empty = parse_histogram(metrics.exposition().decode(), PENDING_LATENCY)
    assert empty is not None and empty.count == 0
    assert empty.quantile(0.5) is None  # an empty histogram has no figure
    for seconds in (0.012, 0.014, 0.016, 0.018, 0.025, 0.035, 0.045, 0.09, 0.12, 3.0):
        metrics.pending_latency.observe(seconds)
    histogram = parse_histogram(metrics.exposition().decode(), PENDING_LATENCY)
    assert histogram is not None and histogram.count == 10
    # Rank 5 of 10 is the last of the 4 in (0.01, 0.02] plus one in (0.02, 0.03]: at 0.03.
    assert math.isclose(histogram.quantile(0.5) or 0, 0.03)
    # Rank 9.5 lies halfway into (2, 5], which holds the one run at 3 s.
    assert math.isclose(histogram.quantile(0.95) or 0, 3.5)


def test_a_sample_is_read_from_the_exposition_as_the_registry_holds_it() -> None:
    """A launcher's /metrics and a library agent's registry give a test the same figure."""
    metrics = AgentMetrics()
    metrics.runs_submitted.inc(3)
    metrics.runs_finished.labels(outcome="crashed").inc()
    text = metrics.exposition().decode()
    for name, labels in (
        ("prefect_agent_runs_submitted_total", {}),
        ("prefect_agent_runs_finished_total", {"outcome": "crashed"}),
        ("prefect_agent_runs_finished_total", {"outcome": "exited"}),
        ("prefect_agent_runs_in_flight", {}),
    ):
        assert sample_value(text, name, labels) == metrics.registry.get_sample_value(name, labels)
    assert sample_value(text, "prefect_agent_runs_submitted_total", {}) == 3.0
    assert sample_value(text, "prefect_agent_runs_finished_total", {"outcome": "nonsense"}) is None
    assert sample_value(text, "no_such_metric_total") is None


@pytest.mark.parametrize(
    ("line", "level"),
    [
        ("2024-01-01 12:00:00,123 WARNING prefect_actor_agent.dispatcher: late", "WARNING"),
        ("12:00:00.123 | ERROR   | prefect_actor_agent.tree - failed: ERROR x", "ERROR"),
        ("\x1b[33m12:00:00.123 | INFO    | prefect.agent - an ERROR later on\x1b[0m", "INFO"),
        ("WARNING prefect_actor_agent.events: event stream unavailable (x)", "WARNING"),
        ("Traceback (most recent call last):", None),
        ("    raise RuntimeError('boom')", None),
    ],
)
def test_a_log_line_level_is_read_whatever_the_format(line: str, level: str | None) -> None:
    assert line_level(line) == level


def test_the_lines_with_some_words_come_with_their_levels() -> None:
    text = (
        "12:00:00.123 | INFO    | prefect_actor_agent.events - event stream unavailable (a)\n"
        "12:00:01.456 | DEBUG   | prefect_actor_agent.events - event stream still unavailable\n"
        "12:00:02.789 | WARNING | prefect_actor_agent.agent - something else\n"
    )
    assert [level for level, _ in lines_with(text, "unavailable")] == ["INFO", "DEBUG"]
    assert lines_with(text, "no such words") == []
