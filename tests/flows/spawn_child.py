"""A flow with a grandchild process, to prove cancellation kills the whole group.

The `sleep` child inherits the flow's process group; if the agent only killed
the flow's own pid, the child pid written here would still be alive.
"""

from __future__ import annotations

import os
import subprocess
import time

from _markers import write_marker
from prefect import flow


@flow
def spawn_child(marker_dir: str, seconds: float = 300.0) -> None:
    child = subprocess.Popen(["sleep", "300"])
    write_marker(marker_dir, "child", {"pid": child.pid})
    write_marker(marker_dir, "pid", {"pid": os.getpid()})
    time.sleep(seconds)
