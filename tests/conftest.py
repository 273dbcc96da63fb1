"""Shared fixtures: the databases (SQLite and PostgreSQL), the loopback model server, the app.

PostgreSQL comes from ``CHITTY_TEST_DATABASE_URL``; where Docker runs and no URL is given, from a
testcontainers Postgres. With ``CHITTY_REQUIRE_POSTGRES=1`` a missing PostgreSQL fails every
test that needs it (never a skip): CI sets it.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import psycopg
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from sqlalchemy.engine import make_url

from chittyos.app import App, open_app
from chittyos.config import Settings, load_settings
from chittyos.db.migrate import upgrade
from tests.openai_server import OpenAIServer
from tests.server.conftest import API_TOKEN, running_http, settings_env

TEST_API_KEY = "sk-test-0123456789abcdef"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


# -- PostgreSQL ---------------------------------------------------------------------------------


def _require_postgres() -> bool:
    return os.environ.get("CHITTY_REQUIRE_POSTGRES") == "1"


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A PostgreSQL URL we may create databases on."""
    url = os.environ.get("CHITTY_TEST_DATABASE_URL")
    if url:
        yield url
        return
    # Only where an engine answers: the docker client alone (as on this machine kind) would
    # open a socket to nothing and leak it.
    if shutil.which("docker") and (os.environ.get("DOCKER_HOST") or os.path.exists("/var/run/docker.sock")):
        try:
            try:
                from testcontainers.community.postgres import PostgresContainer
            except ImportError:  # testcontainers < 4.15
                from testcontainers.postgres import PostgresContainer

            with PostgresContainer("postgres:16-alpine", driver=None) as pg:
                yield pg.get_connection_url()
                return
        except Exception as exc:  # no engine behind the docker client
            reason = f"testcontainers could not start PostgreSQL ({type(exc).__name__}: {exc})"
    else:
        reason = "no CHITTY_TEST_DATABASE_URL and no Docker engine for testcontainers"
    if _require_postgres():
        pytest.fail(f"PostgreSQL is required (CHITTY_REQUIRE_POSTGRES=1) but missing: {reason}")
    pytest.skip(f"PostgreSQL not available: {reason}")


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the server of ``server_url``; return its URL."""
    with psycopg.connect(_libpq(server_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(_libpq(server_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A migrated database of our own for this test session."""
    name = f"chitty_test_{uuid.uuid4().hex[:10]}"
    url = create_database(postgres_server_url, name)
    upgrade(url)
    yield url
    drop_database(postgres_server_url, name)


def truncate_all(url: str) -> None:
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
            )
        ]
        if tables:
            conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")


# -- the database under test: one body, both backends --------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'chittyos.db'}"
    url: str = request.getfixturevalue("postgres_url")
    truncate_all(url)
    return url


# -- the model ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _openai_server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as server:
        yield server


@pytest.fixture
def openai_server(_openai_server: OpenAIServer) -> Iterator[OpenAIServer]:
    _openai_server.reset()
    yield _openai_server
    _openai_server.reset()


# -- settings and the app -----------------------------------------------------------------------


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Short, because GnuPG's agent socket path must stay under ~107 bytes.
    path = Path(tempfile.mkdtemp(prefix="cd", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_settings(database_url: str, data_dir: Path, openai_server: OpenAIServer) -> Any:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "chitty_data_dir": data_dir,
            "chitty_database_url": database_url,
            "openai_base_url": openai_server.base_url,
            "openai_api_key": TEST_API_KEY,
            "chitty_model_timeout_s": 5.0,
            "chitty_model_max_retries": 2,
        }
        values.update(overrides)
        return load_settings(**values)

    return make


@pytest.fixture
def settings(make_settings: Any) -> Settings:
    return make_settings()


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[App]:
    async with open_app(settings) as opened:
        yield opened


# -- the real MCP client, over stdio and Streamable HTTP ---------------------------------------


@pytest.fixture(params=["stdio", "http"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def connect(transport: str, make_settings: Any) -> Any:
    """``async with connect(**setting_overrides, client_kwargs=...) as client``."""

    @asynccontextmanager
    async def open_client(client_kwargs: dict[str, Any] | None = None, **overrides: Any) -> AsyncIterator[Client]:
        kwargs = dict(client_kwargs or {})
        if transport == "stdio":
            settings = make_settings(**overrides)
            params = StdioServerParameters(
                command=sys.executable, args=["-m", "chittyos", "serve"], env=settings_env(settings)
            )
            async with Client(params, **kwargs) as client:
                yield client
            return
        settings = make_settings(chitty_api_tokens=API_TOKEN, **overrides)
        async with running_http(settings) as base:
            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30)
            async with http, Client(streamable_http_client(f"{base}/mcp", http_client=http), **kwargs) as client:
                yield client

    return open_client
