"""The `hostname:pid` form in which a flow run's process is recorded on the server
(`FlowRun.infrastructure_pid`), as the official agent writes it.

The host names where the process runs, so that an agent kills only processes of its own host
and leaves another host's run to an agent there. Which host this is, and whether a pid is
alive, is the process edge's to say (`actors.edges.processes`); the form is a rule.
"""

from __future__ import annotations


def format_infrastructure_pid(host: str, pid: int) -> str:
    """`host:pid`, what the server is told once a run's process started."""
    return f"{host}:{pid}"


def parse_infrastructure_pid(value: str) -> tuple[str, int]:
    """Split `hostname:pid`; raises ValueError for anything else."""
    host, sep, pid = value.rpartition(":")
    if not sep or not host or not pid.isdigit():
        raise ValueError(f"infrastructure_pid {value!r} is not of the form hostname:pid")
    return host, int(pid)
