"""The Docker kind every agent holds: chosen for DockerContainer blocks and docker pools, but
the `docker` package imported and a daemon asked only when a Docker run needs it; without the
package, or without a daemon, a Docker run fails with one reason, logged once."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from actors.edges.docker_on_demand import MISSING, DockerOnDemand
from actors.edges.infrastructure import RunSource
from actors.edges.kinds import default_infrastructures, kind_for, pool_refusal
from actors.edges.process_kind import Process
from actors.rules.infrastructure import SubmissionError
from messages.wire.prefect import BlockDocument, BlockTypeRef, Deployment, FlowRun, WorkPool


def source(block: BlockDocument | None = None, pool: WorkPool | None = None) -> RunSource:
    return RunSource(
        flow_run=FlowRun(id="r-1", name="run", flow_id="f-1"),
        deployment=Deployment(id="d-1", name="dep"),
        block=block,
        pool=pool,
        job_variables=pool is not None,
        api_url="http://127.0.0.1:4200/api",
        api_key=None,
        worker_name="agent",
        base_env={},
    )


def docker_block() -> BlockDocument:
    return BlockDocument(
        id="b", name="dock", data={"image": "x"}, block_type=BlockTypeRef(slug="docker-container")
    )


def test_the_default_kinds_run_docker_blocks_and_pools_in_containers() -> None:
    kinds = default_infrastructures()
    assert isinstance(kinds[0], Process)
    assert isinstance(kind_for(source(docker_block()), kinds), DockerOnDemand)
    pool = WorkPool(id="p", name="containers", type="docker")
    assert isinstance(kind_for(source(pool=pool), kinds), DockerOnDemand)
    assert pool_refusal(pool, kinds) is None
    assert isinstance(kind_for(source(), kinds), Process)


def test_nothing_of_docker_is_loaded_until_a_docker_run_needs_it() -> None:
    kind = DockerOnDemand()
    assert kind.reach("somehost:1234") == "not-mine"
    assert kind.find("r-1", None) is None  # no pid recorded: never a started container
    assert kind.loaded is None


def test_without_the_package_a_docker_run_fails_with_one_reason_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "docker", None)  # `import docker` raises ImportError
    monkeypatch.delitem(sys.modules, "actors.edges.docker_kind", raising=False)
    kind = DockerOnDemand()
    caplog.set_level(logging.WARNING, "prefect_actor_agent.docker")
    for _ in range(2):
        with pytest.raises(SubmissionError) as raised:
            kind.prepare(source(docker_block()))
        assert str(raised.value) == MISSING
    assert "pip install 'prefect-actor-agent[docker]'" in MISSING
    assert [r.getMessage().startswith(MISSING) for r in caplog.records] == [True]
    assert kind.reach("docker:DAEMON:abc") == "elsewhere"


def test_an_unreachable_daemon_fails_each_run_with_one_reason_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    kind = DockerOnDemand()
    caplog.set_level(logging.WARNING, "prefect_actor_agent.docker")
    reasons = []
    for _ in range(3):
        with pytest.raises(SubmissionError) as raised:
            kind.prepare(source(docker_block()))
        reasons.append(str(raised.value))
    assert len(set(reasons)) == 1
    assert "does not answer" in reasons[0] and "no-such.sock" in reasons[0], reasons[0]
    assert len(caplog.records) == 1, [r.getMessage() for r in caplog.records]
    kind.close()
