"""Many processes signing on one data directory at once (issue 5: signing robustness).

Several ``chittyos`` processes on one ``CHITTY_DATA_DIR`` share one GNUPGHOME, one keyring and
one gpg-agent. This starts N worker processes on one fresh data directory, releases them at the
same instant, and lets each do what a ``chittyos`` process does with its signer:

    open_signer(settings)            the embedded default: no PGP_* variables, key in the data dir
    M x (sign payload, verify it)    against the server keyring, the signature must be valid
    stop, as open_app does on exit   (which must not break the workers still signing)

Two scenarios per N:
  empty   all N start on an EMPTY data directory, so first-start key creation races too
  ready   a first start already made the key (its agent stopped); N start at once

Reports per scenario: failures by reason (normalised: fingerprints and paths replaced), how many
secret keys the keyring holds afterwards (must be 1), p50/p95 of one ``sign`` and of ``open``,
and the wall time from release to the last worker's exit. Timing on a shared 2-core machine is
noisy; use ``--rounds`` and report ranges.

    python benchmarks/gpg_contention.py [--procs 30 8] [--payloads 20] [--rounds 3]

Prints a table and writes benchmarks/results/gpg_contention.json. To measure another version,
put its ``src`` first on PYTHONPATH (the workers inherit it); a version whose signer has no
``close`` gets ``kill_agent`` on exit instead, as ``open_app`` did before issue 5. "retried"
counts signatures that succeeded only after a retry (the signer logs ``pgp_sign_retried``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _common import REPO, percentile, print_table, write_json

WORKER_TIMEOUT_S = 300.0
"""A worker still running after this is killed and counted as hung."""


# --- worker (one simulated chittyos process) ------------------------------------------------


def worker(data_dir: Path, payloads: int) -> None:
    """Wait for "go" on stdin, then open the signer, sign and verify; print one JSON line."""
    from structlog.testing import capture_logs

    from chittyos.config import load_settings

    settings = load_settings(chitty_data_dir=data_dir, chitty_log_level="WARNING")
    print("ready", flush=True)
    sys.stdin.readline()
    with capture_logs() as events:
        out = _work(settings, payloads)
    # retries the signer made and recovered from (it logs them), and keys this process created
    out["retried_signs"] = sum(1 for e in events if e["event"] == "pgp_sign_retried")
    out["keys_created"] = sum(1 for e in events if e["event"] == "pgp_signing_key_created")
    print(json.dumps(out), flush=True)


def _work(settings: Any, payloads: int) -> dict[str, Any]:
    from chittyos.signing import kill_agent, open_signer

    out: dict[str, Any] = {"open_ms": None, "fingerprint": None, "sign_ms": [], "failures": []}
    started = time.perf_counter()
    try:
        signer = open_signer(settings)
    except Exception as exc:  # every failure is data here
        out["open_ms"] = (time.perf_counter() - started) * 1000
        out["failures"].append({"stage": "open", "reason": f"{type(exc).__name__}: {exc}"})
        return out
    out["open_ms"] = (time.perf_counter() - started) * 1000
    out["fingerprint"] = signer.fingerprint
    for i in range(payloads):
        payload = f"payload {i} of worker {os.getpid()}".encode() + os.urandom(1024)
        t0 = time.perf_counter()
        try:
            signature = signer.sign(payload)
        except Exception as exc:
            out["failures"].append({"stage": "sign", "reason": f"{type(exc).__name__}: {exc}"})
            continue
        out["sign_ms"].append((time.perf_counter() - t0) * 1000)
        check = signer.verify(payload, signature)
        if not check.valid:
            out["failures"].append({"stage": "verify", "reason": f"invalid: {check.reason}"})
        elif check.fingerprint != signer.fingerprint:
            out["failures"].append({"stage": "verify", "reason": "valid, but by another key"})
    # What open_app does on exit. Before issue 5 it stopped the agent unconditionally
    # (kill_agent), which broke every other process still signing; now the signer is closed.
    close = getattr(signer, "close", None)
    if close is not None:
        close()
    else:
        kill_agent(signer.gnupghome)
    return out


# --- driver ---------------------------------------------------------------------------------


def run_once(scenario: str, procs: int, payloads: int) -> dict[str, Any]:
    """One scenario with ``procs`` workers on a fresh data directory; the raw outcome."""
    from chittyos.signing import kill_agent, open_signer, short_gnupghome
    from chittyos.config import load_settings

    data_dir = Path(tempfile.mkdtemp(prefix="cgc", dir="/tmp"))
    home = short_gnupghome(data_dir)
    try:
        if scenario == "ready":
            first = open_signer(load_settings(chitty_data_dir=data_dir, chitty_log_level="WARNING"))
            close = getattr(first, "close", None)
            close() if close is not None else kill_agent(first.gnupghome)
        workers = [
            subprocess.Popen(
                [sys.executable, __file__, "--worker", str(data_dir), "--payloads", str(payloads)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=_worker_env(),
            )
            for _ in range(procs)
        ]
        for w in workers:  # every worker has imported chittyos and waits
            assert w.stdout is not None
            line = w.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"worker did not start: {line!r} {w.stderr.read() if w.stderr else ''}")
        started = time.perf_counter()
        for w in workers:
            assert w.stdin is not None
            w.stdin.write("go\n")
            w.stdin.flush()
        outcomes = [_collect(w, started) for w in workers]
        wall_s = time.perf_counter() - started
        return {"outcomes": outcomes, "wall_s": wall_s, "secret_keys": _secret_keys(home)}
    finally:
        kill_agent(home)
        shutil.rmtree(data_dir, ignore_errors=True)


def _worker_env() -> dict[str, str]:
    # the embedded default: no signing settings of the caller's; this checkout importable
    path = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(REPO)]))
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CHITTY_", "PGP_"))}
    return {**clean, "PYTHONPATH": path}


def _failed(stage: str, reason: str) -> dict[str, Any]:
    failure = {"stage": stage, "reason": reason}
    return {"open_ms": None, "fingerprint": None, "sign_ms": [], "failures": [failure]}


def _collect(w: subprocess.Popen[str], started: float) -> dict[str, Any]:
    try:
        stdout, stderr = w.communicate(timeout=max(1.0, WORKER_TIMEOUT_S - (time.perf_counter() - started)))
    except subprocess.TimeoutExpired:
        w.kill()
        w.communicate()
        return _failed("worker", "hung (killed)")
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if w.returncode != 0 or not lines:
        tail = (stderr.strip().splitlines() or ["no output"])[-1]
        return _failed("worker", f"exit {w.returncode}: {tail}")
    return dict(json.loads(lines[-1]))


def _secret_keys(home: Path) -> int:
    proc = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--with-colons", "--list-secret-keys"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return sum(1 for line in proc.stdout.splitlines() if line.startswith("sec:"))


_NORMALISE = [
    (re.compile(r"\b[0-9A-F]{40}\b"), "<fpr>"),
    (re.compile(r"\b[0-9A-F]{16}\b"), "<keyid>"),
    (re.compile(r"/tmp/\S+?(?=[\s,;:)'\"]|$)"), "<path>"),
]


def normalise(reason: str) -> str:
    for pattern, replacement in _NORMALISE:
        reason = pattern.sub(replacement, reason)
    return reason[:240]


def summarise(scenario: str, procs: int, payloads: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    sign_ms = [ms for run in runs for o in run["outcomes"] for ms in o["sign_ms"]]
    open_ms = [o["open_ms"] for run in runs for o in run["outcomes"] if o["open_ms"] is not None]
    failures = [f for run in runs for o in run["outcomes"] for f in o["failures"]]
    reasons = Counter(f"{f['stage']}: {normalise(f['reason'])}" for f in failures)
    fingerprints = [len({o["fingerprint"] for o in run["outcomes"] if o["fingerprint"]}) for run in runs]
    return {
        "scenario": scenario,
        "procs": procs,
        "payloads": payloads,
        "rounds": len(runs),
        "attempted_signs": len(runs) * procs * payloads,
        "signed_and_verified": len(sign_ms) - sum(n for r, n in reasons.items() if r.startswith("verify")),
        "failures": sum(reasons.values()),
        "failures_by_reason": dict(reasons.most_common()),
        "workers_failed_open": sum(1 for run in runs for o in run["outcomes"] if o["fingerprint"] is None),
        "signs_recovered_by_retry": sum(o.get("retried_signs", 0) for run in runs for o in run["outcomes"]),
        "keys_created_per_round": [sum(o.get("keys_created", 0) for o in run["outcomes"]) for run in runs],
        "secret_keys_per_round": [run["secret_keys"] for run in runs],
        "fingerprints_seen_per_round": fingerprints,
        "sign_ms": _stats(sign_ms),
        "open_ms": _stats(open_ms),
        "wall_s_per_round": [round(run["wall_s"], 2) for run in runs],
    }


def _stats(samples: list[float]) -> dict[str, float | int | None]:
    if not samples:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    return {
        "n": len(samples),
        "p50": round(percentile(samples, 0.5), 1),
        "p95": round(percentile(samples, 0.95), 1),
        "max": round(max(samples), 1),
    }


def main(procs_list: list[int], payloads: int, rounds: int, scenarios: list[str]) -> None:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress as it happens
    results = []
    for procs in procs_list:
        for scenario in scenarios:
            runs = []
            for r in range(rounds):
                run = run_once(scenario, procs, payloads)
                failed = sum(len(o["failures"]) for o in run["outcomes"])
                wall = run["wall_s"]
                print(f"  {scenario:5} N={procs:<3} round {r + 1}: {failed} failures, {wall:.1f} s")
                runs.append(run)
            results.append(summarise(scenario, procs, payloads, runs))
    rows = [
        {
            "scenario": s["scenario"],
            "N": s["procs"],
            "signs ok/tried": f"{s['signed_and_verified']}/{s['attempted_signs']}",
            "failures": s["failures"],
            "retried": s["signs_recovered_by_retry"],
            "keys/round": ",".join(map(str, s["secret_keys_per_round"])),
            "sign p50/p95 ms": f"{s['sign_ms']['p50']}/{s['sign_ms']['p95']}",
            "open p50/p95 ms": f"{s['open_ms']['p50']}/{s['open_ms']['p95']}",
            "wall s/round": ",".join(map(str, s["wall_s_per_round"])),
        }
        for s in results
    ]
    title = f"N processes on one data directory, {payloads} sign+verify each, {rounds} round(s)"
    print_table(title, rows, list(rows[0]))
    for s in results:
        for reason, n in s["failures_by_reason"].items():
            print(f"  {s['scenario']} N={s['procs']}: {n} x {reason}")
    path = write_json(
        "gpg_contention",
        {
            "gpg": subprocess.run(["gpg", "--version"], capture_output=True, text=True).stdout.split("\n")[0],
            "payloads": payloads,
            "rounds": rounds,
            "results": results,
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--procs", type=int, nargs="+", default=[30, 8], help="worker processes per run")
    parser.add_argument("--payloads", type=int, default=20, help="sign+verify per worker")
    parser.add_argument("--rounds", type=int, default=3, help="fresh data directories per scenario")
    parser.add_argument("--scenarios", nargs="+", choices=["empty", "ready"], default=["empty", "ready"])
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker, args.payloads)
    else:
        main(args.procs, args.payloads, args.rounds, args.scenarios)
