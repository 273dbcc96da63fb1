"""Helpers shared by the benchmark scripts: timing stats, the table, the JSON file."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
if str(REPO) not in sys.path:  # the loopback model server lives in tests/
    sys.path.insert(0, str(REPO))


@contextmanager
def model_server_process() -> Iterator[str]:
    """The loopback OpenAI-compatible test server in its own process; yields its base URL.

    In-process, its thread would compete with the code under test for the GIL and bill that to
    the overhead being measured.
    """
    code = (
        "import sys, time; sys.path.insert(0, %r)\n"
        "from tests.openai_server import OpenAIServer\n"
        "with OpenAIServer() as s:\n"
        "    print(s.base_url, flush=True)\n"
        "    sys.stdin.read()\n"
    ) % str(REPO)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)


def backends(postgres: str | None) -> tuple[str, ...]:
    return ("sqlite", "postgres") if postgres else ("sqlite",)


@contextmanager
def bench_database(backend: str, postgres: str | None) -> Iterator[str]:
    """A fresh database for one run: a SQLite file in a temporary directory, or a new migrated
    PostgreSQL database on the server of ``postgres``; removed afterwards. Yields its URL."""
    import shutil
    import tempfile
    import uuid

    from chittyos.db import upgrade
    from tests.conftest import create_database, drop_database

    if backend == "sqlite":
        directory = Path(tempfile.mkdtemp(prefix="cbs", dir="/tmp"))
        try:
            yield f"sqlite:///{directory / 'bench.db'}"
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        return
    assert postgres is not None
    name = f"chitty_bench_{uuid.uuid4().hex[:8]}"
    url = create_database(postgres, name)
    try:
        upgrade(url)
        yield url
    finally:
        drop_database(postgres, name)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def summary(samples_ms: list[float]) -> dict[str, float]:
    return {
        "n": len(samples_ms),
        "p50_ms": round(statistics.median(samples_ms), 3),
        "p95_ms": round(percentile(samples_ms, 0.95), 3),
        "mean_ms": round(statistics.fmean(samples_ms), 3),
    }


async def timed(fn: Callable[[], Awaitable[Any]], n: int, warmup: int = 20) -> list[float]:
    for _ in range(warmup):
        await fn()
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def print_table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    print(f"\n{title}")
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(w) for c, w in zip(columns, widths, strict=True)))


def write_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name,
        "at": datetime.now(UTC).isoformat(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        **payload,
    }
    path.write_text(json.dumps(payload, indent=2))
    return path
