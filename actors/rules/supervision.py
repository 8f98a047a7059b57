"""Supervision, in the words of Erlang/OTP, in one place.

- Strategy: one-for-one. A child that fails is restarted alone; its siblings go on.
- Restart types: the Agent's children (its watchers, the Dispatcher, the Heartbeat, Recovery,
  the EventListener, the QueueMatcher) are *permanent*: always restarted, whether they fail in
  their start-up or later (`actors.tree.permanent`). RunSupervisors are *temporary*: never
  restarted, because a
  run cannot be submitted twice; when one fails, the Dispatcher hands its still-running
  process to a replacement that watches it by pid (see `RunSupervisor`).
- Restart intensity: at most `max_restarts` restarts within `window_seconds`, across all of a
  supervisor's children. One more and the supervisor gives up and escalates: the Agent takes
  no more runs and tells its holder, and the launcher exits non-zero with the reason in the
  log, as a crashed service should.
- Backoff: a child's restart waits `base * 2^(n-1)` seconds (capped), n = its recent failures:
  the agent's one retry policy (`actors.rules.retry`), without jitter.

This module decides; the Agent acts. Nothing here starts a thread.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from actors.rules.retry import RetryPolicy

PERMANENT = "permanent"
TEMPORARY = "temporary"


class RestartIntensityExceededError(RuntimeError):
    """More restarts than the intensity allows: the supervisor escalates to its parent."""


@dataclass(frozen=True)
class RestartPolicy:
    max_restarts: int = 10
    window_seconds: float = 60.0
    backoff_base: float = 1.0
    backoff_max: float = 60.0


@dataclass
class ChildRecord:
    """What a supervisor remembers of one child, and shows in the tree."""

    kind: str
    name: str
    restart: str = PERMANENT
    restarts: int = 0
    last_failure: str | None = None
    failures: deque[float] = field(default_factory=deque)  # times of recent failures


@dataclass
class Supervisor:
    """The restart decisions of one supervising actor over its children."""

    policy: RestartPolicy = field(default_factory=RestartPolicy)
    children: dict[tuple[str, str], ChildRecord] = field(default_factory=dict)
    recent: deque[float] = field(default_factory=deque)  # every restart, for the intensity

    def record(self, kind: str, name: str, restart: str = PERMANENT) -> ChildRecord:
        return self.children.setdefault((kind, name), ChildRecord(kind, name, restart))

    def forget(self, kind: str, name: str) -> None:
        self.children.pop((kind, name), None)

    def total_restarts(self) -> int:
        return sum(child.restarts for child in self.children.values())

    def child_failed(self, kind: str, name: str, error: str, now: float) -> float:
        """Record a failure; the delay before the restart, or raise to escalate."""
        policy = self.policy
        child = self.record(kind, name)
        child.last_failure = error
        window_start = now - policy.window_seconds
        while self.recent and self.recent[0] < window_start:
            self.recent.popleft()
        while child.failures and child.failures[0] < window_start:
            child.failures.popleft()
        if len(self.recent) >= policy.max_restarts:
            raise RestartIntensityExceededError(
                f"{len(self.recent) + 1} failures within {policy.window_seconds:.0f}s "
                f"(at most {policy.max_restarts} restarts allowed); last: {kind} {name!r} "
                f"failed with {error}"
            )
        self.recent.append(now)
        child.failures.append(now)
        child.restarts += 1
        backoff = RetryPolicy(policy.backoff_base, policy.backoff_max, jitter=False)
        return backoff.delay(len(child.failures))
