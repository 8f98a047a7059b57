"""A stand-in infrastructure command for tests about dispatch rather than flows.

It starts in milliseconds (no Prefect import), leaves one marker file per start,
`<MARKER_DIR>/<flow run id>.<unique>.cmd`, so a test can count how often each run was started,
then sleeps for `argv[1]` seconds (default 0) and exits with `argv[2]` (default 0).

With MARKER_COMPLETE=1 it ends as the engine would: it records when it finished in the marker
(`end`) and sets its run Completed on the server before it exits, so that server-side limits
(a work pool's concurrency) see the run end.
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
record = {
    "pid": os.getpid(),
    "time": time.time(),
    "cwd": os.getcwd(),
    "env": {name: os.environ.get(name) for name in wanted},
}


def write_marker() -> None:
    with open(path + ".partial", "w") as marker:  # renamed below: a reader never sees half
        json.dump(record, marker)
    os.replace(path + ".partial", path)


def complete_on_server() -> None:
    # Imported here: it takes half of a start-up, and most starts never call the server.
    import urllib.request  # noqa: PLC0415

    body = json.dumps({"state": {"type": "COMPLETED", "name": "Completed"}, "force": True})
    # The URL is the agent's own PREFECT_API_URL (http): no file: or other scheme comes here.
    request = urllib.request.Request(  # noqa: S310
        f"{os.environ['PREFECT_API_URL']}/flow_runs/{run_id}/set_state",
        data=body.encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
        answer.read()


write_marker()
time.sleep(seconds)
if os.environ.get("MARKER_COMPLETE") == "1":
    record["end"] = time.time()
    complete_on_server()
    write_marker()
sys.exit(code)
