"""The loopback test server itself: what it puts on the wire, scripts, recording, shutdown."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest

from tests.openai_server import (
    BrokenStream,
    Garbage,
    OpenAIServer,
    Reply,
    Slow,
    count_prompt_tokens,
    rate_limited,
    server_error,
)

BODY: dict[str, Any] = {"model": "gpt-4o", "messages": [{"role": "user", "content": "ping pong"}]}


@pytest.fixture
def http(openai_server: OpenAIServer) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=openai_server.base_url, timeout=5) as client:
        yield client


def post(http: httpx2.Client, body: dict[str, Any], **kwargs: Any) -> httpx2.Response:
    return http.post("/chat/completions", json=body, **kwargs)


def sse_events(response: httpx2.Response) -> list[str]:
    return [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]


def test_non_streaming_answer_has_openai_shape_request_id_and_usage(
    openai_server: OpenAIServer, http: httpx2.Client
) -> None:
    openai_server.configure(cached_tokens=3)
    response = post(http, BODY)

    assert response.status_code == 200
    body = response.json()
    assert response.headers["x-request-id"].startswith("req_loopback_")
    assert body["id"].startswith("chatcmpl-") and body["id"] != response.headers["x-request-id"]
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-4o"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Echo: ping pong",
        "refusal": None,
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    prompt = count_prompt_tokens(BODY["messages"])
    assert body["usage"]["prompt_tokens"] == prompt
    assert body["usage"]["completion_tokens"] == 3
    assert body["usage"]["total_tokens"] == prompt + 3
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 3


def test_stream_without_include_usage_sends_no_usage_and_ends_with_done(
    openai_server: OpenAIServer, http: httpx2.Client
) -> None:
    events = sse_events(post(http, {**BODY, "stream": True}))

    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all("usage" not in c for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "Echo: ping pong"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_stream_with_include_usage_ends_with_a_usage_chunk_without_choices(
    openai_server: OpenAIServer, http: httpx2.Client
) -> None:
    events = sse_events(post(http, {**BODY, "stream": True, "stream_options": {"include_usage": True}}))

    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 3
    assert all(c["usage"] is None for c in chunks[:-1])  # OpenAI sends null until the last chunk


def test_usage_chunk_can_also_carry_choices(openai_server: OpenAIServer, http: httpx2.Client) -> None:
    openai_server.configure(usage_chunk_has_choices=True)
    events = sse_events(post(http, {**BODY, "stream": True, "stream_options": {"include_usage": True}}))

    last = json.loads(events[-2])
    assert last["choices"][0]["finish_reason"] == "stop"
    assert last["usage"]["completion_tokens"] == 3


def test_models_lists_the_configured_models(openai_server: OpenAIServer) -> None:
    client = openai.OpenAI(api_key="k", base_url=openai_server.base_url, max_retries=0)
    with client:
        ids = [m.id for m in client.models.list()]
    assert ids == ["gpt-4o", "gpt-4o-mini"]


def test_scripts_apply_to_the_next_chat_requests_in_order(
    openai_server: OpenAIServer, http: httpx2.Client
) -> None:
    openai_server.enqueue(
        rate_limited(retry_after_s=1), server_error(502, retry_after_ms=5), Reply("scripted")
    )

    first, second, third, fourth = (post(http, BODY) for _ in range(4))

    assert (first.status_code, first.headers["retry-after"]) == (429, "1")
    assert first.json()["error"]["code"] == "rate_limit_exceeded"
    assert (second.status_code, second.headers["retry-after-ms"]) == (502, "5")
    assert third.json()["choices"][0]["message"]["content"] == "scripted"
    assert fourth.json()["choices"][0]["message"]["content"] == "Echo: ping pong"
    assert openai_server.pending == 0


def test_answered_model_and_fixed_answer_are_configurable_and_reset(
    openai_server: OpenAIServer, http: httpx2.Client
) -> None:
    openai_server.configure(answered_model="gpt-4o-2024-08-06", answer="always this")
    body = post(http, BODY).json()
    assert (body["model"], body["choices"][0]["message"]["content"]) == ("gpt-4o-2024-08-06", "always this")

    openai_server.reset()
    body = post(http, BODY).json()
    assert (body["model"], body["choices"][0]["message"]["content"]) == ("gpt-4o", "Echo: ping pong")
    assert len(openai_server.requests) == 1


def test_unknown_config_fields_are_refused(openai_server: OpenAIServer) -> None:
    with pytest.raises(TypeError, match="answerd_model"):
        openai_server.configure(answerd_model="x")


def test_a_wrong_key_gets_a_401_when_a_key_is_required(
    openai_server: OpenAIServer, http: httpx2.Client
) -> None:
    openai_server.configure(api_key="sk-right")
    assert post(http, BODY, headers={"authorization": "Bearer sk-wrong"}).status_code == 401
    assert post(http, BODY, headers={"authorization": "Bearer sk-right"}).status_code == 200


def test_a_body_without_messages_is_a_400(openai_server: OpenAIServer, http: httpx2.Client) -> None:
    response = post(http, {"model": "gpt-4o"})
    assert response.status_code == 400
    assert "messages" in response.json()["error"]["message"]


def test_broken_stream_closes_the_connection_mid_body(openai_server: OpenAIServer) -> None:
    openai_server.enqueue(BrokenStream(after_deltas=1))
    received = b""
    url = f"{openai_server.base_url}/chat/completions"
    with (
        pytest.raises(httpx2.RemoteProtocolError),
        httpx2.stream("POST", url, json={**BODY, "stream": True}) as response,
    ):
        for part in response.iter_bytes():
            received += part
    assert b"Echo: " in received and b"[DONE]" not in received


def test_broken_non_streaming_answer_is_cut_halfway(openai_server: OpenAIServer, http: httpx2.Client) -> None:
    openai_server.enqueue(BrokenStream(after_deltas=0))
    with pytest.raises(httpx2.RemoteProtocolError):
        post(http, BODY)


def test_garbage_is_a_complete_200_that_is_not_a_chat_completion(
    openai_server: OpenAIServer, http: httpx2.Client
) -> None:
    openai_server.enqueue(Garbage(), Garbage(b"oops", "text/plain"))
    first = post(http, BODY)
    second = post(http, {**BODY, "stream": True})
    assert (first.status_code, first.content, first.headers["content-type"]) == (
        200,
        Garbage().body,
        "application/json",
    )
    assert (second.status_code, second.content) == (200, b"oops")
    assert second.headers["content-type"].startswith("text/plain")
    assert post(http, BODY).json()["object"] == "chat.completion"  # one request each


def test_every_request_is_recorded_with_headers_body_and_time(
    openai_server: OpenAIServer, http: httpx2.Client
) -> None:
    before = time.monotonic()
    post(http, {**BODY, "max_tokens": 7}, headers={"authorization": "Bearer sk-abc"})

    [recorded] = openai_server.requests
    assert (recorded.method, recorded.path) == ("POST", "/v1/chat/completions")
    assert recorded.headers["authorization"] == "Bearer sk-abc"
    assert recorded.body["max_tokens"] == 7
    assert before <= recorded.monotonic <= time.monotonic()
    assert recorded.received_at.tzinfo is not None


def test_recording_is_thread_safe(openai_server: OpenAIServer) -> None:
    def worker(i: int) -> None:
        with httpx2.Client(base_url=openai_server.base_url, timeout=5) as client:
            for j in range(5):
                body = {**BODY, "messages": [{"role": "user", "content": f"{i}-{j}"}]}
                client.post("/chat/completions", json=body).raise_for_status()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    contents = sorted(r.body["messages"][0]["content"] for r in openai_server.chat_requests())
    assert contents == sorted(f"{i}-{j}" for i in range(8) for j in range(5))


def test_stop_does_not_wait_for_a_scripted_delay() -> None:
    with OpenAIServer() as srv:
        srv.enqueue(Slow(30))
        url = f"{srv.base_url}/chat/completions"
        caller = threading.Thread(
            target=lambda: _ignore_errors(lambda: httpx2.post(url, json=BODY, timeout=10))
        )
        caller.start()
        while not srv.requests:
            time.sleep(0.01)
        started = time.monotonic()
    assert time.monotonic() - started < 3
    caller.join(timeout=5)
    assert not caller.is_alive()


def test_base_url_needs_a_running_server() -> None:
    with pytest.raises(RuntimeError, match="not running"):
        _ = OpenAIServer().base_url


def _ignore_errors(call: Any) -> None:
    with contextlib.suppress(httpx2.HTTPError):
        call()
