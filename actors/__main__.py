"""The entry point of `prefect-actor-agent`, `python -m actors` and `examples/agent.py`.

gevent must patch the standard library before pykka, httpx or the agent's own modules are
imported, or their locks, threads and sockets would not be greenlet-friendly. So this module
imports only `sys` at its top (and `actors/__init__.py` imports nothing eagerly): `main`
patches, unless `--threads` is given, and only then imports the command.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Patch gevent in (unless `--threads`), then run `prefect-actor-agent start`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--threads" not in args:
        from gevent import monkey  # noqa: PLC0415 - before anything else is imported

        if not monkey.is_module_patched("threading"):
            monkey.patch_all()
    from actors.launcher.cli import main as start  # noqa: PLC0415 - only once gevent is in

    return start(args, prog)


if __name__ == "__main__":
    sys.exit(main(prog="python -m actors"))
