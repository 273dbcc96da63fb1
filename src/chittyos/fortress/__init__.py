"""fortress capability."""
