"""The session's exit guard: a test that leaks an actor and a process holding the session's
output still lets the session end, and the summary names both (tests/support/exit_guard.py).

Without the guard the inner session below never ends: pykka's actor thread is no daemon, so
the interpreter waits for it, and `sleep` keeps the output pipe open after pytest has gone,
which is how CI once waited out its deadline after every test had passed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LEAKY_TESTS = """
import subprocess
import pykka


class Leaky(pykka.ThreadingActor):
    pass


def test_leaves_an_actor_and_a_process_behind():
    Leaky.start()
    subprocess.Popen(["sleep", "300"], start_new_session=True)
"""


def test_a_session_that_leaks_an_actor_and_a_process_still_ends(tmp_path: Path) -> None:
    (tmp_path / "test_leaky.py").write_text(LEAKY_TESTS)
    session = subprocess.Popen(
        # -s: the leaked process inherits the session's real stdout, as one started between
        # a test's phases does
        [
            *(sys.executable, "-m", "pytest", "-q", "-s", "-p", "tests.support.exit_guard"),
            *("-p", "no:cacheprovider", "--rootdir", str(tmp_path), "test_leaky.py"),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        output, _ = session.communicate(timeout=60)  # returns once every writer closed it
    finally:
        session.kill()
    text = output.decode(errors="replace")
    assert session.returncode == 0, text
    assert "1 passed" in text
    assert "1 actor(s) still running, stopped: Leaky" in text
    assert "still held the session's output, killed: sleep 300" in text
