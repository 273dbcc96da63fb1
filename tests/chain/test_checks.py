"""The checks that reach outside the log (checks.py) through ChainService: signatures, the
execution row, checks that do not apply, and the full verify's signature check."""

from __future__ import annotations

import dataclasses
import time
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import text, update

from chittyos.app import App
from chittyos.chain import Fact
from chittyos.db.models import SecureExecution
from chittyos.errors import InvalidInput
from chittyos.execution import ExecutionRequest

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


async def sql(app: App, statement: str, **params: object) -> None:
    async with app.uow.begin() as session:
        await session.execute(text(statement), params)


async def change_row(app: App, execution_id: uuid.UUID, **values: object) -> None:
    async with app.uow.begin() as session:
        await session.execute(update(SecureExecution).where(SecureExecution.id == execution_id).values(**values))


async def assertion(app: App, n: int) -> Fact:
    fact, _ = await app.chain.assert_fact(
        subject=f"contract:{n}", predicate="signed_by", object=f"party {n}", source="paralegal:ann"
    )
    return fact


async def test_checks_that_do_not_apply_read_null_and_a_missing_fact_is_named_once(app: App) -> None:
    signed = await assertion(app, 1)
    unsigned = Fact.at(NOW, subject="contract:2", predicate="signed_by", object="ACME", source="paralegal:ann")
    await app.chain.log.append_now([unsigned])  # not through fortress_log_assertion: no signature
    view = await app.executions.execute(ExecutionRequest(prompt="Summarise the lease", user_id="alice"))
    execution_fact = view.chain_facts[0]
    unknown = "a" * 64

    report = await app.chain.verify([signed.fact_id, unsigned.fact_id, execution_fact, unknown])
    by_id = {f.fact_id: f for f in report.facts}
    assert report.all_valid is False and report.log_failures == []

    ok = by_id[signed.fact_id]
    assert ok.checks == {"leaf": True, "inclusion": True, "signature": True, "cross_reference": None}
    assert ok.valid and ok.failures == []

    bad = by_id[unsigned.fact_id]
    assert bad.checks == {"leaf": True, "inclusion": True, "signature": False, "cross_reference": None}
    assert not bad.valid
    assert bad.failures == [
        "check.signature: unsigned assertion: fortress_log_assertion always signs "
        f"(fact {unsigned.fact_id}, index 1)"
    ]

    execution = by_id[execution_fact]
    assert execution.checks == {"leaf": True, "inclusion": True, "signature": None, "cross_reference": True}
    assert execution.valid and execution.failures == []

    missing = by_id[unknown]
    assert missing.checks == {"leaf": False, "inclusion": None, "signature": None, "cross_reference": None}
    assert missing.failures == [f"fact.missing: fact {unknown} is not in the log"]  # the id once

    # all_valid comes from the checks that apply: null ones do not spoil it.
    assert (await app.chain.verify([signed.fact_id, execution_fact])).all_valid is True
    # A check not asked for is left out, not reported as passed.
    only_leaf = await app.chain.verify([signed.fact_id], verify_signatures=False, cross_reference=False)
    assert only_leaf.facts[0].checks == {"leaf": True, "inclusion": True}


async def test_the_requested_model_and_the_security_level_are_cross_checked(app: App) -> None:
    view = await app.executions.execute(ExecutionRequest(prompt="Summarise the lease", user_id="alice"))
    facts = {r.predicate: r for r in [await app.chain.log.get(i) for i in view.chain_facts]}
    assert facts["requested_model"].object == view.model and view.model
    assert (await app.chain.verify(view.chain_facts)).all_valid is True
    row = uuid.UUID(view.execution_id)

    # The requested model (the row's model column), which chitty_execution_status reports.
    await change_row(app, row, model="llama-evil")
    assert (await app.executions.status(view.execution_id)).model == "llama-evil"
    report = await app.chain.verify(view.chain_facts)
    assert report.all_valid is False
    failed = [f for f in report.facts if f.checks["cross_reference"] is False]
    assert [f.fact_id for f in failed] == [facts["requested_model"].fact_id]
    assert "'llama-evil'" in failed[0].failures[0] and view.model in failed[0].failures[0]

    # The security level: every execution fact's source names it.
    await change_row(app, row, model=view.model, security_level="fortress")
    report = await app.chain.verify(view.chain_facts)
    assert all(f.checks["cross_reference"] is False for f in report.facts)
    assert all(
        "security level 'fortress'" in f.failures[0] and "'chittyos:standard'" in f.failures[0] for f in report.facts
    )


async def test_query_times_are_bounded_to_a_bigint(app: App) -> None:
    for field, value in (("start_time", 99999999999999999999), ("end_time", 2**63)):
        arguments = {"start_time": None, "end_time": None, field: value}
        with pytest.raises(InvalidInput) as info:
            await app.chain.query(
                subject=None, predicate=None, object=None, source=None, verified_only=False, limit=10, offset=0,
                **arguments,
            )  # fmt: skip
        assert info.value.field == field and "from 0 to 9223372036854775807" in info.value.rule
    with pytest.raises(InvalidInput) as info:
        await app.chain.log.query(until=2**63)
    assert info.value.field == "until"
    page = await app.chain.log.query(since=0, until=2**63 - 1)  # the bounds themselves are fine
    assert page.facts == ()


async def forged_signature(app: App, n: int) -> Fact:
    """A fact whose signature is genuine but over another fact: the log is consistent with it."""
    donor = await assertion(app, 100 + n)
    fact = Fact.at(
        NOW, subject=f"contract:{n}", predicate="signed_by", object="someone else", source="paralegal:ann"
    )
    return dataclasses.replace(fact, signer=donor.signer, signature=donor.signature)


async def test_the_full_verify_checks_every_signed_fact(app: App) -> None:
    await assertion(app, 1)  # index 0
    view = await app.executions.execute(ExecutionRequest(prompt="Summarise the lease", user_id="alice"))  # 1..5
    forged = await forged_signature(app, 2)  # the donor at 6
    (placed,) = await app.chain.log.append_now([forged])  # 7
    await assertion(app, 3)  # 8
    assert placed.leaf_index == 7

    report = await app.chain.verify_log(page_size=4)
    assert [(f.check, f.leaf_index, f.fact_id) for f in report.findings] == [("fact.signature", 7, forged.fact_id)]
    assert report.findings[0].message.startswith(f"fact {forged.fact_id} at index 7: signature does not verify")
    assert report.signatures_checked == 4

    # Skipped on request; the log alone (no signer) does not check them either.
    skipped = await app.chain.verify_log(page_size=4, verify_signatures=False)
    assert skipped.ok and skipped.signatures_checked is None
    assert (await app.chain.log.verify_log(page_size=4)).ok

    # A page read row by row (another fact in it changed) is checked the same way.
    await sql(app, "UPDATE chitty_chain_facts SET subject = 'execution:forged' WHERE leaf_index = 5")
    rows = await app.chain.verify_log(page_size=4)
    assert ("fact.signature", 7, forged.fact_id) in {(f.check, f.leaf_index, f.fact_id) for f in rows.findings}
    assert rows.signatures_checked == 4 and view.chain_facts


async def test_what_checking_a_signature_costs_in_a_full_verify(app: App) -> None:
    # Not a benchmark: a bound that catches a check gone quadratic or serial per page.
    for n in range(12):
        await assertion(app, n)
    started = time.perf_counter()
    checked = await app.chain.verify_log(page_size=4)
    with_signatures = time.perf_counter() - started
    started = time.perf_counter()
    await app.chain.verify_log(page_size=4, verify_signatures=False)
    without = time.perf_counter() - started
    assert checked.ok and checked.signatures_checked == 12
    per_fact_ms = (with_signatures - without) * 1000 / 12
    print(f"signature check in a full verify: {per_fact_ms:.1f} ms per signed fact")
    assert per_fact_ms < 500


async def test_the_full_verify_refuses_facts_naming_executions_the_server_did_not_write(app: App) -> None:
    await assertion(app, 1)
    view = await app.executions.execute(ExecutionRequest(prompt="Summarise the lease", user_id="alice"))
    real = view.execution_id
    assert (await app.chain.verify_log(page_size=4)).ok  # what the server writes passes

    def execution_fact(execution_id: str, **fields: str) -> Fact:
        values = {"subject": f"execution:{execution_id}", "predicate": "completed", "object": "sha256:" + "0" * 64}
        values |= {"source": "chittyos:standard", **fields}
        return Fact.at(NOW, execution_id=execution_id, **values)  # type: ignore[arg-type]

    made_up = str(uuid.uuid4())
    forged = [
        execution_fact(made_up),  # no such execution: unsigned, it would otherwise pass as genuine
        execution_fact(real.upper()),  # the id in another spelling is another id
        execution_fact(real.replace("-", "")),
        execution_fact(real, predicate="approved_by", object="user:mallory"),
        execution_fact(real, predicate="case", source="chittyos:verified"),
        execution_fact(real, subject="contract:9"),
        execution_fact(real),  # a second answer for an execution that has one
        Fact.at(NOW, subject="contract:9", predicate="signed_by", object="x", source="s", evidence_id="ev-1"),
    ]
    placed = await app.chain.log.append_now(forged)
    report = await app.chain.verify_log(page_size=4)
    found = [(f.check, f.leaf_index, f.fact_id) for f in report.findings]
    assert found == [("fact.cross_reference", p.leaf_index, p.fact_id) for p in placed]
    messages = [f.message.split(": ", 1)[1] for f in report.findings]
    assert messages == [
        f"names execution {made_up}, which does not exist",
        f"names execution {real.upper()}, which does not exist",
        f"names execution {real.replace('-', '')}, which does not exist",
        "its predicate 'approved_by' is not one the server records of an execution",
        f"execution {real} ran at security level 'standard' (source 'chittyos:standard'), "
        "the fact's source is 'chittyos:verified'",
        f"its subject is 'contract:9', not 'execution:{real}'; "
        f"execution {real} has an earlier 'completed' fact: the server writes one",
        f"execution {real} has an earlier 'completed' fact: the server writes one",
        "names evidence ev-1, but this server keeps no evidence records yet",
    ]
    assert report.counts == {"fact.cross_reference": 8} and not report.ok

    # Findings beyond max_findings are counted, not kept; the check can be left out.
    capped = await app.chain.verify_log(page_size=4, max_findings=2)
    assert len(capped.findings) == 2 and capped.findings_dropped == 6
    assert capped.counts == {"fact.cross_reference": 8}
    assert (await app.chain.verify_log(page_size=4, cross_reference=False)).ok


async def test_the_full_verify_refuses_bad_limits_before_it_starts(app: App) -> None:
    for field, value in (("page_size", 0), ("max_findings", True), ("max_findings", -1)):
        with pytest.raises(InvalidInput) as info:
            await app.chain.verify_log(**{field: value})  # type: ignore[arg-type]
        assert info.value.field == field and info.value.rule == "must be a positive integer"


async def test_a_fact_naming_a_real_execution_must_be_one_the_server_writes(app: App) -> None:
    view = await app.executions.execute(ExecutionRequest(prompt="Summarise the lease", user_id="alice"))
    other = await app.executions.execute(ExecutionRequest(prompt="Summarise the deed", user_id="alice"))
    real = view.execution_id
    common = {"source": "chittyos:standard", "execution_id": real}
    forged = [  # what a writer of the database could add without the server's keys: all unsigned
        Fact.at(NOW, subject="alice", predicate="signed", object="contract 43", **common),
        Fact.at(NOW, subject=f"execution:{real}", predicate="approved_by", object="user:ceo", **common),
        Fact.at(NOW, subject=f"execution:{other.execution_id}", predicate="case", object="case-9", **common),
        Fact.at(
            NOW, subject=f"execution:{real.upper()}", predicate="requested_by", object="user:alice",
            source="chittyos:standard", execution_id=real.upper(),
        ),
    ]  # fmt: skip
    await app.chain.log.append_now(forged)
    report = await app.chain.verify([f.fact_id for f in forged])
    assert report.all_valid is False
    failures = [(f.checks["cross_reference"], f.failures) for f in report.facts]
    assert [checked for checked, _ in failures] == [False] * 4
    assert "its subject is 'alice'" in failures[0][1][0] and "'signed' is not one" in failures[0][1][0]
    assert "its predicate 'approved_by' is not one the server records" in failures[1][1][0]
    assert f"its subject is 'execution:{other.execution_id}'" in failures[2][1][0]
    assert f"names execution {real.upper()}, which does not exist" in failures[3][1][0]
    # What the server wrote still passes.
    assert (await app.chain.verify(view.chain_facts + other.chain_facts)).all_valid is True
