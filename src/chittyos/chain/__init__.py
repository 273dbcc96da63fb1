"""chain capability."""
