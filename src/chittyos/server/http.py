"""One Starlette app: ``/mcp`` (Streamable HTTP), ``GET /health``, bearer-token auth.

* ``/mcp`` requires ``Authorization: Bearer <token>`` with a token from ``CHITTY_API_TOKENS``
  (compared in constant time). With no token configured the server refuses any bind address but
  loopback, and says so at start-up.
* Host/Origin checks against DNS rebinding: loopback names always; ``CHITTY_ALLOWED_HOSTS`` and
  ``CHITTY_ALLOWED_ORIGINS`` add the names a deployment is reached by.
* ``/health`` is open (container health checks carry no token) and reveals no secrets.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from chittyos.app import App, open_app
from chittyos.config import Settings
from chittyos.errors import ConfigurationError
from chittyos.server.server import build_server

__all__ = ["create_http_app", "is_loopback", "check_bind"]

log = structlog.get_logger("chittyos.http")

LOOPBACK_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost", "[::1]"]
LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]


CHECKPOINT_KEYS = ("ok", "error", "failed_at")
"""The keys of ``/health``'s ``chain.checkpoint``, every one always present (README)."""


def health_report(report: dict[str, Any]) -> dict[str, Any]:
    """``report`` (``App.health``) with ``chain.checkpoint``'s ``error`` and ``failed_at`` always
    present: null while the last checkpoint attempt succeeded, so a client reads the same keys in
    either state."""
    chain = report.get("chain")
    if isinstance(chain, dict) and isinstance(chain.get("checkpoint"), dict):
        checkpoint = chain["checkpoint"]
        chain = {**chain, "checkpoint": {key: checkpoint.get(key) for key in CHECKPOINT_KEYS} | checkpoint}
        report = {**report, "chain": chain}
    return report


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings, host: str) -> None:
    """Refuse to serve an unauthenticated ``/mcp`` beyond loopback."""
    if not settings.chitty_api_tokens and not is_loopback(host):
        raise ConfigurationError(
            f"CHITTY_API_TOKENS is empty: refusing to bind {host}; without a bearer token /mcp is served "
            "on loopback only (set CHITTY_API_TOKENS, or bind 127.0.0.1)"
        )


class BearerAuth:
    """Pure ASGI middleware: ``/mcp`` needs a configured bearer token; other paths pass."""

    def __init__(self, app: ASGIApp, *, tokens: tuple[bytes, ...]) -> None:
        self.app = app
        self._tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._tokens or not scope["path"].startswith("/mcp"):
            await self.app(scope, receive, send)
            return
        presented = _bearer(scope)
        # Compare against every token so the time taken does not tell which one nearly matched.
        ok = False
        for token in self._tokens:
            ok |= presented is not None and hmac.compare_digest(presented, token)
        if not ok:
            response = JSONResponse(
                {"error": "unauthorized", "detail": "send Authorization: Bearer <token from CHITTY_API_TOKENS>"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="chittyos"'},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _bearer(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, credentials = value.partition(b" ")
            if scheme.lower() == b"bearer" and credentials.strip():
                return credentials.strip()
    return None


class _Delegate:
    """The MCP ASGI app exists only once the lifespan has opened the ``App``."""

    def __init__(self) -> None:
        self.target: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.target is None:
            await JSONResponse({"error": "starting"}, status_code=503)(scope, receive, send)
            return
        await self.target(scope, receive, send)


def transport_security(settings: Settings, host: str) -> TransportSecuritySettings:
    hosts = [*LOOPBACK_HOSTS, *settings.chitty_allowed_hosts]
    origins = [*LOOPBACK_ORIGINS, *settings.chitty_allowed_origins]
    if is_loopback(host) or settings.chitty_allowed_hosts:
        return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)
    log.warning(
        "Host/Origin checks are off: set CHITTY_ALLOWED_HOSTS (and CHITTY_ALLOWED_ORIGINS) to the names this "
        "server is reached by; bearer tokens are still required",
        bind=host,
    )
    return TransportSecuritySettings(enable_dns_rebinding_protection=False)


def create_http_app(settings: Settings, *, host: str | None = None, app: App | None = None) -> Starlette:
    """The ASGI app for ``chittyos serve --http``.

    ``app`` lets a caller (tests, benchmarks) pass an already-open ``App``; otherwise the
    lifespan opens one from ``settings``. Raises ``ConfigurationError`` from ``check_bind``.
    """
    bind = host or settings.chitty_http_host
    check_bind(settings, bind)
    delegate = _Delegate()
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with _app_scope(settings, app) as opened:
            mcp = build_server(opened)
            delegate.target = mcp.streamable_http_app(
                streamable_http_path="/mcp", transport_security=transport_security(settings, bind), host=bind
            )
            state["app"] = opened
            if not settings.chitty_api_tokens:
                log.warning("no CHITTY_API_TOKENS: /mcp needs no token and is served on loopback only", bind=bind)
            async with mcp.session_manager.run():
                yield
            delegate.target = None

    async def health(_: Request) -> JSONResponse:
        opened: App | None = state.get("app")
        if opened is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        report = health_report(await opened.health())
        return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)

    tokens = tuple(t.get_secret_value().encode() for t in settings.chitty_api_tokens)
    starlette = Starlette(
        routes=[Route("/health", health, methods=["GET"]), Mount("/", app=delegate)],
        lifespan=lifespan,
    )
    starlette.add_middleware(BearerAuth, tokens=tokens)
    return starlette


@asynccontextmanager
async def _app_scope(settings: Settings, app: App | None) -> AsyncIterator[App]:
    if app is not None:
        yield app
        return
    async with open_app(settings, background=True) as opened:
        yield opened
