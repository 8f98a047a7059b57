"""A flow that shrugs off SIGTERM, to prove the agent escalates to SIGKILL."""

from __future__ import annotations

import os
import signal
import time

from _markers import write_marker
from prefect import flow


@flow
def ignore_sigterm(marker_dir: str, seconds: float = 300.0) -> None:
    # This also replaces Prefect's own SIGTERM handler; it only works because
    # Prefect 2 runs the body of a sync flow on the main thread.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    write_marker(marker_dir, "pid", {"pid": os.getpid()})
    time.sleep(seconds)
