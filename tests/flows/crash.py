"""A flow that dies without reporting a final state, as a segfault or OOM kill would.

`os._exit` skips Prefect's own exception handling, so only the agent can
notice the non-zero exit code and mark the run Crashed.
"""

from __future__ import annotations

import os

from prefect import flow


@flow
def crash(code: int = 3) -> None:
    os._exit(int(code))
