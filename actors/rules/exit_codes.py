"""What a flow run's exit code means, in words a user can act on (and the cause, when the
infrastructure's kind knows it: a container's OOM kill)."""

from __future__ import annotations

import signal

_MEANINGS: dict[int, str] = {
    -signal.SIGKILL: (
        "the process was killed by SIGKILL, usually by a cancellation that ran out of grace "
        "time or by the operating system's out-of-memory killer"
    ),
    -signal.SIGTERM: "the process was terminated by SIGTERM, usually by a cancellation",
    -signal.SIGINT: "the process was interrupted by SIGINT (Ctrl+C)",
    -signal.SIGSEGV: "the process crashed with a segmentation fault",
    -signal.SIGABRT: "the process aborted (SIGABRT)",
    1: "the process raised an error; its log says which",
    2: "the command was used wrongly (bad arguments)",
    126: "the command was found but could not be executed (permissions?)",
    127: "the command was not found",
    137: "the process was killed by SIGKILL (128+9), often the out-of-memory killer",
    143: "the process was terminated by SIGTERM (128+15)",
    247: "the process was terminated due to high memory usage",
}


def describe_exit(returncode: int, cause: str | None = None) -> str:
    """The Crashed message for a non-zero exit: the code, the cause when it is known, and what
    the code usually means."""
    meaning = _MEANINGS.get(returncode)
    if meaning is None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        meaning = f"the process was ended by {name}"
    text = f"Flow run infrastructure exited with non-zero status code {returncode}"
    if cause:
        return f"{text}: {cause}; {meaning}." if meaning else f"{text}: {cause}."
    return f"{text}: {meaning}." if meaning else f"{text}."
