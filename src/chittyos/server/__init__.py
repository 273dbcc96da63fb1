"""server capability."""
