"""Settings mirror Prefect's variables; the API key never shows in their text."""

import pytest

from actors.launcher.cli import parse_args, settings_from_args
from actors.runtime.settings import SettingsError, settings_from_env


def test_prefect_variables_and_defaults() -> None:
    env = {"PREFECT_API_URL": "http://x/api", "PREFECT_AGENT_QUERY_INTERVAL": "2"}
    settings = settings_from_env(env, work_queues=("default",))
    assert settings.api_url == "http://x/api"
    assert settings.query_interval == 2.0
    assert settings.prefetch_seconds == 15.0
    assert settings.cancel_grace_seconds == 30.0


def test_flags_win_over_environment() -> None:
    env = {"PREFECT_API_URL": "http://x/api", "PREFECT_AGENT_PREFETCH_SECONDS": "3"}
    assert settings_from_env(env, work_queues=("q",), prefetch_seconds=9.0).prefetch_seconds == 9.0


def test_api_key_is_not_in_the_settings_text() -> None:
    settings = settings_from_env(
        {"PREFECT_API_URL": "u", "PREFECT_API_KEY": "pnu_secret"}, work_queues=("q",)
    )
    assert settings.api_key == "pnu_secret"
    assert "pnu_secret" not in repr(settings)
    assert "pnu_secret" not in str(settings)


@pytest.mark.parametrize(
    ("env", "overrides", "words"),
    [
        ({}, {"work_queues": ("q",)}, "PREFECT_API_URL"),
        ({"PREFECT_API_URL": "u"}, {}, "no work queue"),
        ({"PREFECT_API_URL": "u"}, {"work_queues": ("q",), "limit": 0}, "--limit"),
        (
            {"PREFECT_API_URL": "u", "PREFECT_AGENT_QUERY_INTERVAL": "soon"},
            {"work_queues": ("q",)},
            "PREFECT_AGENT_QUERY_INTERVAL",
        ),
    ],
)
def test_bad_settings_say_which(
    env: dict[str, str], overrides: dict[str, object], words: str
) -> None:
    with pytest.raises(SettingsError, match=words):
        settings_from_env(env, **overrides)


def test_several_pools_name_their_watchers_pool_slash_queue_and_one_pool_does_not() -> None:
    env = {"PREFECT_API_URL": "u"}
    one = settings_from_env(env, work_pool="local", work_queues=("default",))
    assert one.work_pools == ("local",)  # `work_pool=`, as embedders passed it, still works
    assert one.watcher_name("local", "default") == "default"
    assert one.describe_queues() == "queue 'default' of work pool 'local'"
    two = settings_from_env(env, work_pools=("local", "boxes"), limit=4)
    assert two.watcher_name("boxes", "default") == "boxes/default"
    assert two.follows_queues
    assert two.describe_queues() == (
        "every queue of each of work pools 'local', 'boxes', limit 4 across the pools"
    )


def test_a_pool_named_twice_or_empty_is_refused() -> None:
    env = {"PREFECT_API_URL": "u"}
    with pytest.raises(SettingsError, match="names a work pool twice"):
        settings_from_env(env, work_pools=("a", "a"))
    with pytest.raises(SettingsError, match="--pool needs a work pool name"):
        settings_from_env(env, work_pools=("a", " "))


def test_the_cli_takes_p_again_and_again() -> None:
    args = parse_args(["start", "-p", "local", "-p", "boxes", "-q", "fast"])
    settings = settings_from_args(args, "http://x/api", None)
    assert settings.work_pools == ("local", "boxes")
    assert settings.work_queues == ("fast",)
