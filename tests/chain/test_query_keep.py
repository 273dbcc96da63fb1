"""``ChainLog.query(keep=...)`` (what ``verified_only`` needs): a page holds up to ``limit`` kept
facts, ``offset`` counts kept facts, and no page is empty while it says there is more."""

from __future__ import annotations

import dataclasses

import anyio
import pytest

from chittyos.app import App
from chittyos.chain import ChainLog
from chittyos.chain.checks import stored_signature_check
from chittyos.chain.records import FactPage, FactRecord
from chittyos.db import UnitOfWork
from chittyos.errors import InvalidInput
from tests.chain.conftest import LOG_KEY, append_all, make_fact

pytestmark = pytest.mark.anyio

SOURCE = "test:mix"


async def page_through(query, limit: int) -> list[str]:  # type: ignore[no-untyped-def]
    """Follow pages at ``offset + len(facts)`` until ``has_more`` is false; no empty page may
    say there is more."""
    seen: list[str] = []
    offset = 0
    for _ in range(1000):
        page: FactPage = await query(limit=limit, offset=offset)
        assert page.offset == offset and page.limit == limit
        assert len(page.facts) <= limit
        assert page.facts or not page.has_more, f"empty page at offset {offset} says has_more"
        seen += [f.fact_id for f in page.facts]
        if not page.has_more:
            return seen
        offset += len(page.facts)
    raise AssertionError("paging did not end")


# -- the paging, with a cheap keep (no gpg) ------------------------------------------------------


class EveryThird:
    """Keeps facts whose leaf index is a multiple of 3; counts calls and overlap."""

    def __init__(self) -> None:
        self.calls = 0
        self.running = 0
        self.most_at_once = 0

    async def __call__(self, record: FactRecord) -> bool:
        self.calls += 1
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        await anyio.sleep(0)
        self.running -= 1
        return record.leaf_index % 3 == 0


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 50])
async def test_paging_with_keep_collects_exactly_the_kept_facts_in_order(
    chain: ChainLog, uow: UnitOfWork, limit: int
) -> None:
    facts = [make_fact(n) for n in range(20)]
    await append_all(chain, uow, facts, batch=20)
    keep = EveryThird()
    seen = await page_through(lambda **kw: chain.query(keep=keep, **kw), limit)
    assert seen == [f.fact_id for i, f in enumerate(facts) if i % 3 == 0]
    assert keep.most_at_once == 1  # one fact at a time, as the post-filter did


async def test_offset_beyond_the_kept_facts_is_an_empty_last_page(chain: ChainLog, uow: UnitOfWork) -> None:
    await append_all(chain, uow, [make_fact(n) for n in range(10)], batch=10)
    page = await chain.query(keep=EveryThird(), limit=5, offset=61)
    assert page.facts == () and page.has_more is False
    page = await chain.query(keep=EveryThird(), limit=4, offset=0)
    assert [f.leaf_index for f in page.facts] == [0, 3, 6, 9] and page.has_more is False


async def test_keep_that_keeps_nothing_gives_one_empty_last_page(chain: ChainLog, uow: UnitOfWork) -> None:
    await append_all(chain, uow, [make_fact(n) for n in range(10)], batch=10)

    async def nothing(_: FactRecord) -> bool:
        return False

    page = await chain.query(keep=nothing, limit=3)
    assert page.facts == () and page.has_more is False


async def test_the_scan_bound_returns_a_short_page_that_says_more_then_names_offset(uow: UnitOfWork) -> None:
    chain = ChainLog(uow=uow, signer=LOG_KEY, keep_scan_max=5)
    await append_all(chain, uow, [make_fact(n) for n in range(20)], batch=20)
    keep = EveryThird()
    page = await chain.query(keep=keep, limit=5)
    # 5 rows examined (leaves 0-4): 0 and 3 kept; the bound stopped the page short.
    assert [f.leaf_index for f in page.facts] == [0, 3] and page.has_more is True
    assert keep.calls == 5
    with pytest.raises(InvalidInput) as info:
        await chain.query(keep=keep, limit=5, offset=2)
    assert info.value.field == "offset" and "at most 5" in info.value.rule


async def test_the_scan_bound_met_exactly_by_the_last_row_is_not_more(uow: UnitOfWork) -> None:
    chain = ChainLog(uow=uow, signer=LOG_KEY, keep_scan_max=6)
    await append_all(chain, uow, [make_fact(n) for n in range(6)], batch=6)
    page = await chain.query(keep=EveryThird(), limit=5)
    assert [f.leaf_index for f in page.facts] == [0, 3] and page.has_more is False
    page = await chain.query(keep=EveryThird(), limit=5, offset=2)
    assert page.facts == () and page.has_more is False


@pytest.mark.parametrize("bad", [0, -1, True, 2.5])
def test_keep_scan_max_must_be_a_positive_integer(bad: object) -> None:
    with pytest.raises(InvalidInput) as info:  # the constructor does no I/O: no database needed
        ChainLog(uow=None, signer=LOG_KEY, keep_scan_max=bad)  # type: ignore[arg-type]
    assert info.value.field == "keep_scan_max"


# -- verified facts: signatures checked with the server keyring (gpg) ------------------------------


async def mixed_log(app: App) -> list[str]:
    """Signed assertions, unsigned facts and signed facts whose signature does not verify,
    interleaved; the ids of the facts whose signature verifies, in log order."""
    verified: list[str] = []
    for n in range(7):
        _, placed = await app.chain.assert_fact(subject=f"s:{n}", predicate="p", object="o", source=SOURCE)
        verified.append(placed.fact_id)
        if n % 2 == 0:
            await app.chain.log.append_now([make_fact(n, source=SOURCE)])  # unsigned
            await app.chain.log.append_now([make_fact(100 + n, source=SOURCE)])
        if n % 3 == 1:  # a signature made over another fact
            other = await app.chain.sign_fact(make_fact(200 + n, source=SOURCE))
            forged = dataclasses.replace(make_fact(300 + n, source=SOURCE), signer=other.signer,
                                         signature=other.signature)
            await app.chain.log.append_now([forged])
    return verified


async def test_paging_verified_facts_collects_exactly_them_in_order(app: App) -> None:
    verified = await mixed_log(app)
    check = stored_signature_check(app.signer)

    async def verifies(record: FactRecord) -> bool:
        return record.signature is not None and await check(record.values()) is None

    for limit in (1, 2, 3):
        seen = await page_through(lambda **kw: app.chain.log.query(source=SOURCE, keep=verifies, **kw), limit)
        assert seen == verified


async def test_service_verified_only_pages_hold_verified_facts(app: App) -> None:
    verified = await mixed_log(app)

    async def query(**kw: int) -> FactPage:
        return await app.chain.query(
            subject=None, predicate=None, object=None, source=SOURCE, start_time=None, end_time=None,
            verified_only=True, **kw,
        )

    assert await page_through(query, 2) == verified
