"""Simulated chittyos processes for test_shared_home: run as a script, not collected by pytest.

    python signing_worker.py DATA_DIR PROCESSES COUNT

Imports chittyos once, then forks PROCESSES children (so that a dozen processes do not spend the
test's time importing the same modules a dozen times) and releases them at the same instant.
Each child is its own process with its own signer, gpg runs and locks: it opens the signer the
embedded default way (``open_signer`` on ``DATA_DIR``, no PGP_* settings), signs COUNT payloads,
checks each against the server keyring, and closes the signer as ``open_app`` does on exit.

Prints one JSON list, one report per child:
``{"fingerprint", "keys_created", "signed": [[data_hex, signature, valid], ...], "error"}``
(``error`` is a traceback, or null). Exit status 0 when every child reported without error.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from chittyos.config import load_settings
from chittyos.signing import open_signer


def child(data_dir: Path, count: int) -> dict[str, Any]:
    report: dict[str, Any] = {"fingerprint": None, "keys_created": 0, "signed": [], "error": None}
    try:
        settings = load_settings(chitty_data_dir=data_dir)
        with capture_logs() as events:
            with open_signer(settings) as signer:
                report["fingerprint"] = signer.fingerprint
                for i in range(count):
                    data = f"process {os.getpid()} payload {i}".encode() + os.urandom(32)
                    signature = signer.sign(data)
                    report["signed"].append([data.hex(), signature, signer.verify(data, signature).valid])
        report["keys_created"] = sum(1 for e in events if e["event"] == "pgp_signing_key_created")
    except BaseException:
        report["error"] = traceback.format_exc()
    return report


def main(data_dir: Path, processes: int, count: int) -> int:
    go_read, go_write = os.pipe()
    out_dir = Path(tempfile.mkdtemp(prefix="cgw"))
    pids = []
    for n in range(processes):
        pid = os.fork()
        if pid == 0:  # the child: wait for the start, work, leave without running the parent's code
            status = 1
            try:
                os.close(go_write)
                os.read(go_read, 1)
                (out_dir / f"{n}.json").write_text(json.dumps(child(data_dir, count)))
                status = 0
            finally:
                os._exit(status)
        pids.append(pid)
    os.close(go_read)
    os.write(go_write, b"g" * processes)  # every child starts now
    failed = 0
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        failed += status != 0
    reports = []
    for n in range(processes):
        path = out_dir / f"{n}.json"
        reports.append(json.loads(path.read_text()) if path.exists() else {"error": f"child {n} wrote nothing"})
        path.unlink(missing_ok=True)
    out_dir.rmdir()
    print(json.dumps(reports), flush=True)
    return 1 if failed or any(r.get("error") for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
