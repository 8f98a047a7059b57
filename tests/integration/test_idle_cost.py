"""Idle by the stream, not by the clock (issue 24), against a real Prefect 3 server: what an
idle agent costs the server, counted at its door, and a run created for later still taken at
its time.

The count is the benchmark's (examples/benchmark/request_count.py): a TCP proxy in front of
the server that counts request lines, so nothing of the agent's own account is trusted. The
agent runs with the defaults a user has (query interval 15 s, prefetch 15 s), but for what a
test says otherwise.
"""

from __future__ import annotations

import shlex
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from actors.launcher.local_server import LocalPrefectServer
from examples.benchmark.request_count import RequestCounter
from examples.harness.agent_status import free_port
from tests.conftest import AgentFactory, AgentUnderTest
from tests.integration.helpers import FLOWS, MARKER_COMMAND, state_type
from tests.support.prefect_objects import call_api, create_run, wait_for

pytestmark = pytest.mark.integration

QUEUES = 10
WINDOW_SECONDS = 60.0
# Requests per queue per minute, idle, 10 queues, streaming 3.x: before issue 24, 9.4 (this
# count: queue and pool reads and get_scheduled_flow_runs per queue every 15 s). Now the pool is
# looked at once per 45 s for all ten; what is left is the agent's own beat (heartbeat, worker
# rows, the cancel safety net: about 6 a minute), the same for one queue or a hundred;
# measured 0.75 to 0.9 here (2026-12-03). Prefect 3's worker: 0.65.
BOUND_PER_QUEUE_PER_MINUTE = 1.0


@pytest.fixture
def pool(prefect3_server: LocalPrefectServer) -> tuple[str, list[str]]:
    """A process pool of this test's own with `QUEUES` queues."""
    name = f"idle-{uuid.uuid4().hex[:8]}"
    api = prefect3_server.api_url
    call_api(api, "POST", "/work_pools/", {"name": name, "type": "process"})
    queues = [f"q{i:02d}" for i in range(QUEUES)]
    for queue in queues:
        call_api(api, "POST", f"/work_pools/{name}/queues", {"name": queue})
    return name, queues


@pytest.fixture
def counter(prefect3_server: LocalPrefectServer) -> Iterator[RequestCounter]:
    counting = RequestCounter(prefect3_server.api_url)
    yield counting
    counting.stop()


def looks(counts: Counter[str]) -> int:
    """The requests for scheduled runs among `counts` (by endpoint)."""
    return sum(n for endpoint, n in counts.items() if "get_scheduled_flow_runs" in endpoint)


def tree(port: int) -> dict[str, Any]:
    try:
        answer: dict[str, Any] = httpx.get(f"http://127.0.0.1:{port}/tree", timeout=5).json()
    except httpx.TransportError:  # not serving its status port yet
        return {"children": []}
    return answer


def settled(port: int, queues: int) -> bool:
    """Streaming, and every watcher has polled once and is idle."""
    children = tree(port)["children"]
    listener = [c for c in children if c["kind"] == "EventListener"]
    watchers = [c for c in children if c["kind"] == "QueueWatcher"]
    return (
        bool(listener)
        and listener[0]["state"] == "stream"
        and len(watchers) == queues
        and all(str(w["state"]).startswith("idle") for w in watchers)
    )


def start(
    factory: AgentFactory, counter: RequestCounter, pool: str, queues: list[str], **options: Any
) -> tuple[AgentUnderTest, int]:
    port = free_port()
    options.setdefault("query_interval", 15.0)  # the default (the factory's is 1 s)
    agent = factory(
        api_url=counter.api_url,
        work_pool=pool,
        work_queues=tuple(queues),
        status_port=port,
        **options,
    )
    wait_for(lambda: settled(port, len(queues)), 60, "the agent streaming, its queues polled")
    return agent, port


def test_an_idle_agent_on_a_streaming_3x_server_costs_under_a_request_per_queue_a_minute(
    launcher_agent: AgentFactory, counter: RequestCounter, pool: tuple[str, list[str]]
) -> None:
    name, queues = pool
    start(launcher_agent, counter, name, queues)
    time.sleep(5.0)  # warm-up: the wakes of the stream's opening are served
    before, began = counter.snapshot()[0], time.monotonic()
    time.sleep(WINDOW_SECONDS)  # the idle window measured
    minutes = (time.monotonic() - began) / 60.0
    counts: Counter[str] = counter.snapshot()[0] - before
    per_queue = sum(counts.values()) / minutes / QUEUES
    by_endpoint = ", ".join(f"{k} {v / minutes:.2f}" for k, v in counts.most_common())
    print(f"idle: {per_queue:.2f} requests/queue/min ({by_endpoint} per minute)")  # read with -s
    assert per_queue <= BOUND_PER_QUEUE_PER_MINUTE, by_endpoint
    polls = looks(counts) / minutes
    assert polls <= 2.0, f"{polls:.1f} looks a minute for a pool of ten queues"
    queue_reads = sum(v for k, v in counts.items() if "/queues/" in k) / minutes
    assert queue_reads == 0, f"idle queues read {queue_reads:.1f} times a minute"


def deploy_marker(api_url: str, pool: str, queue: str, markers: Path) -> str:
    flow_id = call_api(api_url, "POST", "/flows/", {"name": "marker"})["id"]
    body = {
        "name": f"marker-{queue}-{uuid.uuid4().hex[:6]}",
        "flow_id": flow_id,
        "work_pool_name": pool,
        "work_queue_name": queue,
        "entrypoint": "hello.py:hello",
        "path": str(FLOWS),
        "job_variables": {
            "env": {"MARKER_DIR": str(markers)},
            "command": shlex.join([*MARKER_COMMAND, "0"]),
            "working_dir": str(FLOWS),
        },
    }
    return str(call_api(api_url, "POST", "/deployments/", body)["id"])


def test_a_run_created_for_later_is_taken_at_its_time_less_the_prefetch_with_no_poll_between(
    launcher_agent: AgentFactory,
    counter: RequestCounter,
    pool: tuple[str, list[str]],
    prefect3_server: LocalPrefectServer,
    markers: Path,
) -> None:
    """Announced as it is created, 25 s ahead: read once then (the poll its event causes),
    and taken 10 s later (prefetch 15 s), with no look at its queue between. The query
    interval is a minute, so no regular poll could take it on time."""
    name, queues = pool
    api = prefect3_server.api_url
    deployment = deploy_marker(api, name, queues[0], markers)
    start(launcher_agent, counter, name, queues[:1], query_interval=60.0)
    before = counter.snapshot()[0]
    created = time.monotonic()
    run = create_run(api, deployment, scheduled_in=25.0)
    wait_for(lambda: state_type(api, run) != "SCHEDULED", 40, "the run taken", 0.05)
    taken = time.monotonic() - created
    looked = looks(counter.snapshot()[0] - before)
    print(f"taken {taken:.2f}s after it was created, due in 25 s; {looked} looks")
    assert 9.0 < taken < 12.0, f"taken {taken:.1f}s after its creation, not 10 s (25 - 15)"
    assert looked == 2, "one look as it was announced, one when it came due, none between"


def test_a_deployment_is_read_once_for_its_runs_over_many_seconds(
    launcher_agent: AgentFactory,
    counter: RequestCounter,
    pool: tuple[str, list[str]],
    prefect3_server: LocalPrefectServer,
    markers: Path,
) -> None:
    """Three runs of one deployment due 0, 6 and 12 s apart, taken as each comes due
    (prefetch 0): one read of the deployment serves them all (it was read every 5 s)."""
    name, queues = pool
    api = prefect3_server.api_url
    deployment = deploy_marker(api, name, queues[0], markers)
    start(launcher_agent, counter, name, queues[:1], prefetch_seconds=0.0)
    before = counter.snapshot()[0]
    runs = [create_run(api, deployment, scheduled_in=2.0 + 6.0 * i) for i in range(3)]
    for run in runs:
        wait_for(lambda run=run: state_type(api, run) != "SCHEDULED", 40, f"run {run} taken")
    reads = sum(
        n for endpoint, n in (counter.snapshot()[0] - before).items() if "/deployments/" in endpoint
    )
    assert reads == 1, f"the deployment was read {reads} times for its three runs"
