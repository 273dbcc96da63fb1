"""Security tiers: standard (direct call), fortress (sandboxed, signed), verified (both, compared)."""

from chittyos.tiers.base import (
    ProgressFn,
    SecurityTier,
    TierContext,
    TierOutcome,
    TierRequest,
    no_progress,
)
from chittyos.tiers.registry import TierRegistry
from chittyos.tiers.standard import StandardTier

__all__ = [
    "ProgressFn",
    "SecurityTier",
    "StandardTier",
    "TierContext",
    "TierOutcome",
    "TierRegistry",
    "TierRequest",
    "no_progress",
]
