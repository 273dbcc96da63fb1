"""tiers capability."""
