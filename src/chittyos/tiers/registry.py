"""Tiers by name. Asking for one that is not registered is a ``TierNotAvailable`` error."""

from __future__ import annotations

from chittyos.errors import TierNotAvailable
from chittyos.tiers.base import SecurityTier


class TierRegistry:
    def __init__(self, tiers: list[SecurityTier] | None = None) -> None:
        self._tiers: dict[str, SecurityTier] = {}
        for tier in tiers or []:
            self.register(tier)

    def register(self, tier: SecurityTier) -> None:
        if tier.name in self._tiers:
            raise ValueError(f"tier {tier.name!r} registered twice")
        self._tiers[tier.name] = tier

    def get(self, name: str) -> SecurityTier:
        try:
            return self._tiers[name]
        except KeyError:
            raise TierNotAvailable(name, sorted(self._tiers)) from None

    def names(self) -> list[str]:
        return sorted(self._tiers)
