"""The launcher's log lines: Prefect's console layout by default, JSON lines for log shippers,
and never a secret in either.

    12:03:44.518 | INFO    | prefect_actor_agent.dispatcher - submitting flow run 5d1c...

is the layout of Prefect's own console handler, so the agent's lines and the lines of the flow
runs it starts read alike. `--log-format json` writes one JSON object a line instead:

    {"timestamp": "2024-05-02T10:03:44.518+00:00", "level": "INFO",
     "logger": "prefect_actor_agent.dispatcher", "message": "submitting flow run 5d1c..."}

plus `exception` (the traceback's text) when the record carries one. `RedactSecrets` replaces
each secret it is given (the API key) by `***` in the message, its arguments, the exception
text and the stack, before any formatter sees the record.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TextIO
from urllib.parse import urlsplit

__all__ = [
    "FORMATS",
    "LEVELS",
    "PREFECT_DATEFMT",
    "PREFECT_FORMAT",
    "JsonFormatter",
    "PrefectFormatter",
    "RedactSecrets",
    "configure",
    "secrets_of",
]

# Prefect's console format and date format (prefect/logging/logging.yml, formatter `standard`).
PREFECT_FORMAT = "%(asctime)s.%(msecs)03d | %(levelname)-7s | %(name)s - %(message)s"
PREFECT_DATEFMT = "%H:%M:%S"
FORMATS = ("prefect", "json")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
REDACTED = "***"
# Libraries whose INFO and DEBUG lines are noise at the agent's levels (one per HTTP request).
QUIET = ("httpx", "httpcore", "pykka")


class PrefectFormatter(logging.Formatter):
    """`HH:MM:SS.mmm | LEVEL   | logger - message`, as Prefect's console handler writes."""

    def __init__(self) -> None:
        super().__init__(PREFECT_FORMAT, datefmt=PREFECT_DATEFMT)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: timestamp (ISO 8601, UTC), level, logger, message, and the
    exception's text or the stack when the record has them. Newlines inside a message or a
    traceback are escaped, so a line is always a whole record."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, str] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


class RedactSecrets(logging.Filter):
    """Replace every secret by `***` wherever it would appear in a record's text.

    The message is formatted here (so a secret passed as an argument is caught too) and the
    record keeps only the redacted text; the traceback is formatted here as well, redacted,
    and left in `exc_text`, where every formatter looks before formatting it again. Attached to
    a handler, it sees the records of every logger that reaches that handler.
    """

    def __init__(self, secrets: Iterable[str | None]) -> None:
        super().__init__()
        # Longest first: a secret that contains another is replaced whole.
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._formatter = logging.Formatter()

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format must not leak its arguments either
            message = f"{record.msg!s} (arguments that did not fit it: {record.args!r})"
        record.msg = self.redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def secrets_of(api_key: str | None, api_url: str | None) -> list[str]:
    """What must never be logged: the API key, and a password written into the API URL."""
    secrets = [api_key] if api_key else []
    if api_url:
        try:
            password = urlsplit(api_url).password
        except ValueError:  # a URL that does not parse carries no password we can find
            password = None
        if password:
            secrets.append(password)
    return secrets


def configure(
    level: str = "INFO",
    log_format: str = "prefect",
    secrets: Iterable[str | None] = (),
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send every log record of the process to `stream` (stderr) in `log_format`, secrets
    redacted; replaces the root logger's handlers. Returns the handler."""
    if log_format not in FORMATS:
        raise ValueError(f"unknown log format {log_format!r}; choose one of {FORMATS}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else PrefectFormatter())
    handler.addFilter(RedactSecrets(secrets))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler
