"""Every request the agent sends is counted under one kind of a fixed set: by its path, and for
the requests that look for runs, by what their caller said they are for."""

from __future__ import annotations

import pytest

from actors.rules.request_kinds import REQUEST_KINDS, RequestKind, request_kind
from actors.runtime.request_purpose import current_purpose, requests_for
from actors.status.metrics import AgentMetrics

ID = "0b7c3c1e-2d5f-4f57-9d0b-5d0d1b0e6c11"


@pytest.mark.parametrize(
    ("method", "path", "kind"),
    [
        ("GET", "admin/version", "server_version"),
        ("POST", "work_pools/wk/workers/heartbeat", "heartbeat"),
        ("POST", "work_pools/wk/workers/filter", "worker_read"),
        ("DELETE", "work_pools/wk/workers/actor-agent%40vm%20wk%3A%20q", "worker_removal"),
        ("POST", "work_pools/wk/get_scheduled_flow_runs", "poll"),
        ("POST", f"work_queues/{ID}/get_runs", "poll"),
        ("GET", "work_pools/wk", "queue_read"),
        ("GET", "work_pools/wk/queues/default", "queue_read"),
        ("POST", "work_pools/wk/queues/filter", "queue_read"),
        ("GET", "work_queues/name/default", "queue_read"),
        ("POST", "work_queues/", "queue_read"),
        ("POST", "work_queues/filter", "queue_read"),
        ("POST", f"flow_runs/{ID}/set_state", "state_proposal"),
        ("PATCH", f"flow_runs/{ID}", "pid_report"),
        ("PATCH", f"flow_runs/{ID}/labels", "run_labels"),
        ("GET", f"flow_runs/{ID}", "run_read"),
        ("GET", "flow_run_states/", "run_read"),
        ("POST", "flow_runs/filter", "run_read"),
        ("GET", f"deployments/{ID}", "deployment_read"),
        ("GET", f"block_documents/{ID}", "block_read"),
        ("GET", "/api/something/new", "other"),
    ],
)
def test_a_request_is_counted_by_what_its_path_says(method: str, path: str, kind: str) -> None:
    assert request_kind(method, path) == kind


@pytest.mark.parametrize("purpose", ["poll", "event_woken_poll", "cancellation_poll", "recovery"])
def test_a_search_for_runs_counts_as_its_callers_purpose(purpose: RequestKind) -> None:
    assert request_kind("POST", "flow_runs/filter", purpose) == purpose


def test_a_purpose_never_relabels_what_the_path_says() -> None:
    assert request_kind("GET", "work_pools/wk/queues/default", "event_woken_poll") == "queue_read"
    assert request_kind("POST", "work_pools/wk/get_scheduled_flow_runs", "event_woken_poll") == (
        "event_woken_poll"
    )
    assert request_kind("POST", f"flow_runs/{ID}/set_state", "recovery") == "state_proposal"


def test_metrics_count_each_attempt_under_its_kind_every_kind_shown_from_zero() -> None:
    metrics = AgentMetrics()
    with requests_for("event_woken_poll"):
        assert current_purpose() == "event_woken_poll"
        metrics.count_api_attempt("POST", "work_pools/wk/get_scheduled_flow_runs", 200)
    assert current_purpose() is None
    metrics.count_api_attempt("POST", "work_pools/wk/workers/heartbeat", 503)

    def sample(kind: str) -> float | None:
        return metrics.registry.get_sample_value("prefect_agent_api_requests_total", {"kind": kind})

    assert sample("event_woken_poll") == 1
    assert sample("heartbeat") == 1
    assert all(sample(kind) is not None for kind in REQUEST_KINDS)
    assert sum(sample(kind) or 0 for kind in REQUEST_KINDS) == 2
