"""Which due runs of a queue this agent proposes, when peers serve the same queue: the
QueueWatcher's decision, kept pure.

Without it every agent of a fleet asks for the same head of the queue and proposes Pending
for the same runs: the server accepts one proposal per run and refuses the rest, and those
refusals (and the polls that brought the runs) were most of what ten agents cost it (4.8
submissions per run taken in the benchmark). So each agent reads a window of due runs as
many times larger than its page as there are live peers, and proposes first the runs it owns:
by rendezvous hashing of (run id, agent name) over the live peers (the pool's ONLINE
workers, handed over by the Dispatcher only for a queue where another agent took a run
first: a pool's workers need not serve this queue), every agent that sees the same peers
gives each run the same owner, with no word between them, and a peer that joins or leaves
moves only the runs it owns.

A peer's run is proposed too once it has waited: each run ranks the live peers by the same
hashing, the owner first, and the peer of rank k proposes it once it has seen it waiting at
the window's head for k graces (the owner is slow, dead, at its limit, or serves other queues
of the pool; see `Share.pick` for why the head). So a run
left over is taken by one peer, its next in rank, and not by every peer that sees it; and
every agent's view of who proposes what stays the same (an agent that set a slow peer aside
on its own would propose that peer's runs at once while the peer and the others still took
them for the peer's: races for as long as it did). When the window was not full the queue is
nearly drained: peers' runs are proposed at once after this agent's own (nothing to share,
and waiting would only delay them), those it ranks nearest first, so that agents filling their
room at a drain's end each take different runs rather than all the same head. A lone agent
reads and proposes exactly as without a share.

The share only orders and spaces proposals; the server's acceptance of one Pending per run
stays the lock, so no run can start twice whatever two agents believe about their peers.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from messages.wire.prefect import FlowRun, Worker

CONTESTED_SECONDS = 120.0  # a queue is shared this long after another agent took a run first
GRACE_SECONDS = 5.0  # a peer's run waits this many times our rank for it before we propose it
MAX_WINDOW = 200  # rows in one read: the server's default page limit
HEAD_ROWS = 8  # a window's head is at least this long (an agent near its limit asks for few)
NOT_AT_HEAD = math.inf  # a peer's run in view but not yet at the window's head: no grace runs
RECORDED_BY_OTHERS_SECONDS = 40.0  # a peer that is not the queue's recorder records this often


def live_peers(
    workers: Iterable[Worker], me: str, now: datetime, lost_after: float
) -> tuple[str, ...]:
    """The names of the pool's live workers (ONLINE; where the server gives no status, a
    heartbeat younger than `lost_after`), this agent always among them, sorted."""
    window = timedelta(seconds=lost_after)
    names = {me}
    for worker in workers:
        if worker.status is not None:
            alive = worker.status == "ONLINE"
        else:
            beat = worker.last_heartbeat_time
            alive = beat is not None and now - beat <= window
        if alive:
            names.add(worker.name)
    return tuple(sorted(names))


def _score(run_id: str, peer: str) -> int:
    digest = hashlib.blake2b(f"{run_id}\0{peer}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(run_id: str, peers: Sequence[str]) -> str:
    """The peer that owns a run: the highest score of (run id, name) (rendezvous hashing)."""
    return max(peers, key=lambda peer: _score(run_id, peer))


def rank(run_id: str, peers: Sequence[str], me: str) -> int:
    """Where `me` stands for a run among the peers, by the same scores: 0 for its owner, k
    for the peer that proposes it once it has waited k graces."""
    mine = _score(run_id, me)
    return sum(1 for peer in peers if peer != me and _score(run_id, peer) > mine)


def window(room: int, sharers: int) -> int:
    """Rows to read for `room` runs when `sharers` agents share the queue: about `room` of
    them are this agent's own."""
    if sharers <= 1:
        return room
    return max(room, min(MAX_WINDOW, room * sharers))


def recorded_poll_interval(query_interval: float, recorder: bool) -> float:
    """How often this agent makes the poll the server records (get_runs: the queue and its
    deployments marked polled, the dearest read of a drain, and in a fleet a window long):
    the queue's recorder (one peer) every query interval, the others only often enough to keep
    the queue READY (the server's rule: polled within a minute) if the recorder is lost."""
    return query_interval if recorder else max(query_interval, RECORDED_BY_OTHERS_SECONDS)


class Contests:
    """Which queues this agent shares with the pool's live agents: those where another agent
    took one of its runs first (a refused Pending) within `lasts` seconds; none before.

    A pool's live workers are not a queue's sharers: on 2.x every plain queue's agent
    heartbeats `default-agent-pool`, so agents that each serve a queue of their own would
    otherwise wait a share's grace for runs that no peer of theirs will ever take (and so
    would an agent started after another, just stopped, that is still listed ONLINE). A race
    lost is the evidence that someone else serves the queue; the share then keeps the races
    rare, and the races that remain renew it."""

    def __init__(self, lasts: float = CONTESTED_SECONDS) -> None:
        self.lasts = lasts
        self.until: dict[str, float] = {}  # queue -> shared until (monotonic)

    def lost(self, queue: str, now: float) -> bool:
        """Another agent took a run of `queue` first; True when that starts the queue's share."""
        starts = queue not in self.until
        self.until[queue] = now + self.lasts
        return starts

    def sharers(
        self, queue: str, peers: tuple[str, ...], now: float
    ) -> tuple[tuple[str, ...], bool]:
        """The peers `queue` is shared with now (none while it is not contested), and whether
        its share lapsed just now (no race lost for `lasts` seconds)."""
        until = self.until.get(queue)
        if until is None:
            return (), False
        if until <= now:
            del self.until[queue]
            return (), True
        return peers, False


class Share:
    """One queue's share for one agent: the live peers, and when each peer's run of the
    window was first seen (monotonic seconds)."""

    def __init__(self, me: str, grace: float = GRACE_SECONDS) -> None:
        self.me = me
        self.grace = grace
        self.peers: tuple[str, ...] = (me,)
        # run id -> (monotonic time first seen at the window's head, or NOT_AT_HEAD; this
        # agent's rank for it among the peers)
        self.first_seen: dict[str, tuple[float, int]] = {}
        self.overdue_taken = 0  # peers' runs proposed after their grace (for the tree)

    def peers_are(self, peers: Iterable[str]) -> None:
        """The live peers as last read; a change of who they are changes every rank."""
        named = tuple(sorted({self.me, *peers}))
        if named != self.peers:
            self.peers = named
            self.first_seen = {
                run_id: (seen, rank(run_id, named, self.me))
                for run_id, (seen, _) in self.first_seen.items()
            }

    def sharers(self) -> tuple[str, ...]:
        """The peers the queue is shared with (this agent among them)."""
        return self.peers

    def records_polls(self, queue_name: str) -> bool:
        """Whether this agent is the queue's recorder: the peer that owns the queue's name."""
        return owner(queue_name, self.peers) == self.me

    def window(self, room: int) -> int:
        """Rows to read for a page of `room` runs."""
        return window(room, len(self.peers))

    def pick(self, runs: Sequence[FlowRun], room: int, full: bool, now: float) -> list[FlowRun]:
        """The runs to propose, at most `room`: this agent's own first, in the window's
        order, then peers' runs it has seen waiting at the window's head (its first `room`
        rows, `HEAD_ROWS` at least) for as many graces as its rank for them (or all of them,
        when the window was not full), by its rank for them.

        A peer's run is timed from when it reaches the head, not from when it came into view:
        a window is ten pages long in a fleet of ten, and where the server is slow (Prefect 3
        takes twice 2.20's time per run) a run takes longer than a grace to cross it while its
        owner takes its own runs from the head as fast as the server lets it. Timed from the
        view, the peers of rank 1 proposed those runs too: half of a 3.x fleet's Pending
        proposals were refused. A run at the head that waits is one its owner is not taking."""
        if len(self.peers) <= 1:
            self.first_seen.clear()
            return list(runs[:room])
        known, self.first_seen = self.first_seen, {}
        mine: list[FlowRun] = []
        theirs: list[tuple[int, FlowRun]] = []
        for index, run in enumerate(runs):  # a run's rank is hashed once, when it comes into view
            seen, place = known.get(run.id) or (NOT_AT_HEAD, rank(run.id, self.peers, self.me))
            if seen == NOT_AT_HEAD and index < max(room, HEAD_ROWS):
                seen = now  # it reached the head: its owner's grace starts
            self.first_seen[run.id] = (seen, place)
            if place == 0:
                mine.append(run)
            elif not full or now - seen >= place * self.grace:
                theirs.append((place, run))
        # peers' runs by this agent's rank for them (the window's order within one rank): at
        # a drain's end every agent sees the same few runs, and each fills its room first
        # with those it is next in line for, not with the same head as its peers
        theirs.sort(key=lambda placed: placed[0])
        taken = [run for _, run in theirs[: max(0, room - len(mine))]]
        if full:
            self.overdue_taken += len(taken)
        return mine[:room] + taken

    def next_overdue(self, now: float) -> float | None:
        """Seconds until the first of the peers' runs seen waiting is this agent's to propose
        (None: none waits, or no peer shares the queue)."""
        if len(self.peers) <= 1:
            return None
        due_at = [
            seen + place * self.grace
            for seen, place in self.first_seen.values()
            if place and seen != NOT_AT_HEAD
        ]
        return max(0.0, min(due_at) - now) if due_at else None
