"""Many processes, one data directory, one gpg home and agent (issue 5), against real gpg.

The signers are separate processes, forked by signing_worker.py from one interpreter that imported
chittyos once, and released together on one fresh data directory; the agent is the home's real
gpg-agent, asked for its pid with gpg-connect-agent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gnupg
import pytest

from chittyos.config import load_settings
from chittyos.errors import ConfigurationError
from chittyos.signing import OpenPGPSigner, kill_agent, open_signer, short_gnupghome, verify_detached
from chittyos.signing.gpghome import GpgFailure
from chittyos.signing.openpgp import _new_gpg, _secret_keys

WORKER = Path(__file__).with_name("signing_worker.py")
PROCESSES = 12
SIGNATURES_EACH = 5
WORKER_TIMEOUT_S = 300  # generous for a loaded machine; a hung worker fails, never hangs
DATA = b"ChittyOS output\r\n\x00\xff"


def agent_pid(home: Path) -> int | None:
    """The pid of the gpg-agent serving ``home``, or None when none runs (never starts one)."""
    proc = subprocess.run(
        ["gpg-connect-agent", "--homedir", str(home), "--no-autostart", "getinfo pid", "/bye"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    lines = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("D ")]
    return int(lines[0]) if lines else None


def worker_env() -> dict[str, str]:
    # The workers must use the embedded default: no signing or database settings of ours leak in.
    prefixes = ("CHITTY_", "PGP_", "OPENAI_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


@pytest.fixture
def data_dir(gpg_root: Path) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="d", dir=gpg_root))  # empty: no key, no agent yet
    yield path
    kill_agent(short_gnupghome(path))


def run_workers(data_dir: Path, processes: int, count: int) -> list[dict[str, Any]]:
    """Run ``processes`` signing processes released at once on ``data_dir``; their reports."""
    worker = subprocess.Popen(
        [sys.executable, str(WORKER), str(data_dir), str(processes), str(count)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=worker_env(),
        start_new_session=True,  # its forked children can be killed as one group
    )
    try:
        stdout, stderr = worker.communicate(timeout=WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.communicate()
        pytest.fail(f"signing processes still running after {WORKER_TIMEOUT_S} s")
    reports: list[dict[str, Any]] = json.loads(stdout) if stdout.strip() else []
    errors = [r["error"] for r in reports if r.get("error")]
    assert worker.returncode == 0 and not errors, "\n".join(errors) or stderr
    assert len(reports) == processes
    return reports


def test_processes_signing_at_once_on_an_empty_data_dir_make_one_key_and_valid_signatures(
    data_dir: Path,
) -> None:
    reports = run_workers(data_dir, PROCESSES, SIGNATURES_EACH)

    fingerprints = {report["fingerprint"] for report in reports}
    assert len(fingerprints) == 1
    assert sum(report["keys_created"] for report in reports) == 1  # one start made it, all use it
    home = short_gnupghome(data_dir)
    [fingerprint] = fingerprints
    assert [k["fingerprint"] for k in gnupg.GPG(gnupghome=str(home)).list_keys(secret=True)] == [fingerprint]
    # every signature checks out against the exported public key alone, not just the workers' word
    with open_signer(load_settings(chitty_data_dir=data_dir)) as signer:
        public_key = signer.export_public_key()
    signed = [item for report in reports for item in report["signed"]]
    assert len(signed) == PROCESSES * SIGNATURES_EACH
    assert all(valid for _, _, valid in signed)
    checks = [verify_detached(bytes.fromhex(d), sig, public_key=public_key) for d, sig, _ in signed]
    assert [c.fingerprint for c in checks if c.valid] == [fingerprint] * len(signed)
    # the last process to close stopped the agent; none was left running
    assert agent_pid(home) is None


def test_a_process_that_exits_leaves_the_agent_to_the_one_still_signing(data_dir: Path) -> None:
    server = open_signer(load_settings(chitty_data_dir=data_dir))
    home = server.gnupghome
    pid = agent_pid(home)
    assert pid is not None
    # a short-lived process on the same data directory (chittyos keys export, chittyos exec)
    [report] = run_workers(data_dir, 1, 1)
    assert report["fingerprint"] == server.fingerprint
    assert agent_pid(home) == pid  # the same agent, never stopped under the server
    assert server.verify(DATA, server.sign(DATA)).valid
    server.close()
    assert agent_pid(home) is None  # the last user stops it
    server.close()  # idempotent


def test_closing_one_of_two_signers_in_a_process_keeps_the_agent(make_home: Callable[[], Path]) -> None:
    home = make_home()
    first, second = OpenPGPSigner.open(gnupghome=home), OpenPGPSigner.open(gnupghome=home)
    pid = agent_pid(home)
    first.close()
    assert pid is not None and agent_pid(home) == pid
    assert second.verify(DATA, second.sign(DATA)).valid
    second.close()
    assert agent_pid(home) is None


def test_existing_key_is_found_without_asking_the_agent(make_home: Callable[[], Path]) -> None:
    # gpg --list-secret-keys asks the agent and, when that connection breaks, lists no secret key
    # yet exits 0: a start that believed it would create a second key.
    home = make_home()
    fingerprint = OpenPGPSigner.open(gnupghome=home).fingerprint
    kill_agent(home)
    no_agent = _new_gpg("gpg", home, ["--no-autostart"])
    assert no_agent.list_keys(secret=True) == []  # what gpg says without its agent
    assert _secret_keys(no_agent, home) == [fingerprint]
    assert agent_pid(home) is None


def test_key_that_cannot_sign_fails_at_once_with_gpgs_reason(make_home: Callable[[], Path]) -> None:
    home = make_home()
    loopback = ["--batch", "--pinentry-mode", "loopback", "--passphrase", "not retried"]
    subprocess.run(
        ["gpg", "--homedir", str(home), *loopback, "--quick-gen-key", "Protected", "ed25519", "sign"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    with pytest.raises(ConfigurationError) as caught:
        OpenPGPSigner.open(gnupghome=home)
    message = str(caught.value)
    assert "signing failed: No pinentry" in message and "gpg error code 85" in message
    assert "attempts" not in message  # a passphrase is no agent hiccup: no retries
    assert "not retried" not in message


@pytest.mark.parametrize(
    ("code", "messages", "transient"),
    [
        (32768 | 109, ("signing failed: Broken pipe",), True),  # the agent was stopped mid-request
        (32768 | 26, ("signing failed: Connection reset by peer",), True),
        (16383, ("signing failed: End of file",), True),
        (77, ("keydb_search failed: No agent running",), True),
        (None, ("failed to start agent '/usr/bin/gpg-agent': General error",), True),
        (17, ("signing failed: No secret key",), False),
        (85, ("signing failed: No pinentry",), False),
        (153, ("signing failed: Key expired",), False),
        (None, ("signing failed: Bad data",), False),
    ],
)
def test_only_failures_to_reach_the_agent_are_transient(
    code: int | None, messages: tuple[str, ...], transient: bool
) -> None:
    # codes as gpg 2.2 prints them on FAILURE status lines (low 16 bits), seen under load
    failure = GpgFailure(code=code, messages=messages, exit=2)
    assert failure.transient is transient
    assert failure.describe().startswith(messages[-1])


def test_a_gpg_that_timed_out_is_not_retried() -> None:
    failure = GpgFailure(code=None, messages=("can't connect to the agent",), exit=None)
    assert not failure.transient and "did not finish" in failure.describe()
