"""Per-fact checks that reach outside the log: the OpenPGP signature a fact carries, and the
execution row a fact names (cross-reference by hash). Plugged into ``ChainLog.verify``, and the
signature check into ``ChainLog.verify_log``.

Each check returns None when it holds, ``NOT_APPLICABLE`` when there is nothing for it to check
on that fact (reported as null, never as passed), and a sentence saying what failed otherwise.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Select, and_, cast, func, literal, or_, select
from sqlalchemy import String as SqlString
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect

from chittyos.chain.facts import canonical_leaf
from chittyos.chain.log import NOT_APPLICABLE, FactCheck, NotApplicable, SignatureCheck
from chittyos.chain.records import UNSIGNED_ASSERTION, FactRecord, Finding
from chittyos.chain.subscriber import EXECUTION_PREDICATES
from chittyos.db.models import ChainFact, SecureExecution
from chittyos.db.uow import UnitOfWork
from chittyos.errors import ChittyError
from chittyos.signing import OpenPGPSigner, Sealer

__all__ = [
    "UNSIGNED_ASSERTION",
    "cross_reference_check",
    "execution_references",
    "signature_check",
    "stored_signature_check",
]



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

    Every execution fact: the row exists (its id spelt as the server writes it, lowercase with
    dashes), the fact's subject is ``execution:<id>``, its predicate one of
    ``EXECUTION_PREDICATES`` and its source ``chittyos:<the row's security_level>``.
    ``completed`` facts: the row is completed, and the SHA-256 of its output (unsealed and
    hashed again, not a stored hash) is the fact's object; ``prompt`` facts: likewise the
    prompt, which must also match the row's ``prompt_hash``; ``requested_by``, ``case``,
    ``model`` and ``requested_model`` facts: the row's user, case, answering model
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
        if str(key) != record.execution_id:  # the server writes ids in one spelling only
            return f"names execution {record.execution_id}, which does not exist"
        async with uow.read() as session:
            row = await session.get(SecureExecution, key)
            if row is None:
                return f"names execution {record.execution_id}, which does not exist"
            problems = _shape_problems(record.subject, record.predicate, record.execution_id)
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


async def execution_references(uow: UnitOfWork, *, limit: int) -> tuple[list[Finding], int]:
    """The whole log's facts that name an execution or evidence but cannot be what this server
    wrote: ``(the first `limit` as `fact.cross_reference` findings in index order, how many in all)``.

    The server signs every assertion (a fact naming neither), so such a fact may go unsigned
    only because of the row it names; a full verify therefore checks, in one statement over the
    log, that each execution fact names an execution that exists, has the subject
    ``execution:<id>`` and a predicate in ``EXECUTION_PREDICATES``, and the source
    ``chittyos:<the row's security_level>``, and is the first with its predicate for that
    execution; and that no fact names evidence (this server keeps no evidence records yet). What each fact says of its row (hashes, user, model) is compared
    by ``cross_reference_check`` (``chitty_chain_verify``), which unseals the row.

    On SQLite the statement runs outside a transaction (``UnitOfWork.peek_sqlite``): a session
    transaction would hold the write lock for the whole scan (~2.5 s at a million facts).
    """
    rows = await _references(uow, lambda query: query.order_by(ChainFact.leaf_index).limit(limit))
    total = len(rows)
    if total == limit:
        (count,) = await _references(uow, lambda query: select(func.count()).select_from(query.subquery()))
        total = count[0]
    return [_reference_finding(*row) for row in rows], total


async def _references(uow: UnitOfWork, shape: Callable[[Select[Any]], Select[Any]]) -> list[Any]:
    """The rows of ``shape(the wrong references query)`` (``execution_references``)."""
    sqlite = shape(_wrong_references(sqlite=True)).compile(
        dialect=sqlite_dialect(), compile_kwargs={"literal_binds": True}  # constants only
    )
    rows = await uow.peek_sqlite(str(sqlite), ())
    if rows is not None:
        return rows
    async with uow.read() as session:
        return list((await session.execute(shape(_wrong_references(sqlite=False)))).all())


def _wrong_references(*, sqlite: bool) -> Select[Any]:
    facts, executions = ChainFact.__table__.c, SecureExecution.__table__.c
    if sqlite:  # SQLite keeps a Uuid as 32 hex digits: a fact's id must be the dashed form of them
        dashes = [func.substr(facts.execution_id, at, 1) == "-" for at in (9, 14, 19, 24)]
        same_id = and_(
            executions.id == func.replace(facts.execution_id, "-", ""),
            func.length(facts.execution_id) == 36,
            *dashes,
        )
    else:  # PostgreSQL's uuid text is the dashed lowercase form
        same_id = cast(executions.id, SqlString) == facts.execution_id
    earlier = ChainFact.__table__.alias("earlier").c
    repeated = (  # the server records each predicate of an execution once
        select(earlier.leaf_index)
        .where(
            earlier.execution_id == facts.execution_id,
            earlier.predicate == facts.predicate,
            earlier.leaf_index < facts.leaf_index,
        )
        .exists()
    )
    wrong = or_(
        facts.evidence_id.is_not(None),
        executions.id.is_(None),
        facts.subject != literal("execution:") + facts.execution_id,
        facts.predicate.not_in(EXECUTION_PREDICATES),
        facts.source != literal("chittyos:") + executions.security_level,
        repeated,
    )
    return (
        select(
            facts.leaf_index, facts.id, facts.execution_id, facts.evidence_id, facts.subject,
            facts.predicate, facts.source, executions.id.is_not(None), executions.security_level,
            repeated,
        )  # fmt: skip
        .select_from(ChainFact.__table__.outerjoin(SecureExecution.__table__, same_id))
        .where(or_(facts.execution_id.is_not(None), facts.evidence_id.is_not(None)), wrong)
    )


def _reference_finding(
    index: int,
    fact_id: str,
    execution_id: str | None,
    evidence_id: str | None,
    subject: str,
    predicate: str,
    source: str,
    exists: bool,
    level: str | None,
    repeated: bool,
) -> Finding:
    if evidence_id is not None:
        problem = f"names evidence {evidence_id}, but this server keeps no evidence records yet"
    elif not exists:
        problem = f"names execution {execution_id}, which does not exist"
    else:
        problems = _shape_problems(subject, predicate, execution_id)
        if repeated:
            problems.append(f"execution {execution_id} has an earlier {predicate!r} fact: the server writes one")
        if source != f"chittyos:{level}":
            problems.append(
                f"execution {execution_id} ran at security level {level!r} (source "
                f"'chittyos:{level}'), the fact's source is {source!r}"
            )
        problem = "; ".join(problems) or "it does not agree with its execution row"
    return Finding(
        "fact.cross_reference",
        f"fact {fact_id} at index {index}: {problem}",
        fact_id=fact_id,
        leaf_index=index,
    )


def _shape_problems(subject: str, predicate: str, execution_id: str | None) -> list[str]:
    """What makes a fact naming ``execution_id`` unlike every fact ``execution_facts`` writes."""
    problems = []
    if subject != f"execution:{execution_id}":
        problems.append(f"its subject is {subject!r}, not 'execution:{execution_id}'")
    if predicate not in EXECUTION_PREDICATES:
        problems.append(f"its predicate {predicate!r} is not one the server records of an execution")
    return problems
