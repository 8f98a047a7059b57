"""The infrastructure seam: the one interface every kind of place a flow run can live answers.

A run's infrastructure is whatever its deployment names: a Process or DockerContainer block on
Prefect 2, the work pool's type on Prefect 3. The RunSupervisor drives a run through this seam
and never asks which kind it holds; each kind is a module of `actors/edges/` behind it
(`process_kind.py`, `docker_kind.py`), chosen by `kinds.kind_for` from the block's or pool's
type. A kind the agent cannot run is refused with a reason (`SubmissionError`), never run as
another kind.

The order is the same for every kind and has no window: `create` (a container is created, not
started; a process cannot exist before it starts, so its `create` only checks and holds the
spec), record the infrastructure pid on the server when the kind knows it before the start,
`start`, then record it for a kind that learns it only by starting. `wait` blocks until the
run's infrastructure ends and says how (its exit code, read from the end itself, never from a
snapshot, and a cause such as an OOM kill); the supervisor calls it, and every other call that
blocks (a daemon's HTTP calls), from a helper, never its inbox.

Two answers are kept apart, as Prefect's infrastructure contract does: `find` returns None
when the run's infrastructure is gone (it can be marked), and `reach` says "elsewhere" when it
is somewhere this agent cannot reach (another host, another daemon: left alone).

Infrastructure pids are strings whose form belongs to the kind: `host:pid` for a process,
`docker:<daemon id>:<container id>` for a container, and a Kubernetes kind would record
`k8s:<cluster>:<namespace>:<job>`: each names the place uniquely, so a cancel, a recovery or an
adoption never touches another place's run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from messages.wire.prefect import BlockDocument, Deployment, FlowRun, WorkPool

Reach = Literal["here", "elsewhere", "not-mine"]
# here: this agent can act on it; elsewhere: another host or daemon (leave it alone);
# not-mine: not a pid of this kind at all (another kind decides).


@dataclass(frozen=True)
class RunSource:
    """What a run's infrastructure is made from, read from the server (pure input to
    `prepare`): the run, its deployment, the deployment's block (2.x), the pool (3.x)."""

    flow_run: FlowRun
    deployment: Deployment | None
    block: BlockDocument | None
    pool: WorkPool | None
    job_variables: bool  # a 3.x server: the pool's job variables, not a block
    api_url: str
    api_key: str | None
    worker_name: str  # the agent's name, for labels
    base_env: Mapping[str, str] | None = None  # the agent's environment (None: os.environ)


@dataclass(frozen=True)
class ExitStatus:
    """How a run's infrastructure ended."""

    code: int | None  # negative: killed by that signal (a process); None: unknowable
    cause: str | None = None  # what the code alone does not say: "out of memory (mem_limit 64m)"


class RunJob(Protocol):
    """One run's infrastructure."""

    @property
    def infrastructure_pid(self) -> str | None: ...

    @property
    def label(self) -> str: ...

    @property
    def running(self) -> bool:
        """Whether it still runs (a quick look: a process's state, the daemon's answer)."""
        ...

    def start(self) -> None:
        """Start what `create` made (blocks on a daemon)."""
        ...

    def wait(self) -> ExitStatus:
        """Block until it ends; how it ended. Call from a helper, never an inbox."""
        ...

    def terminate(self) -> bool:
        """The start of a stop: SIGTERM (to a process group; a container's stop signal).
        False when nothing was there to stop."""
        ...

    def grace_over(self) -> bool:
        """The grace after `terminate` passed: SIGKILL if it still runs; whether it did."""
        ...

    def kill(self) -> bool:
        """SIGKILL now, no grace (a run that is not ours any more); False: nothing there."""
        ...

    def after_exit(self) -> list[str]:
        """Once it ended: what is left is cleaned up (a process group's leftovers killed, a
        container removed when asked to be); what was done, for the log."""
        ...


class Infrastructure(Protocol):
    """One kind of infrastructure.

    A kind may also have (read with defaults by `actors.edges.kinds`, so none is required):
    `block_types` and `pool_types`, the 2.x block types and the pool types it runs (default:
    `(kind,)`; the Process kind: "process"; a Docker kind: "docker-container" and "docker");
    and `watched(infrastructure_pid) -> bool`, whether a live agent still watches that run's
    infrastructure, so an earlier life's search leaves it alone (default: no); and
    `outlives_agents`, whether its runs' infrastructure belongs to something other than the
    agent that started it (a daemon), so that a peer reaching it adopts a lost agent's run
    instead of declaring it Crashed (default: no; the Docker kind: yes).
    """

    kind: str  # "process", "docker"

    def prepare(self, source: RunSource) -> object:
        """The run's spec from its deployment, block or job variables: pure, and every way
        the input can be wrong raises `SubmissionError` naming the problem."""
        ...

    def create(self, spec: object) -> RunJob:
        """Make the run's infrastructure ready to start (pull and create a container; check a
        process's command); blocks. `SubmissionError` when it cannot be made."""
        ...

    def find(self, flow_run_id: str, infrastructure_pid: str | None) -> RunJob | None:
        """The run's infrastructure found again (after a restart, for a cancel, for a
        recovery), by its recorded pid or, when none was recorded, by the run's id; None when
        it is gone. Only called for a pid whose `reach` is "here" (or none)."""
        ...

    def reach(self, infrastructure_pid: str) -> Reach:
        """Whether a recorded pid is this kind's, and within this agent's reach."""
        ...
