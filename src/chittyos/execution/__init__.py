"""Executions: requests, the status machine, persistence."""

from chittyos.execution.models import (
    ExecutionFailedError,
    ExecutionRequest,
    ExecutionResults,
    ExecutionUsage,
    ExecutionVerification,
    ExecutionView,
    sha256_hex,
)
from chittyos.execution.service import SEALED_COLUMNS, SEALED_TABLE, ExecutionService

__all__ = [
    "SEALED_COLUMNS",
    "SEALED_TABLE",
    "ExecutionFailedError",
    "ExecutionRequest",
    "ExecutionResults",
    "ExecutionService",
    "ExecutionUsage",
    "ExecutionVerification",
    "ExecutionView",
    "sha256_hex",
]
