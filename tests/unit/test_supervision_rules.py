"""Restart decisions (OTP's one-for-one with intensity) and the text tree, without actors."""

import pytest

from actors.rules.supervision import RestartIntensityExceededError, RestartPolicy, Supervisor
from actors.status.text import render_tree
from messages.user.tree import ActorNode


def test_backoff_doubles_per_child_and_is_capped() -> None:
    supervisor = Supervisor(RestartPolicy(max_restarts=100, backoff_base=1.0, backoff_max=5.0))
    delays = [supervisor.child_failed("QueueWatcher", "a", "boom", now=float(t)) for t in range(5)]
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert supervisor.child_failed("QueueWatcher", "b", "boom", now=5.0) == 1.0


def test_intensity_exceeded_escalates_with_the_reason() -> None:
    supervisor = Supervisor(RestartPolicy(max_restarts=2, window_seconds=60.0))
    supervisor.child_failed("QueueWatcher", "a", "first", now=0.0)
    supervisor.child_failed("CancelWatcher", "cancellations", "second", now=1.0)
    with pytest.raises(RestartIntensityExceededError, match=r"3 failures within 60s.*third"):
        supervisor.child_failed("QueueWatcher", "a", "third", now=2.0)


def test_failures_outside_the_window_do_not_count() -> None:
    supervisor = Supervisor(RestartPolicy(max_restarts=2, window_seconds=10.0))
    supervisor.child_failed("QueueWatcher", "a", "x", now=0.0)
    supervisor.child_failed("QueueWatcher", "a", "x", now=1.0)
    assert supervisor.child_failed("QueueWatcher", "a", "x", now=30.0) == 1.0
    assert supervisor.record("QueueWatcher", "a").restarts == 3


def test_text_tree_draws_branches_and_supervision_facts() -> None:
    run = ActorNode(
        kind="RunSupervisor", name="r1", state="running pid 7", since=90.0, restart="temporary"
    )
    tree = ActorNode(
        kind="Agent",
        name="agent",
        state="running",
        since=0.0,
        children=(
            ActorNode(
                kind="QueueWatcher",
                name="etl",
                state="paused",
                since=40.0,
                restarts=2,
                last_failure="RuntimeError('x')",
            ),
            ActorNode(
                kind="Dispatcher",
                name="dispatcher",
                state="1 run(s) in flight",
                since=0.0,
                children=(run,),
            ),
        ),
    )
    assert render_tree(tree, now=100.0).splitlines() == [
        "Agent  [running, 100s]",
        "├── QueueWatcher etl  [paused, 60s]  restarts 2  last failure: RuntimeError('x')",
        "└── Dispatcher  [1 run(s) in flight, 100s]",
        "    └── RunSupervisor r1  [running pid 7, 10s]  temporary",
    ]
