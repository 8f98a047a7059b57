"""Which request brings a work queue's next page of runs: a pure decision.

`get_runs` is what the server counts as a poll: it marks the queue and its deployments polled
(the status the UI shows), and it alone applies a queue's concurrency limit and a deprecated
tag-based queue's filter. That bookkeeping is a write with events on every call, which makes
it the dearest request a drain makes. The flow-run filter reads the same Scheduled runs of
the queue, in the same order, for about half the server's time.

So a watcher asks get_runs once per query interval (once per `RECORDED_POLL_FLOOR` seconds if
its interval is shorter) and the filter for the polls in between, where the filter gives the
same answer: a plain queue (not a pool's, whose endpoint also applies the pool's limit and
the queues' priorities), without a limit or a tag filter, on a server whose code was read to
match (`ServerProfile.filters_runs_like_get_runs`). A pause, or a limit set during a drain, is
seen within a second: the watcher reads its queue again at most that long after.
"""

from __future__ import annotations

from messages.wire.prefect import WorkQueue

# A short query interval (1 s) must not make every page of a drain a get_runs: the record is
# kept at most this long apart, well within the minute after which the server marks a queue
# that was not polled NOT_READY.
RECORDED_POLL_FLOOR = 10.0


def filter_answers_like_get_runs(queue: WorkQueue, *, in_pool: bool, filters_alike: bool) -> bool:
    """Whether the flow-run filter answers for this queue what get_runs would."""
    return (
        filters_alike and not in_pool and queue.concurrency_limit is None and queue.filter is None
    )


def poll_by_filter(
    *, filter_answers: bool, since_recorded_poll: float | None, query_interval: float
) -> bool:
    """Whether this poll may skip the server's poll record: the filter answers the same, and
    get_runs recorded a poll of the queue less than a query interval (at least
    `RECORDED_POLL_FLOOR`) ago; None: it never did."""
    window = max(query_interval, RECORDED_POLL_FLOOR)
    return filter_answers and since_recorded_poll is not None and since_recorded_poll < window
