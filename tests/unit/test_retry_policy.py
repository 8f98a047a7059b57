"""The one retry policy: exponential with full jitter, Retry-After honoured, a bounded give-up."""

from __future__ import annotations

from actors.rules.retry import ONCE, SERVER_CALLS, RetryPolicy


def test_delays_grow_exponentially_up_to_the_cap_without_jitter() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=4.0, jitter=False)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]


def test_jitter_picks_a_delay_up_to_the_cap() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0)
    assert policy.delay(3, rand=lambda: 0.5) == 2.0
    assert policy.delay(3, rand=lambda: 0.0) == 0.0


def test_retry_after_is_honoured_but_bounded() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=2.0)
    assert policy.delay(1, retry_after=3.0) == 3.0
    assert policy.delay(1, retry_after=600.0) == 8.0


def test_server_calls_never_give_up_and_once_gives_up_after_one_failure() -> None:
    assert not SERVER_CALLS.gives_up(10_000)
    assert ONCE.gives_up(1)
    assert not RetryPolicy(attempts=3).gives_up(2) and RetryPolicy(attempts=3).gives_up(3)
