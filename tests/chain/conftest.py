"""Shared data for the chain tests: the RFC 6962 / C2SP reference vectors, loaded once.

The file lives beside the repository (``../shared/testdata``), in CI as on a workstation. A missing
file is a collection error, never a skip.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VECTORS_PATH = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "rfc6962_vectors.json"
VECTORS: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
