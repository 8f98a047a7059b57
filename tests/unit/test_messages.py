"""Decoding API bodies: unknown fields ignored, bad bodies a clear error for that call."""

import pytest

from messages.wire.prefect import ApiDecodeError, FlowRun, OrchestrationResult, WorkQueue, decode


def test_unknown_fields_are_ignored_so_newer_servers_work() -> None:
    body = b'{"id": "q1", "name": "default", "is_paused": false, "brand_new_field": [1, 2]}'
    assert decode(WorkQueue, body) == WorkQueue(id="q1", name="default")


def test_unknown_state_types_still_decode() -> None:
    body = b'{"id": "r", "state": {"type": "SOMETHING_NEW", "name": "New"}}'
    run = decode(FlowRun, body)
    assert run.state is not None
    assert run.state.type == "SOMETHING_NEW"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"not json", "not a valid FlowRun"),
        (b'{"name": "no id"}', "missing required field `id`"),
        (b'{"id": 5}', "Expected `str`, got `int`"),
        (b'{"id": "r", "state": {"name": "typeless"}}', "missing required field `type`"),
    ],
)
def test_bad_bodies_raise_a_decode_error_naming_the_problem(body: bytes, words: str) -> None:
    with pytest.raises(ApiDecodeError, match=words):
        decode(FlowRun, body)


def test_orchestration_result_reads_abort_reason() -> None:
    body = b'{"status": "ABORT", "state": null, "details": {"reason": "taken"}}'
    result = decode(OrchestrationResult, body)
    assert result.status == "ABORT"
    assert result.details.reason == "taken"
