"""The launcher from a clone: `prefect-actor-agent start`, the command the package installs.

    python examples/agent.py -q default --api http://127.0.0.1:4200/api
    python examples/agent.py --demo 3        # no server? one is started here, with a demo flow

`start` may be left out, as here. The command lives in `actors/launcher/cli.py`; its entry
point, `actors.__main__.main`, patches gevent in before anything of the agent is imported
(importing the `actors` package imports none of it).
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import actors  # noqa: F401 - only to see whether the package is installed
except ImportError:  # run from a clone without `pip install`: use the clone's packages
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
