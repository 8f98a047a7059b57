"""The agent's settings, read from the same environment variables as Prefect's own agent.

Flags of the launcher override the environment; everything has the official default so that
replacing `prefect agent start` with this agent changes nothing a user has configured.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

EVENT_MODES = ("auto", "off")


class SettingsError(ValueError):
    """A setting that cannot be used, with the variable's name in the message."""


class AgentSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the actor tree needs to know; immutable, shared by every actor."""

    api_url: str  # e.g. http://127.0.0.1:4200/api
    api_key: str | None = msgspec.field(default=None)  # never logged; see __repr__
    work_queues: tuple[str, ...] = ()  # exact queue names (-q)
    queue_prefixes: tuple[str, ...] = ()  # prefix mode (-m): watch every queue whose name matches
    # -p (repeatable): the queues are those of these work pools (with no -q or -m: every queue
    # of each); -q and -m apply to every pool given. One agent, one Dispatcher: `limit` counts
    # the runs of every pool together.
    work_pools: tuple[str, ...] = ()
    limit: int | None = None  # most runs in flight at once, all pools together; None: unlimited
    prefetch_seconds: float = 15.0  # take runs scheduled up to this far ahead
    query_interval: float = 15.0  # seconds between polls of an idle queue
    rematch_interval: float = 30.0  # prefix mode: seconds between re-reads of matching queues
    run_once: bool = False  # one poll per queue, then finish the runs taken and stop
    api_concurrency: int = 8  # most requests in flight towards the server at once
    api_timeout: float = 30.0  # seconds to wait for one answer of the server
    max_restarts: int = 10  # restart intensity: at most this many child restarts ...
    restart_window_seconds: float = 60.0  # ... within this window, or the agent gives up
    restart_backoff_seconds: float = 1.0  # first restart delay of a child; doubles each time
    cancel_grace_seconds: float = 30.0  # SIGTERM -> SIGKILL delay when a run is cancelled
    cancel_poll_interval: float = 2.0  # seconds between looks for runs to cancel
    shutdown_grace_seconds: float = 5.0  # SIGTERM -> SIGKILL delay for runs when the agent stops
    # -n/--name: how the server lists this agent as a worker and its runs name their holder;
    # None: derived from the host and what it serves (the same at every start).
    name: str | None = None
    heartbeat_seconds: float = 30.0  # seconds between worker heartbeats, as Prefect's workers
    # A peer whose heartbeat is older than this is lost and its runs are recovered; at least
    # three heartbeat intervals, the rule by which Prefect 3 marks a worker OFFLINE.
    lost_agent_seconds: float = 90.0
    # --events: "auto" uses the server's event stream where it has one (runs and cancellations
    # picked up as the server announces them), polling otherwise; "off" only polls.
    events: str = "auto"
    # The cancel filter poll's pace while the event stream is healthy (its safety net);
    # cancel_poll_interval applies while polling.
    stream_cancel_poll_interval: float = 30.0
    event_ping_seconds: float = 10.0  # a quiet stream is pinged; no answer within as long: gone
    event_reconnect_max_seconds: float = 30.0  # reconnect backoff: 1 s, doubling up to this

    def __repr__(self) -> str:
        key = "'***'" if self.api_key else "None"
        return (
            f"AgentSettings(api_url={self.api_url!r}, api_key={key}, "
            f"work_queues={self.work_queues!r}, queue_prefixes={self.queue_prefixes!r}, "
            f"work_pools={self.work_pools!r}, "
            f"limit={self.limit!r}, prefetch_seconds={self.prefetch_seconds!r}, "
            f"query_interval={self.query_interval!r}, run_once={self.run_once!r}, "
            f"events={self.events!r})"
        )

    __str__ = __repr__

    def __post_init__(self) -> None:
        if not self.api_url:
            raise SettingsError("no Prefect API URL: set PREFECT_API_URL or pass --api")
        if self.limit is not None and self.limit < 1:
            raise SettingsError(f"--limit must be at least 1, got {self.limit}")
        if self.query_interval <= 0:
            raise SettingsError(
                f"PREFECT_AGENT_QUERY_INTERVAL must be positive, got {self.query_interval}"
            )
        if self.prefetch_seconds < 0:
            raise SettingsError(
                f"prefetch seconds must not be negative, got {self.prefetch_seconds}"
            )
        if not self.work_queues and not self.queue_prefixes and not self.work_pools:
            raise SettingsError(
                "no work queue: name one with -q, a prefix with -m, or a work pool with -p"
            )
        if any(not pool.strip() for pool in self.work_pools):
            raise SettingsError("--pool needs a work pool name")
        if len(set(self.work_pools)) != len(self.work_pools):
            raise SettingsError(f"--pool names a work pool twice: {', '.join(self.work_pools)}")
        if self.heartbeat_seconds <= 0:
            raise SettingsError(
                f"--heartbeat-seconds must be positive, got {self.heartbeat_seconds}"
            )
        if self.lost_agent_seconds < 3 * self.heartbeat_seconds:
            raise SettingsError(
                f"--lost-agent-seconds ({self.lost_agent_seconds:g}) must be at least three "
                f"heartbeat intervals ({3 * self.heartbeat_seconds:g}): one late heartbeat must "
                "not make a live agent lost"
            )

        if self.events not in EVENT_MODES:
            raise SettingsError(
                f"--events must be one of {', '.join(EVENT_MODES)}, got {self.events!r}"
            )
        for flag, value in (
            ("--stream-cancel-poll-interval", self.stream_cancel_poll_interval),
            ("--event-ping-seconds", self.event_ping_seconds),
        ):
            if value <= 0:
                raise SettingsError(f"{flag} must be positive, got {value:g}")
        if self.event_reconnect_max_seconds < 1:
            raise SettingsError(
                "the event stream's reconnect backoff must reach at least 1 s, got "
                f"{self.event_reconnect_max_seconds:g}"
            )

    @property
    def pools(self) -> tuple[str | None, ...]:
        """The pools whose queues are served: those given with -p, or `None` alone (plain
        queues, which belong to no pool the agent names)."""
        return self.work_pools or (None,)

    @property
    def several_pools(self) -> bool:
        return len(self.work_pools) > 1

    def watcher_name(self, pool: str | None, queue: str) -> str:
        """A queue's watcher's name (in the tree, and to the Dispatcher): the queue's name, as
        ever, unless the agent serves several pools, where every pool may have a queue of
        that name (each has its own "default"): then `pool/queue`."""
        return f"{pool}/{queue}" if self.several_pools and pool is not None else queue

    @property
    def follows_queues(self) -> bool:
        """Whether the set of watched queues is re-read: a prefix, or a whole pool."""
        return bool(self.queue_prefixes) or (bool(self.work_pools) and not self.work_queues)

    def followed(self) -> str:
        """The queues followed by re-reading, in words: "work pool 'p'", "queues matching
        'a'*", "queues matching 'a'* in work pools 'p', 'q'"."""
        where = _pools(self.work_pools)
        if self.queue_prefixes:
            matching = f"queues matching {_prefixes(self.queue_prefixes)}"
            return f"{matching} in {where}" if where else matching
        return where

    def describe_queues(self) -> str:
        """What the agent serves, in words, for the line it logs as it starts."""
        parts = [f"queue {name!r}" for name in self.work_queues]
        if self.follows_queues:
            whole = not self.queue_prefixes
            every = "every queue of each of" if self.several_pools else "every queue of"
            parts.append(f"{every} {self.followed()}" if whole else self.followed())
        elif self.several_pools:
            parts = [f"{part} of each of {_pools(self.work_pools)}" for part in parts]
        elif self.work_pools:
            parts = [f"{part} of {_pools(self.work_pools)}" for part in parts]
        limit = ""
        if self.limit is not None:
            limit = f", limit {self.limit}" + (" across the pools" if self.several_pools else "")
        return ", ".join(parts) + limit


def _pools(pools: tuple[str, ...]) -> str:
    """`work pool 'p'`, `work pools 'p', 'q'`; '' for none."""
    if not pools:
        return ""
    names = ", ".join(repr(pool) for pool in pools)
    return f"work pool {names}" if len(pools) == 1 else f"work pools {names}"


def _prefixes(prefixes: tuple[str, ...]) -> str:
    return ", ".join(f"{p!r}*" for p in prefixes)


def _float_from(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, got {raw!r}") from None


def _as_pools(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (tuple, list)):
        return tuple(str(pool) for pool in value)
    raise SettingsError(f"work_pools must be a tuple of pool names, got {value!r}")


def settings_from_env(env: Mapping[str, str] | None = None, **overrides: object) -> AgentSettings:
    """Build settings from Prefect's environment variables; keyword arguments win over them."""
    env = os.environ if env is None else env
    values: dict[str, object] = {
        "api_url": env.get("PREFECT_API_URL", ""),
        "api_key": env.get("PREFECT_API_KEY") or None,
        "query_interval": _float_from(env, "PREFECT_AGENT_QUERY_INTERVAL", 15.0),
        "prefetch_seconds": _float_from(env, "PREFECT_AGENT_PREFETCH_SECONDS", 15.0),
        "cancel_grace_seconds": _float_from(env, "PREFECT_AGENT_CANCEL_GRACE_SECONDS", 30.0),
        "cancel_poll_interval": _float_from(env, "PREFECT_AGENT_CANCEL_POLL_SECONDS", 2.0),
        "heartbeat_seconds": _float_from(env, "PREFECT_WORKER_HEARTBEAT_SECONDS", 30.0),
        "lost_agent_seconds": _float_from(env, "PREFECT_ACTOR_AGENT_LOST_SECONDS", 90.0),
        "events": env.get("PREFECT_ACTOR_AGENT_EVENTS") or "auto",
        "stream_cancel_poll_interval": _float_from(
            env, "PREFECT_ACTOR_AGENT_STREAM_CANCEL_POLL_SECONDS", 30.0
        ),
    }
    # One pool, as embedders passed it before pools could be several: `work_pool="p"`.
    pool = overrides.pop("work_pool", None)
    if pool is not None:
        overrides["work_pools"] = (*_as_pools(overrides.get("work_pools")), pool)
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return msgspec.convert(values, AgentSettings)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"invalid agent settings: {exc}") from exc
