"""ChittyChain: appends per second, inclusion proofs at a million leaves, a full verify (issue: chain).

Measures, on SQLite and on PostgreSQL:
  (a) appends per second with 1, 4 and 16 concurrent writers (tasks sharing one engine), one fact
      per transaction and 100 facts per transaction, each a ``ChainLog.append_now`` as
      ``fortress_log_assertion`` makes it, and this process's CPU time per transaction (steadier
      than wall time on a shared machine);
  (b) inclusion proof p50/p95 on a log of --leaves leaves (bulk-loaded: leaves and nodes computed
      with CompactRange, written with COPY on PostgreSQL and executemany on SQLite);
  (c) a full ``verify_log`` of that log against the time hashlib alone needs for the same hashing
      (fact ids, leaf hashes, node hashes) in the same process, and the process's peak RSS;
      then what ``chittyos chain verify`` adds to it, the execution cross-reference (one
      statement joining the facts with their execution rows, bulk-loaded too: six facts each),
      alone and run beside the recompute as the command runs it.
(b) and (c) run in child processes, so the peak memory is the verifier's own.
Targets (PostgreSQL): >= 1,000 single-fact tx/s, >= 5,000 facts/s batched, proof p50 <= 5 ms,
verify <= 3x hashlib and <= 300 MB.

    python benchmarks/chain.py [--leaves 1000000] [--tx 2000] [--postgres URL | --no-postgres]

Prints tables and writes benchmarks/results/chain.json.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import os
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import psycopg
import structlog
from _common import print_table, summary, write_json
from tests.conftest import create_database, drop_database

from chittyos.chain import ChainLog, CompactRange, Fact, NoteSigner
from chittyos.chain.checks import execution_references
from chittyos.chain.facts import canonical_leaf_sorted
from chittyos.chain.merkle import root_nodes
from chittyos.chain.subscriber import EXECUTION_PREDICATES
from chittyos.db import UnitOfWork, create_engine, make_session_factory, upgrade

ORIGIN = "bench.chittyos/chain"
KEY = NoteSigner(name=ORIGIN, seed=bytes(range(32)))
T0 = 1_764_547_200_000
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def execution_id(n: int) -> str:
    """Fact n's execution: six facts per execution, as the server writes them."""
    return str(uuid.UUID(int=n // 6))


def predicate(n: int) -> str:
    """Fact n's predicate: one of each per execution (the cross-reference refuses a second)."""
    return EXECUTION_PREDICATES[n % 6]


def fact(n: int) -> Fact:
    return Fact(
        subject=f"execution:{execution_id(n)}",
        predicate=predicate(n),
        object="sha256:" + f"{n:064x}",
        source="chittyos:standard",
        timestamp=T0 + n,
        execution_id=execution_id(n),
    )


def values(n: int) -> tuple[Any, ...]:
    """``fact(n)``'s fields in SORTED_FIELDS order, without building (and validating) a Fact."""
    return (
        None,
        execution_id(n),
        "sha256:" + f"{n:064x}",
        predicate(n),
        None,
        None,
        "chittyos:standard",
        f"execution:{execution_id(n)}",
        T0 + n,
    )


def chain_on(url: str) -> tuple[Any, ChainLog, UnitOfWork]:
    engine = create_engine(url, pool_size=20)
    uow = UnitOfWork(session_factory=make_session_factory(engine))
    return engine, ChainLog(uow=uow, signer=KEY, checkpoint_every=10**9, checkpoint_interval_s=3600), uow


# -- (a) appends ----------------------------------------------------------------------------------


async def appends(backend: str, url: str, tx: int) -> list[dict[str, Any]]:
    engine, chain, uow = chain_on(url)
    counter = iter(range(10**9))
    rows = []
    try:
        for batch in (1, 100):
            for writers in (1, 4, 16):
                per_writer = max(1, (tx if batch == 1 else tx // 20) // writers)
                work = [
                    [[fact(next(counter)) for _ in range(batch)] for _ in range(per_writer)]
                    for _ in range(writers)
                ]

                async def writer(mine: list[list[Fact]]) -> None:
                    for facts in mine:
                        await chain.append_now(facts)

                started, cpu = time.perf_counter(), os.times()
                async with anyio.create_task_group() as tg:
                    for mine in work:
                        tg.start_soon(writer, mine)
                seconds, cpu_end = time.perf_counter() - started, os.times()
                n_tx = writers * per_writer
                cpu_s = (cpu_end.user - cpu.user) + (cpu_end.system - cpu.system)
                rows.append(
                    {
                        "backend": backend,
                        "facts/tx": batch,
                        "writers": writers,
                        "tx": n_tx,
                        "tx/s": round(n_tx / seconds),
                        "facts/s": round(n_tx * batch / seconds),
                        # this process only (the database server's CPU is not in it)
                        "client cpu ms/tx": round(cpu_s * 1000 / n_tx, 3),
                    }
                )
                print(rows[-1], flush=True)
        report = await chain.verify_log()
        assert report.ok, report.findings[:3]
    finally:
        await engine.dispose()
    return rows


# -- (b) and (c) in child processes ---------------------------------------------------------------


def generate(
    start: int, end: int, cr: CompactRange
) -> tuple[list[tuple[Any, ...]], list[tuple[int, int, bytes]]]:
    facts, nodes = [], []
    now = datetime.now(UTC)
    for n in range(start, end):
        v = values(n)
        leaf = canonical_leaf_sorted(v)
        leaf_hash = hashlib.sha256(b"\x00" + leaf).digest()
        facts.append(
            (
                hashlib.sha256(leaf).hexdigest(),
                n,
                leaf_hash,
                v[7],
                v[3],
                v[2],
                v[6],
                v[8],
                v[1],
                "unsigned",
                now,
            )
        )
        nodes.extend(cr.append(leaf_hash))
    return facts, nodes


FACT_COLS = (
    'id, leaf_index, leaf_hash, subject, predicate, object, source, "timestamp", execution_id, '
    "verification_status, created_at"
)


EXECUTIONS = (
    "INSERT INTO secure_executions (id, user_id, prompt, prompt_hash, security_level, execution_method, "
    "status, created_at, chain_facts, metadata) SELECT DISTINCT {id}, 'bench', 'sealed', '0', 'standard', "
    "'direct', 'completed', {now}, '[]'{json}, '{{}}'{json} FROM chitty_chain_facts"
)
"""The execution rows the facts name (what ``chain verify``'s cross-reference joins with)."""


def bulk_load(backend: str, url: str, leaves: int) -> float:
    """Write ``leaves`` facts, their nodes and the head straight to the tables; seconds taken."""
    started = time.perf_counter()
    cr = CompactRange()
    wanted = set(root_nodes(leaves))
    known: dict[tuple[int, int], bytes] = {}
    step = 50_000
    if backend == "postgres":
        with psycopg.connect(url) as conn:
            for start in range(0, leaves, step):
                facts, nodes = generate(start, min(start + step, leaves), cr)
                with conn.cursor() as cur:
                    with cur.copy(f"COPY chitty_chain_facts ({FACT_COLS}) FROM STDIN") as copy:
                        for row in facts:
                            copy.write_row(row)
                    with cur.copy('COPY chitty_chain_nodes (level, "index", hash) FROM STDIN') as copy:
                        for row in nodes:
                            copy.write_row(row)
                known.update(((lv, ix), h) for lv, ix, h in nodes if (lv, ix) in wanted)
            peaks = b"".join(known[node] for node in root_nodes(leaves))
            conn.execute(
                "INSERT INTO chitty_chain_head (log_id, origin, tree_size, peaks, updated_at) "
                "VALUES (1, %s, %s, %s, now())",
                (ORIGIN, leaves, peaks),
            )
            conn.execute(EXECUTIONS.format(id="execution_id::uuid", now="now()", json="::jsonb"))
            conn.execute("ANALYZE")
    else:
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        conn.execute("PRAGMA synchronous=OFF")
        for start in range(0, leaves, step):
            facts, nodes = generate(start, min(start + step, leaves), cr)
            conn.executemany(
                f"INSERT INTO chitty_chain_facts ({FACT_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [(*r[:-1], r[-1].strftime("%Y-%m-%d %H:%M:%S.%f")) for r in facts],
            )
            conn.executemany('INSERT INTO chitty_chain_nodes (level, "index", hash) VALUES (?,?,?)', nodes)
            known.update(((lv, ix), h) for lv, ix, h in nodes if (lv, ix) in wanted)
        peaks = b"".join(known[node] for node in root_nodes(leaves))
        conn.execute(
            "INSERT INTO chitty_chain_head (log_id, origin, tree_size, peaks, updated_at) "
            "VALUES (1, ?, ?, ?, CURRENT_TIMESTAMP)",
            (ORIGIN, leaves, peaks),
        )
        conn.execute(EXECUTIONS.format(id="replace(execution_id, '-', '')", now="CURRENT_TIMESTAMP", json=""))
        conn.commit()
        conn.execute("ANALYZE")
        conn.close()
    return time.perf_counter() - started


async def phase_load(backend: str, url: str, leaves: int, proofs: int) -> dict[str, Any]:
    load_s = bulk_load(backend, url, leaves)
    engine, chain, _ = chain_on(url)
    try:
        started = time.perf_counter()
        checkpoint = await chain.checkpoint()
        sign_ms = (time.perf_counter() - started) * 1000
        assert checkpoint.tree_size == leaves
        rng = random.Random(7)
        ids = [fact(rng.randrange(leaves)).fact_id for _ in range(proofs + 20)]
        samples = []
        for n, fact_id in enumerate(ids):
            started = time.perf_counter()
            proof = await chain.inclusion_proof(fact_id)
            if n >= 20:
                samples.append((time.perf_counter() - started) * 1000)
        assert proof.checkpoint.tree_size == leaves
    finally:
        await engine.dispose()
    return {"load_s": round(load_s, 1), "first_checkpoint_ms": round(sign_ms, 2), "proof": summary(samples)}


def hashlib_baseline(leaves: int) -> tuple[float, float]:
    """Seconds (wall, this process's CPU) hashlib takes for the hashing a recompute does: per leaf
    SHA-256(leaf) (the id, hex), SHA-256(0x00 || leaf), and the node hashes
    SHA-256(0x01 || l || r). Leaf bytes are made outside the timed part."""
    sha = hashlib.sha256
    total = total_cpu = 0.0
    peaks: list[bytes] = []
    size = 0
    step = 50_000
    for start in range(0, leaves, step):
        chunk = [canonical_leaf_sorted(values(n)) for n in range(start, min(start + step, leaves))]
        began, began_cpu = time.perf_counter(), time.process_time()
        for leaf in chunk:
            sha(leaf).hexdigest()
            acc = sha(b"\x00" + leaf).digest()
            index = size
            while index & 1:
                acc = sha(b"\x01" + peaks.pop() + acc).digest()
                index >>= 1
            peaks.append(acc)
            size += 1
        total += time.perf_counter() - began
        total_cpu += time.process_time() - began_cpu
    return total, total_cpu


def peak_rss_kb() -> int:
    """This process's peak resident set (VmHWM; unlike ru_maxrss it starts afresh at exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def phase_verify(url: str, leaves: int) -> dict[str, Any]:
    engine, chain, _ = chain_on(url)
    rss_before = peak_rss_kb()
    cpu = time.process_time()
    try:
        report = await chain.verify_log()
    finally:
        await engine.dispose()
    cpu = time.process_time() - cpu
    rss_peak = peak_rss_kb()
    assert report.ok and report.tree_size == leaves, report.findings[:3]
    baseline, baseline_cpu = hashlib_baseline(leaves)
    # What `chittyos chain verify` adds (ChainService.verify_log): the execution cross-reference,
    # one statement, alone and beside the recompute.
    engine, chain, uow = chain_on(url)
    try:
        started = time.perf_counter()
        found, _ = await execution_references(uow, limit=10_000)
        xref_s = time.perf_counter() - started
        assert not found, found[:3]
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(execution_references, uow, limit=10_000))
            assert (await chain.verify_log()).ok
        with_xref_s = time.perf_counter() - started
    finally:
        await engine.dispose()
    return {
        "verify_s": report.seconds,
        "verify_cpu_s": round(cpu, 2),
        "hashlib_s": round(baseline, 2),
        "ratio": round(report.seconds / baseline, 2),
        "cpu_ratio": round(cpu / baseline_cpu, 2),
        "peak_rss_mb": round(rss_peak / 1024),
        "rss_before_mb": round(rss_before / 1024),
        "nodes_checked": report.nodes_checked,
        "cross_reference_s": round(xref_s, 2),
        "verify_with_cross_reference_s": round(with_xref_s, 2),
    }


def child(phase: str, backend: str, url: str, leaves: int, proofs: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--phase",
            phase,
            "--backend",
            backend,
            "--url",
            url,
            "--leaves",
            str(leaves),
            "--proofs",
            str(proofs),
        ],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"the {phase} phase on {backend} failed (exit {out.returncode}); its stderr is above")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- driver ---------------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    postgres = None if args.no_postgres else args.postgres
    results: dict[str, Any] = {"leaves": args.leaves, "append": [], "million": []}
    tmp = Path(tempfile.mkdtemp(prefix="cbc", dir="/tmp"))
    created: list[str] = []

    def database(backend: str, label: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{tmp / f'{label}.db'}"
        created.append(f"chitty_bench_{uuid.uuid4().hex[:8]}")
        return create_database(postgres, created[-1])  # type: ignore[arg-type]

    backends = ["sqlite", "postgres"] if postgres else ["sqlite"]
    try:
        for backend in backends:
            url = database(backend, "append")
            upgrade(url)
            results["append"] += await appends(backend, url, args.tx)
        for backend in backends if args.leaves else []:
            url = database(backend, "million")
            upgrade(url)
            load = child("load", backend, url, args.leaves, args.proofs)
            verify = child("verify", backend, url, args.leaves, args.proofs)
            results["million"].append({"backend": backend, **load, **verify})
            print(results["million"][-1], flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for name in created:
            drop_database(postgres, name)  # type: ignore[arg-type]

    print_table(
        "Appends (tasks sharing one engine)",
        results["append"],
        ["backend", "facts/tx", "writers", "tx", "tx/s", "facts/s", "client cpu ms/tx"],
    )
    rows = [
        {
            "backend": r["backend"],
            "leaves": args.leaves,
            "proof p50/p95 ms": f"{r['proof']['p50_ms']}/{r['proof']['p95_ms']}",
            "verify s (cpu)": f"{r['verify_s']} ({r['verify_cpu_s']})",
            "hashlib s": r["hashlib_s"],
            "ratio (cpu)": f"{r['ratio']} ({r['cpu_ratio']})",
            "peak RSS MB (at start)": f"{r['peak_rss_mb']} ({r['rss_before_mb']})",
            "+ cross-ref s (alone)": f"{r['verify_with_cross_reference_s']} ({r['cross_reference_s']})",
            "bulk load s": r["load_s"],
        }
        for r in results["million"]
    ]
    if rows:
        print_table(f"Proofs and full verify at {args.leaves} leaves", rows, list(rows[0]))
    results["targets"] = {
        "postgres_single_tx_per_s": 1000,
        "postgres_batched_facts_per_s": 5000,
        "proof_p50_ms": 5,
        "verify_vs_hashlib": 3,
        "verify_peak_rss_mb": 300,
    }
    path = write_json("chain", results)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--tx", type=int, default=2000, help="single-fact transactions per writer setting")
    parser.add_argument("--proofs", type=int, default=300)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--phase", choices=["load", "verify"], help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "load":
        print(json.dumps(anyio.run(phase_load, args.backend, args.url, args.leaves, args.proofs)))
    elif args.phase == "verify":
        print(json.dumps(anyio.run(phase_verify, args.url, args.leaves)))
    else:
        anyio.run(main, args)
