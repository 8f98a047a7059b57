"""Who is lost, who may say so, and what becomes of a lost agent's runs: the pure rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from actors.rules.claims import claim_message
from actors.rules.identity import AgentIdentity
from actors.rules.lease import Lease
from actors.rules.recovery import (
    LostAgent,
    adopted,
    adoption_for,
    latest_claim,
    lost_agents,
    may_declare_lost,
    recovery_for,
    still_ours,
    transition_id,
)
from messages.wire.prefect import FlowRun, State, Worker

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LOST = AgentIdentity("a@lost-host", "inst1", "lost-host")
ME = AgentIdentity("a@here", "inst2", "here")
PEER = LostAgent(LOST.name, NOW - timedelta(seconds=30))


def _pending(claim: AgentIdentity, state_id: str = "s1") -> State:
    return State(type="PENDING", id=state_id, message=claim_message(claim))


def test_only_peers_with_an_old_heartbeat_are_lost_never_this_agent() -> None:
    workers = [
        Worker(name="old", last_heartbeat_time=NOW - timedelta(seconds=11)),
        Worker(name="fresh", last_heartbeat_time=NOW - timedelta(seconds=9)),
        Worker(name="never"),
        Worker(name=ME.name, last_heartbeat_time=NOW - timedelta(seconds=100)),
    ]
    assert set(lost_agents(workers, NOW, 10.0, ME.name)) == {"old"}


def test_a_peer_declares_only_after_a_whole_window_of_its_own_heartbeats() -> None:
    assert not may_declare_lost(None, 10.0)
    assert not may_declare_lost(9.9, 10.0)
    assert may_declare_lost(10.0, 10.0)


def test_the_lease_lapses_before_peers_may_act_and_a_gap_restarts_the_streak() -> None:
    lease = Lease(lost_after=10.0, heartbeat_seconds=2.0)
    assert lease.holds(0.0) and lease.expires_at() is None  # nothing for a peer to judge by
    lease.renewed(100.0, 100.1)
    said = lease.renewed(102.0, 102.1)
    assert said.holds and said.streak_since == 100.1 and not said.reconnected
    assert lease.expires_at() == 110.0  # 10 - 2 after the send, whatever the answer's delay
    assert lease.holds(109.9) and not lease.holds(110.0)
    said = lease.renewed(120.0, 120.1)  # answered 18 s after the last send: not unbroken
    assert said.streak_since == 120.1
    said = lease.broken(122.0)
    assert said.holds and said.streak_since is None


def test_the_first_renewal_after_a_failed_heartbeat_says_reconnected_once() -> None:
    lease = Lease(lost_after=10.0, heartbeat_seconds=2.0)
    assert not lease.broken(0.5).reconnected  # failing before any success is no break
    assert not lease.renewed(1.0, 1.1).reconnected  # the first renewal ever
    lease.broken(3.5)
    said = lease.renewed(4.0, 4.1)  # the lease never lapsed, but a peer's view is unknown
    assert said.reconnected and said.holds
    assert not lease.renewed(6.0, 6.1).reconnected


def test_a_heartbeat_held_through_a_partition_and_answered_after_the_lapse_says_reconnected() -> (
    None
):
    """No heartbeat failed: one was held by the network and let through when it healed."""
    lease = Lease(lost_after=10.0, heartbeat_seconds=2.0)
    lease.renewed(0.0, 0.1)
    said = lease.renewed(2.0, 30.0)  # sent in time, answered long after the lapse at 8.0
    assert said.reconnected
    assert said.streak_since == 30.0  # unbroken only from when the server answered again
    assert not said.holds  # its own send time is too old to act on: the next renewal is needed
    said = lease.renewed(31.0, 31.1)  # after the lapse that renewal left: a check again
    assert said.holds and said.reconnected
    assert not lease.renewed(33.0, 33.1).reconnected


def test_a_running_run_is_crashed_a_pending_one_handed_back_a_cancelling_one_cancelled() -> None:
    claim_state = _pending(LOST)
    running = FlowRun(id="r", state=State(type="RUNNING", id="s2"), infrastructure_pid="h:1")
    pending = FlowRun(id="p", state=claim_state)
    pending_with_pid = FlowRun(id="q", state=claim_state, infrastructure_pid="h:2")
    cancelling = FlowRun(id="c", state=State(type="CANCELLING", id="s3"))
    crashed = recovery_for(running, claim_state, PEER, LOST.host)
    assert crashed is not None and crashed.kind == "crashed"
    assert crashed.proposal.type == "CRASHED" and LOST.name in (crashed.proposal.message or "")
    assert "lost-host" in (crashed.proposal.message or "")
    handed = recovery_for(pending, claim_state, PEER, LOST.host)
    assert handed is not None and handed.kind == "handed-back"
    assert handed.proposal.type == "SCHEDULED" and not handed.force
    assert handed.proposal.state_details.scheduled_time is not None
    started = recovery_for(pending_with_pid, claim_state, PEER, LOST.host)
    assert started is not None and started.kind == "crashed"  # a process was started
    cancelled = recovery_for(cancelling, claim_state, PEER, LOST.host)
    assert cancelled is not None and cancelled.proposal.type == "CANCELLED"
    assert (
        recovery_for(FlowRun(id="d", state=State(type="COMPLETED")), claim_state, PEER, "h") is None
    )


def test_two_peers_propose_the_same_transition_for_the_same_claim() -> None:
    assert transition_id("r", "s1", "PENDING") == transition_id("r", "s1", "PENDING")
    assert transition_id("r", "s1", "PENDING") != transition_id("r", "s9", "PENDING")


def test_the_latest_pending_claim_decides_whose_a_run_is() -> None:
    states = [
        State(type="SCHEDULED"),
        _pending(LOST, "s1"),
        State(type="SCHEDULED"),
        _pending(ME, "s4"),
    ]
    found = latest_claim(states)
    assert found is not None and found[1] == ME and found[0].id == "s4"
    running = FlowRun(id="r", state=State(type="RUNNING"))
    assert still_ours(running, ME, ME)
    assert not still_ours(running, LOST, ME)
    recovered = FlowRun(
        id="r", state=State(type="CRASHED", message="Crashed: ... a peer agent declared it lost.")
    )
    assert not still_ours(recovered, ME, ME)


def test_a_peer_adopts_a_running_container_and_its_claim_takes_the_run_from_the_lost_agent() -> (
    None
):
    claim_state = _pending(LOST, "s1")
    pid = "docker:DAEMON:abc"
    running = FlowRun(id="r", state=State(type="RUNNING", id="s2"), infrastructure_pid=pid)
    action = adoption_for(running, claim_state, PEER, ME)
    assert action is not None and action.kind == "adopted" and not action.force
    assert action.proposal.type == "RUNNING"
    assert f"Adopted by agent {ME.name!r}" in (action.proposal.message or "")
    assert pid in (action.proposal.message or "")
    # Every peer adopting from the same claim proposes the same transition: one wins.
    again = adoption_for(running, claim_state, PEER, AgentIdentity("c", "inst3", "c"))
    assert again is not None
    assert again.proposal.state_details.transition_id == action.proposal.state_details.transition_id
    # The adoption's claim is the run's latest: the lost agent's fence sees it is not its own,
    # and that it was adopted (its container is the adopter's to watch, not to kill).
    adoption = State(type="RUNNING", id="s3", message=action.proposal.message)
    found = latest_claim([claim_state, State(type="RUNNING", id="s2"), adoption])
    assert found is not None and found[1] == ME and adopted(found[0])
    assert not still_ours(running, found[1], LOST)
    assert still_ours(running, found[1], ME)
    assert not adopted(claim_state)
    # A later Pending (a retry taken by someone) is a new claim; a claim-less state is not one.
    retried = latest_claim([claim_state, adoption, _pending(LOST, "s5")])
    assert retried is not None and retried[1] == LOST
    # Nothing to adopt: no pid recorded, or ended.
    assert adoption_for(FlowRun(id="p", state=claim_state), claim_state, PEER, ME) is None
    done = FlowRun(id="d", state=State(type="COMPLETED"), infrastructure_pid=pid)
    assert adoption_for(done, claim_state, PEER, ME) is None


def test_a_lost_agents_cancelling_container_within_reach_is_cancelled_and_said_to_be_stopped() -> (
    None
):
    claim_state = _pending(LOST, "s1")
    cancelling = FlowRun(
        id="c", state=State(type="CANCELLING", id="s3"), infrastructure_pid="docker:D:abc"
    )
    assert adoption_for(cancelling, claim_state, PEER, ME) is None  # never Running again
    stopped = recovery_for(cancelling, claim_state, PEER, LOST.host, reached=True)
    assert stopped is not None and stopped.proposal.type == "CANCELLED"
    assert "docker:D:abc is within the peer's reach and is stopped" in (
        stopped.proposal.message or ""
    )
    unreached = recovery_for(cancelling, claim_state, PEER, LOST.host)
    assert unreached is not None and "could not be reached" in (unreached.proposal.message or "")
