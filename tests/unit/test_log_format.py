"""The launcher's log lines: Prefect's console layout, JSON lines, and no secret in either."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from importlib import util
from pathlib import Path

import pytest

from actors.launcher.logs import (
    PREFECT_DATEFMT,
    PREFECT_FORMAT,
    JsonFormatter,
    PrefectFormatter,
    RedactSecrets,
    secrets_of,
)

KEY = "pnu_0123456789abcdefSECRET"
# Prefect's own console line: 12:03:44.518 | INFO    | prefect.flow_runs - message
PREFECT_LINE = re.compile(
    r"^\d\d:\d\d:\d\d\.\d{3} \| (?P<level>[A-Z]+) *\| (?P<name>\S+) - (?P<msg>.*)$"
)


def _logger(formatter: logging.Formatter) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(
        RedactSecrets(secrets_of(KEY, "https://agent:hunter2-pw@prefect.example/api"))
    )
    logger = logging.getLogger("prefect_actor_agent.test_log_format")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


@pytest.fixture
def prefect_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    yield from _logger(PrefectFormatter())


@pytest.fixture
def json_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    yield from _logger(JsonFormatter())


def _fail() -> None:
    raise RuntimeError(f"the server refused Authorization: Bearer {KEY}")


def test_lines_are_laid_out_as_prefects(prefect_log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = prefect_log
    logger.info("submitting flow run %s", "5d1c")
    logger.warning("work queue %r is paused", "etl")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (PREFECT_LINE.match(line) for line in lines)
    assert first is not None and second is not None, lines
    assert lines[0].split(" | ")[1] == "INFO   "  # the level padded to 7, as Prefect's
    assert (first["level"], first["name"], first["msg"]) == (
        "INFO",
        "prefect_actor_agent.test_log_format",
        "submitting flow run 5d1c",
    )
    assert (second["level"], second["msg"]) == ("WARNING", "work queue 'etl' is paused")


def test_json_is_one_object_a_line_with_the_exception(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_log
    logger.info("found %d run(s)\nin two lines", 3)
    try:
        _fail()
    except RuntimeError:
        logger.exception("the poll failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert set(first) == {"timestamp", "level", "logger", "message"}
    assert first["level"] == "INFO"
    assert first["logger"] == "prefect_actor_agent.test_log_format"
    assert first["message"] == "found 3 run(s)\nin two lines"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", first["timestamp"])
    assert second["level"] == "ERROR"
    assert second["message"] == "the poll failed"
    assert "Traceback" in second["exception"]
    assert "RuntimeError: the server refused" in second["exception"]


@pytest.mark.parametrize("fixture", ["prefect_log", "json_log"])
def test_the_api_key_is_never_written(fixture: str, request: pytest.FixtureRequest) -> None:
    logger, stream = request.getfixturevalue(fixture)
    logger.info("calling with key %s", KEY)  # as an argument
    logger.info(f"header Bearer {KEY}")  # inside the message itself
    logger.info("the API: %s", "https://agent:hunter2-pw@prefect.example/api")
    try:
        _fail()
    except RuntimeError:
        logger.exception("a request failed")
    logger.info("stack", stack_info=True, extra={"unused": KEY})
    text = stream.getvalue()
    assert KEY not in text
    assert "hunter2-pw" not in text
    assert text.count("***") >= 4
    assert "Bearer ***" in text
    assert "https://agent:***@prefect.example/api" in text


def test_a_record_whose_arguments_do_not_fit_still_hides_the_key(
    prefect_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = prefect_log
    logger.info("two places %s %s", KEY)  # noqa: PLE1206 - the mistake under test
    assert KEY not in stream.getvalue()
    assert "***" in stream.getvalue()


def test_no_secret_no_change() -> None:
    assert secrets_of(None, "http://127.0.0.1:4200/api") == []
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "a %s", ("b",), None)
    assert RedactSecrets([None, ""]).filter(record)
    assert record.getMessage() == "a b"


def test_the_layout_is_the_one_prefect_configures() -> None:
    spec = util.find_spec("prefect")  # found, not imported (that takes seconds)
    assert spec is not None and spec.submodule_search_locations
    folder = Path(next(iter(spec.submodule_search_locations)))
    config = (folder / "logging" / "logging.yml").read_text()
    assert f'format: "{PREFECT_FORMAT}"' in config
    assert f'datefmt: "{PREFECT_DATEFMT}"' in config
