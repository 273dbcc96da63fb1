"""What ChittyChain hands out: stored facts, checkpoints, proofs, pages and verification reports.

Frozen dataclasses built from rows, never the rows. Hashes are lowercase hex strings (fact ids
are too), so that every value serialises to JSON as it is (MCP structured content); the pure
verifiers take ``bytes.fromhex(...)``. Times are aware UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chittyos.chain.facts import Fact, canonical_leaf

__all__ = [
    "NOT_APPLICABLE",
    "UNSIGNED_ASSERTION",
    "AppendedFact",
    "ConsistencyProof",
    "FactPage",
    "FactProof",
    "FactRecord",
    "FactVerification",
    "Finding",
    "LogReport",
    "NotApplicable",
    "SignedCheckpoint",
    "VerifyReport",
]

UNSIGNED_ASSERTION = "unsigned assertion: fortress_log_assertion always signs"
"""Why a fact that names no execution or evidence and carries no signature fails its check."""


class NotApplicable:
    """What a per-fact check returns when there is nothing for it to check on a fact (a
    signature check on a fact the server does not sign): neither passed nor failed."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_APPLICABLE"


NOT_APPLICABLE = NotApplicable()


@dataclass(frozen=True)
class AppendedFact:
    """A fact's place in the log. ``existed``: it was already there, nothing was appended."""

    fact_id: str
    leaf_index: int
    existed: bool = False


@dataclass(frozen=True)
class FactRecord:
    """A stored fact as read back: its fields, its place (``leaf_index``, ``leaf_hash``) and the
    cached result of checking its signature (``verification_status``)."""

    fact_id: str
    leaf_index: int
    leaf_hash: str
    subject: str
    predicate: str
    object: str
    source: str
    timestamp: int
    execution_id: str | None
    evidence_id: str | None
    signer: str | None
    signature: str | None
    verification_status: str
    created_at: datetime

    def values(self) -> dict[str, Any]:
        """The fact's fields as stored (including ``None`` ones)."""
        return {
            "subject": self.subject,
            "predicate": self.predicate,
            "object": self.object,
            "source": self.source,
            "timestamp": self.timestamp,
            "execution_id": self.execution_id,
            "evidence_id": self.evidence_id,
            "signer": self.signer,
            "signature": self.signature,
        }

    def leaf_bytes(self) -> bytes:
        """The leaf bytes recomputed from the stored fields, unvalidated (tampered rows too)."""
        return canonical_leaf(self.values())

    def fact(self) -> Fact:
        """The stored fields as a validated ``Fact``; InvalidInput if a stored value breaks a rule."""
        return Fact(**self.values())


@dataclass(frozen=True)
class SignedCheckpoint:
    """A signed checkpoint as stored: the C2SP signed ``note`` and what it says."""

    origin: str
    tree_size: int
    root_hash: str
    note: str
    signed_at: datetime


@dataclass(frozen=True)
class FactProof:
    """Proof that ``fact`` is leaf ``fact.leaf_index`` of the tree signed in ``checkpoint``.

    ``tlog_proof`` is the C2SP tlog-proof@v1 text (its unauthenticated ``extra`` line carries the
    leaf bytes); ``inclusion`` the same RFC 9162 path as hex, leaf side first. Check it offline
    with ``verify_tlog_proof(tlog_proof, verifier=NoteVerifier.from_vkey(vkey), leaf=leaf bytes)``.
    """

    fact: FactRecord
    checkpoint: SignedCheckpoint
    inclusion: tuple[str, ...]
    tlog_proof: str
    vkey: str
    """The log's public verifier key text (name+keyid+base64)."""


@dataclass(frozen=True)
class ConsistencyProof:
    """RFC 9162 §2.1.4 proof that the tree of ``new_size`` extends the tree of ``old_size``.

    ``checkpoint`` is the signed checkpoint at ``new_size`` when there is one."""

    old_size: int
    new_size: int
    old_root: str
    new_root: str
    proof: tuple[str, ...]
    checkpoint: SignedCheckpoint | None


@dataclass(frozen=True)
class FactPage:
    """One page of a query, in log order. ``has_more``: a next page (at offset + len(facts)) exists."""

    facts: tuple[FactRecord, ...]
    offset: int
    limit: int
    has_more: bool


@dataclass(frozen=True)
class Finding:
    """One failed check. ``check`` is a stable code (tests and callers branch on it); the other
    fields name where: a fact (``fact_id`` / ``leaf_index``), a stored node (``node`` = (level,
    index)) or a checkpoint (``tree_size``).

    Codes: ``fact.missing``, ``fact.id`` (SHA-256 of the recomputed leaf != id), ``fact.leaf_hash``
    (recomputed leaf hash != stored), ``fact.node`` (its stored level-0 node != its leaf hash),
    ``fact.inclusion`` (names the stored nodes on the path that disagree with what they hash),
    ``fact.uncovered`` (no signed checkpoint
    includes it), ``index.gap``, ``index.beyond_head``, ``head.size``, ``node.mismatch``,
    ``node.missing``, ``node.unexpected``, ``checkpoint.signature``, ``checkpoint.note`` (note's
    size or root != the row's), ``checkpoint.root`` (recomputed root != signed root),
    ``checkpoint.beyond_head``, ``checkpoint.consistency``, ``checkpoint.missing``,
    ``checkpoint.signing``, ``head.origin``, ``head.peaks``, ``fact.signature`` (full verify:
    a signed fact's OpenPGP signature does not verify); hooks add ``check.<name>``.
    """

    check: str
    message: str
    fact_id: str | None = None
    leaf_index: int | None = None
    node: tuple[int, int] | None = None
    tree_size: int | None = None


@dataclass(frozen=True)
class FactVerification:
    """The checks of one asked-for fact. ``record`` is None when the fact is not stored."""

    fact_id: str
    record: FactRecord | None
    findings: tuple[Finding, ...]
    not_applicable: tuple[str, ...] = ()
    """Names of the extra checks (``verify(checks=...)``) that had nothing to check on this fact:
    neither passed nor failed."""

    @property
    def ok(self) -> bool:
        return not self.findings


@dataclass(frozen=True)
class VerifyReport:
    """``ChainLog.verify``: per fact, and the log-level checks of the newest checkpoint (its
    signature, and its consistency with the one signed before it) in ``log_findings``."""

    checkpoint: SignedCheckpoint | None
    previous_checkpoint: SignedCheckpoint | None
    facts: tuple[FactVerification, ...]
    log_findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return not self.log_findings and all(f.ok for f in self.facts)

    @property
    def findings(self) -> tuple[Finding, ...]:
        return self.log_findings + tuple(x for f in self.facts for x in f.findings)


@dataclass(frozen=True)
class LogReport:
    """``ChainLog.verify_log``: a full recompute of the log up to ``tree_size``.

    ``root`` is the recomputed root (hex). ``findings`` holds at most the first ``max_findings``
    failures; ``findings_dropped`` counts the rest.
    """

    origin: str
    tree_size: int
    root: str
    leaves_checked: int
    nodes_checked: int
    checkpoints_checked: int
    findings: tuple[Finding, ...]
    findings_dropped: int = 0
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    """Findings per check code (including dropped ones)."""
    signatures_checked: int | None = None
    """Signed facts whose OpenPGP signature was checked; None when signatures were not checked
    (no signer given, or skipped)."""

    @property
    def ok(self) -> bool:
        return not self.findings and not self.findings_dropped
