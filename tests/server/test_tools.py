"""The coordinator tools through a real MCP client, over stdio and Streamable HTTP."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from mcp_types import CreateMessageRequestParams, CreateMessageResult, TextContent

from chittyos import __version__
from tests.openai_server import OpenAIServer, server_error
from tests.server.conftest import Connect

pytestmark = pytest.mark.anyio


def payload(result: Any) -> dict[str, Any]:
    """The seed's clients read JSON text in content[0]; newer ones read structuredContent."""
    assert result.is_error is False, result.content
    text = json.loads(result.content[0].text)
    assert text == result.structured_content
    return text


async def test_tools_are_listed_with_schemas(connect: Connect) -> None:
    async with connect() as client:
        assert client.server_info is not None and client.server_info.version == __version__
        tools = {t.name: t for t in (await client.list_tools()).tools}
    execute = tools["chitty_secure_ai_execute"]
    assert set(execute.input_schema["required"]) == {"prompt", "user_id"}
    assert execute.input_schema["properties"]["security_level"]["enum"] == ["standard", "fortress", "verified"]
    assert execute.output_schema is not None and "execution_id" in execute.output_schema["properties"]
    assert "chitty_execution_status" in tools


async def test_every_argument_of_every_tool_is_described_in_its_schema(connect: Connect) -> None:
    # A client's model picks arguments from tools/list alone.
    async with connect() as client:
        tools = (await client.list_tools()).tools
    undescribed = [
        f"{tool.name}.{name}"
        for tool in tools
        for name, schema in tool.input_schema["properties"].items()
        if not schema.get("description")
    ]
    assert len(tools) >= 12 and undescribed == []
    assertion = next(t for t in tools if t.name == "fortress_log_assertion").input_schema["properties"]
    assert (assertion["subject"]["maxLength"], assertion["object"]["maxLength"]) == (1024, 4096)


async def test_standard_execution_runs_and_its_status_reads_back(
    connect: Connect, openai_server: OpenAIServer
) -> None:
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    async with connect() as client:
        result = await client.call_tool(
            "chitty_secure_ai_execute",
            {"prompt": "What is a tort?", "user_id": "alice", "case_id": "C-7"},
            progress_callback=on_progress,
        )
        body = payload(result)
        assert body["status"] == "completed"
        assert body["security_level"] == "standard"
        assert body["results"]["chatgpt_response"] == "Echo: What is a tort?"
        assert body["verification"] == {
            "fortress_signed": False,
            "signature_valid": None,
            "chain_facts_logged": 6,  # completed, prompt, model, requested_model, requested_by, case
            "verification_status": None,
        }
        assert body["evidence_id"] is None
        assert len(body["chain_facts"]) == 6
        status = payload(await client.call_tool("chitty_execution_status", {"execution_id": body["execution_id"]}))
    assert status == body
    assert progress and progress[-1][0] == progress[-1][1]  # the last notification says done


async def test_handshake_era_clients_get_ping_and_set_level(connect: Connect) -> None:
    # Claude Desktop and other 2025-era clients use the initialize handshake, ping and
    # logging/setLevel; the 2026-07-28 revision dropped both, so they are asked for explicitly.
    async with connect(client_kwargs={"mode": "legacy"}) as client:
        assert client.server_capabilities.logging is not None
        await client.send_ping()
        await client.set_logging_level("warning")
        await client.send_ping()


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"user_id": "u"}, "prompt"),
        ({"prompt": "p"}, "user_id"),
        ({"prompt": "p", "user_id": "u", "security_level": "paranoid"}, "security_level"),
        ({"prompt": "x" * 2001, "user_id": "u"}, "prompt"),
    ],
)
async def test_bad_arguments_are_mcp_errors_naming_the_field(
    connect: Connect, openai_server: OpenAIServer, arguments: dict[str, Any], named: str
) -> None:
    async with connect(chitty_max_prompt_chars=2000) as client:
        result = await client.call_tool("chitty_secure_ai_execute", arguments)
        assert result.is_error is True
        assert named in result.content[0].text
        missing = await client.call_tool("chitty_execution_status", {"execution_id": "not-a-uuid"})
        assert missing.is_error is True and "execution_id" in missing.content[0].text
    assert openai_server.chat_requests() == []


async def test_arguments_of_the_wrong_type_are_named_without_pydantic_internals(
    connect: Connect, openai_server: OpenAIServer
) -> None:
    async with connect() as client:
        wrong = await client.call_tool("chitty_chain_query", {"limit": "many"})
        missing = await client.call_tool("chitty_chat_session_create", {"user_id": "u"})
    assert wrong.is_error is True and missing.is_error is True
    text = wrong.content[0].text
    assert text.startswith("invalid arguments for chitty_chain_query: limit: ")
    assert '(got "many")' in text
    assert "pydantic" not in text and "http" not in text and "Arguments" not in text
    assert missing.content[0].text == (
        "invalid arguments for chitty_chat_session_create: session_name: is required"
    )
    assert openai_server.chat_requests() == []


async def test_unknown_arguments_and_json_types_the_schema_does_not_allow_are_refused(
    connect: Connect, openai_server: OpenAIServer
) -> None:
    # The SDK's own check would ignore the misspelt name (max_tokens stays 1000) and take true as 1.
    messages = [{"role": "user", "content": "hi"}]
    async with connect() as client:
        misspelt = await client.call_tool("chatgpt_complete", {"messages": messages, "max_token": 5})
        boolean = await client.call_tool("chatgpt_complete", {"messages": messages, "max_tokens": True})
        text_number = await client.call_tool("chitty_chain_query", {"limit": "5"})
        several = await client.call_tool(
            "chitty_chat_session_list", {"user_id": "u", "limit": 2.5, "status": 7}
        )
    assert misspelt.is_error and boolean.is_error and text_number.is_error and several.is_error
    assert misspelt.content[0].text.startswith(
        "invalid arguments for chatgpt_complete: max_token: is not an argument of chatgpt_complete (known: "
    )
    assert "max_tokens" in misspelt.content[0].text
    assert boolean.content[0].text.startswith("invalid arguments for chatgpt_complete: max_tokens: ")
    assert "(got true)" in boolean.content[0].text
    assert text_number.content[0].text.startswith("invalid arguments for chitty_chain_query: limit: ")
    assert '(got "5")' in text_number.content[0].text
    assert "limit: " in several.content[0].text and "status: " in several.content[0].text
    assert openai_server.chat_requests() == []


async def test_unregistered_tier_is_an_error_naming_it(connect: Connect, openai_server: OpenAIServer) -> None:
    async with connect() as client:
        result = await client.call_tool(
            "chitty_secure_ai_execute", {"prompt": "p", "user_id": "u", "security_level": "verified"}
        )
    assert result.is_error is True
    assert "'verified' is not available" in result.content[0].text
    assert openai_server.chat_requests() == []


async def test_an_upstream_failure_is_an_error_that_names_the_failed_execution(
    connect: Connect, openai_server: OpenAIServer
) -> None:
    openai_server.enqueue(*(server_error(500, retry_after_ms=5) for _ in range(3)))
    async with connect() as client:
        result = await client.call_tool("chitty_secure_ai_execute", {"prompt": "p", "user_id": "u"})
        assert result.is_error is True
        text = result.content[0].text
        assert "failed" in text and "500" in text
        execution_id = re.search(r"execution ([0-9a-f-]{36}) failed", text).group(1)  # type: ignore[union-attr]
        status = payload(await client.call_tool("chitty_execution_status", {"execution_id": execution_id}))
    assert status["status"] == "failed" and "500" in status["error_message"]


async def test_without_an_openai_key_the_clients_own_model_answers_through_sampling(connect: Connect) -> None:
    asked: list[CreateMessageRequestParams] = []

    async def sample(context: Any, params: CreateMessageRequestParams) -> CreateMessageResult:
        asked.append(params)
        return CreateMessageResult(
            role="assistant", content=TextContent(type="text", text="sampled answer"), model="claude-test"
        )

    # Sampling is a server-to-client request: handshake-era connections (Claude Desktop) carry it.
    client_kwargs = {"sampling_callback": sample, "mode": "legacy"}
    async with connect(openai_base_url=None, openai_api_key=None, client_kwargs=client_kwargs) as c:
        body = payload(await c.call_tool("chitty_secure_ai_execute", {"prompt": "Hi there", "user_id": "u"}))
    assert body["provider"] == "mcp-sampling"
    assert body["results"]["chatgpt_response"] == "sampled answer"
    assert body["usage"] is None
    assert asked and asked[0].messages[0].content.text == "Hi there"


async def test_without_any_provider_the_error_says_which_variable_to_set(connect: Connect) -> None:
    async with connect(openai_base_url=None, openai_api_key=None) as client:
        result = await client.call_tool("chitty_secure_ai_execute", {"prompt": "p", "user_id": "u"})
    assert result.is_error is True and "OPENAI_API_KEY" in result.content[0].text
