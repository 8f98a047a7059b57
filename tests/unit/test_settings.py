"""Settings mirror Prefect's variables; the API key never shows in their text."""

import pytest

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
