"""When a duty that every agent of a fleet repeats falls due: at a slot of the wall clock of
this agent's own, so that a fleet's polls are spread across the interval, not aligned.

A periodic duty that waits its interval after each tick keeps whatever phase it started with,
and a fleet's agents get the same phase whenever one event reaches them all at once: a fleet
started together, a server restart that cuts every event stream at the same moment (each
agent's cancellation poll then runs at once, and every interval after it in step). Ten
agents' polls landing together make the server queue them, and whatever else it is asked in
that moment (a drain's Pending proposals) waits behind them. So the next tick is at the next
of this agent's slots, `phase + k * interval` on the wall clock (which the fleet's hosts
share), where the phase comes from the agent's identity: agents of one fleet are spread
evenly on average whatever happened to them, and no word passes between them. Each agent
still polls once per interval, so a cancellation waits no longer than it did.
"""

from __future__ import annotations

import hashlib


def phase(identity: str, interval: float) -> float:
    """This agent's offset within the interval, in [0, interval): a hash of its identity."""
    digest = hashlib.blake2b(identity.encode(), digest_size=8).digest()
    return interval * (int.from_bytes(digest, "big") / 2.0**64)


def until_slot(now: float, interval: float, identity: str) -> float:
    """Seconds from `now` (wall clock, seconds) to this agent's next slot after it: never
    more than the interval, so a tick is never later than it was; after a tick made out of
    turn (at start, when the stream is lost) the next may come sooner, once, and the ticks are
    on the slots from then on."""
    if interval <= 0:
        return 0.0
    offset = phase(identity, interval)
    wait = (offset - now) % interval
    return wait if wait > 0 else interval
