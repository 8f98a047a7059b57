"""Which request brings a queue's next page: get_runs, whose poll the server records, or the
cheaper flow-run filter where it answers the same."""

import pytest

from actors.rules.poll_route import filter_answers_like_get_runs, poll_by_filter
from messages.wire.prefect import WorkQueue

PLAIN = WorkQueue(id="q-id", name="q")


def test_a_plain_queue_on_a_checked_server_is_answered_alike_by_the_filter() -> None:
    assert filter_answers_like_get_runs(PLAIN, in_pool=False, filters_alike=True)


@pytest.mark.parametrize(
    ("queue", "in_pool", "filters_alike", "why"),
    [
        (WorkQueue(id="q-id", name="q", concurrency_limit=2), False, True, "only get_runs limits"),
        (WorkQueue(id="q-id", name="q", filter={"tags": ["x"]}), False, True, "tag-based queue"),
        (PLAIN, True, True, "the pool's endpoint applies pool limit and priorities"),
        (PLAIN, False, False, "a server older than 2.20 (unread code), or not yet read"),
    ],
)
def test_every_poll_is_get_runs_where_the_filter_would_answer_otherwise(
    queue: WorkQueue, in_pool: bool, filters_alike: bool, why: str
) -> None:
    assert not filter_answers_like_get_runs(queue, in_pool=in_pool, filters_alike=filters_alike)
    for since in (None, 0.0, 1.0):
        assert not poll_by_filter(
            filter_answers=False, since_recorded_poll=since, query_interval=15.0
        ), why


@pytest.mark.parametrize(
    ("interval", "since", "expected"),
    [
        (15.0, None, False),  # no poll recorded yet
        (15.0, 0.0, True),
        (15.0, 14.9, True),
        (15.0, 15.0, False),  # a recorded poll at least once per query interval
        (15.0, 60.0, False),
        (1.0, 5.0, True),  # a short interval: the record is kept every 10 s, not every page
        (1.0, 10.0, False),
    ],
)
def test_get_runs_records_a_poll_once_per_query_interval_or_10_s_if_that_is_longer(
    interval: float, since: float | None, expected: bool
) -> None:
    answer = poll_by_filter(filter_answers=True, since_recorded_poll=since, query_interval=interval)
    assert answer is expected
