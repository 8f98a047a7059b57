"""A stand-in infrastructure command for tests about dispatch rather than flows.

It starts in milliseconds (no Prefect import), leaves one marker file per start,
`<MARKER_DIR>/<flow run id>.<unique>.cmd`, so a test can count how often each run was started,
then sleeps for `argv[1]` seconds (default 0) and exits with `argv[2]` (default 0).
"""

import json
import os
import sys
import time
import uuid

run_id = os.environ["PREFECT__FLOW_RUN_ID"]
marker_dir = os.environ["MARKER_DIR"]
seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
code = int(sys.argv[2]) if len(sys.argv) > 2 else 0
path = os.path.join(marker_dir, f"{run_id}.{uuid.uuid4().hex}.cmd")
wanted = [name for name in os.environ.get("MARKER_ENV_NAMES", "").split(",") if name]
with open(path + ".partial", "w") as marker:  # renamed below: a reader never sees half
    json.dump(
        {
            "pid": os.getpid(),
            "time": time.time(),
            "cwd": os.getcwd(),
            "env": {name: os.environ.get(name) for name in wanted},
        },
        marker,
    )
os.replace(path + ".partial", path)
time.sleep(seconds)
sys.exit(code)
