"""Run examples/agent.py with a fault injected into its API client (for supervision tests).

    python tests/support/faulty_launcher.py METHOD PATH_PART -- <launcher arguments>

Every request of METHOD whose path contains PATH_PART raises InjectedFaultError inside the
agent, the way a bug would. Nothing else about the launcher changes.
"""

from gevent import monkey

monkey.patch_all()

import runpy  # noqa: E402 - gevent must patch first, as in the launcher itself
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "examples")]

from actors.edges import prefect_api as api_client  # noqa: E402
from tests.support.faults import FaultyTransport  # noqa: E402

method, path_part, separator, *launcher_args = sys.argv[1:]
assert separator == "--", "usage: faulty_launcher.py METHOD PATH_PART -- <launcher arguments>"
original_init = api_client.PrefectApi.__init__


def init_with_fault(self: api_client.PrefectApi, *args: Any, **kwargs: Any) -> None:
    kwargs["transport"] = FaultyTransport(method, path_part)
    original_init(self, *args, **kwargs)


api_client.PrefectApi.__init__ = init_with_fault  # type: ignore[method-assign]
launcher = ROOT / "examples" / "agent.py"
sys.argv = [str(launcher), *launcher_args]
runpy.run_path(str(launcher), run_name="__main__")
