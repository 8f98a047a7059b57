"""A well-behaved flow whose marker files let tests observe what the agent did.

`<id>.start` and `<id>.end` carry wall-clock times and the pid, so a test can
check overlap (concurrency limits) and that a run started exactly once.
"""

from __future__ import annotations

import os
import time

from _markers import write_marker
from prefect import flow


@flow
def hello(
    marker_dir: str | None = None,
    sleep: float = 0.0,
    env_name: str | None = None,
) -> str:
    if marker_dir is not None:
        write_marker(marker_dir, "start", {"time": time.time(), "pid": os.getpid()})
        if env_name is not None:
            write_marker(marker_dir, "env", {"name": env_name, "value": os.environ.get(env_name)})
    if sleep > 0:
        time.sleep(sleep)
    if marker_dir is not None:
        write_marker(marker_dir, "end", {"time": time.time(), "pid": os.getpid()})
    return "hello"
