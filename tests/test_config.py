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


EMPTY_REFUSED = [
    "CHITTY_DATA_DIR",
    "CHITTY_ENCRYPTION_KEY",
    "CHITTY_DATABASE_URL",
    "PGP_PRIVATE_KEY",
    "PGP_PRIVATE_KEY_FILE",
    "PGP_KEY_ID",
    "CHITTY_PRICES_FILE",
    "CHITTY_LOG_ORIGIN",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "CHITTY_PRICING_BASE_URL",
    "CHITTY_DEFAULT_MODEL",
    "CHITTY_HTTP_HOST",
]


@pytest.mark.parametrize("name", EMPTY_REFUSED)
@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_path_key_or_url_is_refused_not_taken_as_unset(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """CHITTY_DATA_DIR= put the private keys in the current directory; CHITTY_ENCRYPTION_KEY= made a
    new key file. An empty value is a mistake: start-up stops naming the variable."""
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(f"{name}: must not be empty (unset it to use the default)"), message
    assert "\n" not in message and ";" not in message  # only this variable is named


def test_an_empty_list_still_means_none(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CHITTY_DATA_DIR", str(tmp_path))
    for name in ("CHITTY_API_TOKENS", "CHITTY_ALLOWED_HOSTS", "CHITTY_ALLOWED_ORIGINS", "CHITTY_FREE_BASE_URLS"):
        monkeypatch.setenv(name, "")
    settings = load_settings()
    assert settings.chitty_api_tokens == () and settings.chitty_allowed_hosts == ()
    assert settings.chitty_data_dir == tmp_path


@pytest.mark.parametrize("tokens", [",", "a" * 20 + ",", "a" * 20 + ",," + "b" * 20])
def test_a_token_list_with_an_empty_item_is_refused_not_read_as_no_tokens(tokens: str) -> None:
    with pytest.raises(SettingsError, match="CHITTY_API_TOKENS: an item between commas is empty") as caught:
        load_settings(chitty_api_tokens=tokens)
    assert "a" * 20 not in str(caught.value)
