"""Per-fact checks that reach outside the log: the OpenPGP signature a fact carries, and the
execution row a fact names (cross-reference by hash). Plugged into ``ChainLog.verify``.

Each check returns None when it holds and a sentence saying what failed otherwise.
"""

from __future__ import annotations

import hashlib
import uuid

from chittyos.chain.log import FactCheck
from chittyos.chain.records import FactRecord
from chittyos.db.models import SecureExecution
from chittyos.db.uow import UnitOfWork
from chittyos.errors import ChittyError
from chittyos.signing import OpenPGPSigner, Sealer

__all__ = ["cross_reference_check", "signature_check"]

def signature_check(signer: OpenPGPSigner) -> FactCheck:
    """A fact carrying a signature must verify over its signing bytes, by the key it names."""

    async def check(record: FactRecord) -> str | None:
        if record.signature is None:
            return None
        try:
            signing_bytes = record.fact().signing_bytes()
        except ChittyError as exc:
            return f"stored fields do not form a valid fact: {exc}"
        result = await signer.verify_async(signing_bytes, record.signature)
        if not result.valid:
            return f"signature does not verify: {result.reason}"
        if record.signer is not None and result.fingerprint != record.signer:
            return f"signed by {result.fingerprint}, but the fact names signer {record.signer}"
        return None

    return check


def cross_reference_check(*, uow: UnitOfWork, sealer: Sealer) -> FactCheck:
    """A fact naming an execution must agree with that execution's row.

    ``completed`` facts: the row exists, is completed, and the SHA-256 of its output (unsealed
    and hashed again, not a stored hash) is the fact's object; ``prompt`` facts: likewise the
    prompt, which must also match the row's ``prompt_hash``; ``requested_by``, ``case`` and
    ``model`` facts: the row's user, case and answering model. Evidence records are not built yet, so a fact naming one cannot be checked.
    """

    async def check(record: FactRecord) -> str | None:
        if record.evidence_id is not None:
            return f"names evidence {record.evidence_id}, but this server keeps no evidence records yet"
        if record.execution_id is None:
            return None
        try:
            key = uuid.UUID(record.execution_id)
        except ValueError:
            return f"names execution {record.execution_id!r}, which is not an execution id"
        async with uow.read() as session:
            row = await session.get(SecureExecution, key)
            if row is None:
                return f"names execution {record.execution_id}, which does not exist"
            if record.predicate == "completed":
                if row.status not in ("completed", "verified"):
                    return f"execution {record.execution_id} is {row.status}, not completed"
                sealed = row.fortress_output if row.fortress_output is not None else row.chatgpt_response
                column = "fortress_output" if row.fortress_output is not None else "chatgpt_response"
                if sealed is None:
                    return f"execution {record.execution_id} has no output"
                try:
                    output = sealer.open(sealed, table="secure_executions", column=column, row_id=row.id)
                except ChittyError as exc:
                    return f"execution {record.execution_id}: its output does not open: {exc}"
                actual = "sha256:" + hashlib.sha256(output).hexdigest()
                if actual != record.object:
                    return f"execution {record.execution_id} output hashes to {actual}, the fact says {record.object}"
            elif record.predicate == "requested_by" and record.object != f"user:{row.user_id}":
                return f"execution {record.execution_id} names user:{row.user_id}, the fact says {record.object}"
            elif record.predicate == "case" and record.object != row.case_id:
                return f"execution {record.execution_id} names case {row.case_id!r}, the fact says {record.object!r}"
            elif record.predicate == "model" and record.object != (row.metadata_ or {}).get("answered_model"):
                answered = (row.metadata_ or {}).get("answered_model")
                return f"execution {record.execution_id} was answered by {answered!r}, the fact says {record.object!r}"
            elif record.predicate == "prompt":
                try:
                    prompt = sealer.open(row.prompt, table="secure_executions", column="prompt", row_id=row.id)
                except ChittyError as exc:
                    return f"execution {record.execution_id}: its prompt does not open: {exc}"
                actual = "sha256:" + hashlib.sha256(prompt).hexdigest()
                if actual != record.object or actual != f"sha256:{row.prompt_hash}":
                    return (
                        f"execution {record.execution_id} prompt hashes to {actual} (row says "
                        f"sha256:{row.prompt_hash}), the fact says {record.object}"
                    )
        return None

    return check
