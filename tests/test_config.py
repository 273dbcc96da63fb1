"""Settings: the deployment guide's variables, one clear line per broken one, no secret shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from chittyos.config import SettingsError, load_settings


def test_defaults_use_the_embedded_sqlite_in_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CHITTY_DATABASE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CHITTY_DATA_DIR", str(tmp_path))
    settings = load_settings()
    assert settings.database_url == f"sqlite:///{tmp_path / 'chittyos.db'}"
    assert settings.openai_configured is False
    assert settings.chitty_http_host == "127.0.0.1"


@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        ("CHITTY_MAX_PROMPT_CHARS", "-1", "greater than or equal to 1"),
        ("CHITTY_MAX_PROMPT_CHARS", "lots", "valid integer"),
        ("CHITTY_MODEL_TIMEOUT_S", "0", "greater than 0"),
        ("OPENAI_BASE_URL", "localhost:11434", "http:// or https://"),
        ("CHITTY_LOG_LEVEL", "chatty", "DEBUG"),
        ("CHITTY_HTTP_PORT", "70000", "less than or equal to 65535"),
    ],
)
def test_a_bad_value_names_the_variable_and_the_rule(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, rule: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(f"{name}: ")
    assert rule in message
    assert "\n" not in message


def test_secrets_are_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHITTY_API_TOKENS", "short-secret")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "CHITTY_API_TOKENS" in str(caught.value)
    assert "short-secret" not in str(caught.value)

    monkeypatch.setenv("CHITTY_API_TOKENS", "a-long-enough-token-1, another-long-token-2")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret-key")
    settings = load_settings()
    assert len(settings.chitty_api_tokens) == 2
    assert "sk-very-secret-key" not in repr(settings)
    assert "a-long-enough-token-1" not in repr(settings)
