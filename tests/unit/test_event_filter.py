"""The event stream's pure rules: the subscription the server applies, and what one event does.

The events below are the shapes the 2.20 (events on) and 3.9 servers sent for a run of a
deployment created due now, then cancelled (captured from both servers; ids shortened).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from actors.edges.event_stream import events_url, shown_url
from actors.rules.event_filter import (
    SUBSCRIBED_EVENTS,
    CancelRun,
    Ignore,
    QueueChanged,
    RecentEvents,
    WakeWatcher,
    decide,
    subscription,
)
from actors.runtime.settings import SettingsError, settings_from_env
from messages.wire.events import EventDecodeError, decode_message

QUEUE_ID = "bcb29042-9acd-4865-bb35-610977efac77"
OTHER_QUEUE_ID = "767fff20-cf18-4ec2-9620-b3f1a5f187d5"
RUN_ID = "feebc495-4f25-447f-8f1c-2b85cd272f18"
SERVED = {QUEUE_ID: "probe-q"}


def stream_message(
    state_name: str,
    state_type: str,
    *,
    queue_id: str = QUEUE_ID,
    server: str = "3.x",
    event_id: str = "01a2328a-8b7c-7282-bbd1-c22f06e4479e",
) -> str:
    """A state-change event as the server sends it (3.x: `Z` times, a run count and the pool's
    type; 2.20: `+00:00` times, a plain queue related to `default-agent-pool`)."""
    occurred = "2026-12-01T16:57:50.204988" + ("Z" if server == "3.x" else "+00:00")
    resource: dict[str, Any] = {
        "prefect.resource.id": f"prefect.flow-run.{RUN_ID}",
        "prefect.resource.name": "private-toad",
        "prefect.state-message": "",
        "prefect.state-name": state_name,
        "prefect.state-timestamp": "2026-12-01T16:57:50.204988+00:00",
        "prefect.state-type": state_type,
    }
    pool: dict[str, Any] = {
        "prefect.resource.id": "prefect.work-pool.8e5f095e-5c2a-44f4-84a8-31155bb0d594",
        "prefect.resource.role": "work-pool",
        "prefect.resource.name": "probe-pool" if server == "3.x" else "default-agent-pool",
    }
    if server == "3.x":
        resource["prefect.run-count"] = "0"
        pool["prefect.work-pool.type"] = "process"
    event = {
        "occurred": occurred,
        "event": f"prefect.flow-run.{state_name}",
        "resource": resource,
        "related": [
            {
                "prefect.resource.id": "prefect.flow.0dd0b383-e3d5-42b2-9dba-98ef71710748",
                "prefect.resource.role": "flow",
                "prefect.resource.name": "probe-flow",
            },
            {
                "prefect.resource.id": "prefect.deployment.f3e4ab5d-b1ec-44f3-a7f4-894b697603b9",
                "prefect.resource.role": "deployment",
                "prefect.resource.name": "d",
            },
            {
                "prefect.resource.id": f"prefect.work-queue.{queue_id}",
                "prefect.resource.role": "work-queue",
                "prefect.resource.name": "probe-q",
            },
            pool,
        ],
        "payload": {
            "intended": {"from": None, "to": state_type},
            "initial_state": None,
            "validated_state": {"type": state_type, "name": state_name},
        },
        "id": event_id,
        "follows": None,
        "received": occurred,
    }
    return json.dumps({"type": "event", "event": event})


def decided(raw: str, served: dict[str, str] = SERVED) -> object:
    message = decode_message(raw)
    assert message.event is not None
    return decide(message.event, served)


@pytest.mark.parametrize("server", ["3.x", "2.20"])
def test_a_scheduled_run_of_a_served_queue_wakes_that_queues_watcher(server: str) -> None:
    assert decided(stream_message("Scheduled", "SCHEDULED", server=server)) == WakeWatcher(
        "probe-q", RUN_ID
    )


def test_a_late_run_wakes_its_watcher_too() -> None:
    assert decided(stream_message("Late", "SCHEDULED")) == WakeWatcher("probe-q", RUN_ID)


@pytest.mark.parametrize("server", ["3.x", "2.20"])
def test_a_cancelling_run_of_a_served_queue_is_to_be_cancelled(server: str) -> None:
    assert decided(stream_message("Cancelling", "CANCELLING", server=server)) == CancelRun(
        RUN_ID, "probe-q"
    )


def test_the_older_cancel_form_cancelled_named_cancelling_is_to_be_cancelled() -> None:
    assert decided(stream_message("Cancelling", "CANCELLED")) == CancelRun(RUN_ID, "probe-q")


def test_an_event_of_a_queue_not_served_does_nothing() -> None:
    raw = stream_message("Scheduled", "SCHEDULED", queue_id=OTHER_QUEUE_ID)
    assert isinstance(decided(raw), Ignore)
    assert isinstance(decided(stream_message("Cancelling", "CANCELLING"), served={}), Ignore)


@pytest.mark.parametrize(
    ("state_name", "state_type"),
    [
        ("Pending", "PENDING"),
        ("Running", "RUNNING"),
        # The engine retries in its own process: a poll then could take the run a second time.
        ("AwaitingRetry", "SCHEDULED"),
        # The server itself just refused the run: waking at once would be refused again.
        ("AwaitingConcurrencySlot", "SCHEDULED"),
        ("Cancelled", "CANCELLED"),
    ],
)
def test_other_state_changes_do_nothing(state_name: str, state_type: str) -> None:
    assert isinstance(decided(stream_message(state_name, state_type)), Ignore)
    assert f"prefect.flow-run.{state_name}" not in SUBSCRIBED_EVENTS


def test_a_served_queue_resumed_or_changed_wakes_its_watcher_and_its_pause_does_not() -> None:
    """A queue idle by the stream is polled rarely: its resume (or a new priority) must reach
    its watcher by event, within a poll interval."""
    changes = (("ready", True), ("not-ready", True), ("updated", True), ("paused", False))
    for change, woken in changes:
        raw = json.loads(stream_message("Scheduled", "SCHEDULED"))
        raw["event"]["event"] = f"prefect.work-queue.{change}"
        raw["event"]["resource"]["prefect.resource.id"] = f"prefect.work-queue.{QUEUE_ID}"
        decision = decided(json.dumps(raw))
        assert isinstance(decision, QueueChanged if woken else Ignore), change
        raw["event"]["resource"]["prefect.resource.id"] = "prefect.work-queue.not-served"
        assert isinstance(decided(json.dumps(raw)), Ignore)


def test_an_event_of_something_else_does_nothing() -> None:
    raw = json.loads(stream_message("Scheduled", "SCHEDULED"))
    raw["event"]["event"] = "prefect.deployment.updated"
    raw["event"]["resource"]["prefect.resource.id"] = "prefect.deployment.d"
    assert isinstance(decided(json.dumps(raw)), Ignore)


def test_the_subscription_is_the_filter_both_servers_accept() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    sent = json.loads(msgspec.json.encode(subscription([OTHER_QUEUE_ID, QUEUE_ID], now)))
    assert sent["type"] == "filter"
    assert sent["backfill"] is False  # past events are not replayed
    assert set(sent["filter"]) == {"occurred", "event", "any_resource"}
    assert sent["filter"]["any_resource"] == {
        "id": [f"prefect.work-queue.{OTHER_QUEUE_ID}", f"prefect.work-queue.{QUEUE_ID}"]
    }
    assert sent["filter"]["event"] == {
        "name": [
            "prefect.flow-run.Scheduled",
            "prefect.flow-run.Late",
            "prefect.flow-run.Cancelling",
            "prefect.work-queue.ready",
            "prefect.work-queue.not-ready",
            "prefect.work-queue.updated",
        ]
    }
    # Both bounds: the server's default `until` is the moment it reads the filter.
    since = datetime.fromisoformat(sent["filter"]["occurred"]["since"])
    until = datetime.fromisoformat(sent["filter"]["occurred"]["until"])
    assert since < now and (until - now).days > 365


def test_an_event_sent_twice_is_acted_on_once() -> None:
    seen = RecentEvents(size=2)
    assert seen.first_time("a")
    assert not seen.first_time("a")
    assert seen.first_time("b") and seen.first_time("c")
    assert seen.first_time("a")  # forgotten: only the last `size` ids are kept


def test_a_message_that_does_not_decode_says_so() -> None:
    with pytest.raises(EventDecodeError, match="does not decode"):
        decode_message('{"type": "event", "event": {"event": 3}}')
    assert decode_message('{"type":"auth_success"}').type == "auth_success"


def test_the_stream_url_follows_the_api_url_and_is_shown_without_credentials() -> None:
    assert events_url("http://127.0.0.1:4200/api") == "ws://127.0.0.1:4200/api/events/out"
    url = events_url("https://user:secret@api.example.com/api/accounts/a/workspaces/w/")
    assert url == "wss://user:secret@api.example.com/api/accounts/a/workspaces/w/events/out"
    assert shown_url(url) == "wss://api.example.com/api/accounts/a/workspaces/w/events/out"


def test_event_settings_come_from_flags_and_the_environment() -> None:
    base = {"api_url": "http://x/api", "work_queues": ("default",)}
    assert settings_from_env({}, **base).events == "auto"
    env = {
        "PREFECT_ACTOR_AGENT_EVENTS": "off",
        "PREFECT_ACTOR_AGENT_STREAM_CANCEL_POLL_SECONDS": "9",
    }
    settings = settings_from_env(env, **base)
    assert (settings.events, settings.stream_cancel_poll_interval) == ("off", 9.0)
    with pytest.raises(SettingsError, match="--events must be one of auto, off"):
        settings_from_env({}, events="sometimes", **base)
    with pytest.raises(SettingsError, match="--event-ping-seconds must be positive"):
        settings_from_env({}, event_ping_seconds=0, **base)
