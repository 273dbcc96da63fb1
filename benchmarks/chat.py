"""Chat: what the server adds to a chat call, and usage analytics over a million rows (issue 4).

1. Overhead of ``ChatService.complete`` (the ``chatgpt_complete`` service call: checks, budget
   reservation, usage row with its cost, settle) over a direct ``openai`` SDK call to the same
   loopback OpenAI-compatible server, p50/p95, on SQLite and PostgreSQL; plain, under a budget,
   and in a session (history read, messages stored). Targets: overhead p50 <= 2 ms on SQLite,
   <= 4 ms on PostgreSQL.
2. ``chitty_usage_analytics`` (``UsageAnalytics.report``) for one user over a year, on PostgreSQL
   with 1,000,000 usage rows of that user bulk-loaded with COPY (and 1,000,000 more of 100
   other users), per granularity. Target <= 200 ms. The report reads ``usage_daily``, which the
   server keeps with every usage row; after the COPY it is filled the way an operator backfills
   it (one INSERT ... SELECT ... GROUP BY), and that time is reported too.

    python benchmarks/chat.py [--n 300] [--rows 1000000] [--postgres URL] [--no-postgres]

Prints tables and writes benchmarks/results/chat.json.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import openai
import psycopg
from _common import backends, bench_database, model_server_process, print_table, summary, timed, write_json
from tests.conftest import _libpq, create_database, drop_database

from chittyos.app import open_app
from chittyos.chat import ChatRequest
from chittyos.config import load_settings
from chittyos.db import upgrade

PROMPT = "Summarise the indemnity clause in two sentences."
MODEL = "gpt-4o-mini"
YEAR = 2025


def _settings(url: str, base_url: str, data_dir: Path) -> Any:
    return load_settings(
        chitty_data_dir=data_dir,
        chitty_database_url=url,
        openai_base_url=base_url,
        openai_api_key="sk-bench",
        chitty_pricing_base_url="https://api.openai.com/v1",
        chitty_log_level="WARNING",
    )


async def measure_overhead(backend: str, url: str, base_url: str, n: int) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="cb", dir="/tmp"))
    direct = openai.AsyncOpenAI(api_key="sk-bench", base_url=base_url, max_retries=0)
    try:
        async with open_app(_settings(url, base_url, data_dir)) as app:
            await app.budgets.set(user_id="bench-budget", limit_usd=Decimal(1_000_000), window="month")
            session = await app.sessions.create(
                user_id="bench-session", session_name="bench", initial_system_prompt="Be brief."
            )

            async def call_direct() -> None:
                await direct.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": PROMPT}],
                    max_tokens=1000,
                    temperature=0.7,
                )

            def service(**fields: Any) -> Any:
                request = ChatRequest(
                    messages=[{"role": "user", "content": PROMPT}],
                    model=MODEL,
                    max_tokens=1000,
                    temperature=0.7,
                    **fields,
                )

                async def call() -> None:
                    await app.chat.complete(request)

                return call

            variants = {
                "plain": service(user_id="bench"),
                "budget": service(user_id="bench-budget"),
            }
            samples: dict[str, list[float]] = {"direct": [], **{k: [] for k in variants}}
            # Interleave in blocks so that drift of the machine hits every variant alike.
            for _ in range(5):
                samples["direct"] += await timed(call_direct, n // 5, warmup=10)
                for name, fn in variants.items():
                    samples[name] += await timed(fn, n // 5, warmup=10)
            # A session grows with every call (its history is sent upstream), so it is measured
            # on its own, over a short conversation, against direct calls of the same size.
            session_ms = await timed(service(session_id=session.session_id), 20, warmup=0)
    finally:
        await direct.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    base = summary(samples["direct"])
    out: dict[str, Any] = {"backend": backend, "direct_sdk": base}
    for name in variants:
        s = summary(samples[name])
        out[name] = {
            **s,
            "overhead_p50_ms": round(s["p50_ms"] - base["p50_ms"], 3),
            "overhead_p95_ms": round(s["p95_ms"] - base["p95_ms"], 3),
        }
    out["session_20_turns"] = summary(session_ms)
    return out


BACKFILL_DAILY = """
INSERT INTO usage_daily (user_id, day, model, calls, failed_calls, unpriced_calls,
                         prompt_tokens, completion_tokens, cached_tokens, cost_usd)
SELECT user_id, (created_at AT TIME ZONE 'UTC')::date, model, count(*),
       count(*) FILTER (WHERE status = 'failed'), count(*) FILTER (WHERE cost_usd IS NULL),
       coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0),
       coalesce(sum(cached_tokens), 0), coalesce(sum(cost_usd), 0)
FROM usage_analytics GROUP BY 1, 2, 3
"""


def load_usage_rows(url: str, rows: int, heavy_user: str) -> tuple[float, float]:
    """COPY ``rows`` rows of ``heavy_user`` over the year and as many of 100 other users, then
    backfill usage_daily; (load seconds, backfill seconds)."""
    rng = random.Random(4)
    start = datetime(YEAR, 1, 1, tzinfo=UTC)
    span_s = 365 * 24 * 3600
    models = [
        ("gpt-4o", "2.50", "1.25", "10"),
        ("gpt-4o-mini", "0.15", "0.075", "0.60"),
        ("o3", "2", "0.5", "8"),
    ]
    columns = (
        "id, user_id, source, provider, requested_model, model, prompt_tokens, completion_tokens, "
        "cached_tokens, cost_usd, cost_status, price_source, price_version, status, latency_ms, created_at"
    )
    started = time.perf_counter()
    with psycopg.connect(_libpq(url)) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY usage_analytics ({columns}) FROM STDIN") as copy:
            for i in range(2 * rows):
                user = heavy_user if i < rows else f"user-{i % 100:03d}"
                model, inp, cached_rate, out = models[i % 3]
                prompt = rng.randint(50, 8000)
                cached = prompt // 2 if i % 4 == 0 else 0
                completion = rng.randint(10, 1000)
                cost = (
                    (prompt - cached) * Decimal(inp)
                    + cached * Decimal(cached_rate)
                    + completion * Decimal(out)
                ) / Decimal(1_000_000)
                copy.write_row(
                    (
                        uuid.uuid4(),
                        user,
                        "chat" if i % 5 else "execution",
                        "openai",
                        model,
                        model,
                        prompt,
                        completion,
                        cached,
                        cost,
                        "priced",
                        "genai-prices 0.2.3",
                        f"0.2.3:openai/{model}",
                        "completed" if i % 50 else "failed",
                        12.5,
                        start + timedelta(seconds=rng.randrange(span_s)),
                    )
                )
        conn.commit()
        loaded = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute(BACKFILL_DAILY)
        conn.commit()
        backfilled = time.perf_counter() - started
        conn.execute("ANALYZE usage_analytics")
        conn.execute("ANALYZE usage_daily")
        conn.commit()
    return loaded, backfilled


async def measure_analytics(postgres: str, rows: int, runs: int) -> dict[str, Any]:
    name = f"chitty_bench_{uuid.uuid4().hex[:8]}"
    url = create_database(postgres, name)
    data_dir = Path(tempfile.mkdtemp(prefix="cb", dir="/tmp"))
    try:
        upgrade(url)
        load_s, backfill_s = load_usage_rows(url, rows, "heavy")
        results: dict[str, Any] = {
            "rows_of_the_user": rows,
            "rows_in_table": 2 * rows,
            "load_s": round(load_s, 1),
            "backfill_usage_daily_s": round(backfill_s, 1),
        }
        async with open_app(_settings(url, "http://127.0.0.1:9/v1", data_dir)) as app:
            for user, label in (("heavy", "one user, 1M rows"), ("user-007", "one of 100 users")):
                for granularity in ("day", "week", "month"):
                    samples = []
                    for _ in range(runs + 1):
                        started = time.perf_counter()
                        report = await app.usage_analytics.report(
                            user_id=user,
                            start_date=f"{YEAR}-01-01",
                            end_date=f"{YEAR}-12-31",
                            granularity=granularity,
                        )
                        samples.append((time.perf_counter() - started) * 1000)
                    samples = samples[1:]  # the first run warms caches and the connection
                    results[f"{label} / {granularity}"] = {
                        "calls": report.total_calls,
                        "periods": len(report.breakdown),
                        "p50_ms": round(statistics.median(samples), 1),
                        "max_ms": round(max(samples), 1),
                    }
        return results
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
        drop_database(postgres, name)


async def main(n: int, rows: int, runs: int, postgres: str | None) -> None:
    overhead = []
    with model_server_process() as server:
        for backend in backends(postgres):
            with bench_database(backend, postgres) as url:
                overhead.append(await measure_overhead(backend, url, server, n))
    targets = {"sqlite": 2.0, "postgres": 4.0}
    table = [
        {
            "backend": r["backend"],
            "sdk p50/p95": f"{r['direct_sdk']['p50_ms']}/{r['direct_sdk']['p95_ms']}",
            "chat p50/p95": f"{r['plain']['p50_ms']}/{r['plain']['p95_ms']}",
            "overhead p50/p95": f"{r['plain']['overhead_p50_ms']}/{r['plain']['overhead_p95_ms']}",
            "budget overhead p50/p95": f"{r['budget']['overhead_p50_ms']}/{r['budget']['overhead_p95_ms']}",
            "target p50": f"<= {targets[r['backend']]}",
            "session (20 turns) p50": r["session_20_turns"]["p50_ms"],
        }
        for r in overhead
    ]
    print_table(f"chatgpt_complete service call over a direct SDK call, ms (n={n})", table, list(table[0]))
    payload: dict[str, Any] = {
        "n": n,
        "overhead": overhead,
        "targets_ms": {**targets, "analytics_postgres": 200},
    }
    if postgres:
        analytics = await measure_analytics(postgres, rows, runs)
        payload["analytics"] = analytics
        rows_table = [{"query": k, **v} for k, v in analytics.items() if isinstance(v, dict)]
        print_table(
            f"chitty_usage_analytics over {YEAR} on PostgreSQL, {analytics['rows_in_table']:,} usage rows "
            f"(COPY {analytics['load_s']} s, usage_daily backfill {analytics['backfill_usage_daily_s']} s), "
            "target <= 200 ms",
            rows_table,
            ["query", "calls", "periods", "p50_ms", "max_ms"],
        )
    path = write_json("chat", payload)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    anyio.run(main, args.n, args.rows, args.runs, None if args.no_postgres else args.postgres)
