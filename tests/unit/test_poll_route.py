"""Which request brings a queue's next page: get_runs, whose poll the server records, or the
cheaper flow-run filter where it answers the same."""

import pytest

from actors.poll_route import filter_answers_like_get_runs, poll_by_filter
from messages.api import WorkQueue

PLAIN = WorkQueue(id="q-id", name="q")


def by_filter(queue: WorkQueue = PLAIN, **overrides: object) -> bool:
    options: dict[str, object] = {
        "in_pool": False,
        "filters_alike": True,
        "since_recorded_poll": 2.0,
        "query_interval": 15.0,
    }
    options.update(overrides)
    return poll_by_filter(queue, **options)  # type: ignore[arg-type]


def test_a_plain_queue_polled_lately_is_read_by_the_filter() -> None:
    assert by_filter()


@pytest.mark.parametrize(
    ("since", "expected"),
    [(None, False), (0.0, True), (14.9, True), (15.0, False), (60.0, False)],
)
def test_get_runs_records_a_poll_at_least_once_per_query_interval(
    since: float | None, expected: bool
) -> None:
    assert by_filter(since_recorded_poll=since) is expected


@pytest.mark.parametrize(
    ("queue", "overrides", "why"),
    [
        (WorkQueue(id="q-id", name="q", concurrency_limit=2), {}, "only get_runs applies it"),
        (WorkQueue(id="q-id", name="q", filter={"tags": ["x"]}), {}, "a tag-based queue"),
        (PLAIN, {"in_pool": True}, "the pool's endpoint applies pool limit and priorities"),
        (PLAIN, {"filters_alike": False}, "a server older than 2.20 (unread code)"),
    ],
)
def test_every_poll_is_get_runs_where_the_filter_would_answer_otherwise(
    queue: WorkQueue, overrides: dict[str, object], why: str
) -> None:
    assert not by_filter(queue, **overrides), why
    in_pool = bool(overrides.get("in_pool", False))
    alike = bool(overrides.get("filters_alike", True))
    assert not filter_answers_like_get_runs(queue, in_pool=in_pool, filters_alike=alike)
