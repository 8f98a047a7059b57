"""The agent's lease on its runs: how long it may go on acting for them without the server.

Peers declare an agent lost once its last heartbeat, as the server recorded it, is older than
the lost window, and then recover its runs. So an agent that cannot heartbeat must stop acting
before that: it starts no process, and kills a process whose pid it could not record, once
`lost window - one heartbeat interval` has passed since it SENT its last heartbeat that went
through (a send time is never later than the server's record of it, whatever the answer's
delay). Then a run is never running here and, handed back, elsewhere too.

The Heartbeat actor renews the lease; RunSupervisors, the Recovery actor and the Dispatcher
(which takes no new run without it) read it. It is the
one fact the actors share outside messages, like the metrics: written by one actor, read by
others, a few floats behind a lock. Until the first heartbeat goes through (or on a server
with no pool to heartbeat) there is nothing a peer could judge by, and the lease holds.
"""

from __future__ import annotations

import threading
import time


class Lease:
    def __init__(self, lost_after: float, heartbeat_seconds: float) -> None:
        self.lost_after = lost_after
        self.heartbeat_seconds = heartbeat_seconds
        self._lock = threading.Lock()
        self._last_sent: float | None = None  # monotonic send time of the last heartbeat taken
        self._streak_since: float | None = None  # since when heartbeats went through unbroken

    def renewed(self, sent_at: float) -> None:
        """A heartbeat sent at `sent_at` (monotonic) went through."""
        with self._lock:
            gap = None if self._last_sent is None else sent_at - self._last_sent
            if self._streak_since is None or gap is None or gap > 2 * self.heartbeat_seconds:
                self._streak_since = sent_at
            self._last_sent = sent_at

    def broken(self) -> None:
        """A heartbeat failed: the unbroken streak starts again at the next one that works."""
        with self._lock:
            self._streak_since = None

    def ever_renewed(self) -> bool:
        """Whether a heartbeat ever went through (so a broken streak means cut off)."""
        with self._lock:
            return self._last_sent is not None

    def valid(self, now: float | None = None) -> bool:
        """Whether this agent may still act for its runs (take one, start a process, keep one
        whose pid is not recorded)."""
        with self._lock:
            if self._last_sent is None:
                return True
            moment = time.monotonic() if now is None else now
            return moment < self._last_sent + self.lost_after - self.heartbeat_seconds

    def streak_seconds(self, now: float | None = None) -> float | None:
        """How long heartbeats have gone through without a gap (None: not now)."""
        with self._lock:
            if self._streak_since is None:
                return None
            return (time.monotonic() if now is None else now) - self._streak_since
