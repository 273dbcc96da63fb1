"""HTTP specifics: bearer tokens, /health, binding rules, DNS-rebinding checks."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest
from sqlalchemy import text

from chittyos import __version__
from chittyos.app import App
from chittyos.errors import ConfigurationError
from chittyos.server.http import create_http_app
from tests.openai_server import OpenAIServer
from tests.server.conftest import API_TOKEN, running_http

pytestmark = pytest.mark.anyio

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
CALL = {
    "jsonrpc": "2.0",
    "id": 2,
    "method": "tools/call",
    "params": {"name": "chitty_secure_ai_execute", "arguments": {"prompt": "p", "user_id": "u"}},
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token-0123456789", "Basic abc", "Bearer"])
async def test_mcp_without_the_right_bearer_token_is_401_and_runs_nothing(
    make_settings: Any, openai_server: OpenAIServer, authorization: str | None
) -> None:
    headers = dict(MCP_HEADERS)
    if authorization is not None:
        headers["Authorization"] = authorization
    async with running_http(make_settings(chitty_api_tokens=API_TOKEN)) as base:
        async with httpx2.AsyncClient() as http:
            for body in (INITIALIZE, CALL):
                response = await http.post(f"{base}/mcp", json=body, headers=headers)
                assert response.status_code == 401
                assert response.headers["www-authenticate"].startswith("Bearer")
                assert API_TOKEN not in response.text
    assert openai_server.chat_requests() == []


async def test_health_reports_version_and_database_round_trip(make_settings: Any) -> None:
    async with running_http(make_settings(chitty_api_tokens=API_TOKEN)) as base:
        async with httpx2.AsyncClient() as http:
            response = await http.get(f"{base}/health")
    assert response.status_code == 200
    report = response.json()
    assert report["status"] == "ok" and report["version"] == __version__
    assert report["database"]["reachable"] is True and report["database"]["round_trip_ms"] >= 0
    assert report["provider"]["configured"] == "openai"
    assert report["database"]["schema_revision"] == report["database"]["schema_head"] != ""
    assert "sk-test" not in response.text


async def test_health_is_degraded_when_the_schema_is_not_at_head(app: App) -> None:
    """The PostgreSQL test database is shared by the session: put its schema back afterwards."""
    head = app.schema_head
    try:
        async with app.engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '0001_foundation'"))
        report = await app.health()
        assert report["status"] == "degraded"
        assert report["database"]["reachable"] is True
        assert report["database"]["schema_revision"] == "0001_foundation"
        async with app.engine.begin() as conn:
            await conn.execute(text("ALTER TABLE alembic_version RENAME TO alembic_version_away"))
        try:
            report = await app.health()
        finally:
            async with app.engine.begin() as conn:
                await conn.execute(text("ALTER TABLE alembic_version_away RENAME TO alembic_version"))
        assert report["status"] == "degraded" and report["database"]["reachable"] is True
        assert report["database"]["schema_revision"] is None
    finally:
        async with app.engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = :head"), {"head": head})
    assert (await app.health())["status"] == "ok"


async def test_a_foreign_host_header_is_refused(make_settings: Any) -> None:
    async with running_http(make_settings(chitty_api_tokens=API_TOKEN)) as base:
        async with httpx2.AsyncClient() as http:
            response = await http.post(
                f"{base}/mcp",
                json=INITIALIZE,
                headers={**MCP_HEADERS, "Authorization": f"Bearer {API_TOKEN}", "Host": "evil.example"},
            )
            foreign_origin = await http.post(
                f"{base}/mcp",
                json=INITIALIZE,
                headers={**MCP_HEADERS, "Authorization": f"Bearer {API_TOKEN}", "Origin": "http://evil.example"},
            )
    assert response.status_code == 421
    assert foreign_origin.status_code == 403


def test_without_tokens_only_loopback_may_be_bound(make_settings: Any) -> None:
    settings = make_settings()
    with pytest.raises(ConfigurationError, match="CHITTY_API_TOKENS"):
        create_http_app(settings, host="0.0.0.0")
    create_http_app(settings, host="127.0.0.1")
    create_http_app(make_settings(chitty_api_tokens=API_TOKEN), host="0.0.0.0")
