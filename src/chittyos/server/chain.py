"""ChittyChain tools: log an assertion, query facts, verify facts; the log's resources."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError
from mcp_types import ToolAnnotations
from pydantic import Field, WithJsonSchema

from chittyos.app import App
from chittyos.chain import FactRecord
from chittyos.chain.facts import MAX_LENGTHS
from chittyos.chain.service import MAX_TIME_MS, VerifiedFacts
from chittyos.server.errors import tool_errors

EpochMs = Annotated[
    int | None,
    Field(ge=0, le=MAX_TIME_MS),
    # One schema, not anyOf [integer, null]: a value out of range is then refused naming the bound.
    WithJsonSchema(
        {
            "type": ["integer", "null"],
            "minimum": 0,
            "maximum": MAX_TIME_MS,
            "description": "Epoch milliseconds (start inclusive, end exclusive).",
        }
    ),
]
"""Epoch milliseconds, 0 .. 2**63-1 (the database's BIGINT), or null."""

# What a client (and the model choosing arguments) reads in each argument's JSON Schema.
Subject = Annotated[
    str, Field(max_length=MAX_LENGTHS["subject"], description="What the statement is about, e.g. contract:42.")
]
Predicate = Annotated[
    str, Field(max_length=MAX_LENGTHS["predicate"], description="The relation, e.g. signed_by.")
]
Object = Annotated[str, Field(max_length=MAX_LENGTHS["object"], description="The value, e.g. acme-corp.")]
Source = Annotated[str, Field(max_length=MAX_LENGTHS["source"], description="Who or what says so.")]


def _exact(field: str) -> Any:
    return Annotated[str | None, Field(description=f"Only facts whose {field} is exactly this.")]


SubjectFilter = _exact("subject")
PredicateFilter = _exact("predicate")
ObjectFilter = _exact("object")
SourceFilter = _exact("source")
VerifiedOnly = Annotated[
    bool, Field(description="Keep only facts whose OpenPGP signature verifies (checks each; slower).")
]
Limit = Annotated[int, Field(description="Page size, 1 .. CHITTY_PAGE_SIZE_MAX.")]
Offset = Annotated[int, Field(description="Facts to skip, for paging.")]
FactIds = Annotated[list[str], Field(description="Fact ids (64 hex digits each) to check.")]
VerifySignatures = Annotated[bool, Field(description="Check each fact's OpenPGP signature.")]
CrossReference = Annotated[
    bool, Field(description="Compare each execution fact with its execution row (output and prompt by hash).")
]

CHECKPOINT_URI = "chittyos://chain/checkpoint"
VKEY_URI = "chittyos://chain/vkey"


@dataclass(frozen=True)
class AssertionLogged:
    fact_id: str
    """Hex SHA-256 of the fact's leaf bytes (RFC 8785 canonical JSON)."""
    leaf_index: int
    timestamp: int
    """Epoch milliseconds, UTC."""
    status: str
    """``logged``, or ``already_logged`` when the identical fact was in the log."""
    signer: str
    """Fingerprint of the OpenPGP key that signed the fact."""


@dataclass(frozen=True)
class FactView:
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
    signed: bool
    created_at: datetime

    @classmethod
    def of(cls, r: FactRecord) -> FactView:
        return cls(
            fact_id=r.fact_id,
            leaf_index=r.leaf_index,
            leaf_hash=r.leaf_hash,
            subject=r.subject,
            predicate=r.predicate,
            object=r.object,
            source=r.source,
            timestamp=r.timestamp,
            execution_id=r.execution_id,
            evidence_id=r.evidence_id,
            signer=r.signer,
            signed=r.signature is not None,
            created_at=r.created_at,
        )


@dataclass(frozen=True)
class FactQueryResult:
    facts: list[FactView]
    count: int
    offset: int
    limit: int
    has_more: bool


def register(mcp: MCPServer[App], app: App) -> None:
    @mcp.tool(annotations=ToolAnnotations(title="Log an assertion to ChittyChain", read_only_hint=False))
    async def fortress_log_assertion(
        subject: Subject, predicate: Predicate, object: Object, source: Source, ctx: Context[App]
    ) -> AssertionLogged:
        """Append one signed statement (subject predicate object, from source) to the append-only log."""
        app = ctx.request_context.lifespan_context
        with tool_errors():
            fact, placed = await app.chain.assert_fact(subject=subject, predicate=predicate, object=object, source=source)
        return AssertionLogged(
            fact_id=placed.fact_id,
            leaf_index=placed.leaf_index,
            timestamp=fact.timestamp,
            status="already_logged" if placed.existed else "logged",
            signer=fact.signer or "",
        )

    @mcp.tool(annotations=ToolAnnotations(title="Query ChittyChain facts", read_only_hint=True))
    async def chitty_chain_query(
        ctx: Context[App],
        subject: SubjectFilter = None,
        predicate: PredicateFilter = None,
        object: ObjectFilter = None,
        source: SourceFilter = None,
        start_time: EpochMs = None,
        end_time: EpochMs = None,
        verified_only: VerifiedOnly = False,
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> FactQueryResult:
        """Facts matching every given field exactly, in log order. start_time/end_time are epoch ms
        from 0 to 2**63-1 (inclusive/exclusive); verified_only keeps facts whose OpenPGP signature
        verifies."""
        app = ctx.request_context.lifespan_context
        with tool_errors():
            page = await app.chain.query(
                subject=subject,
                predicate=predicate,
                object=object,
                source=source,
                start_time=start_time,
                end_time=end_time,
                verified_only=verified_only,
                limit=limit,
                offset=offset,
            )
        facts = [FactView.of(r) for r in page.facts]
        return FactQueryResult(facts=facts, count=len(facts), offset=page.offset, limit=page.limit, has_more=page.has_more)

    @mcp.tool(annotations=ToolAnnotations(title="Verify ChittyChain facts", read_only_hint=True))
    async def chitty_chain_verify(
        fact_ids: FactIds,
        ctx: Context[App],
        verify_signatures: VerifySignatures = True,
        cross_reference: CrossReference = True,
    ) -> VerifiedFacts:
        """Check each fact by cryptography: its leaf recomputed from the stored fields, its inclusion
        proof against the newest signed checkpoint (returned as C2SP tlog-proof text), its OpenPGP
        signature, and (cross_reference) the execution it names, compared by hash; plus the newest
        checkpoint's consistency with the previous one. Each check reads true (passed), false
        (failed) or null (not applicable: the signature of an execution fact, which the server does
        not sign; the cross-reference of an assertion; every check but leaf of an unknown fact).
        all_valid is computed from the checks that apply, never assumed."""
        app = ctx.request_context.lifespan_context
        with tool_errors():
            return await app.chain.verify(
                fact_ids, verify_signatures=verify_signatures, cross_reference=cross_reference
            )

    @mcp.resource(
        CHECKPOINT_URI,
        name="chain-checkpoint",
        title="Latest signed ChittyChain checkpoint",
        description="C2SP tlog-checkpoint in a C2SP signed note (Ed25519), signed now if the log grew.",
        mime_type="text/plain",
    )
    async def latest_checkpoint() -> str:
        try:
            return (await app.chain.log.checkpoint()).note
        except Exception as exc:  # a resource read must say why, not crash
            raise ResourceError(f"no checkpoint can be signed: {exc}") from None

    @mcp.resource(
        VKEY_URI,
        name="chain-vkey",
        title="ChittyChain note verifier key",
        description="The C2SP verifier key (name+keyid+base64) that checks every checkpoint.",
        mime_type="text/plain",
    )
    async def log_vkey() -> str:
        return app.chain.log.vkey



