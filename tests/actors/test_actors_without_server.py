"""The actor tree against a fake server that can be made to hang and fail on cue.

Each test starts a whole agent with `start_agent(settings, api=FakePrefectApi(...))` on plain
threads, with a `ManualClock` (nothing timed happens unless the test advances it) or a real
`Clock` where real time is simpler. Runs are real local processes (`sh`, see `run_command`).
A test judges only what a user sees: the states the server was told, and when; whether a
run's processes are alive (read from /proc); the tree; the run events a listener hears; the
log. Nothing waits by sleeping: every wait is for a condition, with a deadline.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pykka
import pytest

from actors import AgentHandle, RunListener, StatusServer, settings_from_env, start_agent
from actors.edges.infrastructure import ExitStatus
from actors.rules.claims import claim_message
from actors.rules.identity import AgentIdentity
from actors.runtime.clock import Clock, ClockInterface
from actors.tree.cancel_watcher import IDLE_NET_FACTOR, CancelWatcher
from actors.tree.dispatcher import Dispatcher
from actors.tree.queue_watcher import QueueWatcher
from actors.tree.switchboard import ChildActors
from messages.internal.dispatch import HeldRunIds, HeldRunsAre
from messages.internal.lifecycle import Tick
from messages.internal.run_steps import GraceExpired
from messages.user.events import RunFinished, RunStarted
from messages.user.tree import ActorNode
from messages.wire.prefect import CANCELLED, CRASHED, PENDING, SCHEDULED
from tests.support.fake_api import Call, FakePrefectApi
from tests.support.fake_infrastructure import FakeInfrastructure
from tests.support.faulty_start import faulty_start
from tests.support.manual_clock import ManualClock
from tests.support.waiting import wait_for

T = TypeVar("T")

QUEUE_WATCHER_CALLS = frozenset(
    {"read_work_queue_by_name", "create_work_queue", "get_runs", "scheduled_runs"}
)
CANCEL_WATCHER_CALLS = frozenset({"filter_flow_runs"})


# -- waiting and looking -------------------------------------------------------------------------


def wait_until(predicate: Callable[[], T | None], timeout: float, what: str) -> T:
    """Return the first truthy value of `predicate`, polled every 10 ms; fail after
    `timeout` seconds, saying what did not happen."""
    return wait_for(predicate, timeout, what, interval=0.01)  # type: ignore[return-value]


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name; None: no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    """A live process (a zombie waiting for its reaper is not)."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def group_members(pgid: int) -> list[int]:
    """The live processes of process group `pgid`."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None and fields[0] != "Z" and fields[2] == str(pgid):
                members.append(int(entry))
    return members


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def run_command(
    directory: Path,
    *,
    child: bool = False,
    ignore_sigterm: bool = False,
    child_ignores_sigterm: bool = False,
) -> list[str]:
    """A flow run's process for these tests: `sh` writes its pid to `<run id>.started` and
    runs until `<run id>.stop` exists, then exits 0. With `child`, it first starts a `sleep`
    in its process group and writes that one's pid to `<run id>.child`; with
    `ignore_sigterm`, it (and so every process it starts) ignores SIGTERM; with
    `child_ignores_sigterm`, only that child does (its leader dies of a SIGTERM)."""
    lines = []
    if ignore_sigterm:
        lines.append("trap '' TERM")
    if child or child_ignores_sigterm:
        sleep = "(trap '' TERM; exec sleep 600)" if child_ignores_sigterm else "sleep 600"
        lines.append(f'{sleep} & echo $! > "$0/$PREFECT__FLOW_RUN_ID.child"')
    lines += [
        'echo $$ > "$0/$PREFECT__FLOW_RUN_ID.tmp"',
        'mv "$0/$PREFECT__FLOW_RUN_ID.tmp" "$0/$PREFECT__FLOW_RUN_ID.started"',
        'while [ ! -e "$0/$PREFECT__FLOW_RUN_ID.stop" ]; do sleep 0.05; done',
    ]
    return ["sh", "-c", "\n".join(lines), str(directory)]


def started_pid(runs_dir: Path, run_id: str, timeout: float = 10.0) -> int:
    return wait_until(
        lambda: read_pid(runs_dir / f"{run_id}.started"), timeout, f"run {run_id}'s process"
    )


def pid_recorded(fake: FakePrefectApi, run_id: str) -> bool:
    return any(call.answered for call in fake.calls("set_infrastructure_pid", run_id=run_id))


def node(tree: ActorNode, kind: str, name: str | None = None) -> ActorNode | None:
    return next(
        (n for n in tree.children if n.kind == kind and (name is None or n.name == name)), None
    )


def runs_in_tree(tree: ActorNode) -> set[str]:
    dispatcher = node(tree, "Dispatcher")
    return {child.name for child in dispatcher.children} if dispatcher is not None else set()


def is_pending(call: Call) -> bool:
    return call.proposal is not None and call.proposal.type == PENDING


class Recorder(RunListener):
    """A host service's listener: keeps every event it hears, in order."""

    def __init__(self, events: list[object]) -> None:
        super().__init__()
        self.events = events

    def run_submitted(self, event: Any) -> None:
        self.events.append(event)

    def run_started(self, event: Any) -> None:
        self.events.append(event)

    def run_finished(self, event: Any) -> None:
        self.events.append(event)


def finished(events: list[object], run_id: str) -> RunFinished | None:
    return next(
        (e for e in list(events) if isinstance(e, RunFinished) and e.flow_run_id == run_id), None
    )


def exited(events: list[object], run_id: str) -> RunFinished | None:
    """The RunFinished of a run whose process exited 0."""
    return next(
        (
            e
            for e in list(events)
            if isinstance(e, RunFinished) and e.flow_run_id == run_id and e.outcome == "exited"
        ),
        None,
    )


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakePrefectApi]:
    api = FakePrefectApi()
    yield api
    api.release_all()


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    path = tmp_path / "runs"
    path.mkdir()
    return path


Start = Callable[..., AgentHandle]


@pytest.fixture
def start(fake: FakePrefectApi, runs_dir: Path) -> Iterator[Start]:
    """Start an agent against `fake` (queue "default", polls 60 s apart on a ManualClock, a
    lease of ten minutes, unless the test says otherwise). Afterwards: every hang released,
    the agent stopped, any run process left killed, every actor the test started stopped."""
    before = {ref.actor_urn for ref in pykka.ActorRegistry.get_all()}
    handles: list[AgentHandle] = []

    def launch(
        *,
        clock: ClockInterface | None = None,
        listeners: tuple[pykka.ActorRef[Any], ...] = (),
        actors: ChildActors | None = None,
        infrastructures: tuple[Any, ...] | None = None,
        **options: Any,
    ) -> AgentHandle:
        options.setdefault("work_queues", ("default",))
        options.setdefault("query_interval", 60.0)
        options.setdefault("cancel_poll_interval", 60.0)
        # The heartbeat lease is on the clock too: tests that hold every call while they move
        # it a minute are not about a lapse, unless they say so.
        options.setdefault("heartbeat_seconds", 60.0)
        options.setdefault("lost_agent_seconds", 600.0)
        settings = settings_from_env({}, api_url=fake.api_url, **options)
        handle = start_agent(
            settings,
            api=fake,
            listeners=listeners,
            clock=clock or ManualClock(),
            actors=actors,
            infrastructures=infrastructures,
        )
        handles.append(handle)
        return handle

    yield launch
    fake.release_all()
    for handle in handles:
        handle.stop(grace_seconds=1.0, timeout=10.0)
    for marker in [*runs_dir.glob("*.started"), *runs_dir.glob("*.child")]:
        pid = read_pid(marker)
        if pid is not None and pid > 1 and pid not in (os.getpid(), os.getpgrp()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if marker.suffix == ".started":
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
    for ref in pykka.ActorRegistry.get_all():
        if ref.actor_urn not in before:
            ref.stop(block=False)


# -- a. a Cancel while Pending is being proposed -------------------------------------------------


@pytest.mark.timeout(30)
def test_cancel_during_pending_never_starts_the_process(
    fake: FakePrefectApi, start: Start, runs_dir: Path
) -> None:
    fake.add_queue("default")
    run = fake.add_run(fake.add_deployment(run_command(runs_dir)))
    pending = fake.hang("set_state", when=is_pending)
    events: list[object] = []
    handle = start(listeners=(Recorder.start(events),))
    wait_until(lambda: fake.blocked("set_state"), 5, "the Pending proposal to reach the server")

    handle.cancel(run.id)
    handle.dispatcher.proxy().actor_urn.get(timeout=5)  # the Dispatcher has passed it on
    pending.release()

    started = runs_dir / f"{run.id}.started"
    wait_until(lambda: finished(events, run.id) or started.exists(), 10, "the run's RunFinished")
    assert not started.exists(), "the run's process started after the Cancel"
    ended = finished(events, run.id)
    assert ended is not None and ended.outcome == "cancelled", ended
    assert fake.state(run.id).type == CANCELLED, fake.history(run.id)
    assert len(fake.proposals(run.id, CANCELLED)) == 1, fake.proposals(run.id)
    assert fake.calls("set_infrastructure_pid", run_id=run.id) == []
    assert not any(isinstance(e, RunStarted) for e in events), events


# -- b. a Cancel while the server hangs ----------------------------------------------------------


@pytest.mark.timeout(30)
def test_cancel_kills_the_process_group_at_once_while_the_server_hangs(
    fake: FakePrefectApi, start: Start, runs_dir: Path
) -> None:
    fake.add_queue("default")
    run = fake.add_run(fake.add_deployment(run_command(runs_dir, child=True)))
    clock = ManualClock()
    events: list[object] = []
    handle = start(clock=clock, listeners=(Recorder.start(events),), cancel_grace_seconds=30)
    pid = started_pid(runs_dir, run.id)
    child = wait_until(lambda: read_pid(runs_dir / f"{run.id}.child"), 5, "the run's child")
    wait_until(lambda: pid_recorded(fake, run.id), 5, "the run's pid to be recorded")

    server = fake.hang()  # from now on the server answers nothing
    clock.advance(60)  # the watchers' next polls are due: the server holds them
    wait_until(
        lambda: (
            {c.method for c in fake.blocked()} & QUEUE_WATCHER_CALLS
            and {c.method for c in fake.blocked()} & CANCEL_WATCHER_CALLS
        ),
        5,
        "both watchers' polls to be held by the server",
    )

    handle.cancel(run.id)
    wait_until(lambda: not group_members(pid), 1.0, "the run's process group to be gone")
    assert not alive(child)

    released_at = time.monotonic()
    server.release()
    wait_until(lambda: fake.state(run.id).type == CANCELLED, 10, "the run to be Cancelled")
    ended = wait_until(lambda: finished(events, run.id), 5, "the run's RunFinished")
    assert ended.outcome == "cancelled", ended
    reports = fake.proposals(run.id, CANCELLED)
    assert len(reports) == 1, reports
    answered = reports[0].answered_at
    assert answered is not None and answered >= released_at


@pytest.mark.timeout(30)
def test_cancel_kills_the_process_group_at_once_while_its_pid_report_hangs(
    fake: FakePrefectApi, start: Start, runs_dir: Path
) -> None:
    """The run's supervisor itself is in a server call (the pid report) when the Cancel comes."""
    fake.add_queue("default")
    run = fake.add_run(fake.add_deployment(run_command(runs_dir, child=True)))
    fake.hang("set_infrastructure_pid")
    handle = start(cancel_grace_seconds=30)
    pid = started_pid(runs_dir, run.id)
    child = wait_until(lambda: read_pid(runs_dir / f"{run.id}.child"), 5, "the run's child")
    wait_until(lambda: fake.blocked("set_infrastructure_pid"), 5, "the pid report to be held")
    fake.hang()  # and every other call too

    handle.cancel(run.id)
    wait_until(lambda: not group_members(pid), 1.0, "the run's process group to be gone")
    assert not alive(child)

    fake.release_all()
    wait_until(lambda: fake.state(run.id).type == CANCELLED, 10, "the run to be Cancelled")
    reports = fake.proposals(run.id, CANCELLED)
    assert len(reports) == 1, reports


@pytest.mark.timeout(30)
def test_cancel_kills_what_the_run_left_in_its_group_once_its_process_exits(
    fake: FakePrefectApi, start: Start, runs_dir: Path
) -> None:
    """The run's process dies of the SIGTERM, its child ignores it: the child is killed as the
    leader's exit is seen, not left running (the grace period never ends on this clock)."""
    fake.add_queue("default")
    run = fake.add_run(fake.add_deployment(run_command(runs_dir, child_ignores_sigterm=True)))
    handle = start(cancel_grace_seconds=30)
    pid = started_pid(runs_dir, run.id)
    child = wait_until(lambda: read_pid(runs_dir / f"{run.id}.child"), 5, "the run's child")
    wait_until(lambda: pid_recorded(fake, run.id), 5, "the run's pid to be recorded")

    handle.cancel(run.id)
    wait_until(lambda: not alive(child), 2.0, "the child left in the run's group to be killed")
    assert not group_members(pid)
    wait_until(lambda: fake.state(run.id).type == CANCELLED, 10, "the run to be Cancelled")


# -- c. the tree while the server hangs ----------------------------------------------------------


@pytest.mark.timeout(30)
def test_tree_answers_within_a_second_while_every_call_hangs(
    fake: FakePrefectApi, start: Start, runs_dir: Path
) -> None:
    fake.add_queue("default")
    deployment = fake.add_deployment(run_command(runs_dir))
    first = fake.add_run(deployment, scheduled_in=-2)
    second = fake.add_run(deployment, scheduled_in=-1)
    fake.hang("set_infrastructure_pid", when=lambda call: call.run_id == first.id)
    clock = ManualClock()
    handle = start(clock=clock)
    started_pid(runs_dir, first.id)
    started_pid(runs_dir, second.id)
    wait_until(lambda: pid_recorded(fake, second.id), 5, "the second run's pid to be recorded")
    wait_until(lambda: fake.blocked("set_infrastructure_pid"), 5, "the first pid report held")

    fake.hang()
    clock.advance(60)
    wait_until(
        lambda: (
            {c.method for c in fake.blocked()} & QUEUE_WATCHER_CALLS
            and {c.method for c in fake.blocked()} & CANCEL_WATCHER_CALLS
        ),
        5,
        "both watchers' polls to be held by the server",
    )

    asked = time.monotonic()
    tree = handle.tree(timeout=5)
    took = time.monotonic() - asked
    assert took < 1.0, f"the tree took {took:.2f}s to answer"
    assert node(tree, "QueueWatcher", "default") is not None, tree
    assert node(tree, "CancelWatcher") is not None, tree
    assert runs_in_tree(tree) == {first.id, second.id}, tree


@pytest.mark.timeout(30)
def test_tree_answers_within_a_second_while_the_agents_own_call_hangs(
    fake: FakePrefectApi, start: Start
) -> None:
    """The Agent reads the server's version; the first read fails, the next one hangs."""
    fake.add_queue("default")
    fake.fail("server_profile", times=1, status=503)
    fake.hang("server_profile", when=lambda call: call.nth >= 2)
    clock = ManualClock()
    handle = start(clock=clock)

    def agent_reads_again() -> bool:
        if not fake.blocked("server_profile"):
            clock.advance(60)  # if the Agent tries again on a timer, that timer is due now
        return bool(fake.blocked("server_profile"))

    wait_until(agent_reads_again, 10, "the Agent's second read of the version to be held")

    asked = time.monotonic()
    try:
        tree = handle.tree(timeout=5)
    except pykka.Timeout:
        pytest.fail("the tree did not answer within 5s while the Agent's server call hangs")
    took = time.monotonic() - asked
    assert took < 1.0, f"the tree took {took:.2f}s to answer"
    assert tree.kind == "Agent"
    assert node(tree, "QueueWatcher", "default") is not None, tree
    assert node(tree, "Dispatcher") is not None, tree


# -- d. a Dispatcher restart while a supervisor is in a server call ------------------------------


class _FailNow:
    """Told to the Dispatcher by the test: it raises on it, once."""


@pytest.mark.timeout(30)
def test_restarted_dispatcher_takes_back_a_supervisor_busy_during_the_handover(
    fake: FakePrefectApi, start: Start, runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Dispatcher.on_receive

    def on_receive(self: Dispatcher, message: Any) -> Any:
        if isinstance(message, _FailNow):
            raise RuntimeError("the test makes the Dispatcher fail")
        return original(self, message)

    monkeypatch.setattr(Dispatcher, "on_receive", on_receive)
    fake.add_queue("default")
    deployment = fake.add_deployment(run_command(runs_dir))
    first = fake.add_run(deployment, scheduled_in=-2)
    second = fake.add_run(deployment, scheduled_in=-1)
    held = fake.hang("set_state", when=lambda call: call.run_id == first.id and is_pending(call))
    at_start: list[object] = []
    subscribed: list[object] = []
    handle = start(
        clock=Clock(),
        listeners=(Recorder.start(at_start),),
        limit=1,
        query_interval=0.2,
        restart_backoff_seconds=0.05,
    )
    handle.subscribe(Recorder.start(subscribed))
    wait_until(lambda: fake.blocked("set_state"), 5, "the first run's Pending to be held")
    assert fake.proposals(second.id) == []

    old = handle.dispatcher
    old.tell(_FailNow())

    def new_dispatcher_answers() -> bool:
        try:
            if handle.dispatcher is old:
                return False
        except pykka.ActorDeadError:
            return False
        shown = node(handle.tree(timeout=5), "Dispatcher")
        return shown is not None and shown.state != "restarting" and "busy" not in shown.state

    wait_until(new_dispatcher_answers, 20, "the restarted Dispatcher to answer in the tree")
    released_at = time.monotonic()
    held.release()
    started_pid(runs_dir, first.id)

    problems = []
    try:
        wait_until(lambda: first.id in runs_in_tree(handle.tree(timeout=5)), 3, "the run")
    except AssertionError:
        problems.append(
            f"the first run is not shown under the new Dispatcher: {handle.tree(timeout=5)}"
        )
    wait_until(
        lambda: (
            len([c for c in fake.calls() if c.method in QUEUE_WATCHER_CALLS and c.at > released_at])
            >= 2
        ),
        10,
        "the queue watcher to poll after the restart",
    )
    if fake.proposals(second.id):
        problems.append(
            "the second run was admitted beyond --limit 1 while the first was in flight: "
            f"{fake.proposals(second.id)}"
        )

    transitions = {
        c.proposal.state_details.transition_id
        for c in fake.proposals(first.id, PENDING)
        if c.proposal is not None
    }
    if len(transitions) > 1:
        problems.append(
            f"the first run was admitted again: {len(transitions)} supervisors proposed Pending"
        )

    (runs_dir / f"{first.id}.stop").touch()  # the first run's process exits 0
    for name, events in (("given at start", at_start), ("subscribed", subscribed)):

        def heard(events: list[object] = events) -> RunFinished | None:
            return exited(events, first.id)

        try:
            wait_until(heard, 5, "the first run's RunFinished")
        except AssertionError:
            problems.append(
                f"the listener {name} did not hear the first run's RunFinished (exited); "
                f"it heard {[e for e in events if isinstance(e, RunFinished)]}"
            )
    try:
        wait_until(lambda: fake.proposals(second.id, PENDING), 5, "the second run to be taken")
    except AssertionError:
        problems.append("the second run was not taken once the first had finished")
    assert not problems, "\n".join(problems)


# -- e. a listener that raises -------------------------------------------------------------------


class RaisingListener(Recorder):
    """A host service's listener with a bug in one of its methods."""

    def run_submitted(self, event: Any) -> None:
        self.events.append(event)
        raise RuntimeError("listener bug: cannot handle a submission")


def _record_text(record: logging.LogRecord) -> str:
    return logging.Formatter("%(name)s %(levelname)s %(message)s").format(record)


@pytest.mark.timeout(30)
def test_listener_that_raises_is_logged_with_the_event_and_kept(
    fake: FakePrefectApi, start: Start, runs_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    fake.add_queue("default")
    run = fake.add_run(fake.add_deployment(run_command(runs_dir)))
    events: list[object] = []
    listener = RaisingListener.start(events)
    start(listeners=(listener,))
    started_pid(runs_dir, run.id)
    (runs_dir / f"{run.id}.stop").touch()

    problems = []
    try:
        wait_until(lambda: exited(events, run.id), 10, "the listener to hear RunFinished")
    except AssertionError:
        problems.append(
            f"the listener did not hear the events after the one it raised on: {events}"
        )
    if not listener.is_alive():
        problems.append("the listener was stopped by its own exception")
    errors = [
        _record_text(r)
        for r in caplog.records
        if r.levelno >= logging.ERROR and "listener bug" in _record_text(r)
    ]
    if not errors:
        problems.append("the listener's exception was not logged as an error")
    elif not any(run.id in text for text in errors):
        problems.append(f"the error logged does not name the event: {errors[0][:300]}")
    assert not problems, "\n".join(problems)


# -- timers on the agent's clock -----------------------------------------------------------------


@pytest.mark.timeout(30)
def test_the_cancellation_polls_of_agents_started_together_are_not_in_step(
    start: Start, fake: FakePrefectApi
) -> None:
    """Three agents started at the same moment (a fleet deployed together) each poll for
    cancellations at once, and then each at a moment of its own within the interval, instead
    of all three an interval later, in step, for as long as they live."""
    clocks = [ManualClock() for _ in range(3)]
    for n, clock in enumerate(clocks):
        start(
            clock=clock,
            name=f"actor-agent@host-{n}",
            cancel_poll_interval=10.0,
            stream_cancel_poll_interval=10.0,
        )

    def next_poll(clock: ManualClock) -> float:
        timer = clock.wait_for_timer(
            lambda t: isinstance(t.message, Tick) and _is_cancel_watcher(t.ref), timeout=10.0
        )
        return timer.due_in

    waits = [next_poll(clock) for clock in clocks]
    idle_interval = 10.0 * IDLE_NET_FACTOR  # holding no run, the net's slow pace
    assert all(0.0 < wait <= idle_interval for wait in waits), waits  # within one interval
    assert len({round(wait, 3) for wait in waits}) == 3, waits  # and not the same moment


@pytest.mark.timeout(30)
def test_an_agent_that_holds_no_run_looks_for_cancellations_at_the_safety_nets_pace(
    start: Start, fake: FakePrefectApi, runs_dir: Path
) -> None:
    """Idle, an agent has no process of its own to stop: it looks for cancellations every
    four `--stream-cancel-poll-interval`s (2 min), not every 2 s. A run it takes brings the
    2 s polls back at once, and that run is cancelled within one of them; once it has ended,
    2 min again."""
    fake.add_queue("default")
    clock = ManualClock()
    handle = start(clock=clock, cancel_poll_interval=2.0, stream_cancel_poll_interval=30.0)
    wait_until(lambda: cancel_pace(handle) == "120s (no run held)", 5, "the idle pace")

    run = fake.add_run(fake.add_deployment(run_command(runs_dir)))
    clock.advance(60.0)  # the queue's poll: the run is taken and started
    pid = started_pid(runs_dir, run.id)
    wait_until(lambda: cancel_pace(handle) == "2s", 5, "the quick pace in the tree")
    wait_until(lambda: pid_recorded(fake, run.id), 5, "the run's pid on the server")
    fake.request_cancel(run.id)
    clock.advance(2.0)  # one quick interval
    wait_until(lambda: not alive(pid), 5, "the cancelled run's process to end")
    wait_until(lambda: fake.state(run.id).type == CANCELLED, 5, "the run Cancelled")
    wait_until(lambda: cancel_pace(handle) == "120s (no run held)", 5, "the idle pace again")


def cancel_pace(handle: AgentHandle) -> str | None:
    """How often the CancelWatcher looks, as the tree shows it."""
    watcher = node(handle.tree(), "CancelWatcher")
    return watcher.detail.get("every") if watcher is not None else None


def _is_cancel_watcher(ref: object) -> bool:
    return isinstance(ref, pykka.ActorRef) and ref.actor_class is CancelWatcher


def test_cancel_grace_period_runs_on_the_agents_clock(
    fake: FakePrefectApi, start: Start, runs_dir: Path
) -> None:
    """A run that ignores SIGTERM is killed when the grace period has passed on the agent's
    clock, not before: 30 s of grace tested without waiting them."""
    fake.add_queue("default")
    run = fake.add_run(fake.add_deployment(run_command(runs_dir, ignore_sigterm=True)))
    clock = ManualClock()
    handle = start(clock=clock, cancel_grace_seconds=30)
    pid = started_pid(runs_dir, run.id)
    wait_until(lambda: pid_recorded(fake, run.id), 5, "the run's pid to be recorded")

    handle.cancel(run.id)
    clock.wait_for_timer(
        lambda timer: isinstance(timer.message, GraceExpired) and 29 < timer.due_in <= 30,
        timeout=5,
    )
    clock.advance(29)
    assert group_members(pid), "the run was killed before its grace period had passed"
    assert fake.state(run.id).type != CANCELLED

    clock.advance(1)
    wait_until(lambda: not group_members(pid), 1.0, "the run's process group to be killed")
    wait_until(lambda: fake.state(run.id).type == CANCELLED, 5, "the run to be Cancelled")
    assert len(fake.proposals(run.id, CANCELLED)) == 1, fake.proposals(run.id)


# -- k. the heartbeat lease: no run taken while it has lapsed; the fence when it renews --------


def lease_lapsed(handle: AgentHandle) -> bool:
    """The Dispatcher, as the tree shows it, takes no runs: its heartbeat lease lapsed."""
    dispatcher = node(handle.tree(timeout=5), "Dispatcher")
    assert dispatcher is not None
    return dispatcher.state.endswith("taking no runs (heartbeat lease lapsed)")


def heartbeats_fail_while(fake: FakePrefectApi) -> threading.Event:
    """Every worker heartbeat fails while the returned event is set (the agent cut off)."""
    cut_off = threading.Event()
    fake.fail("send_worker_heartbeat", times=10**6, when=lambda call: cut_off.is_set())
    return cut_off


def cut_off_whole(fake: FakePrefectApi) -> threading.Event:
    """While the returned event is set, every call a cut-off agent makes on its own fails:
    heartbeats, Recovery's worker reads and run filters, the watchers' polls."""
    cut_off = heartbeats_fail_while(fake)
    for method in ("read_workers", "filter_flow_runs", "read_work_queue_by_name", "get_runs"):
        fake.fail(method, times=10**6, when=lambda call: cut_off.is_set())
    return cut_off


def heartbeats_answered(fake: FakePrefectApi, ok: bool = True) -> int:
    return len(
        [
            c
            for c in fake.calls("send_worker_heartbeat")
            if c.answered_at and (c.error is None) == ok
        ]
    )


def crashed_by_a_peer(fake: FakePrefectApi, run_id: str) -> None:
    """What a peer that declared this agent lost does to a run it held."""
    fake.set_run_state(
        run_id,
        "CRASHED",
        message="Crashed: the run was held by a lost agent; a peer agent declared it lost.",
    )


@pytest.mark.timeout(30)
def test_no_run_is_taken_while_the_heartbeat_lease_is_lapsed(
    fake: FakePrefectApi, start: Start, runs_dir: Path
) -> None:
    """Polls 60 s apart and the lease on a ManualClock: once heartbeats get through again, the
    run found while the lease had lapsed starts at once, not at the next poll."""
    fake.add_queue("default")
    cut_off = heartbeats_fail_while(fake)
    clock = ManualClock()
    handle = start(clock=clock, heartbeat_seconds=0.5, lost_agent_seconds=1.5)
    wait_until(lambda: heartbeats_answered(fake), 5, "a heartbeat to get through")
    cut_off.set()
    # The lease lapses 1.5 - 0.5 s after the last renewal; the fake answered that heartbeat,
    # but on a busy machine the Heartbeat may take its answer after a first advance, so the
    # clock moves on by half-intervals until the tree shows the lapse.
    for _ in range(10):
        clock.advance(0.5)
        with contextlib.suppress(AssertionError):
            wait_until(lambda: lease_lapsed(handle), 1.0, "the tree to show the lapse")
            break
    assert lease_lapsed(handle), "the lease never lapsed with every heartbeat failing"

    run = fake.add_run(fake.add_deployment(run_command(runs_dir)))
    clock.advance(60)  # the watcher's next poll: the Dispatcher gives it no room
    wait_until(
        lambda: (w := node(handle.tree(), "QueueWatcher")) and w.state == "waiting for a free slot",
        5,
        "the watcher to be given no room",
    )
    assert fake.proposals(run.id) == [], "a run was proposed Pending while the lease had lapsed"
    assert fake.state(run.id).type == SCHEDULED

    cut_off.clear()
    for _ in range(10):  # heartbeats are retried within a second of the agent's clock
        clock.advance(0.5)
        with contextlib.suppress(AssertionError):
            wait_until(lambda: fake.proposals(run.id, PENDING), 1.0, "the run's Pending")
            break
    assert clock.now < 120, "the run waited for the watcher's next scheduled poll"
    started_pid(runs_dir, run.id)
    assert not lease_lapsed(handle)
    assert len(fake.proposals(run.id, PENDING)) == 1


@pytest.mark.timeout(30)
def test_a_run_a_peer_recovered_is_killed_at_the_first_heartbeat_back_whatever_recovery_saw(
    fake: FakePrefectApi, start: Start, runs_dir: Path
) -> None:
    """Cut off long enough for a peer to recover its run, every one of its own rounds failing
    too: the heartbeat that gets through first is the fence, with no round of Recovery's
    in between (the clock does not move after it)."""
    fake.add_queue("default")
    run = fake.add_run(fake.add_deployment(run_command(runs_dir)))
    cut_off = cut_off_whole(fake)
    clock = ManualClock()
    start(clock=clock, heartbeat_seconds=1.0, lost_agent_seconds=3.0)
    pid = started_pid(runs_dir, run.id)
    wait_until(lambda: pid_recorded(fake, run.id), 5, "the pid recorded")
    wait_until(lambda: heartbeats_answered(fake), 5, "a heartbeat to get through")

    cut_off.set()
    for _ in range(12):  # two lost windows; every heartbeat and round fails meanwhile
        clock.advance(0.5)
        time.sleep(0.01)  # lets the heartbeat's answer reach its inbox between two advances
    assert heartbeats_answered(fake, ok=False) >= 2
    crashed_by_a_peer(fake, run.id)
    assert group_members(pid), "cut off, the agent cannot know yet"

    cut_off.clear()
    healed = heartbeats_answered(fake)
    clock.advance(1.0)  # the next heartbeat is due within one interval
    wait_until(lambda: heartbeats_answered(fake) > healed, 5, "a heartbeat to get through")
    wait_until(lambda: not group_members(pid), 5, "the recovered run's process to be killed")
    assert fake.state(run.id).type == "CRASHED"  # the peer's state stands; nothing reported


@pytest.mark.timeout(30)
def test_a_heartbeat_held_through_a_partition_and_let_through_late_still_fences(
    fake: FakePrefectApi, start: Start, runs_dir: Path
) -> None:
    """No heartbeat fails: the network holds one until after the lease lapsed, then lets it
    through. Its renewal ends a break all the same, and the run a peer recovered is killed."""
    fake.add_queue("default")
    run = fake.add_run(fake.add_deployment(run_command(runs_dir)))
    clock = ManualClock()
    start(clock=clock, heartbeat_seconds=1.0, lost_agent_seconds=3.0)
    pid = started_pid(runs_dir, run.id)
    wait_until(lambda: pid_recorded(fake, run.id), 5, "the pid recorded")
    wait_until(lambda: heartbeats_answered(fake), 5, "a heartbeat to get through")

    held = fake.hang("send_worker_heartbeat")
    clock.advance(1.0)  # the next heartbeat is sent, and held
    wait_until(lambda: fake.blocked("send_worker_heartbeat"), 5, "a heartbeat held")
    clock.advance(5.0)  # past the lapse; the held heartbeat is still in flight
    crashed_by_a_peer(fake, run.id)
    assert group_members(pid)

    held.release()  # the partition heals: the held heartbeat goes through, late
    wait_until(lambda: not group_members(pid), 5, "the recovered run's process to be killed")
    assert fake.state(run.id).type == "CRASHED"


@pytest.mark.timeout(30)
def test_a_process_whose_pid_is_not_recorded_is_killed_as_the_lease_lapses(
    fake: FakePrefectApi, start: Start, runs_dir: Path
) -> None:
    """A peer will hand back a run whose pid it cannot see: the process must not outlive the
    lease, and the kill comes at the lapse on the agent's clock, not a poll later."""
    fake.add_queue("default")
    run = fake.add_run(fake.add_deployment(run_command(runs_dir)))
    cut_off = heartbeats_fail_while(fake)
    fake.hang("set_infrastructure_pid")
    clock = ManualClock()
    start(clock=clock, heartbeat_seconds=1.0, lost_agent_seconds=3.0)
    pid = started_pid(runs_dir, run.id)
    wait_until(lambda: heartbeats_answered(fake), 5, "a heartbeat to get through")

    cut_off.set()
    clock.advance(1.9)  # the lease holds until 2.0 (3 - 1 after the first send)
    wait_until(lambda: heartbeats_answered(fake, ok=False), 5, "a heartbeat to fail")
    assert group_members(pid)
    clock.advance(0.1)
    wait_until(lambda: not group_members(pid), 5, "the unrecorded process to be killed")
    assert fake.state(run.id).type == PENDING  # nothing reported: a peer hands it back


class _Inbox(pykka.ThreadingActor):
    """Keeps what it is told, for a test to read."""

    def __init__(self) -> None:
        super().__init__()
        self.told: list[object] = []

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, str) and message == "told":
            return list(self.told)
        self.told.append(message)
        return None


@pytest.mark.timeout(30)
def test_a_run_whose_pending_is_with_the_server_is_not_among_those_checked_after_a_cut_off(
    fake: FakePrefectApi, start: Start, runs_dir: Path
) -> None:
    """Read back while its Pending is in flight, the run is Scheduled with no claim of ours: a
    check after a cut-off would relinquish it, and the Pending that lands then would leave it
    Pending with no process. Only runs past their Pending are checked."""
    fake.add_queue("default")
    run = fake.add_run(fake.add_deployment(run_command(runs_dir)))
    gate = fake.hang("set_state", when=lambda call: call.params.get("flow_run_id") == run.id)
    start()
    wait_until(lambda: fake.calls("set_state", run_id=run.id), 5, "the run's Pending")
    (dispatcher,) = pykka.ActorRegistry.get_by_class(Dispatcher)
    inbox = _Inbox.start()
    try:

        def answer() -> HeldRunsAre | None:
            dispatcher.tell(HeldRunIds(inbox))
            told = [m for m in inbox.ask("told") if isinstance(m, HeldRunsAre)]
            return told[-1] if told else None

        assert wait_until(answer, 5, "the Dispatcher's answer").flow_run_ids == ()
        gate.release()
        started_pid(runs_dir, run.id)
        wait_until(lambda: (a := answer()) and a.flow_run_ids == (run.id,), 5, "run settled")
    finally:
        inbox.stop()


# -- l. a pool's other agents share a queue's runs only once they take some of them ------------


@pytest.mark.timeout(30)
def test_other_agents_of_the_pool_delay_nothing_until_one_takes_a_run_of_the_queue(
    fake: FakePrefectApi, start: Start
) -> None:
    """On 2.x every plain queue's agent is a worker of `default-agent-pool`, and a stopped one
    stays listed ONLINE for a while: an agent alone on its queue must not hold back the runs
    that a share would give those others (five seconds' grace each)."""
    fake.add_queue("default")
    fake.add_worker("default-agent-pool", "actor-agent@elsewhere another-queue")
    start(clock=Clock(), query_interval=0.5)
    wait_until(
        lambda: any(c.answered_at and not c.error for c in fake.calls("read_workers")),
        10,
        "the peer to be read",
    )
    deployment = fake.add_deployment(["true"])
    runs = [fake.add_run(deployment) for _ in range(40)]
    added = time.monotonic()
    wait_until(
        lambda: all(fake.proposals(run.id, PENDING) for run in runs), 10, "every run proposed"
    )
    last = max(fake.proposals(run.id, PENDING)[0].at for run in runs)
    assert last - added < 3.0, f"the last Pending came {last - added:.1f}s after the runs"


@pytest.mark.timeout(30)
def test_the_live_peers_are_read_only_once_a_race_is_lost(
    fake: FakePrefectApi, start: Start
) -> None:
    """Sharing no queue, a Recovery round reads only the rows of peers that may be lost (a
    heartbeat older than the lost window): in a pool of 100 live agents, every agent reading
    all 100 rows every heartbeat was the dearest of their idle requests. A race lost makes
    the live peers wanted, and read, at once."""
    fake.add_queue("default")
    peer = AgentIdentity("actor-agent@elsewhere default", "peerlife", "elsewhere", 4242)
    fake.add_worker("default-agent-pool", peer.name)
    first = fake.add_run(fake.add_deployment(["true"]))
    held = fake.hang("set_state", when=is_pending)
    start(clock=Clock(), query_interval=0.5)
    wait_until(lambda: fake.calls("read_workers"), 10, "the first Recovery round")
    wait_until(lambda: fake.blocked("set_state"), 5, "our Pending held at the server")
    assert all(c.params["heartbeat_before"] is not None for c in fake.calls("read_workers"))
    lost_race = time.monotonic()
    fake.set_run_state(first.id, PENDING, message=claim_message(peer))  # the peer was first
    held.release()
    wait_until(
        lambda: [c for c in fake.calls("read_workers") if c.params["heartbeat_before"] is None],
        5,
        "the live peers read",
    )
    everyone = [c for c in fake.calls("read_workers") if c.params["heartbeat_before"] is None]
    assert everyone[0].at - lost_race < 2.0


# -- m. a child whose start-up fails is restarted like any other that fails ---------------------


def restarted(handle: AgentHandle, kind: str, restarts: int) -> ActorNode | None:
    """The child's node once the tree counts `restarts` restarts of it."""
    shown = node(handle.tree(), kind)
    return shown if shown is not None and shown.restarts == restarts else None


def failed_once_at_start(
    start: Start, clock: ManualClock, actors: ChildActors, kind: str
) -> tuple[AgentHandle, ActorNode]:
    """An agent whose child of `kind` (a FaultyStart fake) failed its first start-up, and
    that child's node once the tree counts the failure."""
    handle = start(clock=clock, actors=actors)
    failed = wait_until(lambda: restarted(handle, kind, 1), 5, "the failure counted")
    assert f"injected fault: the start-up of {kind}" in (failed.last_failure or ""), failed
    return handle, failed


@pytest.mark.timeout(30)
def test_a_queue_watcher_whose_start_up_fails_is_restarted_and_polls(
    fake: FakePrefectApi, start: Start
) -> None:
    fake.add_queue("default")
    watcher = faulty_start(QueueWatcher, times=1)
    clock = ManualClock()
    actors = ChildActors(queue_watcher=watcher)
    handle, failed = failed_once_at_start(start, clock, actors, "QueueWatcher")
    assert failed.state == "restarting", failed
    assert fake.calls("read_work_queue_by_name") == [], "the failed life polled"

    run = fake.add_run(fake.add_deployment(["true"]))
    clock.advance(1.0)  # the restart's backoff
    wait_until(lambda: fake.proposals(run.id, PENDING), 5, "the restarted watcher to take the run")
    shown = restarted(handle, "QueueWatcher", 1)
    assert shown is not None and shown.state.startswith("idle, last poll found 1 run(s)"), shown
    assert watcher.faults.raised == 1


@pytest.mark.timeout(30)
def test_a_dispatcher_whose_start_up_fails_is_restarted_and_admits_runs(
    fake: FakePrefectApi, start: Start
) -> None:
    fake.add_queue("default")
    dispatcher = faulty_start(Dispatcher, times=1)
    clock = ManualClock()
    handle, _ = failed_once_at_start(start, clock, ChildActors(dispatcher=dispatcher), "Dispatcher")

    run = fake.add_run(fake.add_deployment(["true"]))
    clock.advance(1.0)  # the restart's backoff
    wait_until(
        lambda: (d := restarted(handle, "Dispatcher", 1)) and d.state == "0 run(s) in flight",
        5,
        "the restarted Dispatcher to answer in the tree",
    )
    clock.advance(60)  # the watcher's next poll: its first found no Dispatcher to answer it
    wait_until(lambda: fake.proposals(run.id, PENDING), 5, "the run to be admitted")
    assert len(fake.proposals(run.id, PENDING)) == 1
    assert dispatcher.faults.raised == 1


@pytest.mark.timeout(30)
def test_a_child_whose_start_up_always_fails_makes_the_agent_give_up_within_the_intensity(
    fake: FakePrefectApi, start: Start
) -> None:
    fake.add_queue("default")
    clock = ManualClock()
    watcher = faulty_start(QueueWatcher, times=10**6)
    handle = start(clock=clock, actors=ChildActors(queue_watcher=watcher), max_restarts=2)

    def gave_up() -> str | None:
        clock.advance(1.0)  # every restart's backoff comes due in time
        return handle.failure

    failure = wait_until(gave_up, 10, "the agent to give up")
    assert "3 failures within 60s (at most 2 restarts allowed)" in failure, failure
    assert watcher.faults.raised == 3


# -- m. a pool of a type this agent cannot run ------------------------------------------------


@pytest.mark.timeout(30)
def test_a_pool_of_a_type_the_agent_cannot_run_is_refused_and_none_of_its_runs_taken(
    fake: FakePrefectApi, start: Start, runs_dir: Path, request: pytest.FixtureRequest
) -> None:
    """A Prefect 3 pool of type kubernetes names pods, which this agent cannot make: its runs
    must never start as local processes (nor as containers). The agent says so in its tree
    and /healthz, and takes none of them."""
    fake.add_pool("pods", type_="kubernetes")
    fake.add_queue("default", pool="pods")
    run = fake.add_run(fake.add_deployment(run_command(runs_dir)), pool="pods")
    clock = ManualClock()
    handle = start(clock=clock, work_pool="pods")
    status = StatusServer(handle).start()
    request.addfinalizer(status.stop)
    watcher = wait_until(
        lambda: (
            (w := node(handle.tree(), "QueueWatcher", "default"))
            and w.state.startswith("refused")
            and w
        ),
        5,
        "the watcher to refuse the pool",
    )
    assert "of type 'kubernetes'" in watcher.detail["refused"]
    clock.advance(60)  # polls come round: still nothing taken
    wait_until(lambda: fake.calls("read_work_pool")[1:], 5, "the pool read again")
    assert fake.proposals(run.id) == []
    assert fake.state(run.id).type == SCHEDULED
    body = httpx.get(f"http://{status.host}:{status.port}/healthz", timeout=5).text
    assert "work pool 'pods' (kubernetes): refused: " in body, body


@pytest.mark.timeout(30)
def test_a_process_pool_is_served_and_says_so(
    fake: FakePrefectApi, start: Start, runs_dir: Path, request: pytest.FixtureRequest
) -> None:
    fake.add_pool("local", type_="process")
    fake.add_queue("default", pool="local")
    run = fake.add_run(fake.add_deployment(run_command(runs_dir)), pool="local")
    handle = start(work_pool="local")
    status = StatusServer(handle).start()
    request.addfinalizer(status.stop)
    started_pid(runs_dir, run.id)
    body = httpx.get(f"http://{status.host}:{status.port}/healthz", timeout=5).text
    assert "work pool 'local' (process): served" in body, body


# -- m. the infrastructure seam: a kind the supervisor drives without knowing it ------------------


def fake_deployment(fake: FakePrefectApi) -> Any:
    return fake.add_deployment(None, block_data={"type": "fake"})


@pytest.mark.timeout(30)
def test_a_kind_that_knows_its_pid_before_the_start_has_it_recorded_first(
    fake: FakePrefectApi, start: Start
) -> None:
    """No window in which the run's infrastructure runs and the server cannot say where."""
    fake.add_queue("default")
    run = fake.add_run(fake_deployment(fake))
    kind = FakeInfrastructure(pid_before_start=True)
    events: list[object] = []
    start(infrastructures=(kind,), listeners=(Recorder.start(events),))
    job = kind.job(run.id)
    wait_until(lambda: job.started_at, 5, "the fake job to start")
    recorded = [c for c in fake.calls("set_infrastructure_pid", run_id=run.id) if c.answered]
    assert recorded and recorded[0].params["infrastructure_pid"] == f"fake:{run.id}"
    assert recorded[0].answered_at is not None and job.started_at is not None
    assert recorded[0].answered_at <= job.started_at, "started before its pid was recorded"
    started = wait_until(
        lambda: next((e for e in list(events) if isinstance(e, RunStarted)), None),
        5,
        "the RunStarted event",
    )
    assert started.infrastructure_pid == f"fake:{run.id}"

    job.end(ExitStatus(0))
    wait_until(lambda: exited(events, run.id), 5, "the run to end")
    assert job.events == ["create", "start", "after_exit"]
    assert len(fake.calls("set_infrastructure_pid", run_id=run.id)) == 1


@pytest.mark.timeout(30)
def test_a_cancel_terminates_then_kills_after_the_grace_on_the_agents_clock(
    fake: FakePrefectApi, start: Start
) -> None:
    fake.add_queue("default")
    run = fake.add_run(fake_deployment(fake))
    kind = FakeInfrastructure(pid_before_start=False, obeys_terminate=False)
    clock = ManualClock()
    handle = start(clock=clock, infrastructures=(kind,), cancel_grace_seconds=30)
    job = kind.job(run.id)
    wait_until(lambda: pid_recorded(fake, run.id), 5, "the pid recorded after the start")

    handle.cancel(run.id)
    clock.wait_for_timer(lambda timer: isinstance(timer.message, GraceExpired), timeout=5)
    wait_until(lambda: "terminate" in job.events, 5, "the terminate")
    clock.advance(29)
    assert job.running, "killed before its grace period had passed"
    clock.advance(1)
    wait_until(lambda: fake.state(run.id).type == CANCELLED, 5, "the run to be Cancelled")
    assert job.events == ["create", "start", "terminate", "grace_over", "after_exit"]
    assert "killed after the grace period" in (fake.state(run.id).message or "")


@pytest.mark.timeout(30)
def test_the_cause_of_a_non_zero_exit_reaches_the_crashed_message(
    fake: FakePrefectApi, start: Start
) -> None:
    fake.add_queue("default")
    run = fake.add_run(fake_deployment(fake))
    kind = FakeInfrastructure()
    start(infrastructures=(kind,))
    job = kind.job(run.id)
    wait_until(lambda: job.started_at, 5, "the fake job to start")
    job.end(ExitStatus(137, "out of memory (mem_limit 64m)"))
    wait_until(lambda: fake.state(run.id).type == CRASHED, 5, "the run to be Crashed")
    message = fake.state(run.id).message or ""
    assert "non-zero status code 137: out of memory (mem_limit 64m)" in message, message


@pytest.mark.timeout(30)
def test_a_block_of_a_kind_the_agent_does_not_hold_fails_its_run_with_the_reason(
    fake: FakePrefectApi, start: Start
) -> None:
    """The kinds come from the agent: a fake-only agent refuses a Process block, by type."""
    fake.add_queue("default")
    run = fake.add_run(fake.add_deployment(["true"]))
    start(infrastructures=(FakeInfrastructure(),))
    wait_until(lambda: fake.state(run.id).type == "FAILED", 5, "the run to fail")
    message = fake.state(run.id).message or ""
    assert "of type 'process', which this agent cannot run (supported: fake)" in message, message


@pytest.mark.timeout(30)
def test_a_pending_an_earlier_life_left_after_the_first_look_is_found_by_the_second(
    fake: FakePrefectApi, start: Start
) -> None:
    """A killed life's last Pending proposal, applied by a busy server after the restarted
    agent's first look for what it left: the second look, 10 s later on the agent's clock,
    hands the run back to its queue (without it, the run stayed Pending, claimed by no one)."""
    fake.add_queue("default")
    clock = ManualClock()
    handle = start(clock=clock)
    wait_until(lambda: fake.calls("runs_in_states"), 5, "the first look")
    run = fake.add_run(fake.add_deployment(["true"]), state_type=SCHEDULED, scheduled_in=3600)
    me = handle.ctx.identity
    gone = subprocess.Popen(["true"])
    gone.wait()  # the earlier life's process has exited
    earlier = AgentIdentity(me.name, "earlierlife", me.host, gone.pid)
    fake.set_run_state(run.id, PENDING, message=claim_message(earlier))
    clock.advance(9.0)
    assert len(fake.calls("runs_in_states")) == 1  # no second look yet
    clock.advance(1.0)
    wait_until(lambda: fake.state(run.id).type == SCHEDULED, 5, "the run to be handed back")


def run_held_at_pending(fake: FakePrefectApi) -> tuple[Any, FakeInfrastructure, Any]:
    """A run of the fake kind whose Pending proposal the server holds until released."""
    fake.add_queue("default")
    run = fake.add_run(fake_deployment(fake))
    kind = FakeInfrastructure(pid_before_start=True)
    return run, kind, fake.hang("set_state", when=is_pending)


@pytest.mark.timeout(30)
def test_the_infrastructure_is_created_while_pending_is_with_the_server_and_started_after_it(
    fake: FakePrefectApi, start: Start
) -> None:
    """Pending to running costs only the pid's record and the start: the run's
    infrastructure is resolved and created (not started) while the server weighs Pending."""
    run, kind, pending = run_held_at_pending(fake)
    start(infrastructures=(kind,))
    job = kind.job(run.id)  # created while Pending is held
    assert fake.blocked("set_state")
    assert job.events == ["create"] and fake.calls("set_infrastructure_pid") == []
    pending.release()
    wait_until(lambda: job.started_at, 5, "the fake job to start")
    recorded = [c for c in fake.calls("set_infrastructure_pid", run_id=run.id) if c.answered]
    assert recorded and recorded[0].answered_at is not None
    assert recorded[0].answered_at <= job.started_at, "started before its pid was recorded"
    job.end(ExitStatus(0))


@pytest.mark.timeout(30)
def test_a_refused_pending_removes_what_was_created_ahead_and_starts_nothing(
    fake: FakePrefectApi, start: Start
) -> None:
    """Another agent's Pending wins while ours is with the server: what was created ahead is
    removed, never started, and no pid is recorded."""
    run, kind, pending = run_held_at_pending(fake)
    start(infrastructures=(kind,))
    job = kind.job(run.id)
    fake.set_run_state(run.id, PENDING, message="Taken by another agent.")
    pending.release()
    wait_until(lambda: "after_exit" in job.events, 5, "what was created to be removed")
    assert job.events == ["create", "after_exit"]
    assert fake.calls("set_infrastructure_pid") == []


@pytest.mark.timeout(30)
def test_a_cancel_while_pending_removes_what_was_created_ahead(
    fake: FakePrefectApi, start: Start
) -> None:
    run, kind, pending = run_held_at_pending(fake)
    handle = start(infrastructures=(kind,))
    job = kind.job(run.id)
    handle.cancel(run.id)
    handle.dispatcher.proxy().actor_urn.get(timeout=5)  # the Dispatcher has passed it on
    pending.release()
    wait_until(lambda: fake.state(run.id).type == CANCELLED, 5, "the run to be Cancelled")
    wait_until(lambda: "after_exit" in job.events, 5, "what was created to be removed")
    assert job.events == ["create", "after_exit"]
    assert fake.calls("set_infrastructure_pid") == []


@pytest.mark.timeout(30)
def test_a_run_this_life_ran_is_not_taken_for_one_an_earlier_life_left(
    fake: FakePrefectApi, start: Start
) -> None:
    """A run this agent started whose process exited 0 with no engine to move it on stays
    Pending under this life's claim. The second look for what an earlier life left (10 s
    after the first) leaves it alone: before, it took the run over and reported it Crashed,
    "the agent that started it had stopped unexpectedly", which no agent had (and every such
    run cost the server two reads and a Crashed proposal)."""
    fake.add_queue("default")
    run = fake.add_run(fake.add_deployment(["true"]))
    clock = ManualClock()
    events: list[object] = []
    handle = start(clock=clock, listeners=(Recorder.start(events),))
    wait_until(lambda: exited(events, run.id), 5, "the run's process to exit 0")
    assert fake.state(run.id).type == PENDING  # nothing reported Running: no engine

    second_look(fake, clock)
    handle.tree()  # the Agent has acted on the second look's answer
    handle.dispatcher.proxy().actor_urn.get(timeout=5)  # and the Dispatcher on what it said
    assert run.id not in runs_in_tree(handle.tree())
    assert fake.calls("read_flow_run", run_id=run.id) == []
    assert fake.state(run.id).type == PENDING, fake.history(run.id)


def second_look(fake: FakePrefectApi, clock: ManualClock) -> None:
    """Move the agent's clock to its second look for what an earlier life left, and wait for
    the look's answer."""
    clock.advance(10.0)
    wait_until(
        lambda: len([c for c in fake.calls("runs_in_states") if c.answered]) >= 2,
        5,
        "the second look",
    )


@pytest.mark.timeout(30)
def test_a_run_this_life_is_starting_costs_the_look_for_an_earlier_lifes_no_read(
    fake: FakePrefectApi, start: Start, runs_dir: Path
) -> None:
    """A run this life holds, Pending with its pid not recorded yet (the server slow to take
    it), is this life's by the claim in the state listed: the look for what an earlier life
    left reads no state history for it (in a fleet's drain, every look found dozens)."""
    fake.add_queue("default")
    run = fake.add_run(fake.add_deployment(run_command(runs_dir)))
    recording = fake.hang("set_infrastructure_pid")
    clock = ManualClock()
    start(clock=clock)
    started_pid(runs_dir, run.id)
    wait_until(lambda: fake.blocked("set_infrastructure_pid"), 5, "the pid's record to hang")
    second_look(fake, clock)
    assert fake.calls("read_flow_run_states", run_id=run.id) == []
    recording.release()
    (runs_dir / f"{run.id}.stop").touch()


@pytest.mark.timeout(30)
def test_a_peers_pending_costs_the_look_for_an_earlier_lifes_no_read(
    fake: FakePrefectApi, start: Start
) -> None:
    """A run a live peer took, Pending with its pid not recorded yet, is the peer's by the
    claim in the state listed: neither look for what an earlier life left reads its history
    (in a fleet's drain, the second look found hundreds: 0.13 reads per run taken)."""
    fake.add_queue("default")
    run = fake.add_run(fake.add_deployment(["true"]), state_type=SCHEDULED, scheduled_in=3600)
    peer = AgentIdentity("actor-agent@elsewhere default", "peerlife", "elsewhere", 4242)
    fake.set_run_state(run.id, PENDING, message=claim_message(peer))
    clock = ManualClock()
    start(clock=clock)
    wait_until(lambda: fake.calls("runs_in_states"), 5, "the first look")
    second_look(fake, clock)
    assert fake.calls("read_flow_run_states", run_id=run.id) == []
    assert fake.state(run.id).type == PENDING  # the peer's, left alone


@pytest.mark.timeout(30)
def test_a_run_another_pending_won_is_taken_once_it_is_handed_back_to_its_queue(
    fake: FakePrefectApi, start: Start, runs_dir: Path
) -> None:
    """Another Pending lands first (a peer's, or one a killed earlier life sent as it died):
    this agent's is refused. When that Pending's owner is found gone, the run is handed back,
    Scheduled, and this agent's next poll takes it (it was once remembered as finished for
    good, and the run stayed Scheduled under an agent that found it at every poll)."""
    fake.add_queue("default")
    run = fake.add_run(fake.add_deployment(run_command(runs_dir)))
    gate = fake.hang("set_state", when=lambda call: call.run_id == run.id and is_pending(call))
    clock = ManualClock()
    handle = start(clock=clock)
    wait_until(lambda: fake.blocked("set_state"), 5, "this agent's Pending to hang")
    fake.set_run_state(run.id, PENDING, message="another agent's claim")
    gate.release()
    wait_until(lambda: [c for c in fake.proposals(run.id, PENDING) if c.answered], 5, "answer")
    wait_until(lambda: run.id not in runs_in_tree(handle.tree()), 5, "the refused run to go")
    assert not (runs_dir / f"{run.id}.started").exists()

    fake.set_run_state(run.id, SCHEDULED, message="handed back: its agent is lost")
    clock.advance(60.0)  # the next poll
    started_pid(runs_dir, run.id)
    wait_until(lambda: pid_recorded(fake, run.id), 5, "the run's pid on the server")
    (runs_dir / f"{run.id}.stop").touch()
