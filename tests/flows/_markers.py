"""Marker files: how a flow run tells a test what happened inside it.

Each marker is `<marker_dir>/<flow_run_id>.<suffix>` holding one JSON value.
This module sits next to the flows because Prefect copies the deployment's
directory into the run's working directory and puts it on `sys.path`.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect.runtime import flow_run


def write_marker(marker_dir: str, suffix: str, payload: object) -> None:
    # Write-then-rename so a polling test never reads a half-written file.
    target = Path(marker_dir) / f"{flow_run.id}.{suffix}"
    partial = target.with_name(target.name + ".partial")
    partial.write_text(json.dumps(payload))
    partial.replace(target)
