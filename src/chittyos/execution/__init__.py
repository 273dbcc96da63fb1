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
from chittyos.execution.service import ExecutionService

__all__ = [
    "ExecutionFailedError",
    "ExecutionRequest",
    "ExecutionResults",
    "ExecutionService",
    "ExecutionUsage",
    "ExecutionVerification",
    "ExecutionView",
    "sha256_hex",
]
