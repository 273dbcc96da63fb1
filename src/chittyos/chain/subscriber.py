"""ChittyChain's handler of ``ExecutionCompleted``: the facts of a completed execution.

Wired in ``app.py`` only::

    bus.subscribe(ExecutionCompleted, execution_subscriber(chain))

It runs inside the transaction that completes the execution, so the execution row and its leaves
commit together or not at all. It appends the facts as ONE batch (one log lock; on PostgreSQL
usually one statement for facts, nodes and head, see ``ChainLog.append``) and records their ids,
in order, on the execution row (``secure_executions.chain_facts``).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from chittyos.chain.facts import Fact, timestamp_ms
from chittyos.chain.log import ChainLog
from chittyos.db.models import SecureExecution
from chittyos.errors import NotFound
from chittyos.events import ExecutionCompleted

__all__ = ["EXECUTION_PREDICATES", "ExecutionHandler", "execution_facts", "execution_subscriber"]

EXECUTION_PREDICATES = ("completed", "prompt", "model", "requested_model", "requested_by", "case")
"""Every predicate ``execution_facts`` records of an execution; a fact naming an execution with
another one was not written by this server (``checks.execution_references``)."""

ExecutionHandler = Callable[[ExecutionCompleted, AsyncSession], Awaitable[None]]
FactSigner = Callable[[Fact], Awaitable[Fact]]
"""Returns the fact with ``signer`` and ``signature`` set (over ``fact.signing_bytes()``)."""


def execution_facts(event: ExecutionCompleted, requested_model: str | None = None) -> list[Fact]:
    """What the log records of a completed execution, all timestamped ``completed_at``:

    ``execution:<id> completed sha256:<output hash>`` (first), ``... prompt sha256:<prompt hash>``,
    ``... model <answered model>`` (when a model answered: the model the provider says answered),
    ``... requested_model <requested model>`` (when given: the model asked for, the execution
    row's ``model``), ``... requested_by user:<user id>`` and ``... case <case id>`` (when
    given); source ``chittyos:<security level>``.
    """
    subject = f"execution:{event.execution_id}"
    common = {
        "subject": subject,
        "source": f"chittyos:{event.security_level}",
        "timestamp": timestamp_ms(event.completed_at),
        "execution_id": event.execution_id,
    }
    facts = [
        Fact(predicate="completed", object=f"sha256:{event.output_hash}", **common),
        Fact(predicate="prompt", object=f"sha256:{event.prompt_hash}", **common),
    ]
    if event.calls and event.calls[-1].model:
        facts.append(Fact(predicate="model", object=event.calls[-1].model, **common))
    if requested_model:
        facts.append(Fact(predicate="requested_model", object=requested_model, **common))
    facts.append(Fact(predicate="requested_by", object=f"user:{event.user_id}", **common))
    if event.case_id:
        facts.append(Fact(predicate="case", object=event.case_id, **common))
    return facts


def execution_subscriber(
    chain: ChainLog,
    *,
    facts_for: Callable[[ExecutionCompleted, str | None], Sequence[Fact]] = execution_facts,
    sign: FactSigner | None = None,
) -> ExecutionHandler:
    """The ``ExecutionCompleted`` handler appending ``facts_for(event, requested model)`` (the
    execution row's ``model``; signed by ``sign`` when given, before the log lock is taken) and
    setting ``chain_facts`` on the execution row.

    Raises ``NotFound`` when the execution row is not in the session (it always is inside the
    completing transaction), and whatever ``ChainLog.append`` raises; either rolls the completion back.
    """

    async def on_execution_completed(event: ExecutionCompleted, session: AsyncSession) -> None:
        # ExecutionService merged the row into this session already: read the identity map
        # directly (session.get would find it there too, after a greenlet round).
        key = uuid.UUID(event.execution_id)
        row = session.identity_map.get(AsyncSession.identity_key(SecureExecution, key))
        if row is None:
            row = await session.get(SecureExecution, key)
        if row is None:
            raise NotFound("execution", event.execution_id)
        facts = list(facts_for(event, row.model))
        if sign is not None:
            facts = [await sign(fact) for fact in facts]
        appended = await chain.append(session, facts)
        row.chain_facts = [a.fact_id for a in appended]

    return on_execution_completed
