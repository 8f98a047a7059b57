"""What the benchmark reads in the official agent's log: when each run's submission came.

Only the official agent's lines are parsed for times: they are Prefect's own format
(`HH:MM:SS.mmm | LEVEL   | logger - message`). Ours' figures come from its /metrics; the count
of either agent's problem lines is the harness's (`examples/harness/agent_logs.py`), whatever
the format of the lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from examples.harness.agent_logs import strip_ansi

_OFFICIAL_LINE = re.compile(r"^(\d\d:\d\d:\d\d\.\d{3}) \| \w+\s*\| \S+ - (.*)$")
_OFFICIAL_SUBMIT = re.compile(r"^Submitting flow run '([^']+)'")
BLOCK_GAP = timedelta(milliseconds=50)  # submissions further apart came from another poll


def _local(naive: datetime) -> datetime:
    """A log's local wall-clock time as an aware UTC time, comparable to the server's."""
    return naive.astimezone(UTC)


def _blocks(events: Iterable[tuple[datetime, str]]) -> dict[str, datetime]:
    """Per run: the time of the poll answer that brought it, from (time, run id) events.

    The official agent logs one submission line per run of an answer in a tight loop before
    any Pending is proposed, so a run's answer arrived at the first line of its block; lines
    of one block are well under a millisecond apart, answers to two polls are a round trip.
    """
    times: dict[str, datetime] = {}
    block_at: datetime | None = None
    last: datetime | None = None
    for stamp, run_id in events:
        if block_at is None or last is None or stamp - last > BLOCK_GAP:
            block_at = stamp
        last = stamp
        times.setdefault(run_id, block_at)
    return times


def found_times_official(log: Path, day: date) -> dict[str, datetime]:
    """Per run: when the answer of the poll that brought it arrived, by the agent's own log.

    The official agent logs "Submitting flow run 'ID'" for each run of an answer in a loop
    with no await in it. Its timestamps have no date: `day` is the benchmark's, moved by a
    day when that is nearer to now (a benchmark across midnight).
    """
    events: list[tuple[datetime, str]] = []
    now = datetime.now(UTC)
    for raw in log.read_text(errors="replace").splitlines():
        match = _OFFICIAL_LINE.match(strip_ansi(raw).strip())
        submit = _OFFICIAL_SUBMIT.match(match.group(2)) if match else None
        if match is None or submit is None:
            continue
        clock = datetime.strptime(match.group(1), "%H:%M:%S.%f").time()
        stamp = min(
            (_local(datetime.combine(day + timedelta(days=d), clock)) for d in (-1, 0, 1)),
            key=lambda candidate: abs((candidate - now).total_seconds()),
        )
        events.append((stamp, submit.group(1)))
    return _blocks(events)
