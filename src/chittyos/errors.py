"""Every error chittyos raises on purpose.

The tree, so that callers branch on the kind and not on the prose::

    ChittyError
     +-- InvalidInput            malformed input: names the field and the rule
     +-- NotFound                a named thing (execution, session, fact) does not exist
     +-- ConfigurationError      something must be configured first; says which variable
     +-- TierNotAvailable        a security tier that is not registered in this build
     +-- ProviderError           the model provider failed (``delivery``: how far the request got)
     |    +-- ProviderTimeout    ... by running past its timeout
     +-- ProofRejected           a proof, signature, checkpoint or envelope was checked and failed
     +-- IntegrityError          stored data contradicts itself (tampering, a fork, a gap)
     +-- BudgetExceeded          a call would pass a spending limit
     +-- RateLimited             a caller sent more requests than allowed
     +-- DatabaseBusy            the database stayed locked past the wait; nothing was written

Messages name the field or step, the rule, and expected vs got. They never carry a secret:
no API key, passphrase or encryption key is ever formatted into one.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "BudgetExceeded",
    "ChittyError",
    "ConfigurationError",
    "DatabaseBusy",
    "Delivery",
    "IntegrityError",
    "InvalidInput",
    "NotFound",
    "ProofRejected",
    "ProviderError",
    "ProviderTimeout",
    "RateLimited",
    "TierNotAvailable",
]


class ChittyError(Exception):
    """Base of every error chittyos raises on purpose."""


class InvalidInput(ChittyError):
    """A caller's value broke a rule. ``field`` and ``rule`` are stable; tests assert them."""

    def __init__(self, field: str, rule: str, got: object = None) -> None:
        self.field, self.rule, self.got = field, rule, got
        shown = "" if got is None else f" (got {_short(got)})"
        super().__init__(f"{field}: {rule}{shown}")


class NotFound(ChittyError):
    """``kind`` with identity ``key`` does not exist."""

    def __init__(self, kind: str, key: object) -> None:
        self.kind, self.key = kind, key
        super().__init__(f"{kind} {key!s} not found")


class ConfigurationError(ChittyError):
    """A capability needs configuration; the message says which variable to set."""


class TierNotAvailable(ChittyError):
    """A security tier was asked for that this server does not run (yet)."""

    def __init__(self, tier: str, available: list[str]) -> None:
        self.tier, self.available = tier, available
        super().__init__(
            f"security_level: tier {tier!r} is not available on this server "
            f"(available: {', '.join(available) or 'none'})"
        )


Delivery = Literal["not_sent", "rejected", "unknown"]
"""How far a failed model request got, which decides whether the provider may have billed it::

    not_sent   it never reached the provider (refused before sending, no connection): nothing to bill
    rejected   the provider answered with an error status (``status``): it bills nothing
    unknown    it was sent and no usable answer came back (a timeout, a connection dropped after
               sending, a malformed body): the provider may have billed it
"""


class ProviderError(ChittyError):
    """The model provider failed.

    Besides the message, what accounting needs to know of the call, and never its text or a key:
    ``provider`` (name); ``status``, the upstream HTTP status when it answered with an error;
    ``delivery`` (see ``Delivery``; None when the raiser did not say, taken as ``not_sent``);
    ``model``, the model asked for; ``latency_ms``, from sending to the failure; ``request_id``,
    the upstream's id of the request when it gave one; ``attempts``, HTTP attempts made.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        delivery: Delivery | None = None,
        model: str | None = None,
        latency_ms: float | None = None,
        request_id: str | None = None,
        attempts: int | None = None,
    ) -> None:
        self.provider, self.status, self.delivery = provider, status, delivery
        self.model, self.latency_ms, self.request_id, self.attempts = model, latency_ms, request_id, attempts
        super().__init__(message)


class ProviderTimeout(ProviderError):
    """The model provider did not answer within the configured timeout."""


class ProofRejected(ChittyError):
    """A proof, signature, checkpoint or sealed envelope was checked and did not verify."""


class IntegrityError(ChittyError):
    """Stored data contradicts itself: a changed row, a gap, a fork."""


class BudgetExceeded(ChittyError):
    """A call would pass a spending limit; no model call was made."""


class RateLimited(ChittyError):
    """A caller went over the allowed request rate; no model call was made."""


class DatabaseBusy(ChittyError):
    """The database did not give this transaction its turn within the wait (SQLite's one write
    lock held by others, the connection pool empty). Nothing was written; the call may be retried."""

    def __init__(self, waited_s: float, why: str) -> None:
        self.waited_s = waited_s
        super().__init__(f"database busy: {why} for {waited_s:g} s; nothing was written, retry the call")


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
