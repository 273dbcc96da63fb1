"""llm capability."""
