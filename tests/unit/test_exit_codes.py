"""What the Crashed message says about an exit code."""

import pytest

from actors.rules.exit_codes import describe_exit


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (-9, "SIGKILL"),
        (-15, "SIGTERM"),
        (247, "high memory usage"),
        (1, "raised an error"),
        (127, "not found"),
        (-6, "SIGABRT"),
        (-10, "SIGUSR1"),
    ],
)
def test_crash_message_names_the_code_and_its_meaning(code: int, words: str) -> None:
    message = describe_exit(code)
    assert f"status code {code}" in message
    assert words in message


def test_an_unknown_code_is_still_named() -> None:
    assert describe_exit(42) == "Flow run infrastructure exited with non-zero status code 42."
