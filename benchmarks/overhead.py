"""What this server adds to a model call (issue: foundation).

Measures, in one run, the latency of the same prompt
  (a) as a direct ``openai`` SDK call to the loopback OpenAI-compatible test server,
  (b) through ``ExecutionService`` at the standard tier (validate, two transactions, events),
  (c) through the MCP tool ``chitty_secure_ai_execute`` over Streamable HTTP,
on SQLite and on PostgreSQL, and reports p50/p95 and the overhead (b) - (a), (c) - (a); and, per
call, this process's CPU time for (a) and (b): "(b)-(a) cpu" is what the server itself burns
around the model call (wall time on a shared machine also counts other processes' turns).
Targets: overhead p50 <= 2 ms on SQLite, <= 4 ms on PostgreSQL.

    python benchmarks/overhead.py [--n 300] [--postgres postgresql://postgres@127.0.0.1:5432/postgres]

Prints a table and writes benchmarks/results/overhead.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import anyio
import httpx2
import openai
from _common import backends, bench_database, model_server_process, print_table, summary, timed, write_json
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from chittyos.app import open_app
from chittyos.config import load_settings
from chittyos.execution import ExecutionRequest
from tests.server.conftest import running_http

PROMPT = "Summarise the indemnity clause in two sentences."
TOKEN = "bench-token-0123456789abcdef"


async def measure(backend: str, url: str, base_url: str, n: int) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="cb", dir="/tmp"))
    try:
        settings = load_settings(
            chitty_data_dir=data_dir,
            chitty_database_url=url,
            openai_base_url=base_url,
            openai_api_key="sk-bench",
            chitty_api_tokens=TOKEN,
            chitty_log_level="WARNING",
        )
        direct = openai.AsyncOpenAI(api_key="sk-bench", base_url=base_url, max_retries=0)

        async def call_direct() -> None:
            await direct.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}], max_tokens=1000
            )

        # Interleave (a) and (b) in blocks so that drift of the machine hits both alike. Besides
        # wall time, this process's CPU time per call: on a shared machine it moves far less than
        # wall time, and (b) - (a) of it is the CPU this server spends around the model call.
        a_ms: list[float] = []
        b_ms: list[float] = []
        cpu = {"a": 0.0, "b": 0.0}

        async def timed_cpu(label: str, fn: Any, count: int) -> list[float]:
            for _ in range(10):  # warm-up, outside the CPU count
                await fn()
            before = os.times()
            samples = await timed(fn, count, warmup=0)
            after = os.times()
            cpu[label] += (after.user - before.user) + (after.system - before.system)
            return samples

        async with open_app(settings) as app:

            async def call_service() -> None:
                await app.executions.execute(ExecutionRequest(prompt=PROMPT, user_id="bench"))

            for _ in range(5):
                a_ms += await timed_cpu("a", call_direct, n // 5)
                b_ms += await timed_cpu("b", call_service, n // 5)

        async with running_http(settings) as base:
            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
            async with http, Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client:

                async def call_mcp() -> None:
                    result = await client.call_tool("chitty_secure_ai_execute", {"prompt": PROMPT, "user_id": "bench"})
                    assert not result.is_error, result.content

                c_ms = await timed(call_mcp, n, warmup=10)
        await direct.close()
        a, b, c = summary(a_ms), summary(b_ms), summary(c_ms)
        return {
            "backend": backend,
            "direct_sdk": a,
            "execution_service": b,
            "mcp_http": c,
            "overhead_service_p50_ms": round(b["p50_ms"] - a["p50_ms"], 3),
            "overhead_service_p95_ms": round(b["p95_ms"] - a["p95_ms"], 3),
            "overhead_mcp_http_p50_ms": round(c["p50_ms"] - a["p50_ms"], 3),
            "cpu_direct_ms": round(cpu["a"] * 1000 / len(a_ms), 3),
            "cpu_service_ms": round(cpu["b"] * 1000 / len(b_ms), 3),
            "overhead_service_cpu_ms": round((cpu["b"] / len(b_ms) - cpu["a"] / len(a_ms)) * 1000, 3),
        }
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


async def main(n: int, postgres: str | None) -> None:
    results = []
    with model_server_process() as server:
        for backend in backends(postgres):
            with bench_database(backend, postgres) as url:
                results.append(await measure(backend, url, server, n))
    targets = {"sqlite": 2.0, "postgres": 4.0}
    rows = [
        {
            "backend": r["backend"],
            "(a) sdk p50/p95": f"{r['direct_sdk']['p50_ms']}/{r['direct_sdk']['p95_ms']}",
            "(b) service p50/p95": f"{r['execution_service']['p50_ms']}/{r['execution_service']['p95_ms']}",
            "(c) mcp http p50/p95": f"{r['mcp_http']['p50_ms']}/{r['mcp_http']['p95_ms']}",
            "(b)-(a) p50": r["overhead_service_p50_ms"],
            "target": f"<= {targets[r['backend']]}",
            "(c)-(a) p50": r["overhead_mcp_http_p50_ms"],
            "(b)-(a) cpu": r["overhead_service_cpu_ms"],
        }
        for r in results
    ]
    print_table(f"Overhead of a standard execution, ms (n={n})", rows, list(rows[0]))
    path = write_json("overhead", {"n": n, "results": results, "targets_ms": targets})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    anyio.run(main, args.n, None if args.no_postgres else args.postgres)
