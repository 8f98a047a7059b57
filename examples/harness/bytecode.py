"""Bytecode for an environment's installed packages, written once.

Where `PYTHONDONTWRITEBYTECODE` is set (this project's machines set it), pip installs no
bytecode and no process writes any, so every process that imports Prefect compiles it from
source again: about 2.5 s of CPU each on a 2-core machine (measured: `import prefect` 4.7 s
against 2.4 s with bytecode). The suite starts hundreds of such processes (servers, agents,
every engine run), so a fresh clone's suite spent minutes compiling the same files.
`compileall` writes the bytecode whatever the variable says, and Python reads it whatever the
variable says; compiling what is already compiled only checks timestamps (under 2 s).
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import time

COMPILE_TIMEOUT = 600.0


def site_packages(python: str) -> list[str]:
    """The directories `python` installs packages into."""
    script = "import sysconfig; p = sysconfig.get_paths(); print(p['purelib']); print(p['platlib'])"
    if python == sys.executable:
        paths = sysconfig.get_paths()
        found = [paths["purelib"], paths["platlib"]]
    else:
        answer = subprocess.run(
            [python, "-c", script], check=True, capture_output=True, text=True, timeout=60
        )
        found = answer.stdout.split()
    return sorted(set(found))


def compile_installed(python: str = sys.executable) -> float:
    """Write the bytecode of everything installed for `python` (when bytecode is not written
    on import); seconds spent. A file that does not compile (a package's Python 2 example)
    is skipped, as pip skips it."""
    if not sys.flags.dont_write_bytecode:
        return 0.0  # every import writes its own
    began = time.monotonic()
    subprocess.run(
        [python, "-m", "compileall", "-q", "-j", "0", *site_packages(python)],
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=COMPILE_TIMEOUT,
    )
    return time.monotonic() - began
