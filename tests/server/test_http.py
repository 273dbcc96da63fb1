"""HTTP specifics: bearer tokens, /health, binding rules, DNS-rebinding checks."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from sqlalchemy import text

from chittyos import __version__
from chittyos.app import App, open_app
from chittyos.chain import Fact, SignedCheckpoint
from chittyos.errors import ChittyError, ConfigurationError
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


# -- one database, one log key --------------------------------------------------------------------


@pytest.fixture
def other_data_dir() -> Iterator[Path]:
    """A second server's data directory (its own log key, OpenPGP key and encryption key)."""
    path = Path(tempfile.mkdtemp(prefix="cd", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def fact(n: int) -> Fact:
    return Fact(subject=f"doc:{n}", predicate="says", object=f"v{n}", source="test", timestamp=1_700_000_000_000 + n)


async def test_a_second_openpgp_key_on_a_log_with_assertions_stops_start_up(
    make_settings: Any, data_dir: Path, other_data_dir: Path
) -> None:
    # A new user shared chain/ and encryption.key but not gnupg/: both servers started, and each
    # one's `chain verify` then failed on the other's assertions ("unknown key").
    async with open_app(make_settings()) as first:
        await first.chain.assert_fact(subject="contract:1", predicate="signed_by", object="a", source="t")
        signer = first.signer.fingerprint
    (other_data_dir / "chain").mkdir()
    for name in ("chain/log.key", "encryption.key"):
        shutil.copy2(data_dir / name, other_data_dir / name)
    with pytest.raises(ConfigurationError, match=f"assertions signed by {signer}, a key that is not in"):
        async with open_app(make_settings(chitty_data_dir=other_data_dir)):
            pass
    async with open_app(make_settings()) as first:  # the first server still starts
        assert (await first.health())["status"] == "ok"


async def test_a_changed_signature_on_the_newest_assertion_does_not_stop_start_up(make_settings: Any) -> None:
    async with open_app(make_settings()) as app:
        await app.chain.assert_fact(subject="contract:1", predicate="signed_by", object="a", source="t")
        async with app.engine.begin() as conn:
            await conn.execute(text("UPDATE chitty_chain_facts SET signature = 'garbage' WHERE signature IS NOT NULL"))
    async with open_app(make_settings()) as app:  # the row is for `chain verify` to name
        assert (await app.chain.log.verify_log()).ok is False


async def test_a_second_log_key_on_a_signed_log_stops_start_up(make_settings: Any, other_data_dir: Path) -> None:
    async with open_app(make_settings()) as first:
        await first.chain.log.append_now([fact(1)])
        signed = await first.chain.log.checkpoint()
    with pytest.raises(ConfigurationError) as caught:
        async with open_app(make_settings(chitty_data_dir=other_data_dir), background=True):
            pass
    message = str(caught.value)
    key = first.chain.log.verifier
    assert f"this database's log is signed by {key.name}+{key.key_id:08x} " in message
    assert f"(checkpoint at size {signed.tree_size})" in message and str(other_data_dir / "chain" / "log.key") in message
    assert "servers sharing a database must share the data directory's chain/log.key" in message
    assert "\n" not in message
    assert sorted(p.name for p in other_data_dir.iterdir()) == ["chain"]  # no OpenPGP or encryption key made


async def test_a_log_of_another_origin_stops_start_up(make_settings: Any, other_data_dir: Path) -> None:
    async with open_app(make_settings()) as first:
        await first.chain.log.append_now([fact(1)])  # no checkpoint yet: the head names the origin
    with pytest.raises(ConfigurationError, match=r"CHITTY_LOG_ORIGIN: this database's log has origin 'chittyos.local/chain'"):
        async with open_app(make_settings(chitty_data_dir=other_data_dir, chitty_log_origin="other.example/chain")):
            pass


async def sign_one_fact_then_break_its_checkpoint(app: App) -> SignedCheckpoint:
    """Append fact 1, sign a checkpoint at size 1, then change its note: no later one can be
    signed. Returns the checkpoint as signed (to put back)."""
    await app.chain.log.append_now([fact(1)])
    signed = await app.chain.log.checkpoint()
    async with app.engine.begin() as conn:
        await conn.execute(
            text("UPDATE chitty_chain_checkpoints SET note = :note WHERE tree_size = :size"),
            {"note": signed.note.replace("\n1\n", "\n2\n", 1), "size": signed.tree_size},
        )
    return signed


async def test_a_second_log_key_is_refused_even_before_the_first_append(
    make_settings: Any, other_data_dir: Path
) -> None:
    # The first server to start claims the empty log (a size-0 checkpoint), so a second one with
    # its own data directory is refused at start instead of appending and failing every checkpoint.
    async with open_app(make_settings()) as first:
        assert (await first.chain.log.latest_checkpoint()).tree_size == 0  # type: ignore[union-attr]
        with pytest.raises(ConfigurationError, match="checkpoint at size 0"):
            async with open_app(make_settings(chitty_data_dir=other_data_dir)):
                pass
        await first.chain.log.append_now([fact(1)])
        assert (await first.health())["status"] == "ok"


async def test_health_is_degraded_while_the_checkpointer_fails(make_settings: Any) -> None:
    """The background checkpointer cannot sign on top of a checkpoint that no longer verifies:
    /health says so instead of "ok"."""
    quick = {"chitty_checkpoint_every": 1, "chitty_checkpoint_interval_s": 3600}
    async with (
        open_app(make_settings(**quick), background=True) as app,
        running_http(app.settings, app=app) as base,
        httpx2.AsyncClient() as http,
    ):
        assert (await http.get(f"{base}/health")).json()["chain"] == {
            "origin": "chittyos.local/chain",
            "checkpoint": {"ok": True, "error": None, "failed_at": None},
        }
        await sign_one_fact_then_break_its_checkpoint(app)
        # Two appends: the first one's attempt may run before its commit and see nothing to sign
        # (ChainLog sets "due" inside the append); the second one's sees the log beyond size 1.
        await app.chain.log.append_now([fact(2)])
        await app.chain.log.append_now([fact(3)])
        with anyio.fail_after(10):
            while (response := await http.get(f"{base}/health")).status_code == 200:
                await anyio.sleep(0.05)
        assert response.status_code == 503
        report = response.json()
        assert report["status"] == "degraded" and report["database"]["reachable"] is True
        assert report["chain"]["checkpoint"]["ok"] is False
        # The refusal itself, not its class name (once read as a database constraint error).
        assert "checkpoint at size 1 does not verify" in report["chain"]["checkpoint"]["error"]
        assert report["chain"]["checkpoint"]["failed_at"]


async def test_a_server_started_on_a_changed_checkpoint_of_its_own_key_says_so_from_the_start(
    make_settings: Any,
) -> None:
    # Its key's name is on the checkpoint, so it is not another server's: it starts (the row is
    # for `chain verify` to name), but /health must not say "ok" until the checkpointer's first
    # failure a minute later.
    async with open_app(make_settings()) as app:
        await sign_one_fact_then_break_its_checkpoint(app)
    async with open_app(make_settings()) as app:
        report = await app.health()
        assert report["status"] == "degraded"
        error = report["chain"]["checkpoint"]["error"]
        assert "newest chain checkpoint (size 1)" in error and "does not verify" in error
        assert "chittyos chain verify" in error


async def test_a_checkpoint_whose_signature_line_was_changed_is_a_changed_row_not_another_server(
    make_settings: Any,
) -> None:
    # A new user changed one base64 character of the signature line's key id: start-up said the
    # log was another server's and told them to copy that server's keys.
    async with open_app(make_settings()) as app:
        await app.chain.log.append_now([fact(1)])
        signed = await app.chain.log.checkpoint()
        line = signed.note.rstrip("\n").splitlines()[-1]  # "— <name> <base64(key id || signature)>"
        blob = line.split(" ")[-1]
        changed = line[: -len(blob)] + ("B" if blob[0] != "B" else "C") + blob[1:]
        async with app.engine.begin() as conn:
            await conn.execute(
                text("UPDATE chitty_chain_checkpoints SET note = :note WHERE tree_size = 1"),
                {"note": signed.note.replace(line, changed)},
            )
    async with open_app(make_settings()) as app:
        error = (await app.health())["chain"]["checkpoint"]["error"]
        assert "newest chain checkpoint (size 1) does not verify with this server's log key" in error
        assert "signed the log's first checkpoint (size 0)" in error and "chittyos chain verify" in error


async def test_checkpoints_with_no_signature_line_that_parses_are_changed_rows_not_another_server(
    make_settings: Any,
) -> None:
    async with open_app(make_settings()) as app:
        await app.chain.log.append_now([fact(1)])
        await app.chain.log.checkpoint()
        async with app.engine.begin() as conn:  # every row, so the first one does not open either
            await conn.execute(text("UPDATE chitty_chain_checkpoints SET note = substr(note, 1, length(note) - 6) || 'AAAAA=\n'"))
    async with open_app(make_settings()) as app:
        error = (await app.health())["chain"]["checkpoint"]["error"]
        assert "newest chain checkpoint (size 1) does not verify with this server's log key" in error
        assert "carries no signature line that parses" in error


async def test_health_recovers_once_a_checkpoint_is_signed_again(make_settings: Any) -> None:
    async with open_app(make_settings()) as app:
        signed = await sign_one_fact_then_break_its_checkpoint(app)
        await app.chain.log.append_now([fact(2)])
        with pytest.raises(ChittyError):
            await app.chain.log.checkpoint()
        report = await app.health()
        assert report["status"] == "degraded" and report["chain"]["checkpoint"]["ok"] is False
        async with app.engine.begin() as conn:
            await conn.execute(
                text("UPDATE chitty_chain_checkpoints SET note = :note WHERE tree_size = :size"),
                {"note": signed.note, "size": signed.tree_size},
            )
        assert (await app.chain.log.checkpoint()).tree_size == 2
        report = await app.health()
        assert report["status"] == "ok" and report["chain"]["checkpoint"] == {"ok": True}


async def test_a_database_error_while_checkpointing_does_not_stop_the_server(make_settings: Any) -> None:
    """The checkpointer let anything but a ChittyError through, and the server's task group then
    stopped the whole server. It keeps serving, /health says degraded, and it signs again once
    the database is back."""
    settings = make_settings(chitty_checkpoint_every=1, chitty_checkpoint_interval_s=3600)
    async with open_app(settings, background=True) as app:
        async with app.engine.begin() as conn:  # the checkpoint table is gone for a while
            await conn.execute(text("ALTER TABLE chitty_chain_checkpoints RENAME TO chitty_chain_checkpoints_away"))
        try:
            await app.chain.log.append_now([fact(1)])
            with anyio.fail_after(10):
                while (report := await app.health())["chain"]["checkpoint"]["ok"]:
                    await anyio.sleep(0.02)
            assert report["status"] == "degraded"
            assert report["chain"]["checkpoint"]["error"] in (
                "ProgrammingError (see the server log)",
                "OperationalError (see the server log)",
            )
        finally:
            async with app.engine.begin() as conn:
                await conn.execute(text("ALTER TABLE chitty_chain_checkpoints_away RENAME TO chitty_chain_checkpoints"))
        # still serving: nothing signed beyond the size-0 checkpoint that claimed the log at start
        assert (await app.chain.log.latest_checkpoint()).tree_size == 0  # type: ignore[union-attr]
        await app.chain.log.append_now([fact(2)])  # due again: the restarted checkpointer signs
        with anyio.fail_after(10):
            while (await app.health())["status"] != "ok":
                await anyio.sleep(0.02)
        signed = await app.chain.log.latest_checkpoint()
        assert signed is not None and signed.tree_size >= 1
