"""A fleet's cancellation polls: spread across the interval, each agent once per interval."""

import itertools

from actors.rules.spread import phase, until_slot

FLEET = [f"actor-agent@host-{n:02d} wk/all queues" for n in range(10)]
INTERVAL = 2.0


def _poll_times(identity: str, start: float, polls: int) -> list[float]:
    """Wall-clock times of an agent's polls: one at `start`, then each at its next slot."""
    times = [start]
    for _ in range(polls - 1):
        times.append(times[-1] + until_slot(times[-1], INTERVAL, identity))
    return times


def test_agents_started_at_the_same_moment_poll_at_spread_moments_from_their_second_poll() -> None:
    # Ten agents start together (or all lose the event stream at once, which makes each poll
    # at once): today they would poll in step every interval after that.
    started = 1_700_000_000.25
    later = [_poll_times(name, started, 5)[1:] for name in FLEET]
    for polls in zip(*later, strict=True):
        offsets = sorted(t % INTERVAL for t in polls)
        assert len({round(o, 6) for o in offsets}) == len(FLEET)  # no two in the same moment
        # spread over the interval: the largest gap between neighbours is well below it
        gaps = [b - a for a, b in itertools.pairwise([*offsets, offsets[0] + INTERVAL])]
        assert max(gaps) < 0.6 * INTERVAL


def test_an_agent_polls_once_per_interval_on_its_own_slots() -> None:
    name = FLEET[3]
    times = _poll_times(name, 1_700_000_000.9, 50)
    gaps = [b - a for a, b in itertools.pairwise(times[1:])]
    assert all(abs(gap - INTERVAL) < 1e-6 for gap in gaps)  # the cancellation waits no longer
    assert all(
        abs((t - phase(name, INTERVAL)) % INTERVAL) < 1e-6
        or abs((t - phase(name, INTERVAL)) % INTERVAL - INTERVAL) < 1e-6
        for t in times[1:]
    )


def test_no_poll_comes_later_than_one_interval_after_the_one_before() -> None:
    name = FLEET[0]
    slot = phase(name, INTERVAL) + 1_700_000_000.0
    for out_of_turn in (slot - 0.01, slot, slot + 0.01, slot + 0.5 * INTERVAL):
        wait = until_slot(out_of_turn, INTERVAL, name)
        assert 0 < wait <= INTERVAL
        assert (
            abs((out_of_turn + wait - slot) % INTERVAL) < 1e-6
            or abs((out_of_turn + wait - slot) % INTERVAL - INTERVAL) < 1e-6
        )  # onto the slots at once


def test_the_phase_is_the_identitys_own_and_within_the_interval() -> None:
    phases = [phase(name, 30.0) for name in FLEET]
    assert all(0.0 <= p < 30.0 for p in phases)
    assert phases == [phase(name, 30.0) for name in FLEET]  # the same on every start
    assert len(set(phases)) == len(FLEET)
