"""Settings that reach other processes: the local Prefect server's address and credential."""

from __future__ import annotations

import os

import pytest

from flows.settings import Settings, use_local_prefect


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_API_AUTH_STRING", raising=False)
    settings = Settings(state_dir=tmp_path)
    settings.prefect_auth_file.parent.mkdir(parents=True)
    settings.prefect_auth_file.write_text("aiship:local-credential\n")
    return settings


def test_the_local_server_gets_the_local_credential(clean_env):
    use_local_prefect(clean_env)
    assert os.environ["PREFECT_API_URL"] == clean_env.prefect_api_url
    assert os.environ["PREFECT_API_AUTH_STRING"] == "aiship:local-credential"


def test_another_server_never_gets_the_local_credential(clean_env, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "https://prefect.example.com/api")
    use_local_prefect(clean_env)
    assert "PREFECT_API_AUTH_STRING" not in os.environ


def test_a_credential_in_the_environment_wins(clean_env, monkeypatch):
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", "ops:theirs")
    use_local_prefect(clean_env)
    assert os.environ["PREFECT_API_AUTH_STRING"] == "ops:theirs"


def test_no_platform_yet_leaves_the_credential_unset(clean_env):
    clean_env.prefect_auth_file.unlink()
    use_local_prefect(clean_env)
    assert "PREFECT_API_AUTH_STRING" not in os.environ


def test_the_first_app_carries_its_approvers(monkeypatch):
    monkeypatch.setenv("AISHIP_APP_APPROVERS", '["ana", "ben"]')
    assert Settings().default_app().approvers == ["ana", "ben"]
