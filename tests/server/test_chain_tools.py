"""ChittyChain through a real MCP client: assertions, queries, verification that can fail."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text, update

from chittyos.app import open_app
from chittyos.chain import NoteVerifier, open_checkpoint, verify_tlog_proof
from chittyos.db.models import SecureExecution
from tests.openai_server import OpenAIServer
from tests.server.conftest import Connect
from tests.server.test_tools import payload

pytestmark = pytest.mark.anyio


async def test_the_longest_subject_in_four_byte_characters_is_logged_and_found_on_both_databases(
    connect: Connect,
) -> None:
    # 1,024 characters of 4 bytes: PostgreSQL's B-tree index refused anything over 2,704 bytes
    # (900 CJK characters), while SQLite stored it.
    subject = "".join(chr(0x20000 + n) for n in range(1024))
    async with connect() as client:
        logged = payload(
            await client.call_tool(
                "fortress_log_assertion", {"subject": subject, "predicate": "p", "object": "o", "source": "s"}
            )
        )
        found = payload(await client.call_tool("chitty_chain_query", {"subject": subject}))
    assert logged["status"] == "logged"
    assert found["count"] == 1 and found["facts"][0]["fact_id"] == logged["fact_id"]


async def test_an_assertion_is_logged_signed_queried_and_verified_offline(connect: Connect) -> None:
    async with connect() as client:
        logged = payload(
            await client.call_tool(
                "fortress_log_assertion",
                {"subject": "contract:42", "predicate": "signed_by", "object": "ACME Corp", "source": "paralegal:ann"},
            )
        )
        assert logged["status"] == "logged" and len(logged["fact_id"]) == 64 and logged["signer"]
        found = payload(await client.call_tool("chitty_chain_query", {"subject": "contract:42"}))
        assert found["count"] == 1 and found["facts"][0]["fact_id"] == logged["fact_id"]
        assert found["facts"][0]["signed"] is True
        only_verified = payload(
            await client.call_tool("chitty_chain_query", {"subject": "contract:42", "verified_only": True})
        )
        assert only_verified["count"] == 1
        report = payload(await client.call_tool("chitty_chain_verify", {"fact_ids": [logged["fact_id"]]}))
        vkey = (await client.read_resource("chittyos://chain/vkey")).contents[0].text
        note = (await client.read_resource("chittyos://chain/checkpoint")).contents[0].text

    assert report["all_valid"] is True, report
    (fact,) = report["facts"]
    # An assertion names no execution: nothing to cross-reference, which reads null, not true.
    assert fact["checks"] == {"leaf": True, "inclusion": True, "signature": True, "cross_reference": None}
    assert fact["leaf_index"] == logged["leaf_index"] and fact["failures"] == []
    # Offline, with nothing but the published verifier key: the proof and the checkpoint check out.
    verifier = NoteVerifier.from_vkey(vkey)
    assert report["vkey"] == vkey
    verified = verify_tlog_proof(fact["tlog_proof"], verifier=verifier, leaf_hash=bytes.fromhex(fact["leaf_hash"]))
    assert verified.index == fact["leaf_index"]
    assert open_checkpoint(note, verifier).tree_size >= 1


async def test_executions_log_facts_and_tampering_is_reported_by_check_and_fact(
    connect: Connect, make_settings: Any, openai_server: OpenAIServer
) -> None:
    async with connect() as client:
        body = payload(await client.call_tool("chitty_secure_ai_execute", {"prompt": "p", "user_id": "u"}))
        facts = body["chain_facts"]
        clean = payload(await client.call_tool("chitty_chain_verify", {"fact_ids": facts}))
        assert clean["all_valid"] is True, clean

        # Someone rewrites the stored answer (sealed properly, with the real key): the log
        # still says what the answer was.
        async with open_app(make_settings()) as app:
            forged = app.sealer.seal(
                "a different answer", table="secure_executions", column="chatgpt_response", row_id=_uuid(body)
            )
            async with app.uow.begin() as session:
                await session.execute(
                    update(SecureExecution).where(SecureExecution.id == _uuid(body)).values(chatgpt_response=forged)
                )
        after = payload(await client.call_tool("chitty_chain_verify", {"fact_ids": facts}))
        assert after["all_valid"] is False
        completed = next(f for f in after["facts"] if f["checks"]["cross_reference"] is False)
        assert completed["fact_id"] == facts[0]
        assert any("cross_reference" in failure and body["execution_id"] in failure for failure in completed["failures"])

        # Someone edits a stored fact: its leaf no longer hashes to its id.
        async with open_app(make_settings()) as app:
            async with app.uow.begin() as session:
                await session.execute(
                    text("UPDATE chitty_chain_facts SET object = 'user:mallory' WHERE id = :id"), {"id": facts[3]}
                )
        edited = payload(await client.call_tool("chitty_chain_verify", {"fact_ids": [facts[3]]}))
    assert edited["all_valid"] is False
    assert edited["facts"][0]["checks"]["leaf"] is False and edited["facts"][0]["failures"]


@pytest.mark.parametrize(
    ("tool", "arguments", "named"),
    [
        ("chitty_chain_verify", {"fact_ids": []}, "fact_ids"),
        ("chitty_chain_verify", {"fact_ids": ["nothex"]}, "fact_ids[0]"),
        ("fortress_log_assertion", {"subject": "", "predicate": "p", "object": "o", "source": "s"}, "subject"),
        ("fortress_log_assertion", {"subject": "s", "predicate": "p\n", "object": "o", "source": "s"}, "predicate"),
        ("chitty_chain_query", {"start_time": 10, "end_time": 5}, "end_time"),
        ("chitty_chain_query", {"limit": 0}, "limit"),
        # A filter no stored fact could match is named, on both databases (PostgreSQL cannot
        # even take a NUL).
        ("chitty_chain_query", {"subject": "a\u0000b"}, "subject: must not contain control characters"),
        ("chitty_chain_query", {"object": "\u0000"}, "object: must not contain control characters"),
        ("chitty_chain_query", {"source": "s\u200b"}, "source: must not contain invisible format"),
        ("fortress_log_assertion", {"subject": "\u00a0", "predicate": "p", "object": "o", "source": "s"}, "subject: must hold more than whitespace"),
        ("fortress_log_assertion", {"subject": "s", "predicate": "p", "object": "\u0085", "source": "s"}, "object: must not contain control characters"),
        ("fortress_log_assertion", {"subject": "s\u202eab", "predicate": "p", "object": "o", "source": "s"}, "subject"),
        ("fortress_log_assertion", {"subject": "s", "predicate": "p", "object": "o", "source": "\u200bs"}, "source"),
        ("fortress_log_assertion", {"subject": "a\u2028b", "predicate": "p", "object": "o", "source": "s"}, "subject"),
        # The marks of the facts the server writes of its executions.
        ("fortress_log_assertion", {"subject": "s", "predicate": "p", "object": "o", "source": "ChittyOS:standard"}, "source: must not start with 'chittyos:'"),
        ("fortress_log_assertion", {"subject": "execution:1", "predicate": "p", "object": "o", "source": "s"}, "subject: must not start with 'execution:'"),
        ("fortress_log_assertion", {"subject": " Execution:1", "predicate": "p", "object": "o", "source": "s"}, "subject: must not start with 'execution:'"),
        ("fortress_log_assertion", {"subject": "\uff45xecution:1", "predicate": "p", "object": "o", "source": "s"}, "subject: must not start with 'execution:'"),
        ("fortress_log_assertion", {"subject": "s", "predicate": "p", "object": "o", "source": "chittyos\uff1astandard"}, "source: must not start with 'chittyos:'"),
    ],
)
async def test_bad_chain_arguments_name_the_field(connect: Connect, tool: str, arguments: dict[str, Any], named: str) -> None:
    async with connect() as client:
        result = await client.call_tool(tool, arguments)
    assert result.is_error is True
    assert named in result.content[0].text


async def test_query_times_beyond_a_bigint_are_refused_naming_the_field_and_the_bound(connect: Connect) -> None:
    async with connect() as client:
        start = await client.call_tool("chitty_chain_query", {"start_time": 99999999999999999999})
        end = await client.call_tool("chitty_chain_query", {"end_time": 9223372036854775808})
        negative = await client.call_tool("chitty_chain_query", {"start_time": -1})
        largest = await client.call_tool("chitty_chain_query", {"start_time": 0, "end_time": 9223372036854775807})
        rlo = await client.call_tool(
            "fortress_log_assertion", {"subject": "a\u202eb", "predicate": "p", "object": "o", "source": "s"}
        )
        tools = {t.name: t for t in (await client.list_tools()).tools}
    # The output model says what a null check means.
    schema = tools["chitty_chain_verify"].output_schema or {}
    checks = schema["$defs"]["FactResult"]["properties"]["checks"]
    assert "null: not applicable or not checked, never counted as passed" in checks["description"]
    assert {"type": "null"} in checks["additionalProperties"]["anyOf"]
    query = tools["chitty_chain_query"].input_schema["properties"]["start_time"]
    assert query["maximum"] == 2**63 - 1 and query["minimum"] == 0
    assert start.is_error and end.is_error and negative.is_error
    assert start.content[0].text == (
        "invalid arguments for chitty_chain_query: start_time: is greater than the maximum of "
        "9223372036854775807 (got 99999999999999999999)"
    )
    assert end.content[0].text.startswith(
        "invalid arguments for chitty_chain_query: end_time: is greater than the maximum of 9223372036854775807"
    )
    assert "start_time: is less than the minimum of 0" in negative.content[0].text
    assert largest.is_error is False and payload(largest)["count"] == 0
    assert rlo.is_error and "subject: must not contain invisible format characters" in rlo.content[0].text
    assert "U+202E at offset 1" in rlo.content[0].text


def _uuid(body: dict[str, Any]) -> Any:
    import uuid

    return uuid.UUID(body["execution_id"])


async def test_rewriting_who_asked_is_caught_by_the_cross_reference(
    connect: Connect, make_settings: Any, openai_server: OpenAIServer
) -> None:
    async with connect() as client:
        body = payload(
            await client.call_tool("chitty_secure_ai_execute", {"prompt": "p", "user_id": "u1", "case_id": "K-1"})
        )
        async with open_app(make_settings()) as app:
            async with app.uow.begin() as session:
                await session.execute(
                    update(SecureExecution)
                    .where(SecureExecution.id == _uuid(body))
                    .values(user_id="mallory", case_id="K-2", model="llama-evil")
                )
        report = payload(await client.call_tool("chitty_chain_verify", {"fact_ids": body["chain_facts"]}))
        status = payload(await client.call_tool("chitty_execution_status", {"execution_id": body["execution_id"]}))
    assert report["all_valid"] is False
    failed = [f for f in report["facts"] if f["checks"]["cross_reference"] is False]
    assert len(failed) == 3  # requested_model, requested_by and case
    assert any("mallory" in text for f in failed for text in f["failures"])
    # The status shows the edited requested model; the log's requested_model fact says otherwise.
    assert status["model"] == "llama-evil"
    assert any("'llama-evil'" in text for f in failed for text in f["failures"])
