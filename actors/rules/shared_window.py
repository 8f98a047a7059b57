"""How a window of a queue shared with peers is read: as ids first, in full only for the runs
this agent proposes. Pure.

A shared queue's window holds about as many peers' runs per run of this agent's as there are
peers (`actors/rules/share.py`), and every agent reads every run of the queue once or more on
its way to its owner. Read in full (`POST /flow_runs/filter`), those rows were most of what a
fleet's drain cost the server beyond the two requests per run that any agent must make: ten
agents, 0.31 windows per run taken, about 10 of 32 ms of the server's CPU per run. So the
window is read by `POST /ui/flow_runs/history`, which selects a run's id and times only, about
half the server's cost per row, and one more request reads in full the few runs picked.

A sighting's time is the run's expected start, which the server does not move when a run is
rescheduled (its next scheduled start is what makes it due, and what the window's own filter
and order use). So the sightings due by their expected start are the candidates the share
picks from, and the full rows, read with the window's bound, say which of them are due now
and when the others are; this agent's own runs expected later are read with them, so that
the timer for the next one (and one moved earlier than expected) goes by its real time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from messages.wire.prefect import FlowRun, RunSighting


def candidates(
    sightings: Sequence[RunSighting], horizon: datetime, owns: Callable[[str], bool]
) -> tuple[list[RunSighting], list[str]]:
    """The sightings expected by `horizon`, in the window's order (those the share picks
    from), and the ids of this agent's own runs expected after it (read in full too)."""
    due: list[RunSighting] = []
    own_later: list[str] = []
    for sighting in sightings:
        if sighting.timestamp is None or sighting.timestamp <= horizon:
            due.append(sighting)
        elif owns(sighting.id):
            own_later.append(sighting.id)
    return due, own_later


def in_picked_order(runs: Sequence[FlowRun], ids: Sequence[str]) -> list[FlowRun]:
    """The full rows in the order the share picked their ids (its own first, then peers' by
    rank), not the server's."""
    place = {run_id: index for index, run_id in enumerate(ids)}
    return sorted(runs, key=lambda run: place.get(run.id, len(place)))
