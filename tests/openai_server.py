"""A small OpenAI-compatible chat server on loopback, for tests that drive the real ``openai`` SDK.

respx cannot intercept openai 3.x (it runs on httpx2), so tests speak real HTTP to this server::

    with OpenAIServer() as srv:
        client = AsyncOpenAI(api_key="test", base_url=srv.base_url)   # http://127.0.0.1:PORT/v1
        srv.enqueue(rate_limited(retry_after_s=1))                     # next request: 429
        ...
        assert [r.body["model"] for r in srv.chat_requests()] == ["gpt-4o", "gpt-4o"]

What it speaks:

* ``POST /v1/chat/completions``, non-streaming and ``stream: true`` (SSE ``data: {...}`` chunks, then
  ``data: [DONE]``). With ``stream_options.include_usage`` a final chunk carries the usage; with
  ``usage_chunk_has_choices`` the usage rides on the chunk that carries ``finish_reason`` instead
  of a separate ``choices: []`` chunk (some compatible servers do that).
* ``GET /v1/models``.

Answers are deterministic: ``"Echo: <last user message>"`` unless an ``answer`` is configured or a
``Reply`` is scripted. Tokens are counted as whitespace-separated words (each message adds
``MESSAGE_OVERHEAD_TOKENS``), so tests can compute usage by hand with ``count_prompt_tokens``.
``max_tokens`` / ``max_completion_tokens`` cut the answer to that many words (finish_reason
``length``).

Scripted behaviours (``enqueue``) apply to the next chat requests, one each, in order: ``Reply``,
``Fail`` (``rate_limited``, ``server_error``), ``Slow`` (past the client's timeout: a timeout),
``BrokenStream`` (also a connection dropped halfway through a non-streamed answer) and
``Garbage`` (a 200 whose body is not a chat completion). Every request is
recorded (method, path, headers, JSON body, monotonic and wall time) under a lock, because the
server runs in its own thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

__all__ = [
    "MESSAGE_OVERHEAD_TOKENS",
    "BrokenStream",
    "Fail",
    "Garbage",
    "OpenAIServer",
    "RecordedRequest",
    "Reply",
    "ServerConfig",
    "Slow",
    "count_prompt_tokens",
    "count_tokens",
    "rate_limited",
    "server_error",
    "unauthorized",
]

MESSAGE_OVERHEAD_TOKENS = 4
"""Tokens each chat message adds to ``prompt_tokens`` besides its words (role, separators)."""

_INCOMPLETE = "ASGI callable returned without completing response."


# --------------------------------------------------------------------------------------------
# Configuration and scripted behaviours


@dataclass(frozen=True)
class ServerConfig:
    """How the server answers when nothing is scripted.

    ``answered_model``: the model named in answers (None: echo the requested model), e.g. a dated
    snapshot such as ``gpt-4o-2024-08-06``. ``answer``: fixed answer text (None: ``Echo: <last user
    message>``). ``cached_tokens``: reported as ``prompt_tokens_details.cached_tokens`` (capped at
    prompt_tokens). ``usage_chunk_has_choices``: in streams, put the usage on the finish_reason
    chunk. ``api_key``: when set, any other bearer token gets a 401 that echoes the token back (a
    worst case: callers must not pass upstream messages on). ``models``: what ``GET /v1/models``
    lists.
    """

    answered_model: str | None = None
    answer: str | None = None
    cached_tokens: int = 0
    usage_chunk_has_choices: bool = False
    api_key: str | None = None
    models: tuple[str, ...] = ("gpt-4o", "gpt-4o-mini")


@dataclass(frozen=True)
class Reply:
    """Answer the next request with ``text`` (None: the configured answer) and these fields.

    ``usage`` = (prompt_tokens, completion_tokens, cached_tokens) overrides the word counts.
    """

    text: str | None = None
    finish_reason: str = "stop"
    usage: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class Fail:
    """Answer the next request with an OpenAI-style error body and this status and headers."""

    status: int
    message: str = "scripted failure"
    error_type: str = "server_error"
    code: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Slow:
    """Wait ``delay_s`` before answering (normally, or with ``then``)."""

    delay_s: float
    then: Reply | None = None


@dataclass(frozen=True)
class BrokenStream:
    """Send ``after_deltas`` text deltas, then break off without ``[DONE]``.

    ``clean_end=False`` (default): the connection is closed mid-body, as when a peer dies.
    ``clean_end=True``: the body ends properly but early (no finish_reason, no usage, no [DONE]).
    A non-streaming request gets half of its JSON body, then the connection is closed.
    """

    after_deltas: int
    clean_end: bool = False


@dataclass(frozen=True)
class Garbage:
    """Answer the next request with HTTP 200 and this body, complete, in place of a chat
    completion (streamed or not): a broken upstream or a proxy's error page."""

    body: bytes = b"<html><body>502 Bad Gateway</body></html>"
    content_type: str = "application/json"


Behaviour = Reply | Fail | Slow | BrokenStream | Garbage


def rate_limited(retry_after_s: float = 1) -> Fail:
    """A 429 with ``Retry-After`` in whole seconds when ``retry_after_s`` is integral."""
    shown = str(int(retry_after_s)) if float(retry_after_s).is_integer() else str(retry_after_s)
    return Fail(
        429,
        "Rate limit reached for requests",
        error_type="requests",
        code="rate_limit_exceeded",
        headers={"retry-after": shown},
    )


def server_error(status: int = 500, *, retry_after_ms: int | None = None) -> Fail:
    """A 5xx; ``retry_after_ms`` adds ``retry-after-ms`` so that SDK retries wait only that long."""
    headers = {} if retry_after_ms is None else {"retry-after-ms": str(retry_after_ms)}
    return Fail(status, "The server had an error while processing your request.", headers=headers)


def unauthorized(message: str = "Incorrect API key provided.") -> Fail:
    return Fail(401, message, error_type="invalid_request_error", code="invalid_api_key")


# --------------------------------------------------------------------------------------------
# Recording


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received. ``headers`` has lower-case names; ``body`` is None if not JSON."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any
    monotonic: float
    received_at: datetime


# --------------------------------------------------------------------------------------------
# Token counting (deterministic stand-in for a tokenizer)


def count_tokens(text: str) -> int:
    return len(text.split())


def count_prompt_tokens(messages: list[Mapping[str, Any]]) -> int:
    """``prompt_tokens`` the server reports for these chat messages."""
    return sum(count_tokens(str(m.get("content") or "")) + MESSAGE_OVERHEAD_TOKENS for m in messages)


def _pieces(text: str) -> list[str]:
    """Split ``text`` into stream deltas (a word and the spaces after it) that join back to it."""
    return re.findall(r"\s*\S+\s*", text) or ([text] if text else [])


# --------------------------------------------------------------------------------------------
# The server


class OpenAIServer:
    """The loopback server; a context manager that starts uvicorn in a thread on a free port."""

    def __init__(self, **config: Any) -> None:
        self._defaults = ServerConfig(**config)
        self._lock = threading.Lock()
        self._config = self._defaults
        self._script: deque[Behaviour] = deque()
        self._requests: list[RecordedRequest] = []
        self._counter = 0
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._socket: socket.socket | None = None
        self._log_filter = _DropScriptedBreaks()
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
            ]
        )

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``; only while running."""
        if self._socket is None:
            raise RuntimeError("OpenAIServer is not running")
        host, port = self._socket.getsockname()[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> None:
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when the
        # protocol says TCP, and without it every answer waits ~40 ms on delayed ACKs.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._socket = sock
        config = uvicorn.Config(
            self.app,
            loop="asyncio",
            http="h11",
            ws="none",
            lifespan="off",
            log_config=None,  # leave the test process's logging alone
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        logging.getLogger("uvicorn.error").addFilter(self._log_filter)
        self._thread = threading.Thread(
            target=self._run, args=(self._server, sock), name="openai-loopback", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 5
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("OpenAIServer did not start within 5 s")
            time.sleep(0.005)

    def _run(self, server: uvicorn.Server, sock: socket.socket) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._stopping = asyncio.Event()
            await server.serve(sockets=[sock])

        asyncio.run(serve())

    def stop(self) -> None:
        """Stop serving: end scripted delays at once, let open requests finish, join the thread."""
        if self._server is not None:
            self._server.should_exit = True
            if self._loop is not None and self._stopping is not None and not self._loop.is_closed():
                with contextlib.suppress(RuntimeError):  # the loop closed since the check
                    self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive():
                raise RuntimeError("OpenAIServer thread did not stop within 10 s")
        if self._socket is not None:
            self._socket.close()
        logging.getLogger("uvicorn.error").removeFilter(self._log_filter)
        self._thread = self._server = self._loop = self._stopping = self._socket = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- test controls -----------------------------------------------------------------------

    def enqueue(self, *behaviours: Behaviour) -> None:
        """Script the next chat requests, one behaviour each, in order."""
        with self._lock:
            self._script.extend(behaviours)

    def configure(self, **changes: Any) -> None:
        """Change ``ServerConfig`` fields until the next ``reset``."""
        known = {f.name for f in fields(ServerConfig)}
        unknown = set(changes) - known
        if unknown:
            raise TypeError(f"unknown ServerConfig fields: {sorted(unknown)}")
        with self._lock:
            self._config = replace(self._config, **changes)

    @property
    def config(self) -> ServerConfig:
        with self._lock:
            return self._config

    def reset(self) -> None:
        """Forget recorded requests and scripts and restore the configuration given at creation."""
        with self._lock:
            self._config = self._defaults
            self._script.clear()
            self._requests.clear()

    @property
    def pending(self) -> int:
        """Scripted behaviours not used yet."""
        with self._lock:
            return len(self._script)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == "/v1/chat/completions"]

    # -- handlers ----------------------------------------------------------------------------

    async def _record(self, request: Request) -> tuple[RecordedRequest, int, ServerConfig, Behaviour | None]:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        recorded = RecordedRequest(
            method=request.method,
            path=request.url.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            monotonic=time.monotonic(),
            received_at=datetime.now(UTC),
        )
        with self._lock:
            self._requests.append(recorded)
            self._counter += 1
            behaviour = (
                self._script.popleft() if self._script and recorded.path.endswith("/completions") else None
            )
            return recorded, self._counter, self._config, behaviour

    async def _models(self, request: Request) -> Response:
        _, n, config, _ = await self._record(request)
        data = [
            {"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "loopback"}
            for m in config.models
        ]
        return JSONResponse({"object": "list", "data": data}, headers={"x-request-id": _request_id(n)})

    async def _chat(self, request: Request) -> Response:
        recorded, n, config, behaviour = await self._record(request)
        headers = {"x-request-id": _request_id(n)}

        if config.api_key is not None and recorded.headers.get("authorization") != f"Bearer {config.api_key}":
            given = recorded.headers.get("authorization", "").removeprefix("Bearer ")
            return _error(unauthorized(f"Incorrect API key provided: {given}."), headers)
        body = recorded.body
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body.get("model"):
            return _error(
                Fail(400, "body must be JSON with 'model' and 'messages'", "invalid_request_error"), headers
            )

        if isinstance(behaviour, Fail):
            return _error(behaviour, headers)
        if isinstance(behaviour, Garbage):
            return Response(behaviour.body, media_type=behaviour.content_type, headers=headers)
        reply = behaviour if isinstance(behaviour, Reply) else None
        if isinstance(behaviour, Slow):
            await self._pause(behaviour.delay_s)
            reply = behaviour.then

        answer = _Answer.build(body, config, reply, n)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            chunks = answer.chunks(include_usage, config.usage_chunk_has_choices)
            broken = behaviour if isinstance(behaviour, BrokenStream) else None
            return _SSEResponse(chunks, headers, broken)
        payload = json.dumps(answer.completion()).encode()
        if isinstance(behaviour, BrokenStream):
            return _Truncated(payload[: len(payload) // 2], headers)
        return Response(payload, media_type="application/json", headers=headers)

    async def _pause(self, delay_s: float) -> None:
        """Sleep, but end at once when the server stops (so shutdown never waits on a script)."""
        assert self._stopping is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=delay_s)


def _request_id(n: int) -> str:
    return f"req_loopback_{n:06d}"


def _error(fail: Fail, headers: Mapping[str, str]) -> Response:
    body = {"error": {"message": fail.message, "type": fail.error_type, "param": None, "code": fail.code}}
    return JSONResponse(body, status_code=fail.status, headers={**headers, **fail.headers})


@dataclass(frozen=True)
class _Answer:
    completion_id: str
    created: int
    model: str
    text: str
    finish_reason: str
    usage: dict[str, Any]

    @classmethod
    def build(cls, body: dict[str, Any], config: ServerConfig, reply: Reply | None, n: int) -> _Answer:
        messages = body["messages"]
        text = reply.text if reply is not None and reply.text is not None else config.answer
        if text is None:
            last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
            text = "Echo: " + str((last_user or {}).get("content") or "")
        finish_reason = reply.finish_reason if reply is not None else "stop"
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(limit, int) and count_tokens(text) > limit:
            text = "".join(_pieces(text)[:limit]).rstrip()
            finish_reason = "length"
        if reply is not None and reply.usage is not None:
            prompt, completion, cached = reply.usage
        else:
            prompt, completion = count_prompt_tokens(messages), count_tokens(text)
            cached = min(config.cached_tokens, prompt)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }
        return cls(
            completion_id=f"chatcmpl-loopback{n:06d}",
            created=int(time.time()),
            model=config.answered_model or str(body["model"]),
            text=text,
            finish_reason=finish_reason,
            usage=usage,
        )

    def completion(self) -> dict[str, Any]:
        return {
            "id": self.completion_id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_loopback",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": self.finish_reason,
                }
            ],
            "usage": self.usage,
        }

    def chunks(
        self, include_usage: bool, usage_on_choice_chunk: bool
    ) -> Iterator[tuple[bool, dict[str, Any]]]:
        """(is_text_delta, chunk) in order; usage as OpenAI sends it when asked for."""

        def chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> dict[str, Any]:
            c: dict[str, Any] = {
                "id": self.completion_id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": "fp_loopback",
                "choices": choices,
            }
            if include_usage:
                c["usage"] = usage
            return c

        def choice(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

        yield False, chunk([choice({"role": "assistant", "content": "", "refusal": None})])
        for piece in _pieces(self.text):
            yield True, chunk([choice({"content": piece})])
        if include_usage and usage_on_choice_chunk:
            yield False, chunk([choice({}, self.finish_reason)], self.usage)
            return
        yield False, chunk([choice({}, self.finish_reason)])
        if include_usage:
            yield False, chunk([], self.usage)


class _SSEResponse(Response):
    """Server-sent events: each chunk as ``data: {json}``, then ``data: [DONE]``, unless broken."""

    def __init__(
        self,
        chunks: Iterator[tuple[bool, dict[str, Any]]],
        headers: Mapping[str, str],
        broken: BrokenStream | None,
    ) -> None:
        self.chunks, self.extra_headers, self.broken = chunks, headers, broken

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
        ]
        raw_headers += [(k.encode(), v.encode()) for k, v in self.extra_headers.items()]
        await send({"type": "http.response.start", "status": 200, "headers": raw_headers})
        async for event in self._events():
            await send({"type": "http.response.body", "body": event, "more_body": True})
        if self.broken is not None and not self.broken.clean_end:
            # Returning without the final body message makes uvicorn close the connection
            # mid-body: the client sees an incomplete chunked response, as when a peer dies.
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _events(self) -> AsyncIterator[bytes]:
        deltas = 0
        for is_delta, chunk in self.chunks:
            if self.broken is not None and is_delta and deltas == self.broken.after_deltas:
                return
            deltas += is_delta
            yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
            await asyncio.sleep(0)  # let each event go out on its own
        yield b"data: [DONE]\n\n"


class _Truncated(Response):
    """A 200 whose JSON body stops halfway and whose connection is then closed."""

    def __init__(self, partial: bytes, headers: Mapping[str, str]) -> None:
        self.partial, self.extra_headers = partial, headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_headers = [(b"content-type", b"application/json")]
        raw_headers += [(k.encode(), v.encode()) for k, v in self.extra_headers.items()]
        await send({"type": "http.response.start", "status": 200, "headers": raw_headers})
        await send({"type": "http.response.body", "body": self.partial, "more_body": True})


class _DropScriptedBreaks(logging.Filter):
    """Keep uvicorn's "returned without completing response" error (a scripted break) out of logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != _INCOMPLETE
