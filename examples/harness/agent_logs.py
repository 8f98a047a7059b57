"""An agent's log as text, whatever its format: the level of a line, and its problem lines.

Our launcher writes Prefect's console layout (`HH:MM:SS.mmm | LEVEL   | logger - message`),
JSON lines on request, and a library agent's lines are whatever its host configured; the
official agent writes Prefect's layout, in colour on a terminal. A line's level is the first
level name standing as a word of its own in the line's opening characters, so that a test can
tell a warning a user must see from an INFO note, and the benchmark can count the WARNING,
ERROR and CRITICAL lines either agent wrote, in any of these formats.
"""

from __future__ import annotations

import re
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# A level name as a word of its own; the first one in a line's opening characters is the
# line's level in any usual format ("... WARNING name: ...", "... | WARNING | name - ...",
# "[WARNING] ..."); a line without one (a traceback's, a flow's print) is not a record.
_LEVEL = re.compile(r"(?<![\w.-])(DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL)(?![\w.-])")
_LEVEL_WITHIN = 64  # characters: past a timestamp, a level and a logger's name comes the message
PROBLEM_LEVELS = frozenset({"WARNING", "WARN", "ERROR", "CRITICAL"})


def strip_ansi(line: str) -> str:
    """The line without terminal colour codes."""
    return _ANSI.sub("", line)


def line_level(line: str) -> str | None:
    """The level of a log line, whatever its format; None for a line that shows none."""
    match = _LEVEL.search(strip_ansi(line))
    return match.group(1) if match is not None and match.start() < _LEVEL_WITHIN else None


def lines_with(text: str, words: str) -> list[tuple[str | None, str]]:
    """(level, line) of each line of a log that contains `words`."""
    return [(line_level(line), line) for line in text.splitlines() if words in line]


def count_problems(log: Path) -> int:
    """WARNING, ERROR and CRITICAL lines in an agent's log (any format that shows a level)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return 0
    return sum(1 for line in text.splitlines() if line_level(line) in PROBLEM_LEVELS)
