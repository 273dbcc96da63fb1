"""Composition root: builds every part from ``Settings`` and wires the event subscribers.

This is the only module that knows every room. ``open_app`` is an async context manager so
that the HTTP lifespan, the stdio runner, the CLI and the tests share one way to start and stop.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from chittyos import __version__
from chittyos.config import Settings
from chittyos.db import UnitOfWork, create_engine, display_url, ensure_current, is_sqlite, make_session_factory
from chittyos.events import EventBus
from chittyos.execution import ExecutionService
from chittyos.llm.openai_provider import OpenAIProvider
from chittyos.llm.selection import ProviderSelector
from chittyos.tiers import StandardTier, TierRegistry

__all__ = ["App", "open_app"]

log = structlog.get_logger("chittyos.app")


@dataclass
class App:
    """Everything a request handler may reach. Built by ``open_app``, never at import."""

    settings: Settings
    engine: AsyncEngine
    uow: UnitOfWork
    bus: EventBus
    tiers: TierRegistry
    providers: ProviderSelector
    executions: ExecutionService
    version: str = __version__

    async def health(self) -> dict[str, Any]:
        """``{status, version, database{backend, reachable, round_trip_ms, error?}, provider, tiers}``."""
        database: dict[str, Any] = {"backend": self.engine.dialect.name}
        started = time.perf_counter()
        try:
            with anyio.fail_after(5):
                async with self.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
            database.update(reachable=True, round_trip_ms=round((time.perf_counter() - started) * 1000, 3))
        except Exception as exc:  # health reports, it does not raise
            database.update(reachable=False, error=type(exc).__name__)
        return {
            "status": "ok" if database["reachable"] else "degraded",
            "version": self.version,
            "database": database,
            "provider": {
                "configured": self.providers.configured,
                "fallback": "mcp-sampling when the client supports it",
            },
            "tiers": self.tiers.names(),
        }


@asynccontextmanager
async def open_app(settings: Settings) -> AsyncIterator[App]:
    """Start every part; dispose of them on exit.

    Raises ``SchemaBehind`` when a PostgreSQL schema is older than this version (SQLite, the
    embedded default, is migrated in place).
    """
    settings.chitty_data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    url = settings.database_url
    sqlite = is_sqlite(url)
    await anyio.to_thread.run_sync(lambda: ensure_current(url, auto_upgrade=sqlite))
    engine = create_engine(url, pool_size=settings.chitty_db_pool_size)
    openai = _openai_provider(settings)
    try:
        app = _wire(settings, engine, openai)
        log.info(
            "chittyos ready",
            version=__version__,
            database=display_url(url),
            provider=app.providers.configured or "mcp-sampling (client) only",
        )
        yield app
    finally:
        if openai is not None:
            await openai.aclose()
        await engine.dispose()


def _openai_provider(settings: Settings) -> OpenAIProvider | None:
    if not settings.openai_configured:
        return None
    return OpenAIProvider(
        api_key=settings.openai_api_key.get_secret_value() if settings.openai_api_key else None,
        base_url=settings.openai_base_url,
        timeout_s=settings.chitty_model_timeout_s,
        max_retries=settings.chitty_model_max_retries,
    )


def _wire(settings: Settings, engine: AsyncEngine, openai: OpenAIProvider | None) -> App:
    uow = UnitOfWork(session_factory=make_session_factory(engine))
    bus = EventBus()
    tiers = TierRegistry([StandardTier()])
    providers = ProviderSelector(openai=openai, sampling_timeout_s=settings.chitty_model_timeout_s)
    executions = ExecutionService(
        uow=uow,
        tiers=tiers,
        providers=providers,
        bus=bus,
        default_model=settings.chitty_default_model,
        default_max_tokens=settings.chitty_max_tokens,
        max_prompt_chars=settings.chitty_max_prompt_chars,
        max_concurrent=settings.chitty_max_concurrent_executions,
    )
    return App(
        settings=settings,
        engine=engine,
        uow=uow,
        bus=bus,
        tiers=tiers,
        providers=providers,
        executions=executions,
    )
