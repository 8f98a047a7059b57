"""The agent's lease on its runs: how long it may go on acting for them without the server.

Peers declare an agent lost once its last heartbeat, as the server recorded it, is older than
the lost window, and then recover its runs. So an agent that cannot heartbeat must stop acting
before that: it takes no run, starts no process, and kills a process whose pid it could not
record, once `lost window - one heartbeat interval` has passed since it SENT its last
heartbeat that went through (a send time is never later than the server's record of it,
whatever the answer's delay). Then a run is never running here and, handed back, elsewhere too.

And once heartbeats get through again after a break, a peer may have declared this agent lost
and recovered its runs meanwhile: the renewal that ends a break says so (`reconnected`), and
the runs held here are checked against the server. A break is any failed heartbeat, or a
renewal that came back after the lease had lapsed (a request held through a partition and let
through when it healed): whatever the partition did to the connections, the first heartbeat
that goes through afterwards is such a renewal.

Pure: every time is given, on the agent's clock, so tests move it as they move timers. Until
the first heartbeat goes through (or on a server with no pool to heartbeat) there is nothing a
peer could judge by, and the lease holds.
"""

from __future__ import annotations

from messages.internal.lease import LeaseChanged


class Lease:
    """Written by the Heartbeat alone; what it says is told as `LeaseChanged`."""

    def __init__(self, lost_after: float, heartbeat_seconds: float) -> None:
        self.lost_after = lost_after
        self.heartbeat_seconds = heartbeat_seconds
        self.last_sent: float | None = None  # send time of the last heartbeat that went through
        self.streak_since: float | None = None  # since when heartbeats were answered unbroken
        self.broken_since_renewal = False  # a heartbeat failed since the last one went through

    def expires_at(self) -> float | None:
        """When the lease lapses unless renewed (None: it cannot lapse yet)."""
        if self.last_sent is None:
            return None
        return self.last_sent + self.lost_after - self.heartbeat_seconds

    def holds(self, now: float) -> bool:
        """Whether this agent may still act for its runs at `now`."""
        expires = self.expires_at()
        return expires is None or now < expires

    def renewed(self, sent_at: float, answered_at: float) -> LeaseChanged:
        """A heartbeat sent at `sent_at` went through, its answer here at `answered_at`."""
        expires = self.expires_at()
        reconnected = expires is not None and (
            self.broken_since_renewal or answered_at >= expires
        )
        # Unbroken means answered within three intervals of the last send that went through (a
        # beat is sent an interval after the last answer, and each waits at most an interval):
        # a heartbeat the network held longer starts the streak afresh, from when the server
        # was known to answer again.
        gap = None if self.last_sent is None else answered_at - self.last_sent
        if self.streak_since is None or gap is None or gap > 3 * self.heartbeat_seconds:
            self.streak_since = answered_at
        self.last_sent = sent_at
        self.broken_since_renewal = False
        return self.view(answered_at, reconnected)

    def broken(self, now: float) -> LeaseChanged:
        """A heartbeat failed: the unbroken streak starts again at the next one that works."""
        self.streak_since = None
        self.broken_since_renewal = self.last_sent is not None
        return self.view(now)

    def view(self, now: float, reconnected: bool = False) -> LeaseChanged:
        return LeaseChanged(self.holds(now), self.streak_since, reconnected)
