"""What the chain tools do: log a signed assertion, query facts, verify facts with every check.

``ChainService`` combines the log with the OpenPGP signer (assertions are signed by the server
key) and the checks that reach outside the log (``checks.py``).
"""

from __future__ import annotations

import dataclasses
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

import anyio
from pydantic import Field

from chittyos.chain.checks import (
    cross_reference_check,
    execution_references,
    signature_check,
    stored_signature_check,
)
from chittyos.chain.facts import Fact
from chittyos.chain.log import ChainLog, FactCheck, Progress
from chittyos.chain.records import AppendedFact, FactPage, FactRecord, Finding, LogReport, SignedCheckpoint
from chittyos.chain.verify import check_log_limits
from chittyos.db.models import utcnow
from chittyos.db.uow import UnitOfWork
from chittyos.errors import ChittyError, InvalidInput
from chittyos.signing import OpenPGPSigner, Sealer

__all__ = ["MAX_TIME_MS", "ChainService", "FactResult", "VerifiedFacts"]

MAX_TIME_MS = 2**63 - 1
"""The largest ``start_time`` / ``end_time`` a query takes (the timestamp column is a BIGINT)."""


_CHECKS = (
    "Each check by name: leaf, inclusion, signature, cross_reference (the last two when asked for). "
    "true: checked and passed; false: failed; null: not applicable or not checked, never counted as "
    "passed (the signature of an execution or evidence fact, which the server does not sign; the "
    "cross-reference of a fact naming no execution; every check but leaf of a fact not in the log). "
    "An assertion without a signature fails the signature check: fortress_log_assertion always signs."
)
_ALL_VALID = (
    "Computed: true only when every fact passed every check that applies to it (null checks neither "
    "pass nor fail) and the log checks passed."
)


@dataclass(frozen=True)
class FactResult:
    """One fact as ``chitty_chain_verify`` reports it."""

    fact_id: str
    leaf_index: int | None
    leaf_hash: str | None
    valid: bool
    checks: Annotated[dict[str, bool | None], Field(description=_CHECKS)]
    """Each check by name: leaf (recomputed), inclusion, signature, cross_reference (the last two
    only when asked for). true: checked and passed; false: failed; null: not applicable or not
    checked, never counted as passed: the signature of an execution or evidence fact (the server
    does not sign those; an assertion without a signature fails instead), the cross-reference of
    a fact naming no execution or evidence, and every check but leaf of a fact not in the log."""
    failures: list[str]
    """What failed, one sentence each, naming the check."""
    tlog_proof: str | None
    """C2SP tlog-proof@v1 text against ``checkpoint``, when the fact is included."""


@dataclass(frozen=True)
class VerifiedFacts:
    all_valid: Annotated[bool, Field(description=_ALL_VALID)]
    """Computed: true only when every fact passed every check that applies to it (null checks
    neither pass nor fail) and the log checks passed."""
    checkpoint: SignedCheckpoint | None
    previous_checkpoint: SignedCheckpoint | None
    log_failures: list[str]
    """The newest checkpoint's signature and its consistency with the previous one."""
    facts: list[FactResult]
    vkey: str
    """The log's note verifier key (name+keyid+base64), to check the proofs offline."""


def _finding_text(f: Finding) -> str:
    """``check: message (where)``, naming the fact, index or checkpoint only where the message
    does not already."""
    parts = []
    if f.fact_id and f.fact_id not in f.message:
        parts.append(f"fact {f.fact_id}")
    if f.fact_id and f.leaf_index is not None and f"index {f.leaf_index}" not in f.message:
        parts.append(f"index {f.leaf_index}")
    if not f.fact_id and f.tree_size is not None and f"size {f.tree_size}" not in f.message:
        parts.append(f"checkpoint at size {f.tree_size}")
    where = f" ({', '.join(parts)})" if parts else ""
    return f"{f.check}: {f.message}{where}"


_CHECK_OF = {
    "fact.id": "leaf",
    "fact.leaf_hash": "leaf",
    "fact.missing": "leaf",
    "fact.inclusion": "inclusion",
    "fact.node": "inclusion",
    "fact.uncovered": "inclusion",
    "check.signature": "signature",
    "check.cross_reference": "cross_reference",
}


class ChainService:
    def __init__(
        self,
        *,
        chain: ChainLog,
        signer: OpenPGPSigner,
        uow: UnitOfWork,
        sealer: Sealer,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.log = chain
        self._signer = signer
        self._signature_check = signature_check(signer)
        self._stored_signature = stored_signature_check(signer)
        self._cross_reference = cross_reference_check(uow=uow, sealer=sealer)
        self._uow = uow
        self._clock = clock

    async def sign_fact(self, fact: Fact) -> Fact:
        """``fact`` with ``signer`` (the server key's fingerprint) and a detached signature over
        its signing bytes."""
        named = dataclasses.replace(fact, signer=self._signer.fingerprint)
        signature = await self._signer.sign_async(named.signing_bytes())
        return dataclasses.replace(named, signature=signature)

    async def assert_fact(self, *, subject: str, predicate: str, object: str, source: str) -> tuple[Fact, AppendedFact]:
        """Log one assertion, signed by the server key, in a transaction of its own.

        Raises ``InvalidInput`` naming the field; a ``source`` starting ``chittyos:`` or a
        ``subject`` starting ``execution:`` is refused, in any case and in any spelling that
        Unicode compatibility normalisation (NFKC) folds to it, such as full-width letters: those
        mark the facts the server writes of its executions, which queries by source or subject
        and readers of the log must not mix with assertions. Logging the same statement twice in
        the same millisecond returns the first place (``existed``)."""
        for field, value, prefix in (("source", source, "chittyos:"), ("subject", subject, "execution:")):
            folded = unicodedata.normalize("NFKC", value).strip().casefold() if isinstance(value, str) else ""
            if folded.startswith(prefix):
                rule = f"must not start with {prefix!r}: it marks the facts the server writes of its executions"
                raise InvalidInput(field, rule, value)
        fact = Fact.at(self._clock(), subject=subject, predicate=predicate, object=object, source=source)
        signed = await self.sign_fact(fact)
        (placed,) = await self.log.append_now([signed])
        return signed, placed

    async def query(
        self,
        *,
        subject: str | None,
        predicate: str | None,
        object: str | None,
        source: str | None,
        start_time: int | None,
        end_time: int | None,
        verified_only: bool,
        limit: int,
        offset: int,
    ) -> FactPage:
        """Facts matching every filter, in log order; ``start_time``/``end_time`` are epoch ms
        (inclusive / exclusive). With ``verified_only``, only facts that carry an OpenPGP
        signature which verifies now (checked with gpg, not read from a flag) count, for
        ``offset`` and ``limit`` too (``ChainLog.query``'s ``keep``: a bounded scan). Raises
        ``InvalidInput``."""
        for name, value in (("start_time", start_time), ("end_time", end_time)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TIME_MS
            ):
                raise InvalidInput(name, f"must be epoch milliseconds from 0 to {MAX_TIME_MS}", value)
        if start_time is not None and end_time is not None and end_time < start_time:
            raise InvalidInput("end_time", "must not be before start_time", end_time)
        page = await self.log.query(
            subject=subject,
            predicate=predicate,
            object=object,
            source=source,
            since=start_time,
            until=end_time,
            limit=limit,
            offset=offset,
            keep=self._verifies if verified_only else None,
        )
        return page

    async def _verifies(self, record: FactRecord) -> bool:
        return record.signature is not None and await self._stored_signature(record.values()) is None

    async def verify(
        self, fact_ids: Sequence[str], *, verify_signatures: bool = True, cross_reference: bool = True
    ) -> VerifiedFacts:
        """Every check of DESIGN.md for each fact, plus the log's checkpoint checks.

        Raises ``InvalidInput`` for malformed ids (none, too many, not 64 hex digits).
        """
        checks: dict[str, FactCheck] = {}
        if verify_signatures:
            checks["signature"] = self._signature_check
        if cross_reference:
            checks["cross_reference"] = self._cross_reference
        report = await self.log.verify(fact_ids, checks=checks)
        results = []
        names = ["leaf", "inclusion", *checks]
        for item in report.facts:
            failed = {_CHECK_OF.get(f.check, f.check) for f in item.findings}
            # A fact that is not stored was checked for nothing but being there.
            unchecked = set(names) - {"leaf"} if item.record is None else set(item.not_applicable)
            proof = None
            if item.record is not None and "inclusion" not in failed and "leaf" not in failed:
                try:
                    proof = (await self.log.inclusion_proof(item.fact_id)).tlog_proof
                except ChittyError:
                    proof = None
            results.append(
                FactResult(
                    fact_id=item.fact_id,
                    leaf_index=item.record.leaf_index if item.record else None,
                    leaf_hash=item.record.leaf_hash if item.record else None,
                    valid=item.ok,
                    checks={
                        name: False if name in failed else None if name in unchecked else True for name in names
                    },
                    failures=[_finding_text(f) for f in item.findings],
                    tlog_proof=proof,
                )
            )
        return VerifiedFacts(
            all_valid=report.ok,
            checkpoint=report.checkpoint,
            previous_checkpoint=report.previous_checkpoint,
            log_failures=[_finding_text(f) for f in report.log_findings],
            facts=results,
            vkey=self.log.vkey,
        )

    async def verify_log(
        self,
        progress: Progress | None = None,
        *,
        verify_signatures: bool = True,
        cross_reference: bool = True,
        page_size: int = 8192,
        max_findings: int = 10_000,
    ) -> LogReport:
        """``ChainLog.verify_log`` (the full recompute), also checking the OpenPGP signature of
        every signed fact with the server's keyring unless ``verify_signatures`` is False, and
        unless ``cross_reference`` is False, that every fact naming an execution names one that
        exists, as this server writes it (``checks.execution_references``: ``fact.cross_reference``)."""
        check_log_limits(page_size=page_size, max_findings=max_findings)  # before any task starts
        references: list[tuple[list[Finding], int]] = []

        async def check_references() -> None:
            references.append(await execution_references(self._uow, limit=max_findings))

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            if cross_reference:  # one statement the database runs beside the recompute
                tg.start_soon(check_references)
            report = await self.log.verify_log(
                progress,
                signatures=self._stored_signature if verify_signatures else None,
                page_size=page_size,
                max_findings=max_findings,
            )
        if not cross_reference:
            return report
        ((found, total),) = references
        kept = tuple(found[: max(0, max_findings - len(report.findings))])
        counts = dict(report.counts)
        if total:
            counts["fact.cross_reference"] = counts.get("fact.cross_reference", 0) + total
        return dataclasses.replace(
            report,
            findings=report.findings + kept,
            findings_dropped=report.findings_dropped + total - len(kept),
            counts=counts,
            seconds=round(time.perf_counter() - started, 3),
        )
