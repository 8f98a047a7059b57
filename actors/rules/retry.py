"""The one retry policy of the agent: how long to wait before trying a failed step again.

Every caller that tries again uses it: a server call made off an actor's inbox (`actors.runtime.
calls`), a watcher's poll after an error, and the restart of a failed child. Retries happen in
that one layer; the API edge itself makes a single attempt per call, so delays never stack.

Exponential growth with full jitter (a random delay up to the cap) spreads the agents and runs
that failed together: when a server comes back from an outage it is not met by all of them in
the same instant. A server's `Retry-After` is honoured. Restarts use no jitter: their delay is
shown to an operator and the OTP rule (base * 2^(n-1)) is what they expect.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    base_delay: float = 0.5  # the first retry waits up to this long
    max_delay: float = 15.0  # no wait is longer (but a server's Retry-After, up to 4x this)
    attempts: int | None = None  # tries in all, the first included; None: until it works
    jitter: bool = True

    def delay(
        self,
        failures: int,
        retry_after: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """The wait after the `failures`-th failure in a row (1 for the first)."""
        if retry_after is not None:
            return min(max(0.0, retry_after), self.max_delay * 4)
        cap = min(self.max_delay, self.base_delay * 2 ** max(0, failures - 1))
        return float(cap * rand()) if self.jitter else float(cap)

    def gives_up(self, failures: int) -> bool:
        """Whether `failures` failed tries in a row are all this policy allows."""
        return self.attempts is not None and failures >= self.attempts


# A server call made for a run or the agent: tried again until the server answers, since an
# outcome must never be lost; each wait at most 10 s, so a server that is back is heard soon.
SERVER_CALLS = RetryPolicy(base_delay=0.5, max_delay=10.0)
# A watcher's polls after errors in a row: up to a minute apart.
POLL_ERRORS = RetryPolicy(base_delay=1.0, max_delay=60.0)
# A caller whose next step is its retry (a watcher's next poll, the next rematch): one try.
ONCE = RetryPolicy(attempts=1)
# Leaving the pools at a clean stop: a busy server (a SQLite one answers 503 when its database
# is locked) is tried again a few times, within seconds, since the stop waits for it.
LEAVING = RetryPolicy(base_delay=0.25, max_delay=2.0, attempts=5)
