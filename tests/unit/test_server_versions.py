"""Which server the agent talks to decides three things: work pools, where a run's process
comes from, and whether a drain's pages may come by the flow-run filter. Versions it does not
know are served as the nearest known one, with a warning."""

import pytest

from actors.rules.server_version import profile_for, unknown_version_warning
from messages.wire.prefect import Deployment, decode


@pytest.mark.parametrize(
    ("version", "pools", "job_variables"),
    [
        ("2.7.12", False, False),  # the seed's era: no pools, infrastructure blocks
        ("2.10.0", True, False),
        ("2.20.27", True, False),
        ("3.0.0", True, True),
        ("3.9.1", True, True),
    ],
)
def test_known_versions(version: str, pools: bool, job_variables: bool) -> None:
    profile = profile_for(version)
    assert profile.known
    assert profile.has_work_pools is pools
    assert profile.job_variables_style is job_variables
    assert unknown_version_warning(profile) is None


@pytest.mark.parametrize(
    ("version", "nearest"),
    [("4.0.1", "3.x"), ("2.21.0", "2.20"), ("2.3.0", "2.20"), ("nightly", "2.20"), ("", "2.20")],
)
def test_unknown_versions_are_served_with_a_warning(version: str, nearest: str) -> None:
    warning = unknown_version_warning(profile_for(version))
    assert warning is not None
    assert "is not a version this agent knows" in warning
    assert f"serving it as Prefect {nearest}" in warning


def test_a_2_7_deployment_with_only_infra_overrides_decodes_and_keeps_them() -> None:
    body = b'{"id": "d", "name": "old", "infrastructure_document_id": "b", '
    body += b'"infra_overrides": {"env.A": "1"}}'
    deployment = decode(Deployment, body)
    assert deployment.overrides == {"env.A": "1"}
    assert deployment.job_variables is None


@pytest.mark.parametrize(
    ("version", "alike"),
    [("2.7.12", False), ("2.19.9", False), ("2.20.27", True), ("3.9.1", True), ("nightly", True)],
)
def test_the_flow_run_filter_stands_in_for_get_runs_only_where_it_was_checked(
    version: str, alike: bool
) -> None:
    assert profile_for(version).filters_runs_like_get_runs is alike
