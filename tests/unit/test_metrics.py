from typing import get_args

from actors.status.metrics import AgentMetrics
from messages.user.events import RunOutcome


def test_every_run_outcome_is_exported_from_zero_before_any_run_ends() -> None:
    text = AgentMetrics().exposition().decode()
    for outcome in get_args(RunOutcome):
        assert f'prefect_agent_runs_finished_total{{outcome="{outcome}"}} 0.0' in text
