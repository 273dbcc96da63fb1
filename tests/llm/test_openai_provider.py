"""OpenAIProvider against the loopback openai_server, through the real openai SDK (no mocks)."""

from __future__ import annotations

import gc
import socket
import traceback
import types
from collections.abc import Callable

import pytest

from chittyos.errors import ConfigurationError, InvalidInput, ProviderError, ProviderTimeout
from chittyos.llm.base import (
    ChatMessage,
    Completion,
    CompletionRequest,
    FailedCall,
    Provider,
    StreamInterrupted,
    TokenUsage,
    failed_call,
)
from chittyos.llm.openai_provider import OpenAIProvider
from tests.openai_server import (
    BrokenStream,
    Fail,
    Garbage,
    OpenAIServer,
    Reply,
    Slow,
    count_prompt_tokens,
    rate_limited,
    server_error,
)

pytestmark = pytest.mark.anyio

MakeProvider = Callable[..., OpenAIProvider]

MESSAGES = (
    ChatMessage("system", "You are terse."),
    ChatMessage("user", "first question"),
    ChatMessage("assistant", "first answer"),
    ChatMessage("user", "hello there world"),
)
ECHO = "Echo: hello there world"
PROMPT_TOKENS = count_prompt_tokens([{"content": m.content} for m in MESSAGES])


def ask(**kwargs: object) -> CompletionRequest:
    return CompletionRequest(messages=MESSAGES, model="gpt-4o", **kwargs)  # type: ignore[arg-type]


class Deltas:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, delta: str) -> None:
        self.seen.append(delta)


def everything_about(exc: BaseException) -> str:
    """Message, repr and the formatted traceback with its whole chain: where a key could leak."""
    return str(exc) + repr(exc) + "".join(traceback.format_exception(exc))


# -- complete ---------------------------------------------------------------------------------


async def test_complete_returns_text_model_usage_request_id_and_finish_reason(
    openai_server: OpenAIServer, make_provider: MakeProvider
) -> None:
    async with make_provider() as provider:
        completion = await provider.complete(ask())

    assert completion.text == ECHO
    assert completion.model == "gpt-4o"
    assert completion.provider == "openai"
    assert completion.usage == TokenUsage(prompt_tokens=PROMPT_TOKENS, completion_tokens=4, cached_tokens=0)
    assert completion.finish_reason == "stop"
    assert completion.latency_ms > 0
    # the x-request-id header wins over the response id (chatcmpl-...)
    assert completion.request_id is not None and completion.request_id.startswith("req_loopback_")


async def test_complete_sends_messages_in_order_model_limits_and_bearer_key(
    openai_server: OpenAIServer, make_provider: MakeProvider, api_key: str
) -> None:
    async with make_provider() as provider:
        await provider.complete(ask(max_tokens=50, temperature=0.25))

    [sent] = openai_server.chat_requests()
    assert sent.body["messages"] == [{"role": m.role, "content": m.content} for m in MESSAGES]
    assert sent.body["model"] == "gpt-4o"
    assert sent.body["max_tokens"] == 50  # a local base URL gets the field every server knows
    assert sent.body["temperature"] == 0.25
    assert "stream" not in sent.body
    assert sent.headers["authorization"] == f"Bearer {api_key}"


async def test_complete_omits_unset_limits(openai_server: OpenAIServer, make_provider: MakeProvider) -> None:
    async with make_provider() as provider:
        await provider.complete(ask())

    [sent] = openai_server.chat_requests()
    assert not {"max_tokens", "max_completion_tokens", "temperature"} & set(sent.body)


async def test_max_completion_tokens_field_can_be_chosen_and_length_is_reported(
    openai_server: OpenAIServer, make_provider: MakeProvider
) -> None:
    async with make_provider(max_tokens_field="max_completion_tokens") as provider:
        completion = await provider.complete(ask(max_tokens=2))

    [sent] = openai_server.chat_requests()
    assert sent.body["max_completion_tokens"] == 2 and "max_tokens" not in sent.body
    assert completion.text == "Echo: hello"
    assert completion.finish_reason == "length"


def test_openai_itself_gets_max_completion_tokens_by_default() -> None:
    provider = OpenAIProvider(api_key="sk-x", base_url=None)
    assert provider.base_url == "https://api.openai.com/v1"
    assert provider.max_tokens_field == "max_completion_tokens"


async def test_the_model_that_answered_is_reported(
    openai_server: OpenAIServer, make_provider: MakeProvider
) -> None:
    openai_server.configure(answered_model="gpt-4o-2024-08-06")
    async with make_provider() as provider:
        completion = await provider.complete(ask())
        streamed = await provider.stream(ask(), Deltas())

    assert completion.model == streamed.model == "gpt-4o-2024-08-06"


async def test_cached_tokens_come_from_prompt_tokens_details(
    openai_server: OpenAIServer, make_provider: MakeProvider
) -> None:
    openai_server.configure(cached_tokens=5)
    async with make_provider() as provider:
        completion = await provider.complete(ask())
        streamed = await provider.stream(ask(), Deltas())

    expected = TokenUsage(prompt_tokens=PROMPT_TOKENS, completion_tokens=4, cached_tokens=5)
    assert completion.usage == streamed.usage == expected


async def test_scripted_usage_is_passed_through(
    openai_server: OpenAIServer, make_provider: MakeProvider
) -> None:
    openai_server.enqueue(Reply("scripted answer", usage=(1200, 30, 1024)))
    async with make_provider() as provider:
        completion = await provider.complete(ask())

    assert completion.text == "scripted answer"
    assert completion.usage == TokenUsage(prompt_tokens=1200, completion_tokens=30, cached_tokens=1024)


async def test_empty_request_is_invalid_input(make_provider: MakeProvider) -> None:
    async with make_provider() as provider:
        with pytest.raises(InvalidInput) as caught:
            await provider.complete(CompletionRequest(messages=(), model="gpt-4o"))
    assert caught.value.field == "messages"


# -- stream -----------------------------------------------------------------------------------


async def test_stream_calls_on_delta_in_order_and_returns_the_whole_completion(
    openai_server: OpenAIServer, make_provider: MakeProvider
) -> None:
    deltas = Deltas()
    async with make_provider() as provider:
        completion = await provider.stream(ask(), deltas)

    assert deltas.seen == ["Echo: ", "hello ", "there ", "world"]
    assert completion.text == "".join(deltas.seen) == ECHO
    assert completion.finish_reason == "stop"
    assert completion.usage == TokenUsage(prompt_tokens=PROMPT_TOKENS, completion_tokens=4)
    assert completion.request_id is not None and completion.request_id.startswith("req_loopback_")
    [sent] = openai_server.chat_requests()
    assert sent.body["stream"] is True
    assert sent.body["stream_options"] == {"include_usage": True}


async def test_stream_takes_usage_from_a_final_chunk_that_also_carries_choices(
    openai_server: OpenAIServer, make_provider: MakeProvider
) -> None:
    openai_server.configure(usage_chunk_has_choices=True, cached_tokens=2)
    deltas = Deltas()
    async with make_provider() as provider:
        completion = await provider.stream(ask(), deltas)

    assert completion.text == ECHO
    assert completion.finish_reason == "stop"
    assert completion.usage == TokenUsage(prompt_tokens=PROMPT_TOKENS, completion_tokens=4, cached_tokens=2)


async def test_broken_stream_raises_stream_interrupted_with_the_partial_text(
    openai_server: OpenAIServer, make_provider: MakeProvider
) -> None:
    openai_server.enqueue(BrokenStream(after_deltas=2))
    deltas = Deltas()
    async with make_provider() as provider:
        with pytest.raises(StreamInterrupted) as caught:
            await provider.stream(ask(), deltas)

    partial = caught.value.partial
    assert isinstance(caught.value, ProviderError)
    assert partial.text == "Echo: hello " == "".join(deltas.seen)
    assert partial.finish_reason is None
    assert partial.usage is None
    assert partial.request_id is not None
    assert "broke off after 2 text deltas" in str(caught.value)


async def test_stream_that_ends_without_a_finish_reason_is_interrupted(
    openai_server: OpenAIServer, make_provider: MakeProvider
) -> None:
    openai_server.enqueue(BrokenStream(after_deltas=3, clean_end=True))
    async with make_provider() as provider:
        with pytest.raises(StreamInterrupted) as caught:
            await provider.stream(ask(), Deltas())

    assert caught.value.partial.text == "Echo: hello there "
    assert "without a finish_reason" in str(caught.value)


async def test_an_error_in_on_delta_propagates_unchanged(
    openai_server: OpenAIServer, make_provider: MakeProvider
) -> None:
    class FullError(Exception):
        pass

    async def refuse(delta: str) -> None:
        raise FullError(delta)

    async with make_provider() as provider:
        with pytest.raises(FullError):
            await provider.stream(ask(), refuse)
        # the connection was released: the provider still works
        assert (await provider.complete(ask())).text == ECHO


async def test_an_error_in_on_delta_leaves_no_stream_generator_for_the_collector(
    openai_server: OpenAIServer, make_provider: MakeProvider
) -> None:
    # Broken off mid-answer, the SDK's stream is a dozen suspended async generators (openai's SSE
    # decoder down to httpcore's body reader). asyncio's collector hook closes each in a task of
    # its own; closed in the wrong order they fail with "aclose(): asynchronous generator is
    # already running", which once surfaced as an unraisable exception in an unrelated test.
    def suspended_client_generators() -> list[str]:
        return [
            obj.ag_code.co_qualname
            for obj in gc.get_objects()
            if isinstance(obj, types.AsyncGeneratorType)
            and obj.ag_frame is not None
            and "site-packages" in obj.ag_code.co_filename
            and any(lib in obj.ag_code.co_filename for lib in ("/openai/", "/httpx", "/httpcore"))
        ]

    async def refuse(delta: str) -> None:
        raise LookupError(delta)

    openai_server.enqueue(Reply(text=" ".join(["word"] * 20_000)))  # more than one read holds
    gc.collect()
    gc.disable()  # so that only the provider can finish them
    try:
        async with make_provider() as provider:
            with pytest.raises(LookupError):
                await provider.stream(ask(), refuse)
            assert suspended_client_generators() == []
    finally:
        gc.enable()


async def test_stream_errors_before_the_first_chunk_are_status_errors(
    openai_server: OpenAIServer, make_provider: MakeProvider
) -> None:
    openai_server.enqueue(server_error(503))
    async with make_provider() as provider:
        with pytest.raises(ProviderError) as caught:
            await provider.stream(ask(), Deltas())

    assert not isinstance(caught.value, StreamInterrupted)
    assert caught.value.status == 503


# -- retries, timeouts, errors ----------------------------------------------------------------


async def test_429_with_retry_after_is_retried_after_the_wait_then_succeeds(
    openai_server: OpenAIServer, make_provider: MakeProvider
) -> None:
    openai_server.enqueue(rate_limited(retry_after_s=1))
    async with make_provider(max_retries=2) as provider:
        completion = await provider.complete(ask())

    assert completion.text == ECHO
    first, second = openai_server.chat_requests()
    assert second.monotonic - first.monotonic >= 1.0  # Retry-After: 1, not the 0.5 s backoff
    assert second.headers["x-stainless-retry-count"] == "1"
    assert first.body == second.body


async def test_429_with_no_retries_left_says_when_to_retry(
    openai_server: OpenAIServer, make_provider: MakeProvider
) -> None:
    openai_server.enqueue(rate_limited(retry_after_s=7))
    async with make_provider(max_retries=0) as provider:
        with pytest.raises(ProviderError) as caught:
            await provider.complete(ask())

    assert caught.value.status == 429
    assert "after 1 attempt;" in str(caught.value)
    assert "retry after 7 s" in str(caught.value)


async def test_500_after_retries_is_a_provider_error_with_status_and_attempts(
    openai_server: OpenAIServer, make_provider: MakeProvider
) -> None:
    openai_server.enqueue(*[server_error(500, retry_after_ms=10)] * 3)
    async with make_provider(max_retries=2) as provider:
        with pytest.raises(ProviderError) as caught:
            await provider.complete(ask())

    assert caught.value.status == 500
    assert caught.value.provider == "openai"
    assert "HTTP 500" in str(caught.value)
    assert "after 3 attempts" in str(caught.value)
    assert "request id req_loopback_" in str(caught.value)
    assert len(openai_server.chat_requests()) == 3


async def test_slow_answer_past_the_timeout_is_a_provider_timeout(
    openai_server: OpenAIServer, make_provider: MakeProvider
) -> None:
    openai_server.enqueue(Slow(3.0), Slow(3.0))
    async with make_provider(timeout_s=0.1, max_retries=1) as provider:
        with pytest.raises(ProviderTimeout) as caught:
            await provider.complete(ask())

    message = str(caught.value)
    assert "0.1 s" in message and "CHITTY_MODEL_TIMEOUT_S" in message
    assert "after 2 attempts" in message
    assert len(openai_server.chat_requests()) == 2


async def test_401_names_openai_api_key_and_never_shows_the_key(
    openai_server: OpenAIServer, make_provider: MakeProvider, api_key: str
) -> None:
    openai_server.configure(api_key="sk-the-right-one-000000")  # the 401 body echoes the wrong key
    async with make_provider(max_retries=2) as provider:
        with pytest.raises(ProviderError) as caught:
            await provider.complete(ask())

    assert caught.value.status == 401
    assert "OPENAI_API_KEY" in str(caught.value)
    assert "after 1 attempt" in str(caught.value)  # a 401 is not retried
    assert api_key not in everything_about(caught.value)
    assert api_key[-8:] not in everything_about(caught.value)


async def test_upstream_text_that_quotes_the_key_is_masked(
    openai_server: OpenAIServer, make_provider: MakeProvider, api_key: str
) -> None:
    openai_server.enqueue(Fail(400, f"bad request from key {api_key} and sk-other-abcdefghij"))
    async with make_provider() as provider:
        with pytest.raises(ProviderError) as caught:
            await provider.complete(ask())

    assert caught.value.status == 400
    assert "bad request from key" in str(caught.value)
    assert api_key not in everything_about(caught.value)
    assert "sk-other-abcdefghij" not in str(caught.value)


async def test_connection_error_names_the_host_and_not_the_key(api_key: str) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with OpenAIProvider(
        api_key=api_key, base_url=f"http://127.0.0.1:{port}/v1", timeout_s=2, max_retries=0
    ) as provider:
        with pytest.raises(ProviderError) as caught:
            await provider.complete(ask())

    assert not isinstance(caught.value, ProviderTimeout)
    assert caught.value.status is None
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert "OPENAI_BASE_URL" in str(caught.value)
    assert api_key not in everything_about(caught.value)


# -- construction -----------------------------------------------------------------------------


async def test_a_local_server_needs_no_key(openai_server: OpenAIServer) -> None:
    async with OpenAIProvider(
        api_key=None, base_url=openai_server.base_url, timeout_s=5, max_retries=0
    ) as provider:
        completion = await provider.complete(ask())

    assert completion.text == ECHO
    [sent] = openai_server.chat_requests()
    assert sent.headers["authorization"].startswith("Bearer ") and len(sent.headers["authorization"]) > 7


def test_no_key_and_no_base_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        OpenAIProvider(api_key=None, base_url=None)


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"timeout_s": 0}, "CHITTY_MODEL_TIMEOUT_S"),
        ({"timeout_s": float("nan")}, "CHITTY_MODEL_TIMEOUT_S"),
        ({"max_retries": -1}, "CHITTY_MODEL_MAX_RETRIES"),
        ({"base_url": "ftp://example.org/v1"}, "OPENAI_BASE_URL"),
    ],
)
def test_bad_settings_are_configuration_errors(kwargs: dict[str, object], names: str) -> None:
    settings: dict[str, object] = {"api_key": "sk-x", "base_url": "http://127.0.0.1:1/v1", **kwargs}
    with pytest.raises(ConfigurationError, match=names):
        OpenAIProvider(**settings)  # type: ignore[arg-type]


def test_repr_masks_the_key(api_key: str) -> None:
    provider = OpenAIProvider(api_key=api_key, base_url="http://user:pw@127.0.0.1:9/v1", name="local")
    shown = repr(provider)
    assert api_key not in shown and "'***'" in shown
    assert "pw" not in shown and "127.0.0.1:9" in shown
    assert provider.name == "local"


def test_it_is_a_provider() -> None:
    provider: Provider = OpenAIProvider(api_key="sk-x")
    assert provider.name == "openai"
    assert callable(provider.complete) and callable(provider.stream)


async def test_completion_is_frozen_and_complete(
    openai_server: OpenAIServer, make_provider: MakeProvider
) -> None:
    async with make_provider(name="local-llm") as provider:
        completion = await provider.complete(ask())
    assert isinstance(completion, Completion)
    assert completion.provider == "local-llm"
    with pytest.raises(AttributeError):
        completion.text = "changed"  # type: ignore[misc]


# -- how far a failed request got (for usage accounting) --------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def no_text_of_the_request(exc: BaseException) -> None:
    """The structured fields carry no prompt text (the message is checked elsewhere)."""
    fields = {k: v for k, v in vars(exc).items() if k != "partial"}
    shown = repr(fields)
    assert all(m.content not in shown for m in MESSAGES), shown


@pytest.mark.parametrize(
    ("scripts", "status", "attempts"),
    [
        ([server_error(500, retry_after_ms=5)] * 3, 500, 3),
        ([Fail(400, "bad request", "invalid_request_error")], 400, 1),
        ([Fail(429, "slow down", headers={"x-should-retry": "false"})], 429, 1),
    ],
    ids=["500-after-retries", "400", "429"],
)
async def test_an_error_status_is_rejected_with_status_model_attempts_and_request_id(
    openai_server: OpenAIServer, make_provider: MakeProvider, scripts: list[Fail], status: int, attempts: int
) -> None:
    openai_server.enqueue(*scripts)
    async with make_provider(max_retries=2) as provider:
        with pytest.raises(ProviderError) as caught:
            await provider.complete(ask(max_tokens=40))

    exc = caught.value
    assert (exc.delivery, exc.status, exc.model, exc.provider, exc.attempts) == (
        "rejected",
        status,
        "gpt-4o",
        "openai",
        attempts,
    )
    assert exc.request_id is not None and exc.request_id.startswith("req_loopback_")
    assert exc.latency_ms is not None and exc.latency_ms > 0
    assert failed_call(exc, model="asked", provider="p") == FailedCall(
        model="gpt-4o",
        provider="openai",
        delivery="rejected",
        status=status,
        request_id=exc.request_id,
        latency_ms=exc.latency_ms,
    )
    no_text_of_the_request(exc)


async def test_a_timeout_is_unknown_delivery_it_may_have_been_billed(
    openai_server: OpenAIServer, make_provider: MakeProvider
) -> None:
    openai_server.enqueue(Slow(3.0))
    async with make_provider(timeout_s=0.2) as provider:
        with pytest.raises(ProviderTimeout) as caught:
            await provider.complete(ask())

    exc = caught.value
    assert (exc.delivery, exc.status, exc.model, exc.attempts) == ("unknown", None, "gpt-4o", 1)
    assert exc.latency_ms is not None and exc.latency_ms >= 200
    call = failed_call(exc, model="gpt-4o", provider="openai")
    assert call is not None and call.delivery == "unknown"
    no_text_of_the_request(exc)


@pytest.mark.parametrize(
    "script",
    [
        Garbage(),
        Garbage(b'{"object": "chat.completion"}'),
        Reply(usage=(5, 3, 9)),
        BrokenStream(after_deltas=0),
    ],
    ids=["not-json", "no-choices", "impossible-usage", "dropped-halfway"],
)
async def test_a_malformed_or_cut_answer_after_sending_is_unknown_delivery(
    openai_server: OpenAIServer, make_provider: MakeProvider, api_key: str, script: object
) -> None:
    openai_server.enqueue(script)  # type: ignore[arg-type]
    async with make_provider() as provider:
        with pytest.raises(ProviderError) as caught:
            await provider.complete(ask())

    exc = caught.value
    assert (exc.delivery, exc.status, exc.model) == ("unknown", None, "gpt-4o")
    assert failed_call(exc, model="gpt-4o", provider="openai") is not None
    # The address was right: no advice to check OPENAI_BASE_URL.
    assert "cannot reach" not in str(exc) and "OPENAI_BASE_URL" not in str(exc)
    no_text_of_the_request(exc)
    assert api_key not in everything_about(exc)


async def test_a_stream_that_gets_garbage_is_interrupted_with_unknown_delivery(
    openai_server: OpenAIServer, make_provider: MakeProvider
) -> None:
    openai_server.enqueue(Garbage(b"oops", "text/plain"))
    async with make_provider() as provider:
        with pytest.raises(StreamInterrupted) as caught:
            await provider.stream(ask(), Deltas())
    assert caught.value.delivery == "unknown" and caught.value.partial.text == ""


async def test_a_refused_connection_was_never_sent(api_key: str) -> None:
    port = closed_port()
    async with OpenAIProvider(
        api_key=api_key, base_url=f"http://127.0.0.1:{port}/v1", timeout_s=2, max_retries=1
    ) as provider:
        with pytest.raises(ProviderError) as caught:
            await provider.complete(ask())

    assert (caught.value.delivery, caught.value.attempts) == ("not_sent", 2)
    assert failed_call(caught.value, model="gpt-4o", provider="openai") is None
    assert f"cannot reach 127.0.0.1:{port}" in str(caught.value) and "OPENAI_BASE_URL" in str(caught.value)


async def test_a_request_refused_before_sending_is_no_call(make_provider: MakeProvider) -> None:
    async with make_provider() as provider:
        with pytest.raises(InvalidInput) as caught:
            await provider.complete(CompletionRequest(messages=(), model="gpt-4o"))
    assert failed_call(caught.value, model="gpt-4o", provider="openai") is None
    assert failed_call(ProviderError("x", provider="p"), model="m", provider="p") is None  # not said
