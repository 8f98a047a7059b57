"""An agent's name survives a restart; its claim on a run reads back exactly."""

from __future__ import annotations

from actors.rules.claims import claim_message, parse_claim, worker_labels
from actors.rules.identity import (
    AgentIdentity,
    default_agent_name,
    new_instance_id,
    removable_worker_name,
)


def test_the_default_name_is_the_same_on_every_start_and_differs_by_what_is_served() -> None:
    first = default_agent_name("box", (), ("etl", "default"), ())
    assert first == default_agent_name("box", (), ("default", "etl"), ())
    assert first != default_agent_name("box", (), ("default",), ())
    assert first != default_agent_name("other", (), ("etl", "default"), ())
    assert "box" in first and "default" in first
    assert "pool-a" in default_agent_name("box", ("pool-a",), (), ())


def test_a_long_default_name_is_cut_but_stays_distinct() -> None:
    many = tuple(f"queue-{n}" for n in range(40))
    name = default_agent_name("box", (), many, ())
    assert len(name) <= 100
    assert name != default_agent_name("box", (), many[:-1], ())


def test_instance_ids_change_at_every_start() -> None:
    assert new_instance_id() != new_instance_id()


def test_a_claim_reads_back_exactly_and_other_messages_carry_none() -> None:
    identity = AgentIdentity("actor-agent@box default", "0123abcd4567", "box")
    message = claim_message(identity)
    assert "actor-agent@box default" in message and "box" in message
    assert parse_claim(message) == identity
    assert parse_claim("Submitted by a person") is None
    assert parse_claim(None) is None


def test_worker_labels_name_the_agent_as_prefects_workers_do() -> None:
    labels = worker_labels(AgentIdentity("a", "i1", "h"), "pool")
    assert labels["prefect.worker.name"] == "a"
    assert labels["prefect.work-pool.name"] == "pool"
    assert labels["prefect-actor-agent.instance"] == "i1"


def test_a_claim_names_the_agents_process_so_a_restart_knows_a_live_namesake() -> None:
    identity = AgentIdentity("a@box q", "abc123", "box", pid=4242)
    assert parse_claim(claim_message(identity)) == identity


def test_the_default_name_of_an_agent_of_several_pools_names_them_all_in_one_order() -> None:
    name = default_agent_name("box", ("process-pool", "docker-pool"), ("default",), ())
    assert name == "actor-agent@box docker-pool,process-pool: default"
    assert name == default_agent_name("box", ("docker-pool", "process-pool"), ("default",), ())


def test_no_default_name_holds_a_slash_so_the_server_can_remove_its_worker_row() -> None:
    names = {
        default_agent_name("vm", ("wk",), (), ()),
        default_agent_name("vm", ("a", "b"), ("default",), ("etl-",)),
        default_agent_name("vm", (), ("team/etl",), ()),
        default_agent_name("vm", ("pool/x",), ("q",), ()),
    }
    assert all(removable_worker_name(name) for name in names), names
    assert default_agent_name("vm", ("wk",), (), ()) == "actor-agent@vm wk: all queues"
    # A `/` made `|` still tells the two queue sets apart, and stays the same at every start.
    slashed = default_agent_name("vm", (), ("team/etl",), ())
    assert slashed != default_agent_name("vm", (), ("team|etl",), ())
    assert slashed == default_agent_name("vm", (), ("team/etl",), ())
    assert not removable_worker_name("actor-agent@vm wk/all queues")
