"""Which kind of infrastructure runs a run, and whose a recorded pid is: by type, never guessed."""

from __future__ import annotations

import socket

import pytest

from actors.edges.infrastructure import RunSource
from actors.edges.kinds import kind_for, kind_of_pid, pool_refusal, reach, served_pool_types
from actors.edges.process_kind import Process
from actors.rules.infrastructure import SubmissionError
from messages.wire.prefect import BlockDocument, BlockTypeRef, FlowRun, WorkPool
from tests.support.fake_infrastructure import FakeInfrastructure

PROCESS = Process()
FAKE = FakeInfrastructure()
KINDS = (PROCESS, FAKE)


def source(block: BlockDocument | None = None, pool: WorkPool | None = None) -> RunSource:
    return RunSource(
        flow_run=FlowRun(id="r"),
        deployment=None,
        block=block,
        pool=pool,
        job_variables=pool is not None,
        api_url="http://x",
        api_key=None,
        worker_name="w",
    )


def test_a_blocks_type_names_its_kind_and_no_block_is_a_process() -> None:
    fake_block = BlockDocument(id="b", name="f", data={"type": "fake"})
    slug_only = BlockDocument(id="b", name="p", data={}, block_type=BlockTypeRef(slug="process"))
    assert kind_for(source(fake_block), KINDS) is FAKE
    assert kind_for(source(slug_only), KINDS) is PROCESS
    assert kind_for(source(), KINDS) is PROCESS


def test_a_pools_type_names_its_kind_on_prefect_3() -> None:
    assert kind_for(source(pool=WorkPool(id="p", name="p", type="fake")), KINDS) is FAKE
    assert kind_for(source(pool=WorkPool(id="p", name="p", type="process")), KINDS) is PROCESS


def test_a_type_no_kind_answers_to_is_refused_with_the_reason() -> None:
    docker = BlockDocument(
        id="d", name="x", data={"image": "i"}, block_type=BlockTypeRef(slug="docker-container")
    )
    with pytest.raises(SubmissionError) as refused:
        kind_for(source(docker), (PROCESS,))
    assert str(refused.value) == (
        "infrastructure block 'x' is of type 'docker-container', which this agent cannot run "
        "(supported: process)"
    )
    pool = WorkPool(id="p", name="k", type="kubernetes")
    with pytest.raises(SubmissionError, match="type 'kubernetes'"):
        kind_for(source(pool=pool), (PROCESS,))
    assert served_pool_types((PROCESS,)) == ("process", "prefect-agent")
    assert pool_refusal(WorkPool(id="p", name="a", type="prefect-agent"), (PROCESS,)) is None
    assert "type 'kubernetes'" in (pool_refusal(pool, (PROCESS,)) or "")


def test_a_recorded_pid_names_its_kind_and_whether_it_is_within_reach() -> None:
    here = socket.gethostname()
    assert kind_of_pid(f"{here}:42", KINDS) is PROCESS
    assert reach(f"{here}:42", KINDS) == "here"
    assert reach("far-away-host:42", KINDS) == "elsewhere"
    assert kind_of_pid("fake:r", KINDS) is FAKE
    assert reach("docker:daemon:0123", KINDS) == "not-mine"
    assert reach("not a pid", KINDS) == "not-mine"
