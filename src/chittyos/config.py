"""Settings, read from the environment (the deployment guide's variable names).

Every limit is a named setting with a default. A bad value stops start-up with one line that
names the variable and the rule (``SettingsError``); secrets are ``SecretStr`` and never shown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import platformdirs
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from chittyos.errors import ConfigurationError

__all__ = ["Settings", "SettingsError", "load_settings"]


class SettingsError(ConfigurationError):
    """An environment variable has a value that breaks its rule."""


_NOT_EMPTY = (
    "openai_api_key",
    "openai_base_url",
    "chitty_default_model",
    "chitty_data_dir",
    "chitty_database_url",
    "chitty_http_host",
    "chitty_prices_file",
    "chitty_pricing_base_url",
    "pgp_key_id",
    "pgp_private_key",
    "pgp_private_key_file",
    "chitty_encryption_key",
    "chitty_log_origin",
)
"""Settings for which an empty value cannot mean anything (a path, key, URL or name): refused
with "must not be empty (unset it to use the default)". Empty lists (CHITTY_API_TOKENS=) stay
allowed: they mean none."""


class Settings(BaseSettings):
    """Process settings. Field names are the environment variable names, lower-cased."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    # --- model provider -------------------------------------------------------------------
    openai_api_key: SecretStr | None = None
    """Key for the OpenAI-compatible endpoint. Unset + no base URL: MCP sampling is used."""
    openai_base_url: str | None = None
    """Any OpenAI-compatible server (Ollama, vLLM, LM Studio): e.g. http://127.0.0.1:11434/v1."""
    chitty_default_model: str = Field(default="gpt-4o-mini", min_length=1)
    chitty_model_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    """Per attempt, seconds."""
    chitty_model_max_retries: int = Field(default=2, ge=0, le=10)
    """Retries after the first attempt on 408/409/429/5xx and connection errors."""
    chitty_max_tokens: int = Field(default=1000, ge=1, le=1_000_000)
    """Completion token cap sent upstream when a caller gives none."""

    # --- limits -----------------------------------------------------------------------------
    chitty_max_prompt_chars: int = Field(default=100_000, ge=1, le=10_000_000)
    chitty_max_content_chars: int = Field(default=10_000_000, ge=1, le=1_000_000_000)
    """Longest content accepted for signature checks."""
    chitty_execution_stale_s: float = Field(default=900.0, gt=0, le=30 * 24 * 3600)
    """At start-up, executions still pending/executing after this many seconds are marked failed
    (their process died). Keep it above the longest run: timeout x (retries + 1)."""
    chitty_shutdown_grace_s: float = Field(default=10.0, ge=0, le=3600)
    """Seconds `serve --http` waits for running calls on shutdown before cancelling them (each
    cancelled execution is marked failed)."""
    chitty_max_concurrent_executions: int = Field(default=16, ge=1, le=10_000)
    chitty_page_size_max: int = Field(default=500, ge=1, le=100_000)

    # --- storage ----------------------------------------------------------------------------
    chitty_data_dir: Path = Field(default_factory=lambda: Path(platformdirs.user_data_dir("chittyos")))
    chitty_database_url: str | None = None
    """Unset: SQLite at <data dir>/chittyos.db. postgresql://... uses psycopg 3."""
    chitty_db_pool_size: int = Field(default=10, ge=1, le=1000)

    # --- HTTP -------------------------------------------------------------------------------
    chitty_http_host: str = "127.0.0.1"
    chitty_http_port: int = Field(default=8765, ge=1, le=65535)
    chitty_api_tokens: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    """Comma-separated bearer tokens accepted on /mcp."""
    chitty_allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    """Extra Host header values accepted on /mcp (DNS-rebinding protection), e.g. chitty.example:443."""
    chitty_allowed_origins: Annotated[tuple[str, ...], NoDecode] = ()
    """Extra Origin header values accepted on /mcp, e.g. https://chitty.example."""

    # --- chat, cost and budgets ------------------------------------------------------------
    chitty_prices_file: Path | None = None
    """JSON of USD per million tokens by model, winning over the bundled price table."""
    chitty_free_base_urls: Annotated[tuple[str, ...], NoDecode] = ()
    """Comma-separated base URLs whose models cost nothing, e.g. http://127.0.0.1:11434 (Ollama)."""
    chitty_pricing_base_url: str | None = None
    """Whose published prices apply to calls through OPENAI_BASE_URL, as that provider's API base
    URL: e.g. https://api.openai.com/v1 when OPENAI_BASE_URL is a proxy in front of OpenAI.
    Unset: the base URL the call went to."""
    chitty_rate_limit_per_minute: int = Field(default=0, ge=0, le=1_000_000)
    """Model-calling requests (chat tools, executions) per user per minute; 0 turns the limit off."""
    chitty_budget_reservation_ttl_s: float = Field(default=900.0, gt=0, le=7 * 24 * 3600)
    """Seconds a budget reservation holds when its call never settles (a crashed process)."""

    # --- signing and sealing -----------------------------------------------------------------
    pgp_key_id: str | None = None
    """Fingerprint or key id of the OpenPGP signing key to use from the keyring in the data dir."""
    pgp_private_key: SecretStr | None = None
    """An armored OpenPGP private key to import (no passphrase) and sign with."""
    pgp_private_key_file: Path | None = None
    """A file holding such a key; PGP_PRIVATE_KEY wins when both are set."""
    chitty_encryption_key: SecretStr | None = None
    """32-byte AES-256-GCM key(s), base64 or hex, comma-separated; the first seals, all open.
    Unset: a key file <data dir>/encryption.key is created (mode 0600) and used."""

    # --- ChittyChain -------------------------------------------------------------------------
    chitty_log_origin: str = Field(
        default="chittyos.local/chain", min_length=1, max_length=255, pattern=r"^[^\s+\x00-\x1f\x7f]+$"
    )
    """The log's checkpoint origin line and key name (no spaces, no '+'): e.g. chitty.example/chain.
    Fixed once the log has leaves; the key in <data dir>/chain/log.key is made for it."""
    chitty_checkpoint_every: int = Field(default=1000, ge=1, le=10_000_000)
    """Sign a checkpoint once this many leaves were appended since the last one (never per append)."""
    chitty_checkpoint_interval_s: float = Field(default=60.0, gt=0, le=7 * 24 * 3600)
    """... or once this many seconds passed and the log grew. Proofs sign one on demand too."""

    # --- logging ----------------------------------------------------------------------------
    chitty_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    chitty_log_json: bool = False

    @field_validator("chitty_api_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: object) -> object:
        if isinstance(value, str):
            if value.strip() and any(not part.strip() for part in value.split(",")):
                # "," or "a,,b": a token went missing (a failed $(...)?); not "no tokens".
                raise ValueError("an item between commas is empty; give tokens of 16+ characters")
            tokens = tuple(t.strip() for t in value.split(",") if t.strip())
            for token in tokens:
                if len(token) < 16:
                    raise ValueError("each token must be at least 16 characters")
            return tokens
        return value

    @field_validator("chitty_allowed_hosts", "chitty_allowed_origins", "chitty_free_base_urls", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("chitty_log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator(*_NOT_EMPTY, mode="before")
    @classmethod
    def _not_empty(cls, value: object) -> object:
        # An empty value is a mistake, not "unset": CHITTY_DATA_DIR= would put the keys in the
        # current directory, CHITTY_ENCRYPTION_KEY= would create a new key file.
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty (unset it to use the default)")
        if isinstance(value, SecretStr) and not value.get_secret_value().strip():
            raise ValueError("must not be empty (unset it to use the default)")
        return value

    @field_validator("openai_base_url", "chitty_pricing_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    # --- derived ----------------------------------------------------------------------------
    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL in use: the configured one or the embedded SQLite file."""
        return self.chitty_database_url or f"sqlite:///{self.chitty_data_dir / 'chittyos.db'}"

    @property
    def openai_configured(self) -> bool:
        return self.openai_api_key is not None or self.openai_base_url is not None


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; ``overrides`` win (tests, CLI flags).

    Raises ``SettingsError`` with one line per broken variable: ``NAME: rule (got value)``,
    the value left out for secrets.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


_SECRET_FIELDS = {"openai_api_key", "chitty_api_tokens", "chitty_encryption_key", "pgp_private_key"}
"""Values never echoed in an error, even when they are malformed."""


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        name = str(err["loc"][0]) if err["loc"] else "settings"
        rule = err["msg"].removeprefix("Value error, ")
        shown = "" if name in _SECRET_FIELDS else f" (got {err.get('input')!r})"
        lines.append(f"{name.upper()}: {rule}{shown}")
    return "; ".join(lines)
