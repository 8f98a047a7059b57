"""The PostgreSQL harness (`examples/harness/postgres.py`) works: a real server that stops
without a trace, and a Prefect 2.20 server whose database really is that PostgreSQL (not a
SQLite file beside it)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from actors.launcher.local_server import LocalPrefectServer
from examples.harness.postgres import PostgresServer
from tests.support.prefect_objects import create_run, deploy, run_state

FLOWS = Path(__file__).parent / "flows"

pytestmark = pytest.mark.integration


def _processes_mentioning(text: str) -> list[int]:
    """Pids whose command line holds `text` (a data directory), read from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(entry))
    return found


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


async def _query(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        return list(await connection.fetch(sql, *args))
    finally:
        await connection.close()


class _BoomError(Exception):
    pass


def test_postgres_server_serves_and_leaves_nothing_behind() -> None:
    server = PostgresServer(database="smoke", user="smoker")
    with pytest.raises(_BoomError), server:
        assert server.start_seconds is not None and server.start_seconds < 20
        assert server.url.startswith("postgresql+asyncpg://smoker:")
        assert server.url.endswith(f"@127.0.0.1:{server.port}/smoke")
        rows = asyncio.run(_query(server.dsn, "SELECT current_user, current_database(), version()"))
        assert tuple(rows[0])[:2] == ("smoker", "smoke")
        assert rows[0][2].startswith("PostgreSQL ")
        # The password is checked: the server is reached as Prefect reaches it, over TCP.
        wrong = server.dsn.replace(server.password, "not-the-password")
        with pytest.raises(asyncpg.InvalidPasswordError):
            asyncio.run(_query(wrong, "SELECT 1"))
        assert server.pid is not None
        # PostgreSQL refuses root: as root, the server runs as an unprivileged user.
        if os.geteuid() == 0:
            assert _uid_of(server.pid) != 0
        root = server.root
        assert root is not None and _processes_mentioning(str(root))
        raise _BoomError  # a test that fails inside the block still stops the server

    assert server.pid is None
    assert not _processes_mentioning(str(root)), "a postgres process outlived stop()"
    assert not root.exists()
    server.stop()  # again: harmless


def test_prefect_server_runs_on_postgres(
    postgres_server: PostgresServer, postgres_prefect_server: LocalPrefectServer
) -> None:
    api_url = postgres_prefect_server.api_url
    log = postgres_prefect_server.log_path
    log_before = log.stat().st_size

    assert httpx.get(f"{api_url}/health", timeout=10).json() is True
    settings = httpx.get(f"{api_url}/admin/settings", timeout=10).text
    assert postgres_server.password not in settings  # the server redacts its database URL

    deployment = deploy(api_url, FLOWS / "hello.py", "hello", name="pg-smoke", work_queue="pg")
    run = create_run(api_url, deployment)
    assert run_state(api_url, run)[0] == "SCHEDULED"

    # Prefect migrated the empty database at start, and its rows are in PostgreSQL.
    listed = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    tables = {row["tablename"] for row in asyncio.run(_query(postgres_server.dsn, listed))}
    assert {"alembic_version", "flow", "deployment", "flow_run"} <= tables
    rows = asyncio.run(
        _query(
            postgres_server.dsn,
            "SELECT state_type::text FROM flow_run WHERE id = $1::uuid",
            run,
        )
    )
    assert [row[0] for row in rows] == ["SCHEDULED"]
    sqlite_files = list(postgres_prefect_server.home.rglob("*.db"))
    assert not sqlite_files, f"a SQLite database beside PostgreSQL: {sqlite_files}"

    added = log.read_bytes()[log_before:].decode(errors="replace")
    assert "Traceback" not in added and "ERROR" not in added, added
