"""The chittyos command as a user runs it: a real subprocess, real environment variables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from chittyos import __version__
from chittyos.config import Settings
from tests.conftest import create_database, drop_database
from tests.openai_server import OpenAIServer, server_error
from tests.server.conftest import settings_env


def chittyos(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chittyos", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


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
        done = chittyos("serve", env=env)
        assert done.returncode == 2
        assert "run `chittyos db upgrade`" in done.stderr
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
