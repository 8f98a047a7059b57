"""Run a command as the child of a subreaper that reaps, and kills, whatever it leaves behind.

Why: `dockerd` starts containerd, and containerd starts one `containerd-shim-runc-v2` per
container, which detaches on purpose (it outlives containerd, for live restore) and so is
re-parented to the nearest subreaper, normally PID 1. On the machines this project runs on,
PID 1 is not an init that reaps: every shim that exits stays a zombie (`[containerd-shim]
<defunct>` in `ps`) until the machine stops. Run under this script instead, the daemon's
detached descendants are re-parented here (PR_SET_CHILD_SUBREAPER), reaped as they exit, and
the ones still alive when the command has exited are killed and reaped before this script
exits. A process's children can be reaped only by it, so this has to be a process of its own
between the test session and the daemon: the test session itself must not become a
subreaper, or every orphan of every test would be re-parented to it and stay a zombie there.

SIGTERM and SIGINT are passed on to the command. When the process that started this script
dies (this script's parent changes), the command gets SIGTERM too, so a test session killed
outright does not leave its daemon running.

Stdlib only, and run by path (`python subreaper.py -- ARGV...`), not as part of a package.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
KILL_DEADLINE = 10.0


def _become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def _children() -> set[int]:
    me = os.getpid()
    found = set()
    for task in Path(f"/proc/{me}/task").iterdir():
        with contextlib.suppress(OSError):
            found.update(int(pid) for pid in (task / "children").read_text().split())
    return found


def _reap() -> list[tuple[int, int]]:
    """Reap every child that has exited: (pid, wait status) of each."""
    reaped = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        reaped.append((pid, status))
    return reaped


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: subreaper.py -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    _become_subreaper()
    parent = os.getppid()
    child = subprocess.Popen(argv)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status: int | None = None
    told = False
    while status is None:
        for pid, wait_status in _reap():
            if pid == child.pid:
                status = os.waitstatus_to_exitcode(wait_status)
        if status is None:
            if not told and os.getppid() != parent:
                forward(signal.SIGTERM, None)  # whoever started us is gone
                told = True
            time.sleep(0.1)
    # The command is gone: kill what it left (shims, and the containers below them), and
    # reap each; killing a shim re-parents its children here, so look again until none.
    deadline = time.monotonic() + KILL_DEADLINE
    while time.monotonic() < deadline:
        _reap()
        left = _children()
        if not left:
            break
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    _reap()
    return status if status >= 0 else 128 - status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
