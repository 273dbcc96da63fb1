"""execution capability."""
