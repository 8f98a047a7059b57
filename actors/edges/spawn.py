"""Starting and reaping a flow run's process without stalling the agent under gevent.

Under gevent's monkey patching, `subprocess.Popen` is gevent's own, which forks in Python:
measured with the agent's ~50 MiB heap, 10.7 ms per start, during which no actor of the agent
runs (the whole agent is one OS thread). The standard library's Popen starts a process in C
with vfork in well under a millisecond, but gevent replaces it in the shared module. So under
gevent the agent starts processes with a private, unpatched copy of the standard `subprocess`
module (given the unpatched `os` too: gevent's `os.close` defers the close to its loop, and
Popen would then wait forever on its own exec-status pipe). It waits for the exit on a pidfd
(Linux 5.3+), which gevent watches like a socket, and reaps with `waitid(P_PIDFD)`: no
SIGCHLD handler is involved. If something else in the process reaped the child first
(gevent's own child watchers reap every child once a gevent subprocess ran), the exit code is
unknown and the caller is told so (None), never a made-up 0.

On plain threads (or where pidfds are missing) the standard Popen and its `wait` serve as is.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import types
from typing import Any

_PRISTINE: types.ModuleType | None = None


def _gevent_patched() -> bool:
    try:
        from gevent import monkey  # noqa: PLC0415 - gevent is optional for a library host
    except ImportError:
        return False
    return bool(monkey.is_module_patched("subprocess"))


def fast_path() -> bool:
    """Whether processes start through the unpatched Popen and are awaited on a pidfd."""
    return hasattr(os, "pidfd_open") and hasattr(os, "P_PIDFD") and _gevent_patched()


def _unpatched_os() -> types.ModuleType:
    """`os` as it was before gevent: what Popen calls between its fork and its return."""
    from gevent.monkey import get_original  # noqa: PLC0415 - only on the gevent path

    plain = types.ModuleType("os")
    plain.__dict__.update(os.__dict__)
    for name in ("close", "closerange", "fork", "waitpid", "read", "write"):
        if hasattr(os, name):
            setattr(plain, name, get_original("os", name))
    return plain


def _pristine_subprocess() -> types.ModuleType:
    """A private copy of the standard library's `subprocess`, as gevent did not patch it."""
    global _PRISTINE  # noqa: PLW0603 - loaded once, on the first start under gevent
    if _PRISTINE is None:
        spec = importlib.util.find_spec("subprocess")
        if spec is None or spec.loader is None:
            raise RuntimeError("the standard library's subprocess module cannot be found")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.os = _unpatched_os()  # type: ignore[attr-defined]
        _PRISTINE = module
    return _PRISTINE


class Child:
    """A started process: its pid, a blocking `wait` (call it from a helper), and `running`."""

    def __init__(self, argv: list[str], **popen_args: Any) -> None:
        self._pidfd: int | None = None  # the fast path's handle, until the process is reaped
        self._fast = fast_path()
        self._reaped = False
        self._code: int | None = None
        if self._fast:
            self._popen: Any = _pristine_subprocess().Popen(argv, **popen_args)
            self._pidfd = os.pidfd_open(self._popen.pid)
        else:
            self._popen = subprocess.Popen(argv, **popen_args)
        self.pid: int = self._popen.pid

    def wait(self) -> int | None:
        """Block (cooperatively under gevent) until the process exits; its exit code, negative
        for a signal, or None when it was reaped elsewhere and the code is lost."""
        if not self._fast:
            return int(self._popen.wait())
        if self._pidfd is not None:
            from gevent.socket import wait_read  # noqa: PLC0415 - only on the gevent path

            wait_read(self._pidfd)
        self._reap()
        return self._code

    @property
    def running(self) -> bool:
        """Looks without reaping (WNOWAIT): `wait`, in its helper, is the pidfd's one owner."""
        if not self._fast:
            return self._popen.poll() is None
        pidfd = self._pidfd
        if self._reaped or pidfd is None:
            return False
        try:
            return os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        except ChildProcessError:  # reaped by someone else
            return False

    def _reap(self) -> None:
        pidfd = self._pidfd
        if self._reaped or pidfd is None:
            return
        try:
            result = os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
        except ChildProcessError:  # reaped by someone else: the code is lost
            self._code = None
        else:
            self._code = _exit_code(result) if result is not None else None
        self._reaped = True
        self._pidfd = None
        os.close(pidfd)  # gevent's close, which tells its loop the watched fd is gone


def _exit_code(result: os.waitid_result) -> int:
    """The code `Popen.returncode` would give: the exit status, or minus the signal."""
    if result.si_code == os.CLD_EXITED:
        return int(result.si_status)
    return -int(result.si_status)
