"""Property tests: no response body and no override can fail in a way the agent does not catch.

Every actor that calls the server catches `ApiDecodeError` (and `SubmissionError` for a run's
infrastructure) and fails only that one call or run. Any other exception escaping `decode` or
`apply_overrides` would instead crash the actor that made the call (a QueueWatcher, the
Dispatcher's RunSupervisor), so these properties pin the contract down over inputs a newer,
older or broken server could send: arbitrary bytes, arbitrary JSON, right-shaped objects with
wrong, missing, extra or huge fields.
"""

from __future__ import annotations

import contextlib
import copy
import json
from datetime import UTC
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from actors.rules.infrastructure import SubmissionError, apply_overrides
from messages.wire.prefect import (
    ApiDecodeError,
    BlockDocument,
    Deployment,
    FlowRun,
    OrchestrationResult,
    State,
    WorkQueue,
    decode,
)

SHAPES: tuple[Any, ...] = (
    FlowRun,
    WorkQueue,
    Deployment,
    BlockDocument,
    OrchestrationResult,
    list[FlowRun],
)

# database=None: no .hypothesis directory in the checkout, and every run is independent.
FAST = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
FEW = settings(
    max_examples=8,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
)


def shape_name(shape: Any) -> str:
    """The name `decode` puts in its message (a generic alias such as list[FlowRun] -> "list")."""
    return str(getattr(shape, "__name__", shape))


def decodes_or_clean_error(shape: Any, body: bytes) -> object | None:
    """The contract: an instance of `shape`, or ApiDecodeError naming it; nothing else."""
    try:
        value: object = decode(shape, body)
    except ApiDecodeError as exc:
        message = str(exc)
        assert shape_name(shape) in message, message
        assert len(message) < 2_000, "a huge body must not make a huge error (log line)"
        return None
    origin = getattr(shape, "__origin__", None)
    if origin is list:
        assert isinstance(value, list)
        (item,) = shape.__args__
        assert all(isinstance(element, item) for element in value)
    else:
        assert isinstance(value, shape)
    return value


# -- strategies ------------------------------------------------------------------------------------

shapes = st.sampled_from(SHAPES)

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)

ids = st.text(max_size=40)
opt_text = st.none() | st.text(max_size=40)
timestamps = st.datetimes(timezones=st.just(UTC)).map(lambda moment: moment.isoformat())
opt_timestamps = st.none() | timestamps
known_state_types = st.sampled_from(
    [
        "SCHEDULED",
        "PENDING",
        "RUNNING",
        "COMPLETED",
        "FAILED",
        "CRASHED",
        "CANCELLING",
        "CANCELLED",
        "PAUSED",
    ]
)
state_types = known_state_types | st.text(max_size=30)  # newer servers invent types
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)

state_details = st.fixed_dictionaries(
    {},
    optional={
        "flow_run_id": opt_text,
        "scheduled_time": opt_timestamps,
        "transition_id": opt_text,
    },
)
states = st.fixed_dictionaries(
    {"type": state_types},
    optional={
        "name": opt_text,
        "message": opt_text,
        "id": opt_text,
        "timestamp": opt_timestamps,
        "state_details": state_details,
    },
)
flow_runs = st.fixed_dictionaries(
    {"id": ids},
    optional={
        "name": st.text(max_size=40),
        "flow_id": opt_text,
        "deployment_id": opt_text,
        "work_queue_name": opt_text,
        "state": st.none() | states,
        "next_scheduled_start_time": opt_timestamps,
        "expected_start_time": opt_timestamps,
        "infrastructure_pid": opt_text,
    },
)
work_queues = st.fixed_dictionaries(
    {"id": ids, "name": st.text(max_size=40)},
    optional={
        "is_paused": st.booleans(),
        "concurrency_limit": st.none() | int64,
        "work_pool_id": opt_text,
    },
)
json_objects = st.dictionaries(st.text(max_size=12), json_values, max_size=5)
deployments = st.fixed_dictionaries(
    {"id": ids},
    optional={
        "name": st.text(max_size=40),
        "flow_id": opt_text,
        "infrastructure_document_id": opt_text,
        "infra_overrides": st.none() | json_objects,
        "job_variables": st.none() | json_objects,
    },
)
block_documents = st.fixed_dictionaries(
    {"id": ids},
    optional={
        "name": opt_text,
        "data": json_objects,
        "block_type": st.none()
        | st.fixed_dictionaries({"slug": st.text(max_size=20)}, optional={"name": opt_text}),
    },
)
orchestration_results = st.fixed_dictionaries(
    {"status": st.sampled_from(["ACCEPT", "REJECT", "ABORT", "WAIT"]) | st.text(max_size=10)},
    optional={
        "state": st.none() | states,
        "details": st.fixed_dictionaries(
            {},
            optional={
                "type": opt_text,
                "reason": opt_text,
                "delay_seconds": st.none()
                | st.floats(allow_nan=False, allow_infinity=False)
                | st.integers(min_value=-(10**6), max_value=10**6),
            },
        ),
    },
)

VALID: dict[Any, st.SearchStrategy[Any]] = {
    FlowRun: flow_runs,
    WorkQueue: work_queues,
    Deployment: deployments,
    BlockDocument: block_documents,
    OrchestrationResult: orchestration_results,
}
REQUIRED: dict[Any, tuple[str, ...]] = {
    FlowRun: ("id",),
    WorkQueue: ("id", "name"),
    Deployment: ("id",),
    BlockDocument: ("id",),
    OrchestrationResult: ("status",),
}


@st.composite
def valid_bodies(draw: st.DrawFn) -> tuple[Any, Any]:
    """A shape and a JSON-ready object of exactly that shape (a list of runs for list[FlowRun])."""
    shape = draw(shapes)
    if shape in VALID:
        return shape, draw(VALID[shape])
    return shape, draw(st.lists(flow_runs, max_size=4))


def declared_fields(shape: Any) -> frozenset[str]:
    return frozenset(shape.__struct_fields__)


def unknown_keys(shape: Any) -> st.SearchStrategy[str]:
    """Field names the shape does not declare (what a newer server adds)."""
    fields = declared_fields(shape)
    return st.text(min_size=1, max_size=20).filter(lambda key: key not in fields)


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


# -- garbage in ------------------------------------------------------------------------------------


@FAST
@given(shape=shapes, body=st.binary(max_size=300))
@example(shape=FlowRun, body=b"")
@example(shape=list[FlowRun], body=b"\xff\xfe")
@example(shape=WorkQueue, body=b'{"id": "1", "name": "\\ud800"}')
def test_arbitrary_bytes_decode_or_raise_api_decode_error(shape: Any, body: bytes) -> None:
    decodes_or_clean_error(shape, body)


@FAST
@given(shape=shapes, value=json_values)
def test_arbitrary_json_decodes_or_raises_api_decode_error(shape: Any, value: Any) -> None:
    decodes_or_clean_error(shape, dumps(value))


@FAST
@given(shape=shapes, value=json_values)
def test_arbitrary_json_inside_a_list_decodes_or_raises(shape: Any, value: Any) -> None:
    """Pages of runs are lists; a page with garbage items must fail as one clean error."""
    decodes_or_clean_error(shape, dumps([value, {"id": "ok"}]))


# -- right shape, wrong details --------------------------------------------------------------------


@FAST
@given(case=valid_bodies())
def test_valid_objects_always_decode(case: tuple[Any, Any]) -> None:
    shape, value = case
    assert decodes_or_clean_error(shape, dumps(value)) is not None


@FAST
@given(data=st.data())
def test_fields_of_the_wrong_type_decode_or_raise(data: st.DataObject) -> None:
    shape, value = data.draw(valid_bodies())
    target = value[0] if isinstance(value, list) and value else value
    if not isinstance(target, dict):
        return
    owner = FlowRun if isinstance(value, list) else shape
    field = data.draw(st.sampled_from(sorted(declared_fields(owner))))
    target[field] = data.draw(json_values)
    decodes_or_clean_error(shape, dumps(value))


@FAST
@given(data=st.data())
def test_a_missing_required_field_is_an_api_decode_error_naming_it(data: st.DataObject) -> None:
    shape = data.draw(st.sampled_from(sorted(REQUIRED, key=lambda s: s.__name__)))
    value = data.draw(VALID[shape])
    missing = data.draw(st.sampled_from(REQUIRED[shape]))
    del value[missing]
    with pytest.raises(ApiDecodeError) as caught:
        decode(shape, dumps(value))
    assert shape.__name__ in str(caught.value)
    assert f"`{missing}`" in str(caught.value)


@FAST
@given(data=st.data())
def test_unknown_extra_fields_are_ignored(data: st.DataObject) -> None:
    """A newer server's extra fields change nothing: same value as without them."""
    shape, value = data.draw(valid_bodies())
    expected = decode(shape, dumps(value))
    items = value if isinstance(value, list) else [value]
    item_shape = FlowRun if isinstance(value, list) else shape
    for item in items:
        extras = data.draw(st.dictionaries(unknown_keys(item_shape), json_values, max_size=4))
        item.update(extras)
        if isinstance(item.get("state"), dict):
            item["state"].update(
                data.draw(st.dictionaries(unknown_keys(State), json_values, max_size=3))
            )
    assert decode(shape, dumps(value)) == expected


@FAST
@given(runs=st.lists(flow_runs, min_size=1, max_size=5), new_type=st.text(max_size=30))
def test_unknown_state_types_keep_a_page_of_runs_decodable(
    runs: list[dict[str, Any]], new_type: str
) -> None:
    runs[0]["state"] = {"type": new_type, "name": "Brand new"}
    page = decode(list[FlowRun], dumps(runs))
    assert len(page) == len(runs)
    assert page[0].state is not None
    assert page[0].state.type == new_type


@FEW
@given(
    case=valid_bodies(),
    size=st.integers(min_value=100_000, max_value=2_000_000),
    char=st.sampled_from(["x", "é", "\u20ac", "\U0001f600", '"', "\\", "\x00"]),
    wrong_type=st.booleans(),
)
def test_huge_strings_decode_or_raise_a_short_error(
    case: tuple[Any, Any], size: int, char: str, wrong_type: bool
) -> None:
    """Huge values are kept intact, or the error stays short (the body preview is capped)."""
    shape, value = case
    huge = char * size
    target = value[0] if isinstance(value, list) and value else value
    if not isinstance(target, dict):
        return
    if wrong_type:  # a huge string where a bool or a nested object is declared
        key = {FlowRun: "state", WorkQueue: "is_paused", Deployment: "infra_overrides"}.get(
            FlowRun if isinstance(value, list) else shape, "id"
        )
        target[key] = huge if key != "id" else 12345
    else:
        target["id" if "id" in target else "status"] = huge
    decoded = decodes_or_clean_error(shape, dumps(value))
    if decoded is not None and not wrong_type:
        first = decoded[0] if isinstance(decoded, list) else decoded
        assert huge in (getattr(first, "id", None), getattr(first, "status", None))


def test_a_bad_page_of_runs_names_flow_run() -> None:
    with pytest.raises(ApiDecodeError, match="FlowRun"):
        decode(list[FlowRun], b'{"not": "a list"}')


@FEW
@given(
    shape=shapes,
    depth=st.integers(min_value=5_000, max_value=50_000),
    where=st.sampled_from(["unknown-field", "top-level"]),
)
@example(shape=WorkQueue, depth=5_000, where="unknown-field")
def test_deeply_nested_json_is_an_api_decode_error(shape: Any, depth: int, where: str) -> None:
    nested = b"[" * depth + b"]" * depth
    if where == "top-level":
        body = nested
    else:
        body = b'{"id": "1", "name": "q", "status": "ACCEPT", "brand_new": ' + nested + b"}"
        if shape_name(shape) == "list":
            body = b"[" + body + b"]"
    decodes_or_clean_error(shape, body)


# -- apply_overrides -------------------------------------------------------------------------------

PROCESS_FIELDS = ["type", "command", "env", "working_dir", "stream_output", "name", "labels"]
path_parts = st.sampled_from(["env", "A", "B", "x", "", "command", "0"]) | st.text(
    alphabet="abcXY_-", min_size=0, max_size=4
)
dotted_paths = st.one_of(
    st.builds(
        lambda first, rest: ".".join([first, *rest]),
        st.sampled_from(PROCESS_FIELDS),
        st.lists(path_parts, max_size=3),
    ),
    st.text(alphabet="ab.env", max_size=10),  # mostly invalid: unknown fields, empty parts
)
scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=10)
nested_data = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(path_parts.filter(bool), children, max_size=4)
    ),
    max_leaves=15,
)
block_data = st.dictionaries(
    st.sampled_from(PROCESS_FIELDS) | st.text(max_size=5), nested_data, max_size=5
)


def read_path(data: dict[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        node = node[part]
    return node


@settings(max_examples=150, deadline=None, database=None)
@given(data=block_data, overrides=st.dictionaries(dotted_paths, scalars, max_size=4))
@example(data={"env": "not a dict"}, overrides={"env.A": "x"})
@example(data={"env": {"A": ["x"]}}, overrides={"env.A.B": 1})
@example(data={}, overrides={"env.": 1})
def test_apply_overrides_returns_a_dict_or_raises_submission_error(
    data: dict[str, Any], overrides: dict[str, Any]
) -> None:
    data_before = copy.deepcopy(data)
    overrides_before = copy.deepcopy(overrides)
    try:
        result = apply_overrides(data, overrides)
    except SubmissionError as exc:
        assert str(exc)
    else:
        assert isinstance(result, dict)
        if overrides:
            last_path, last_value = list(overrides.items())[-1]
            assert read_path(result, last_path) == last_value
    assert data == data_before
    assert overrides == overrides_before


@settings(max_examples=150, deadline=None, database=None)
@given(data=block_data, path=dotted_paths, value=nested_data)
def test_a_single_override_reads_back_from_the_result(
    data: dict[str, Any], path: str, value: Any
) -> None:
    data_before = copy.deepcopy(data)
    try:
        result = apply_overrides(data, {path: value})
    except SubmissionError:
        parts = path.split(".")
        assert not all(parts) or parts[0] not in PROCESS_FIELDS or len(parts) > 1
    else:
        assert read_path(result, path) == value
        # every other top-level field is untouched
        first = path.split(".", maxsplit=1)[0]
        assert {k: v for k, v in result.items() if k != first} == {
            k: v for k, v in data_before.items() if k != first
        }
    assert data == data_before


@settings(max_examples=40, deadline=None, database=None)
@given(
    data=block_data,
    overrides=st.dictionaries(
        dotted_paths, nested_data | st.dictionaries(path_parts, scalars), max_size=4
    ),
)
@example(data={}, overrides={"env": {}, "env.A": "x"})
def test_apply_overrides_never_mutates_the_overrides(
    data: dict[str, Any], overrides: dict[str, Any]
) -> None:
    before = copy.deepcopy(overrides)
    with contextlib.suppress(SubmissionError):
        apply_overrides(data, overrides)
    assert overrides == before


def test_msgspec_raises_recursion_error_for_deep_nesting() -> None:
    """msgspec itself raises RecursionError for deep nesting: the reason decode() catches it."""
    with pytest.raises((RecursionError, msgspec.DecodeError)):
        msgspec.json.decode(b"[" * 50_000 + b"]" * 50_000)
