"""evidence capability."""
