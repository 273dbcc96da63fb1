"""Per-fact checks that reach outside the log: the OpenPGP signature a fact carries, and the
execution row a fact names (cross-reference by hash). Plugged into ``ChainLog.verify``, and the
signature check into ``ChainLog.verify_log``.

Each check returns None when it holds, ``NOT_APPLICABLE`` when there is nothing for it to check
on that fact (reported as null, never as passed), and a sentence saying what failed otherwise.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from typing import Any

from chittyos.chain.facts import canonical_leaf
from chittyos.chain.log import NOT_APPLICABLE, FactCheck, NotApplicable, SignatureCheck
from chittyos.chain.records import UNSIGNED_ASSERTION, FactRecord
from chittyos.db.models import SecureExecution
from chittyos.db.uow import UnitOfWork
from chittyos.errors import ChittyError
from chittyos.signing import OpenPGPSigner, Sealer

__all__ = ["UNSIGNED_ASSERTION", "cross_reference_check", "signature_check", "stored_signature_check"]



def stored_signature_check(signer: OpenPGPSigner) -> SignatureCheck:
    """The signature of a fact given as its stored fields (``FACT_FIELDS`` names; ``signature``
    not None) must verify over its signing bytes (the leaf without ``signature``, recomputed
    from the fields as stored, not re-validated), by the key the fact names in ``signer``."""

    async def check(values: Mapping[str, Any]) -> str | None:
        signature = values.get("signature")
        try:
            signing_bytes = canonical_leaf({**values, "signature": None})
            result = await signer.verify_async(signing_bytes, signature)  # type: ignore[arg-type]
        except (ChittyError, TypeError) as exc:
            return f"stored fields do not form a signed fact: {exc}"
        if not result.valid:
            return f"signature does not verify: {result.reason}"
        named = values.get("signer")
        if named is None:
            return f"signed by {result.fingerprint}, but the fact names no signer"
        if result.fingerprint != named:
            return f"signed by {result.fingerprint}, but the fact names signer {named}"
        return None

    return check


def signature_check(signer: OpenPGPSigner) -> FactCheck:
    """A fact carrying a signature must verify (``stored_signature_check``). A fact without one:
    an assertion (it names neither an execution nor evidence) fails, because
    ``fortress_log_assertion`` always signs; for an execution or evidence fact, which the server
    does not sign, the check does not apply."""
    verify = stored_signature_check(signer)

    async def check(record: FactRecord) -> str | NotApplicable | None:
        if record.signature is None:
            if record.execution_id is None and record.evidence_id is None:
                return UNSIGNED_ASSERTION
            return NOT_APPLICABLE
        return await verify(record.values())

    return check


def cross_reference_check(*, uow: UnitOfWork, sealer: Sealer) -> FactCheck:
    """A fact naming an execution must agree with that execution's row.

    Every execution fact: the row exists and the fact's source is ``chittyos:<the row's
    security_level>``. ``completed`` facts: the row is completed, and the SHA-256 of its output
    (unsealed and hashed again, not a stored hash) is the fact's object; ``prompt`` facts:
    likewise the prompt, which must also match the row's ``prompt_hash``; ``requested_by``,
    ``case``, ``model`` and ``requested_model`` facts: the row's user, case, answering model
    (``metadata_.answered_model``) and requested model (the ``model`` column). A fact naming no
    execution and no evidence has nothing to cross-reference (not applicable). Evidence records
    are not built yet, so a fact naming one cannot be checked.
    """

    async def check(record: FactRecord) -> str | NotApplicable | None:
        if record.evidence_id is not None:
            return f"names evidence {record.evidence_id}, but this server keeps no evidence records yet"
        if record.execution_id is None:
            return NOT_APPLICABLE
        try:
            key = uuid.UUID(record.execution_id)
        except ValueError:
            return f"names execution {record.execution_id!r}, which is not an execution id"
        async with uow.read() as session:
            row = await session.get(SecureExecution, key)
            if row is None:
                return f"names execution {record.execution_id}, which does not exist"
            problems = []
            source = f"chittyos:{row.security_level}"
            if record.source != source:
                problems.append(
                    f"execution {record.execution_id} ran at security level {row.security_level!r} "
                    f"(source {source!r}), the fact's source is {record.source!r}"
                )
            problem = _predicate_problem(record, row, sealer)
            if problem:
                problems.append(problem)
        return "; ".join(problems) or None

    return check


def _predicate_problem(record: FactRecord, row: SecureExecution, sealer: Sealer) -> str | None:
    execution = f"execution {record.execution_id}"
    if record.predicate == "completed":
        if row.status not in ("completed", "verified"):
            return f"{execution} is {row.status}, not completed"
        sealed = row.fortress_output if row.fortress_output is not None else row.chatgpt_response
        column = "fortress_output" if row.fortress_output is not None else "chatgpt_response"
        if sealed is None:
            return f"{execution} has no output"
        try:
            output = sealer.open(sealed, table="secure_executions", column=column, row_id=row.id)
        except ChittyError as exc:
            return f"{execution}: its output does not open: {exc}"
        actual = "sha256:" + hashlib.sha256(output).hexdigest()
        if actual != record.object:
            return f"{execution} output hashes to {actual}, the fact says {record.object}"
    elif record.predicate == "requested_by" and record.object != f"user:{row.user_id}":
        return f"{execution} names user:{row.user_id}, the fact says {record.object}"
    elif record.predicate == "case" and record.object != row.case_id:
        return f"{execution} names case {row.case_id!r}, the fact says {record.object!r}"
    elif record.predicate == "model" and record.object != (row.metadata_ or {}).get("answered_model"):
        answered = (row.metadata_ or {}).get("answered_model")
        return f"{execution} was answered by {answered!r}, the fact says {record.object!r}"
    elif record.predicate == "requested_model" and record.object != row.model:
        return f"{execution} names requested model {row.model!r}, the fact says {record.object!r}"
    elif record.predicate == "prompt":
        try:
            prompt = sealer.open(row.prompt, table="secure_executions", column="prompt", row_id=row.id)
        except ChittyError as exc:
            return f"{execution}: its prompt does not open: {exc}"
        actual = "sha256:" + hashlib.sha256(prompt).hexdigest()
        if actual != record.object or actual != f"sha256:{row.prompt_hash}":
            return (
                f"{execution} prompt hashes to {actual} (row says "
                f"sha256:{row.prompt_hash}), the fact says {record.object}"
            )
    return None
