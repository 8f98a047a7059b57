"""Which due runs an agent of a fleet proposes: its own first, a peer's once it waited."""

from collections import Counter
from datetime import UTC, datetime, timedelta

from actors.rules.share import (
    HEAD_ROWS,
    MAX_WINDOW,
    RECORDED_BY_OTHERS_SECONDS,
    Contests,
    Share,
    live_peers,
    owner,
    rank,
    recorded_poll_interval,
    window,
)
from messages.wire.prefect import FlowRun, Worker

RUNS = [FlowRun(id=f"run-{n:03d}") for n in range(240)]
FLEET = ("agent-a", "agent-b", "agent-c")


def share_of(me: str, peers: tuple[str, ...] = FLEET, grace: float = 5.0) -> Share:
    share = Share(me, grace=grace)
    share.peers_are(peers)
    return share


def test_a_lone_agent_reads_and_proposes_exactly_the_head_of_the_queue() -> None:
    share = Share("agent-a")
    share.peers_are(())
    assert share.window(8) == 8
    assert share.pick(RUNS[:8], 8, full=True, now=0.0) == RUNS[:8]


def test_agents_that_see_the_same_peers_propose_disjoint_runs_covering_the_window() -> None:
    shares = [share_of(me) for me in FLEET]
    assert [s.window(8) for s in shares] == [24, 24, 24]
    picked = [s.pick(RUNS[:24], 24, full=True, now=0.0) for s in shares]
    ids = [{run.id for run in runs} for runs in picked]
    assert ids[0].isdisjoint(ids[1]) and ids[0].isdisjoint(ids[2]) and ids[1].isdisjoint(ids[2])
    assert set().union(*ids) == {run.id for run in RUNS[:24]}
    assert all(3 <= len(own) <= 14 for own in ids)  # each about a third
    for runs in picked:  # in the window's order (soonest due first)
        assert runs == sorted(runs, key=RUNS.index)


def test_a_peer_joining_moves_only_the_runs_it_comes_to_own() -> None:
    before = {run.id: owner(run.id, FLEET) for run in RUNS}
    after = {run.id: owner(run.id, (*FLEET, "agent-d")) for run in RUNS}
    moved = [run_id for run_id in before if before[run_id] != after[run_id]]
    assert moved and all(after[run_id] == "agent-d" for run_id in moved)
    assert 30 <= len(moved) <= 90  # about a quarter of 240


def test_a_page_is_at_most_the_room_given_own_runs_first() -> None:
    share = share_of("agent-a")
    picked = share.pick(RUNS[:24], 3, full=True, now=0.0)
    assert len(picked) == 3
    assert all(owner(run.id, FLEET) == "agent-a" for run in picked)


def test_a_run_left_waiting_is_proposed_by_one_peer_at_a_time_in_rank_order() -> None:
    window_runs = RUNS[:24]
    shares = {me: share_of(me, grace=5.0) for me in FLEET}

    def proposers(now: float) -> dict[str, set[str]]:
        return {
            me: {run.id for run in share.pick(window_runs, 24, full=True, now=now)}
            for me, share in shares.items()
        }

    at_once = proposers(100.0)
    for me, ids in at_once.items():  # each proposes its own, and only those
        assert ids == {run.id for run in window_runs if owner(run.id, FLEET) == me}
    assert shares["agent-a"].next_overdue(now=101.0) == 4.0
    # Nobody took anything: after one grace each run is proposed by its owner and by the
    # peer of rank 1 for it, never by the third.
    one_grace = proposers(105.0)
    for run in window_runs:
        holders = {me for me, ids in one_grace.items() if run.id in ids}
        assert holders == {me for me in FLEET if rank(run.id, FLEET, me) <= 1}, run.id
    assert shares["agent-a"].overdue_taken == sum(
        1 for run in window_runs if rank(run.id, FLEET, "agent-a") == 1
    )
    # After two graces, by every peer (three agents: rank 2 is the last).
    two_graces = proposers(110.0)
    assert all(ids == {run.id for run in window_runs} for ids in two_graces.values())


def test_ranks_order_the_peers_the_same_for_everyone() -> None:
    for run in RUNS[:50]:
        places = sorted(rank(run.id, FLEET, me) for me in FLEET)
        assert places == [0, 1, 2]
        assert rank(run.id, FLEET, owner(run.id, FLEET)) == 0


def test_a_peers_run_seen_for_less_than_its_grace_waits() -> None:
    share = share_of("agent-a", grace=5.0)
    share.pick(RUNS[:24], 24, full=True, now=100.0)
    newer = RUNS[12:36]  # the first half was taken by the peers; new runs came into view
    picked = share.pick(newer, 24, full=True, now=103.0)
    assert all(owner(run.id, FLEET) == "agent-a" for run in picked)
    assert share.next_overdue(now=103.0) == 2.0  # those seen at 100 s


def test_in_a_window_that_is_not_full_every_run_is_proposed_at_once_own_first() -> None:
    share = share_of("agent-a")
    tail = RUNS[:10]
    picked = share.pick(tail, 8, full=False, now=0.0)
    own = [run for run in tail if owner(run.id, FLEET) == "agent-a"]
    assert picked[: len(own)] == own[:8] and len(picked) == min(8, len(tail))


def test_the_window_grows_with_the_sharers_up_to_a_bound() -> None:
    assert window(8, 1) == 8
    assert window(8, 10) == 80
    assert window(30, 10) == MAX_WINDOW
    assert window(250, 10) == 250  # never below the room


def test_live_peers_are_the_online_workers_and_this_agent() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    workers = [
        Worker(name="agent-b", status="ONLINE", last_heartbeat_time=now),
        Worker(name="agent-c", status="OFFLINE", last_heartbeat_time=now - timedelta(hours=1)),
        Worker(name="agent-d", last_heartbeat_time=now - timedelta(seconds=30)),  # no status
        Worker(name="agent-e", last_heartbeat_time=now - timedelta(seconds=300)),
        Worker(name="agent-f"),
    ]
    assert live_peers(workers, "agent-a", now, lost_after=90.0) == (
        "agent-a",
        "agent-b",
        "agent-d",
    )
    assert live_peers([], "agent-a", now, lost_after=90.0) == ("agent-a",)


def test_one_peer_records_the_queues_polls_and_the_others_seldom() -> None:
    shares = [share_of(me) for me in FLEET]
    recorders = [s.me for s in shares if s.records_polls("etl")]
    assert recorders == [owner("etl", FLEET)]
    assert recorded_poll_interval(15.0, recorder=True) == 15.0
    assert recorded_poll_interval(15.0, recorder=False) == RECORDED_BY_OTHERS_SECONDS
    assert RECORDED_BY_OTHERS_SECONDS < 60.0  # the server marks a queue unpolled for 60 s
    lone = Share("agent-a")
    assert lone.records_polls("etl")


def test_a_queue_is_shared_only_from_a_lost_race_until_none_is_lost_for_a_while() -> None:
    contests = Contests(lasts=120.0)
    peers = ("a", "b", "c")
    assert contests.sharers("q", peers, now=0.0) == ((), False)
    assert contests.lost("q", now=10.0) is True  # the first race lost starts the share
    assert contests.sharers("q", peers, now=11.0) == (peers, False)
    assert contests.sharers("other", peers, now=11.0) == ((), False)
    assert contests.lost("q", now=100.0) is False  # a later one only renews it
    assert contests.sharers("q", peers, now=219.0) == (peers, False)
    assert contests.sharers("q", peers, now=220.0) == ((), True)  # lapsed: said once
    assert contests.sharers("q", peers, now=221.0) == ((), False)
    assert contests.lost("q", now=300.0) is True


def test_at_a_drains_end_each_run_is_proposed_by_its_owner_and_at_most_its_next_in_line() -> None:
    """Every agent sees the same last runs (a window that is not full) and has room for more
    than its own: each fills it with the runs it is next in line for, not with the same head
    of the queue as every other peer, so a run is proposed by two agents at most and each
    agent's Pending that is refused is lost to the run's owner only."""
    tail = RUNS[:24]
    picks = {me: share_of(me).pick(tail, 10, full=False, now=0.0) for me in FLEET}
    proposals = Counter(run.id for picked in picks.values() for run in picked)
    assert set(proposals) == {run.id for run in tail}  # all of them, at once
    assert max(proposals.values()) <= 2, proposals
    for me, picked in picks.items():
        own = [run for run in tail if owner(run.id, FLEET) == me]
        assert picked[: len(own)] == own  # its own first
        assert all(rank(run.id, FLEET, me) == 1 for run in picked[len(own) :])


def test_a_peers_run_is_timed_from_when_it_reaches_the_windows_head() -> None:
    """A run crossing a long window (ten pages in a fleet of ten) on a slow server takes
    longer than a grace to reach the head while its owner takes its own runs from there: it
    is not the next peer's to propose until it has waited a grace at the head."""
    share = share_of("agent-a", grace=5.0)
    window_runs = RUNS[:80]
    share.pick(window_runs, 8, full=True, now=100.0)  # in view; only the first 8 at the head
    later = share.pick(window_runs, 8, full=True, now=110.0)  # two graces on, nobody took any
    at_head = {run.id for run in window_runs[:8]}
    for run in later:
        assert owner(run.id, FLEET) == "agent-a" or run.id in at_head, run.id
    # the runs behind the head were in view for 10 s: none of the peers' is overdue yet
    assert share.next_overdue(now=110.0) == 0.0  # those at the head since 100 s are
    moved = RUNS[40:120]  # the owners took the first half: runs come to the head
    share.pick(moved, 8, full=True, now=111.0)
    # in view for 11 s, at the head only now: their owners have a grace from now
    assert share.next_overdue(now=111.0) == 5.0


def test_an_agent_with_room_for_one_run_still_times_a_pages_worth_of_the_head() -> None:
    """Near its limit an agent asks for one run at a time: the peers' runs of a page at the
    head start their grace together, not one after another (a lost peer's runs would trickle
    at one per grace)."""
    share = share_of("agent-a", grace=5.0)
    share.pick(RUNS[:30], 1, full=True, now=100.0)
    timed = [run for run in RUNS[:30] if share.first_seen[run.id][0] == 100.0]
    assert {run.id for run in timed} == {run.id for run in RUNS[:HEAD_ROWS]}
