"""Deployments and blocks are read once for the many runs that use them within a minute, not
every few seconds: the API edge against a fake server (an httpx transport that answers the
two reads and counts them) and the edge's clock moved by the test."""

from __future__ import annotations

import json
from collections import Counter

import httpx
import pytest

from actors.edges import prefect_api
from actors.edges.prefect_api import PrefectApi

DEPLOYMENT_ID = "3f0b1c2e-0000-4000-8000-000000000001"
BLOCK_ID = "3f0b1c2e-0000-4000-8000-000000000002"


def fake_server(counts: Counter[str]) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        counts[request.url.path] += 1
        if request.url.path.endswith(f"/deployments/{DEPLOYMENT_ID}"):
            body = {"id": DEPLOYMENT_ID, "name": "d", "infrastructure_document_id": BLOCK_ID}
        else:
            body = {"id": BLOCK_ID, "data": {"command": ["true"]}}
        return httpx.Response(200, content=json.dumps(body))

    return httpx.MockTransport(answer)


def test_a_deployment_and_its_block_are_read_once_for_a_minute_of_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counts: Counter[str] = Counter()
    api = PrefectApi("http://fake/api", transport=fake_server(counts))
    clock = [1000.0]
    monkeypatch.setattr(prefect_api.time, "monotonic", lambda: clock[0])
    try:
        for _ in range(12):  # a run every 5 s for a minute less a little
            api.read_deployment(DEPLOYMENT_ID)
            api.read_block_document(BLOCK_ID)
            clock[0] += 4.9
        assert counts == Counter(
            {f"/api/deployments/{DEPLOYMENT_ID}": 1, f"/api/block_documents/{BLOCK_ID}": 1}
        )
        clock[0] += 1.5  # a minute after the read: a change made meanwhile is read now
        api.read_deployment(DEPLOYMENT_ID)
        assert counts[f"/api/deployments/{DEPLOYMENT_ID}"] == 2
    finally:
        api.close()
