"""The test session ends when its tests do, and says what it had to clean up.

CI waits for two things after pytest prints its summary: the pytest process to exit and the
test command's output to close. Either can wait forever on a leftover of some test: an actor
still running (pykka's threads are not daemons, so the interpreter's exit joins them), or a
process started somewhere below the session (a flow run, a server) that inherited the
session's stdout and outlives it (CI reads that pipe until every writer has closed it). A run
of the whole suite once passed all its tests and then hung until CI's deadline.

This plugin makes both impossible and visible: at the session's end it stops every actor still
alive, kills every process other than pytest and its ancestors that holds the session's
stdout or stderr, names both in the terminal summary, and, should a non-daemon thread still
be alive at the very end, leaves with the session's exit status instead of waiting for it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import pykka
import pytest

STOP_ACTORS_TIMEOUT = 10.0
THREAD_JOIN_TIMEOUT = 5.0

_cleaned: list[str] = []  # what the session's end had to clean up, for the summary
_exit_status = 0


def _ancestors() -> set[int]:
    """This process and every process above it: they hold the output legitimately."""
    pids = set()
    pid = os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rpartition(")")[2].split()[1])  # field 4, after the command's name
    return pids


def _output_pipes() -> set[str]:
    """The pipes the session's output goes to, as /proc names them (`pipe:[N]`).

    Every pipe this process holds open for writing (pytest keeps a copy of its original
    stdout and stderr while its capture redirects fds 1 and 2), and the parent's stdout and
    stderr, which are what the test command writes to.
    """
    pipes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            flags = Path(f"/proc/self/fdinfo/{fd}").read_text().split("flags:")[1].split()[0]
            if target.startswith("pipe:") and int(flags, 8) & os.O_ACCMODE == os.O_WRONLY:
                pipes.add(target)
    for fd in ("1", "2"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{os.getppid()}/fd/{fd}")
            if target.startswith("pipe:"):
                pipes.add(target)
    return pipes


def _output_holders(pipes: set[str]) -> list[tuple[int, str]]:
    """(pid, command line) of each process outside our ancestry writing into `pipes`."""
    mine = _ancestors()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        for fd in (1, 2):
            try:
                target = os.readlink(entry / "fd" / str(fd))
            except OSError:
                continue
            if target in pipes:
                try:
                    command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    command = "?"
                found.append((int(entry.name), command.strip()[:200]))
                break
    return found


def _stop_leftover_actors() -> None:
    actors = pykka.ActorRegistry.get_all()
    if not actors:
        return
    names = sorted({ref.actor_class.__name__ for ref in actors})
    _cleaned.append(f"{len(actors)} actor(s) still running, stopped: {', '.join(names)}")
    pykka.ActorRegistry.stop_all(block=True, timeout=STOP_ACTORS_TIMEOUT)


def _kill_output_holders() -> None:
    pipes = _output_pipes()
    if not pipes:
        return
    for pid, command in _output_holders(pipes):
        _cleaned.append(f"process {pid} still held the session's output, killed: {command}")
        with contextlib.suppress(OSError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _exit_status  # noqa: PLW0603 - read back by pytest_unconfigure
    _exit_status = int(exitstatus)
    try:
        _stop_leftover_actors()
    except Exception as exc:  # noqa: BLE001 - the session must still end
        _cleaned.append(f"stopping leftover actors failed: {exc!r}")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _cleaned:
        terminalreporter.section("left behind by tests (cleaned up at the session's end)")
        for line in _cleaned:
            terminalreporter.write_line(line)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """The last hook: kill what still writes to our output, then leave if a thread would
    keep the interpreter from exiting."""
    _kill_output_holders()
    for line in _cleaned:
        if "held the session's output" in line:
            print(line, file=sys.__stderr__, flush=True)
    deadline = threading.Event()
    for thread in threading.enumerate():
        if thread is threading.current_thread() or thread.daemon or not thread.is_alive():
            continue
        thread.join(THREAD_JOIN_TIMEOUT)
        if thread.is_alive():
            deadline.set()
            print(
                f"thread {thread.name!r} is still alive at the session's end; exiting "
                f"with status {_exit_status} without waiting for it",
                file=sys.__stderr__,
                flush=True,
            )
    if deadline.is_set():
        with contextlib.suppress(Exception):
            atexit._run_exitfuncs()  # the servers' and hosts' own clean-up
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status)
