"""``GET /health``: ``chain.checkpoint`` always carries ``ok``, ``error`` and ``failed_at`` (README),
null while checkpoints succeed."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx2
import pytest

from chittyos.app import App
from chittyos.chain.log import CheckpointFailure
from chittyos.server.http import health_report
from tests.server.conftest import running_http

pytestmark = pytest.mark.anyio


async def test_health_checkpoint_lists_error_and_failed_at_as_null_when_ok(app: App) -> None:
    async with running_http(app.settings, app=app) as base, httpx2.AsyncClient() as http:
        response = await http.get(f"{base}/health")
    assert response.status_code == 200
    assert response.json()["chain"]["checkpoint"] == {"ok": True, "error": None, "failed_at": None}


async def test_health_checkpoint_reports_the_failure_with_the_same_keys(app: App) -> None:
    at = datetime(2025, 12, 1, 12, 0, tzinfo=UTC)
    app.chain.log.checkpoint_failure = CheckpointFailure(at=at, error="IntegrityError")
    try:
        async with running_http(app.settings, app=app) as base, httpx2.AsyncClient() as http:
            response = await http.get(f"{base}/health")
    finally:
        app.chain.log.checkpoint_failure = None
    assert response.status_code == 503
    report = response.json()
    assert report["status"] == "degraded"
    assert report["chain"]["checkpoint"] == {"ok": False, "error": "IntegrityError", "failed_at": at.isoformat()}


def test_health_report_keeps_everything_else_and_adds_only_the_missing_keys() -> None:
    report = {"status": "ok", "chain": {"origin": "o", "checkpoint": {"ok": True}}, "version": "1"}
    assert health_report(report) == {
        "status": "ok",
        "chain": {"origin": "o", "checkpoint": {"ok": True, "error": None, "failed_at": None}},
        "version": "1",
    }
    assert report["chain"]["checkpoint"] == {"ok": True}  # not mutated
    assert health_report({"status": "starting"}) == {"status": "starting"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_an_sqlite_database_with_every_connection_busy_is_busy_not_unreachable(app: App) -> None:
    # A new user's burst of writes beside a `chain verify` turned /health 503 "unreachable" for a
    # few seconds: enough for a HEALTHCHECK to restart a healthy server.
    pool = app.engine.sync_engine.pool
    held = [await app.engine.connect() for _ in range(pool.size() + pool._max_overflow)]  # type: ignore[attr-defined]
    try:
        report = await app.health()
    finally:
        for connection in held:
            await connection.close()
    assert report["status"] == "ok"
    assert report["database"]["busy"] is True and report["database"]["reachable"] is None
    after = await app.health()
    assert after["database"]["reachable"] is True and "busy" not in after["database"]
