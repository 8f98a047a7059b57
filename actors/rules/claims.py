"""Who holds a run: written into the message of the Pending state that takes it (or of the
state by which a peer adopts a lost agent's run, see `adoption_message`).

The carrier is the Pending state itself, because the server's answer to that proposal is the
lock: the state that wins is the claim, with no second write that could fail or race. A person
reads it in the UI (the run's state history shows the Pending message); an agent reads it back
from the run's state history (`GET /flow_run_states/?flow_run_id=`), where it stays after the
engine moves the run on to Running, on 2.x and 3.x alike. On Prefect 3 the run also gets the
labels Prefect's workers set (`prefect.worker.name`, ...), for the UI's filters; those are a
display, the state message is what an agent trusts.
"""

from __future__ import annotations

import re

from actors.rules.identity import AgentIdentity

_CLAIM = re.compile(
    r"\[claim agent=(?P<name>.+?) instance=(?P<instance>[0-9a-zA-Z]+) host=(?P<host>\S+)"
    r"(?: pid=(?P<pid>\d+))?\]$"
)


def claim_message(identity: AgentIdentity) -> str:
    """The Pending state's message: a sentence for people, a bracket for agents."""
    return (
        f"Taken by agent {identity.name!r} on host {identity.host!r}. "
        f"[claim agent={identity.name} instance={identity.instance} host={identity.host}"
        + (f" pid={identity.pid}" if identity.pid is not None else "")
        + "]"
    )


def adoption_message(identity: AgentIdentity, lost: str, pid: str) -> str:
    """The message of the state by which a peer adopts a lost agent's run whose infrastructure
    lives on within its reach (a container of a daemon both reach): a sentence for people, the
    adopter's claim for agents (the fence of the lost agent, back after a partition, reads it
    and lets the run go without touching its infrastructure)."""
    return (
        f"Adopted by agent {identity.name!r} on host {identity.host!r}: agent {lost!r}, which "
        f"started it, is lost; its infrastructure {pid} runs on and is watched by the adopter. "
        f"[claim agent={identity.name} instance={identity.instance} host={identity.host}"
        + (f" pid={identity.pid}" if identity.pid is not None else "")
        + "]"
    )


def parse_claim(message: str | None) -> AgentIdentity | None:
    """The claim in a Pending state's message, or None when it carries none (another
    agent's, or a person's)."""
    if not message:
        return None
    found = _CLAIM.search(message.strip())
    if found is None:
        return None
    pid = int(found["pid"]) if found["pid"] else None
    return AgentIdentity(found["name"], found["instance"], found["host"], pid)


def worker_labels(identity: AgentIdentity, pool: str | None) -> dict[str, str]:
    """The labels a Prefect 3 worker gives the runs it takes, and ours beside them."""
    labels = {
        "prefect.worker.name": identity.name,
        "prefect.worker.type": "prefect-actor-agent",
        "prefect-actor-agent.instance": identity.instance,
        "prefect-actor-agent.host": identity.host,
    }
    if pool is not None:
        labels["prefect.work-pool.name"] = pool
    return labels
