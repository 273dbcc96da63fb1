"""The chittyos command as a user runs it: a real subprocess, real environment variables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from chittyos import __version__
from chittyos.app import open_app
from chittyos.chain import Fact
from chittyos.config import Settings
from tests.conftest import create_database, drop_database
from tests.openai_server import OpenAIServer, server_error
from tests.server.conftest import free_port, settings_env


def chittyos(
    *args: str, env: dict[str, str], stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chittyos", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a command that stopped on a configuration error (exit 2)."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, (done.returncode, done.stderr)
    return lines[0]


def test_version() -> None:
    done = chittyos("--version", env=dict(os.environ))
    assert done.returncode == 0 and done.stdout.strip() == f"chittyos {__version__}"


def test_exec_prints_the_completed_execution_as_json(settings: Settings, openai_server: OpenAIServer) -> None:
    done = chittyos("exec", "Draft a demand letter", "--user", "carol", "--case-id", "K-9", env=settings_env(settings))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "completed"
    assert result["user_id"] == "carol" and result["case_id"] == "K-9"
    assert result["results"]["chatgpt_response"] == "Echo: Draft a demand letter"
    assert done.stderr.count("sk-test") == 0


def test_exec_reads_the_prompt_from_stdin(settings: Settings, openai_server: OpenAIServer) -> None:
    done = chittyos("exec", "-", env=settings_env(settings), stdin="from stdin")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["results"]["chatgpt_response"] == "Echo: from stdin"


def test_exec_of_a_failing_upstream_prints_the_failed_execution_and_exits_1(
    settings: Settings, openai_server: OpenAIServer
) -> None:
    openai_server.enqueue(*(server_error(500, retry_after_ms=5) for _ in range(3)))
    done = chittyos("exec", "p", env=settings_env(settings))
    assert done.returncode == 1
    assert json.loads(done.stdout)["status"] == "failed"
    assert "failed" in done.stderr and "500" in done.stderr


def test_exec_of_an_unregistered_tier_exits_2_naming_it(settings: Settings) -> None:
    done = chittyos("exec", "p", "--tier", "fortress", env=settings_env(settings))
    assert done.returncode == 2
    assert "fortress" in done.stderr and done.stdout == ""


@pytest.mark.parametrize(("name", "value"), [("CHITTY_MAX_PROMPT_CHARS", "zero"), ("OPENAI_BASE_URL", "ftp://x")])
def test_a_bad_variable_stops_with_one_line_naming_it(settings: Settings, name: str, value: str) -> None:
    env = settings_env(settings) | {name: value}
    for command in (["serve"], ["exec", "p"], ["db", "upgrade"]):
        done = chittyos(*command, env=env)
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"chittyos: {name}: ")


def test_claude_config_prints_absolute_paths(settings: Settings) -> None:
    done = chittyos("claude-config", env=settings_env(settings))
    assert done.returncode == 0, done.stderr
    entry = json.loads(done.stdout)["mcpServers"]["chittyos"]
    assert Path(entry["command"]).is_absolute() and Path(entry["command"]).exists()
    assert entry["args"][-1] == "serve"
    assert Path(entry["env"]["CHITTY_DATA_DIR"]).is_absolute()
    assert "sk-test" not in done.stdout  # the key is a placeholder, never the real one


def test_db_upgrade_reports_the_revision(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHITTY_")}
    env |= {"CHITTY_DATA_DIR": str(tmp_path)}
    done = chittyos("db", "upgrade", env=env)
    assert done.returncode == 0, done.stderr
    assert "chittyos.db is at" in done.stdout


@pytest.mark.postgres
def test_serve_on_a_postgres_schema_that_is_behind_says_to_upgrade(
    postgres_server_url: str, settings: Settings, tmp_path: Path
) -> None:
    name = f"chitty_cli_{uuid.uuid4().hex[:8]}"
    url = create_database(postgres_server_url, name)
    try:
        env: dict[str, Any] = settings_env(settings) | {"CHITTY_DATABASE_URL": url}
        # --http too: one line and exit 2, not uvicorn's lifespan traceback and exit 3
        for command in (["serve"], ["serve", "--http", "--port", str(free_port())], ["exec", "p"]):
            line = one_line(chittyos(*command, env=env))
            assert line.startswith("chittyos: database schema is at") and "run `chittyos db upgrade`" in line, line
        assert chittyos("db", "upgrade", env=env).returncode == 0
    finally:
        drop_database(postgres_server_url, name)


def test_chain_commands_prove_verify_and_name_a_tampered_index(
    settings: Settings, openai_server: OpenAIServer
) -> None:
    env = settings_env(settings)
    done = chittyos("exec", "log me", env=env)
    assert done.returncode == 0, done.stderr
    fact_id = json.loads(done.stdout)["chain_facts"][0]

    checkpoint = chittyos("chain", "checkpoint", env=env)
    assert checkpoint.returncode == 0, checkpoint.stderr
    assert checkpoint.stdout.startswith(settings.chitty_log_origin + "\n")

    proof = chittyos("chain", "proof", fact_id, env=env)
    assert proof.returncode == 0, proof.stderr
    assert proof.stdout.startswith("c2sp.org/tlog-proof@v1\n")

    clean = chittyos("chain", "verify", "--quiet", env=env)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout.strip().endswith("OK")

    import sqlite3

    if settings.database_url.startswith("sqlite"):
        with sqlite3.connect(settings.database_url.removeprefix("sqlite:///")) as db:
            db.execute("UPDATE chitty_chain_facts SET object = 'sha256:' || substr(object, 8) || '' WHERE leaf_index = 2")
            db.execute("UPDATE chitty_chain_facts SET subject = 'execution:forged' WHERE leaf_index = 1")
    else:
        import psycopg

        with psycopg.connect(settings.database_url) as db:
            db.execute("UPDATE chitty_chain_facts SET subject = 'execution:forged' WHERE leaf_index = 1")
    broken = chittyos("chain", "verify", "--quiet", env=env)
    assert broken.returncode == 1
    assert "MISMATCH" in broken.stdout and "index 1" in broken.stdout
    assert broken.stdout.strip().endswith("FAILED")

    missing = chittyos("chain", "proof", "0" * 64, env=env)
    assert missing.returncode == 2 and "not found" in missing.stderr

    # A proof that the stored tree cannot give is a mismatch (1), not bad input (2).
    _run_sql(settings.database_url, "UPDATE chitty_chain_nodes SET hash = leaf_hash FROM chitty_chain_facts "
             "WHERE chitty_chain_nodes.level = 0 AND chitty_chain_nodes.\"index\" = 1 AND chitty_chain_facts.leaf_index = 2")
    corrupt = chittyos("chain", "proof", fact_id, env=env)
    assert corrupt.returncode == 1, corrupt.stderr


@pytest.mark.anyio
async def test_chain_verify_checks_the_signature_of_every_signed_fact_unless_told_not_to(
    settings: Settings,
) -> None:
    async with open_app(settings) as app:
        for n in range(3):
            await app.chain.assert_fact(
                subject=f"contract:{n}", predicate="signed_by", object="acme", source="cli-test"
            )
    env = settings_env(settings)
    checked = chittyos("chain", "verify", "--quiet", env=env)
    skipped = chittyos("chain", "verify", "--quiet", "--no-signatures", env=env)
    assert checked.returncode == 0 and skipped.returncode == 0, checked.stdout + checked.stderr
    assert ", 3 signatures checked in" in checked.stdout and checked.stdout.strip().endswith("OK")
    assert "signatures" not in skipped.stdout and skipped.stdout.strip().endswith("OK")

    # A fact that names no execution and carries no signature can only be a forged assertion.
    async with open_app(settings) as app:
        unsigned = Fact(
            subject="contract:9", predicate="signed_by", object="mallory", source="cli-test", timestamp=1
        )
        (placed,) = await app.chain.log.append_now([unsigned])
    forged = chittyos("chain", "verify", "--quiet", env=env)
    assert forged.returncode == 1, forged.stdout + forged.stderr
    assert f"MISMATCH fact.signature [index {placed.leaf_index}, fact {unsigned.fact_id}]" in forged.stdout
    assert "unsigned assertion" in forged.stdout
    assert chittyos("chain", "verify", "--quiet", "--no-signatures", env=env).returncode == 0

    # Naming an execution that does not exist does not make an unsigned fact pass.
    async with open_app(settings) as app:
        ghost = Fact(
            subject="execution:00000000-0000-4000-8000-000000000000", predicate="completed",
            object="sha256:" + "0" * 64, source="chittyos:standard", timestamp=2,
            execution_id="00000000-0000-4000-8000-000000000000",
        )  # fmt: skip
        (ghost_placed,) = await app.chain.log.append_now([ghost])
    named = chittyos("chain", "verify", "--quiet", "--no-signatures", env=env)
    assert named.returncode == 1, named.stdout + named.stderr
    assert (
        f"MISMATCH fact.cross_reference [index {ghost_placed.leaf_index}, fact {ghost.fact_id}]: "
        f"fact {ghost.fact_id} at index {ghost_placed.leaf_index}: names execution "
        "00000000-0000-4000-8000-000000000000, which does not exist"
    ) in named.stdout
    flags = ("--quiet", "--no-signatures", "--no-cross-reference")
    assert chittyos("chain", "verify", *flags, env=env).returncode == 0


def _run_sql(url: str, statement: str) -> list[Any]:
    from sqlalchemy import text

    from chittyos.db.migrate import sync_engine

    engine = sync_engine(url, configure=False)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement))
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


def _mismatch_indices(stdout: str) -> list[int]:
    """The leaf index each MISMATCH line names, in the order printed (lines naming none left out)."""
    import re

    return [int(m) for m in re.findall(r"^MISMATCH \S+ \[index (\d+)", stdout, flags=re.MULTILINE)]


@pytest.mark.anyio
async def test_chain_verify_names_findings_in_index_order_and_ends_with_a_count_per_check(
    settings: Settings,
) -> None:
    """Signature findings came out as 0, 2, 1, 3, ... after the other findings of their page, and
    763 of them ended in no summary of what failed."""
    async with open_app(settings) as app:
        for n in range(3):
            await app.chain.assert_fact(
                subject=f"contract:{n}", predicate="signed_by", object="a", source="t"
            )
        (unsigned,) = await app.chain.log.append_now(
            [Fact(subject="contract:u", predicate="signed_by", object="m", source="t", timestamp=1)]
        )
        await app.chain.assert_fact(subject="contract:4", predicate="signed_by", object="a", source="t")
        await app.chain.log.checkpoint()
    assert unsigned.leaf_index == 3
    # fact 2 changed: fact.id, fact.leaf_hash (found row by row, first) and fact.signature (found
    # last); fact 3 an unsigned assertion (found in between); and the nodes and root above them
    _run_sql(settings.database_url, "UPDATE chitty_chain_facts SET object = 'forged' WHERE leaf_index = 2")
    done = chittyos("chain", "verify", "--quiet", env=settings_env(settings))
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    indices = _mismatch_indices(done.stdout)
    assert indices == sorted(indices) and set(indices) == {2, 3}, done.stdout
    findings = [line for line in lines if line.startswith("MISMATCH ")]
    assert all("[index" in line for line in findings[: len(indices)])  # the others after them
    per_check: dict[str, int] = {}
    for line in findings:
        check = line.split()[1]
        per_check[check] = per_check.get(check, 0) + 1
    assert per_check["fact.signature"] == 2 and per_check["fact.id"] == 1 and "node.mismatch" in per_check
    counted = sorted(per_check.items(), key=lambda item: (-item[1], item[0]))
    assert lines[-2] == "mismatches: " + ", ".join(f"{n} {check}" for check, n in counted), done.stdout
    assert lines[-1].endswith("FAILED")


def test_chain_verify_counts_the_stored_nodes_that_remain(settings: Settings) -> None:
    """After one row of chitty_chain_nodes was deleted, the summary still said 1518 stored nodes
    when 1517 remained."""

    async def fill() -> None:
        async with open_app(settings) as app:
            for n in range(11):
                await app.chain.assert_fact(
                    subject=f"contract:{n}", predicate="signed_by", object="a", source="t"
                )
            await app.chain.log.checkpoint()

    anyio.run(fill)
    env = settings_env(settings)
    url = settings.database_url
    ((stored,),) = _run_sql(url, "SELECT count(*) FROM chitty_chain_nodes")
    clean = chittyos("chain", "verify", "--quiet", env=env)
    assert clean.returncode == 0 and f", {stored} stored nodes, " in clean.stdout, clean.stdout + clean.stderr
    assert "mismatches:" not in clean.stdout and clean.stdout.strip().endswith("OK")
    _run_sql(url, 'DELETE FROM chitty_chain_nodes WHERE level = 1 AND "index" = 2')
    broken = chittyos("chain", "verify", "--quiet", env=env)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert f", {stored - 1} stored nodes, " in broken.stdout, broken.stdout
    assert "MISMATCH node.missing [node (1, 2)]: node (level 1, index 2) is not stored" in broken.stdout
    assert broken.stdout.strip().splitlines()[-2:-1] == ["mismatches: 1 node.missing"], broken.stdout


def test_chain_verify_warns_when_no_signed_checkpoint_commits_to_the_leaves(settings: Settings) -> None:
    """A new user deleted every checkpoint of a 763-leaf log and chain verify said only OK."""

    async def fill() -> None:
        async with open_app(settings) as app:
            for n in range(3):
                await app.chain.assert_fact(subject=f"contract:{n}", predicate="signed_by", object="a", source="t")
            await app.chain.log.checkpoint()

    anyio.run(fill)
    env = settings_env(settings)
    signed = chittyos("chain", "verify", "--quiet", env=env)
    assert signed.returncode == 0 and "WARNING" not in signed.stdout, signed.stdout + signed.stderr
    _run_sql(settings.database_url, "DELETE FROM chitty_chain_checkpoints")
    unsigned = chittyos("chain", "verify", "--quiet", env=env)
    assert unsigned.returncode == 0, unsigned.stdout + unsigned.stderr  # consistent, so not a mismatch
    assert "WARNING: no signed checkpoint commits to these 3 leaves" in unsigned.stdout, unsigned.stdout


# -- empty variables ------------------------------------------------------------------------------


def test_an_empty_data_dir_or_encryption_key_stops_start_up_and_creates_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    """CHITTY_DATA_DIR= used to put the private keys in the current directory, and
    CHITTY_ENCRYPTION_KEY= to create a new key file as if it were unset."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for name in ("CHITTY_DATA_DIR", "CHITTY_ENCRYPTION_KEY", "CHITTY_DATABASE_URL", "PGP_PRIVATE_KEY"):
        env = settings_env(settings) | {name: ""}
        for command in (["keys", "init"], ["serve"], ["exec", "p"]):
            line = one_line(chittyos(*command, env=env, cwd=cwd))
            assert line == f"chittyos: {name}: must not be empty (unset it to use the default)" + (
                "" if name in ("CHITTY_ENCRYPTION_KEY", "PGP_PRIVATE_KEY") else " (got '')"
            ), line
    assert list(cwd.iterdir()) == []
    assert not (settings.chitty_data_dir / "encryption.key").exists()


# -- commands that only read ----------------------------------------------------------------------

READ_ONLY = [
    ["chain", "verify", "--quiet"],
    ["chain", "proof", "ab" * 32],
    ["chain", "checkpoint"],
    ["keys", "export"],
    ["budget", "show", "--user", "u"],
    ["budget", "remove", "--user", "u"],
    ["keys", "rotate-encryption"],
]


@pytest.mark.parametrize("command", READ_ONLY, ids=lambda c: " ".join(c[:2]))
def test_a_command_that_only_reads_refuses_a_missing_data_dir_and_creates_nothing(
    settings: Settings, tmp_path: Path, command: list[str]
) -> None:
    """A mistyped CHITTY_DATA_DIR got a new log key, gnupg/ and an empty database, and `chain
    verify` said "0 leaves ... OK". On PostgreSQL as well: the keys live in the data directory."""
    typo = tmp_path / "typo"
    env = settings_env(settings) | {"CHITTY_DATA_DIR": str(typo)}
    line = one_line(chittyos(*command, env=env))
    if command[:2] == ["keys", "export"] or not settings.database_url.startswith("sqlite"):
        steps = "start the server (`chittyos serve`) or run `chittyos keys init` first"
    else:  # the SQLite file is missing too: both steps, so that following this line is enough
        steps = (
            "run `chittyos keys init` and `chittyos db upgrade` first (or start the server once: `chittyos serve`)"
        )
    assert line == f"chittyos: CHITTY_DATA_DIR: the data directory {typo} does not exist; {steps}"
    assert not typo.exists()
    if settings.database_url.startswith("sqlite"):
        assert not Path(settings.database_url.removeprefix("sqlite:///")).exists()


def test_keys_init_still_creates_the_data_dir_and_read_only_commands_then_work(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHITTY_", "OPENAI_", "PGP_"))}
    env |= {"CHITTY_DATA_DIR": str(tmp_path / "data"), "CHITTY_LOG_LEVEL": "WARNING"}
    # a data directory with keys but no database yet: say how to make one, create none
    assert chittyos("keys", "init", env=env).returncode == 0
    line = one_line(chittyos("chain", "verify", "--quiet", env=env))
    assert "no database at" in line and "chittyos db upgrade" in line
    assert not (tmp_path / "data" / "chittyos.db").exists()
    exported = chittyos("keys", "export", env=env)
    assert exported.returncode == 0 and exported.stdout.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert chittyos("db", "upgrade", env=env).returncode == 0
    verified = chittyos("chain", "verify", "--quiet", env=env)
    assert verified.returncode == 0 and verified.stdout.strip().endswith("OK"), verified.stderr
    (tmp_path / "data" / "chain" / "log.key").unlink()  # a data directory from before the chain
    line = one_line(chittyos("chain", "verify", "--quiet", env=env))
    assert line.startswith(f"chittyos: CHITTY_DATA_DIR: no chain log key at {tmp_path / 'data' / 'chain' / 'log.key'}")


# -- only the server sweeps ----------------------------------------------------------------------


async def _abandon(settings: Settings, execution_id: str) -> None:
    """Leave the execution as a killed process would: still executing, started 5 minutes ago."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from chittyos.db import create_engine
    from chittyos.db.models import SecureExecution

    engine = create_engine(settings.database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                update(SecureExecution.__table__)
                .where(SecureExecution.__table__.c.id == uuid.UUID(execution_id))
                .values(status="executing", completed_at=None, created_at=datetime.now(UTC) - timedelta(minutes=5))
            )
    finally:
        await engine.dispose()


def _status(settings: Settings, execution_id: str) -> str:
    from sqlalchemy import select

    from chittyos.db import create_engine
    from chittyos.db.models import SecureExecution

    async def read() -> str:
        engine = create_engine(settings.database_url)
        try:
            async with engine.connect() as conn:
                table = SecureExecution.__table__
                return str(await conn.scalar(select(table.c.status).where(table.c.id == uuid.UUID(execution_id))))
        finally:
            await engine.dispose()

    return anyio.run(read)


def test_one_shot_commands_neither_sweep_executions_nor_announce_a_server(
    settings: Settings, openai_server: OpenAIServer
) -> None:
    """Only a server may decide that an execution left running was abandoned by a dead process;
    `budget show` used to sweep them and log "chittyos ready"."""
    env = settings_env(settings) | {"CHITTY_EXECUTION_STALE_S": "60", "CHITTY_LOG_LEVEL": "INFO"}
    done = chittyos("exec", "p", env=env)
    assert done.returncode == 0, done.stderr
    execution_id = json.loads(done.stdout)["execution_id"]
    anyio.run(_abandon, settings, execution_id)
    assert _status(settings, execution_id) == "executing"
    for command in (["budget", "show", "--user", "u"], ["chain", "verify", "--quiet"], ["exec", "q"]):
        done = chittyos(*command, env=env)
        assert done.returncode == 0, done.stderr
        assert "chittyos ready" not in done.stderr
        assert _status(settings, execution_id) == "executing"
    served = chittyos("serve", env=env, stdin="")  # stdio at end of input: starts, then stops
    assert "chittyos ready" in served.stderr
    assert _status(settings, execution_id) == "failed"


# -- two data directories on one database ---------------------------------------------------------


def test_a_second_data_dir_on_the_same_database_is_refused_at_start_up(
    settings: Settings, openai_server: OpenAIServer, tmp_path: Path
) -> None:
    """Replicas with their own data directories have their own log keys: the second one used to
    start, take appends and then fail every checkpoint in the background, /health saying ok."""
    first = settings_env(settings)
    assert chittyos("exec", "log me", env=first).returncode == 0
    assert chittyos("chain", "checkpoint", env=first).returncode == 0
    second_dir = tmp_path / "replica"
    second = first | {"CHITTY_DATA_DIR": str(second_dir)}
    for command in (["serve", "--http", "--port", str(free_port())], ["serve"], ["exec", "p"]):
        line = one_line(chittyos(*command, env=second))
        assert line.startswith("chittyos: chain log key: this database's log is signed by chittyos.local/chain+"), line
        assert "not by this server's log key chittyos.local/chain+" in line
        assert str(second_dir / "chain" / "log.key") in line
        assert "must share the data directory's chain/log.key, gnupg/ and encryption.key" in line
    # refused before any other key was made for it
    assert sorted(p.name for p in second_dir.iterdir()) == ["chain"]
    assert chittyos("exec", "p", env=first).returncode == 0  # the first one's keys still serve


def test_serve_http_on_sigterm_closes_the_app_before_exiting(settings: Settings, tmp_path: Path) -> None:
    """uvicorn re-raises SIGTERM after it stopped serving; the App (gpg-agent, pool) is closed first."""
    import signal
    import time

    import httpx2

    port = free_port()
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "chittyos", "serve", "--http", "--port", str(port)],
            env=settings_env(settings),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            try:
                if httpx2.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            time.sleep(0.1)
        agent = settings.chitty_data_dir / "gnupg" / "S.gpg-agent"
        assert agent.exists()  # the server's signer holds the agent
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == -signal.SIGTERM
        assert not agent.exists()  # the App was closed: the signer stopped its agent
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_of_two_processes_with_different_log_keys_opening_one_database_at_once_one_is_refused(
    settings: Settings, tmp_path: Path
) -> None:
    # Each claims the empty log (a size-0 checkpoint) or finds the other's claim: one goes on,
    # the other stops with the line saying what replicas share. Separate processes, as servers are.
    env = settings_env(settings)
    other = env | {"CHITTY_DATA_DIR": str(tmp_path / "other")}
    command = [sys.executable, "-m", "chittyos", "budget", "set", "--user", "u", "--limit", "1", "--window", "day"]
    runs = [
        subprocess.Popen(command, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for e in (env, other)
    ]
    done = [(run.wait(timeout=60), run.communicate()[1]) for run in runs]
    assert sorted(code for code, _ in done) == [0, 2], done
    refused = next(err for code, err in done if code == 2)
    assert "servers sharing a database must share the data directory's chain/log.key" in refused


def test_keys_init_does_not_make_a_new_log_key_for_a_log_another_key_signed(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHITTY_", "OPENAI_", "PGP_"))}
    env |= {"CHITTY_DATA_DIR": str(tmp_path / "data"), "CHITTY_LOG_LEVEL": "WARNING"}
    assert chittyos("keys", "init", env=env).returncode == 0
    assert chittyos("db", "upgrade", env=env).returncode == 0
    signed = chittyos("chain", "checkpoint", env=env)
    assert signed.returncode == 0, signed.stderr
    key = tmp_path / "data" / "chain" / "log.key"
    name = key.read_text().split("+")[2]  # PRIVATE+KEY+<name>+<key id>+<key>
    key.unlink()  # the keys were lost; following "run `chittyos keys init`" must not hide that
    refused = chittyos("keys", "init", env=env)
    line = one_line(refused)
    assert refused.returncode == 2
    assert line.startswith(f"chittyos: CHITTY_DATA_DIR: {key} does not exist, but the database"), line
    assert f"holds a log signed by {name}+" in line and "Restore the data directory's chain/log.key" in line
    assert not key.exists()


def test_keys_init_and_serve_refuse_an_encryption_key_that_opens_nothing_and_leave_no_key_file(
    settings: Settings, openai_server: OpenAIServer
) -> None:
    # keys init said "encryption key id ... (created now: back it up)" for a key that opens
    # none of the database's sealed rows, and a refused serve left such a key file behind.
    env = settings_env(settings)
    assert chittyos("exec", "sealed under the first key", env=env).returncode == 0
    key_file = settings.chitty_data_dir / "encryption.key"
    assert settings.chitty_encryption_key is None and key_file.exists()
    key_file.unlink()  # lost: a new one would open none of the sealed rows
    for command in (["keys", "init"], ["serve"]):
        line = one_line(chittyos(*command, env=env))
        assert "secure_executions.prompt holds values sealed with key id" in line, line
        assert "which is not loaded" in line
        assert not key_file.exists()
    # and a command that only reads does not send them round to those two
    line = one_line(chittyos("keys", "rotate-encryption", env=env))
    assert line == (
        f"chittyos: CHITTY_DATA_DIR: no encryption key at {key_file}; restore it from a backup, or set "
        "CHITTY_ENCRYPTION_KEY to it (a new key opens nothing sealed before)"
    )


def test_the_embedded_database_is_created_readable_by_its_user_only(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHITTY_", "OPENAI_", "PGP_"))}
    env |= {"CHITTY_DATA_DIR": str(tmp_path / "data"), "CHITTY_LOG_LEVEL": "WARNING"}
    # The first command a new user runs makes it (each of these did, 0644, but db upgrade).
    for first in (["serve"], ["exec", "-"], ["db", "upgrade"]):
        data = tmp_path / "-".join(first)
        env["CHITTY_DATA_DIR"] = str(data)
        chittyos(*first, env=env, stdin="")  # stdio serve stops at end of input; exec fails on no model
        made = sorted(p.name for p in data.iterdir() if p.name.startswith("chittyos.db"))
        assert "chittyos.db" in made, (first, made)
        assert all((data / name).stat().st_mode & 0o777 == 0o600 for name in made), (first, made)
