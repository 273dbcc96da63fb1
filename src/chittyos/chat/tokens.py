"""Token estimates for budget reservations, where an upper bound is what is needed.

There is no tokenizer for every model, but the byte-level BPE tokenizers of GPT-style models
(and SentencePiece with byte fallback) never put less than one UTF-8 byte in a token, so a text
has at most as many tokens as bytes. Reserving on that bound means a reservation can be larger
than the call turns out to cost, never smaller.
"""

from __future__ import annotations

from collections.abc import Iterable

from chittyos.llm import ChatMessage

__all__ = ["MESSAGE_OVERHEAD_TOKENS", "REQUEST_OVERHEAD_TOKENS", "estimate_prompt_tokens", "max_text_tokens"]

MESSAGE_OVERHEAD_TOKENS = 8
"""Tokens a chat message adds besides its content (role, separators); OpenAI's format uses 3-4."""
REQUEST_OVERHEAD_TOKENS = 8
"""Tokens a request adds once (the reply primer); OpenAI's format uses 3."""


def max_text_tokens(text: str) -> int:
    """An upper bound on the tokens of ``text``: its UTF-8 length in bytes."""
    return len(text.encode("utf-8"))


def estimate_prompt_tokens(messages: Iterable[ChatMessage]) -> int:
    """An upper bound on the prompt tokens of ``messages`` (see the module docstring)."""
    return REQUEST_OVERHEAD_TOKENS + sum(
        max_text_tokens(m.content) + MESSAGE_OVERHEAD_TOKENS for m in messages
    )
