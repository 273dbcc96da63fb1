"""Verification of ChittyChain as stored: per fact (``verify_facts``) and the whole log (``verify_log``).

Both report every failure as a ``Finding`` naming the check and where (fact, index, node
(level, index), checkpoint size); neither raises for what it finds. They back
``ChainLog.verify`` / ``ChainLog.verify_log``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from collections import ChainMap
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import anyio.to_thread
from anyio.streams.memory import MemoryObjectSendStream

from chittyos.chain import scan, store
from chittyos.chain.facts import SORTED_FIELDS, canonical_leaf_sorted, parse_fact_id
from chittyos.chain.merkle import (
    EMPTY_ROOT,
    consistency_proof,
    consistency_proof_nodes,
    inclusion_proof,
    inclusion_proof_nodes,
    NodeId,
    node_hash,
    root_nodes,
    verify_consistency,
    verify_inclusion,
)
from chittyos.chain.note import Checkpoint, open_checkpoint
from chittyos.chain.recompute import Findings, Tree, leaf_digests
from chittyos.chain.records import (
    NOT_APPLICABLE,
    UNSIGNED_ASSERTION,
    FactVerification,
    Finding,
    LogReport,
    VerifyReport,
)
from chittyos.chain.scan import Page
from chittyos.errors import ChittyError, InvalidInput, ProofRejected

if TYPE_CHECKING:
    from chittyos.chain.log import ChainLog, FactCheck, Progress, SignatureCheck

__all__ = ["MAX_VERIFY_FACTS", "check_log_limits", "verify_facts", "verify_log"]

MAX_VERIFY_FACTS = 10_000
"""Facts one ``verify`` call checks at most."""
_ZERO = bytes(32)
_READERS = 2  # pages read at once, beside the one being hashed (SQLite: threads; PostgreSQL: sessions)
_AHEAD = 1  # pages each reader may have read that wait to be hashed (a few MB each)
_ROW_CHUNK = 256  # leaves recomputed row by row between two yields (canonical JSON in Python)


async def verify_facts(
    chain: ChainLog, fact_ids: Sequence[str], *, checks: Mapping[str, FactCheck]
) -> VerifyReport:
    """Check each fact, and the newest signed checkpoint they are checked against.

    Per fact: 1. it is stored; 2. SHA-256 of its leaf bytes recomputed from the stored fields is
    its id, and SHA-256(0x00 || leaf) its stored leaf hash; 3. its inclusion proof, built from
    stored nodes with the RECOMPUTED leaf hash, verifies against the newest signed checkpoint (one
    is signed first when none covers the fact); 4. each of ``checks`` (``check.<name>``; one
    that returns ``NOT_APPLICABLE`` is listed in the fact's ``not_applicable`` instead).
    Log: the newest and the previous checkpoint open with the log key and match their rows, and a
    consistency proof from stored nodes takes the previous root to the newest.
    Raises ``InvalidInput`` for malformed ids (none, more than 10000, not 64 hex digits).
    """
    if isinstance(fact_ids, str) or not isinstance(fact_ids, Sequence):
        raise InvalidInput("fact_ids", "must be a list of fact ids", type(fact_ids).__name__)
    ids = list(dict.fromkeys(parse_fact_id(f, f"fact_ids[{n}]") for n, f in enumerate(fact_ids)))
    if not 1 <= len(ids) <= MAX_VERIFY_FACTS:
        raise InvalidInput("fact_ids", f"must name between 1 and {MAX_VERIFY_FACTS} facts", len(ids))
    log_findings: list[Finding] = []
    async with chain.reading() as session:
        records = {r[0]: store.record_from_row(r) for r in await store.facts_by_id(session, ids)}
        latest = await store.latest_checkpoints(session, 2)
    highest = max((r.leaf_index for r in records.values()), default=-1)
    if not latest or latest[0].tree_size <= highest:
        try:
            await chain.checkpoint()
        except ChittyError as exc:
            log_findings.append(
                Finding("checkpoint.signing", f"no checkpoint covering the facts could be signed: {exc}")
            )
        else:
            async with chain.reading() as session:
                latest = await store.latest_checkpoints(session, 2)
    newest = latest[0] if latest else None
    previous = latest[1] if len(latest) > 1 else None
    trusted = _open(chain, newest, log_findings) if newest is not None else None
    if newest is None:
        log_findings.append(Finding("checkpoint.missing", "the log has no signed checkpoint"))
    earlier = _open(chain, previous, log_findings) if previous is not None else None

    coords = [(0, record.leaf_index) for record in records.values()]  # each fact's own leaf node
    if trusted is not None:
        for record in records.values():
            if record.leaf_index < trusted.tree_size:
                coords += inclusion_proof_nodes(record.leaf_index, trusted.tree_size)
        if earlier is not None and earlier.tree_size:
            coords += consistency_proof_nodes(earlier.tree_size, trusted.tree_size)
    async with chain.reading() as session:
        nodes = await store.nodes(session, coords) if coords else {}

    if trusted is not None and earlier is not None and earlier.tree_size:
        try:
            proof = consistency_proof(earlier.tree_size, trusted.tree_size, nodes)
            verify_consistency(
                earlier.tree_size, trusted.tree_size, proof, earlier.root_hash, trusted.root_hash
            )
        except (InvalidInput, ProofRejected) as exc:
            log_findings.append(
                Finding(
                    "checkpoint.consistency",
                    f"checkpoint at size {trusted.tree_size} is not consistent with the one at size "
                    f"{earlier.tree_size} (proof from stored nodes): {exc}",
                    tree_size=trusted.tree_size,
                )
            )

    results = []
    diagnosed = 0
    for fact_id in ids:
        record = records.get(fact_id)
        if record is None:
            finding = Finding("fact.missing", f"fact {fact_id} is not in the log", fact_id=fact_id)
            results.append(FactVerification(fact_id, None, (finding,)))
            continue
        found: list[Finding] = []
        where = {"fact_id": fact_id, "leaf_index": record.leaf_index}
        leaf = record.leaf_bytes()
        if hashlib.sha256(leaf).hexdigest() != fact_id:
            found.append(
                Finding(
                    "fact.id",
                    f"fact {fact_id} at index {record.leaf_index}: the stored fields "
                    "hash to another id (the row was changed)",
                    **where,
                )
            )
        leaf_hash = hashlib.sha256(b"\x00" + leaf).digest()
        if leaf_hash.hex() != record.leaf_hash:
            found.append(
                Finding(
                    "fact.leaf_hash",
                    f"fact {fact_id} at index {record.leaf_index}: stored leaf hash "
                    f"{record.leaf_hash} != recomputed {leaf_hash.hex()}",
                    **where,
                )
            )
        own_node = nodes.get((0, record.leaf_index))
        own_differs = not found and own_node is not None and own_node != leaf_hash
        if trusted is None:
            found.append(
                Finding(
                    "fact.inclusion",
                    f"fact {fact_id}: no trusted checkpoint to check inclusion against",
                    **where,
                )
            )
        elif record.leaf_index >= trusted.tree_size:
            found.append(
                Finding(
                    "fact.uncovered",
                    f"fact {fact_id} at index {record.leaf_index} is beyond the "
                    f"newest checkpoint (size {trusted.tree_size})",
                    tree_size=trusted.tree_size,
                    **where,
                )
            )
        else:
            try:
                path = inclusion_proof(record.leaf_index, trusted.tree_size, nodes)
                verify_inclusion(leaf_hash, record.leaf_index, trusted.tree_size, path, trusted.root_hash)
            except (InvalidInput, ProofRejected) as exc:
                diagnosed += 1
                suspects = (
                    await _suspect_nodes(
                        chain, inclusion_proof_nodes(record.leaf_index, trusted.tree_size), nodes
                    )
                    if diagnosed <= _DIAGNOSED_MAX
                    else []
                )
                if own_differs:
                    suspects.insert(
                        0, f"its own stored node (level 0, index {record.leaf_index}) is another leaf hash "
                        "(the fact was moved to this index, or that node was changed)"
                    )
                own_differs = False
                found.append(
                    Finding(
                        "fact.inclusion",
                        f"fact {fact_id} at index {record.leaf_index} is not "
                        f"included in the checkpoint at size {trusted.tree_size}: {exc}"
                        + (f"; on its proof path, {'; '.join(suspects)}" if suspects else ""),
                        tree_size=trusted.tree_size,
                        **where,
                    )
                )
        if own_differs and own_node is not None:  # included all the same: only the node changed
            found.append(
                Finding(
                    "fact.node",
                    f"fact {fact_id} at index {record.leaf_index}: stored node (level 0, index "
                    f"{record.leaf_index}) {own_node.hex()} != its leaf hash (a changed stored node: "
                    "proofs of the facts beside it fail)",
                    **where,
                )
            )
        skipped: list[str] = []
        for name, check in checks.items():
            try:
                problem = await check(record)
            except ChittyError as exc:
                problem = str(exc)
            if problem is NOT_APPLICABLE:
                skipped.append(name)
            elif problem:
                found.append(Finding(f"check.{name}", str(problem), **where))
        results.append(FactVerification(fact_id, record, tuple(found), tuple(skipped)))
    return VerifyReport(
        checkpoint=chain.checkpoint_view(newest) if newest is not None else None,
        previous_checkpoint=chain.checkpoint_view(previous) if previous is not None else None,
        facts=tuple(results),
        log_findings=tuple(log_findings),
    )


_DIAGNOSED_MAX = 20
"""Failed inclusion proofs per ``verify_facts`` whose path is searched for the changed node."""


async def _suspect_nodes(chain: ChainLog, path: Sequence[NodeId], read: Mapping[NodeId, bytes]) -> list[str]:
    """The stored nodes of a failed proof's ``path`` that disagree with what they hash: a leaf
    node with its fact row's leaf hash, a higher one with the hash of its two stored children.
    ``read``: the nodes read already (the path's among them). ``chittyos chain verify``
    recomputes every node; this names the likely one in O(log n) reads."""
    children = [(level - 1, 2 * index + side) for level, index in path if level for side in (0, 1)]
    async with chain.reading() as session:
        stored = ChainMap(read, await store.nodes(session, [c for c in children if c not in read]))
        leaves = await store.leaf_hashes_at(session, [index for level, index in path if level == 0])
    suspects = []
    for level, index in path:
        value = stored.get((level, index))
        if level == 0:
            expected = leaves.get(index)
            what = "the leaf hash of the fact at that index"
        else:
            left, right = stored.get((level - 1, 2 * index)), stored.get((level - 1, 2 * index + 1))
            expected = node_hash(left, right) if left is not None and right is not None else None
            what = "the hash of its two stored children"
        if value is not None and expected is not None and value != expected:
            suspects.append(f"stored node (level {level}, index {index}) != {what}")
    return suspects


def _open(chain: ChainLog, row: Any, findings: list[Finding]) -> Checkpoint | None:
    """The checkpoint of a stored row if its note opens with the log key and matches the row."""
    size, root = row[0], bytes(row[1])
    try:
        checkpoint = open_checkpoint(row[2], chain.verifier, origin=chain.origin)
    except ProofRejected as exc:
        findings.append(Finding("checkpoint.signature", f"checkpoint at size {size}: {exc}", tree_size=size))
        return None
    if checkpoint.tree_size != size or checkpoint.root_hash != root:
        findings.append(
            Finding(
                "checkpoint.note",
                f"checkpoint at size {size}: the signed note says size {checkpoint.tree_size} root "
                f"{checkpoint.root_hash.hex()}, the row says root {root.hex()}",
                tree_size=size,
            )
        )
        return None
    return checkpoint


async def verify_log(
    chain: ChainLog,
    *,
    progress: Progress | None,
    signatures: SignatureCheck | None = None,
    page_size: int,
    max_findings: int,
) -> LogReport:
    """Recompute the log from its facts, streaming in index order: O(log n) + a few pages of memory.

    Steps: 1. read the head (size n) and every checkpoint; each must open with the log key, match
    its row and not lie beyond n; 2. page by page (leaf ranges, each read in its own short read
    transaction, ``_READERS`` pages read while the one before them is hashed): indices are
    contiguous (a gap is reported and the stored level-0 node stands in for the missing leaf);
    each leaf is recomputed from the stored fields and must hash to the fact id and to the stored
    leaf hash; the tree is rebuilt over the recomputed leaves (``recompute.Tree``), every complete
    subtree it yields compared with the stored node (a page's nodes of one level compared at
    once, then one by one only when they differ); at each checkpoint's size the recomputed root
    must equal the root its note signs (the row's root_hash column when the note does not open
    with the log key for that size); with ``signatures``, every signed fact's OpenPGP signature is
    checked (``fact.signature``; up to ``_SIGNATURES_AT_ONCE`` at a time, each a gpg process);
    3. no fact or node lies beyond n, the table holds n facts, and the head's cached peaks are
    the stored root nodes.

    A page is read as a few aggregates (``scan``: the database writes the RFC 8785 leaf bytes,
    on SQLite on connections of the verifier's own, in worker threads) and hashed a level at a
    time in a worker thread of its own (``_page_at_once`` says why). A page that is not clean
    there, or where any id or leaf hash differs, is read again row by row and recomputed leaf by
    leaf in Python, which names each finding with its index. Either way every leaf is hashed
    here, from its stored fields.
    """
    check_log_limits(page_size=page_size, max_findings=max_findings)
    started = time.perf_counter()
    out = Findings(max_findings)
    # 1.
    async with chain.reading() as session:
        stored_checkpoints = await store.checkpoints(session)  # first: the head read next only grew
        head = await store.head(session)
        sqlite_path = scan.SqlitePages.path_of(session.get_bind())
    size, origin, _ = head if head is not None else (0, chain.origin, b"")
    if origin != chain.origin:
        out.add(Finding("head.origin", f"the log's origin is {origin!r}, the log key's is {chain.origin!r}"))
    targets: dict[int, bytes] = {}
    what: dict[int, str] = {}
    for row in stored_checkpoints:
        if row[0] > size:
            out.add(
                Finding(
                    "checkpoint.beyond_head",
                    f"checkpoint at size {row[0]} is beyond the log's size {size}",
                    tree_size=row[0],
                )
            )
        opened: list[Finding] = []
        _open(chain, row, opened)
        for finding in opened:
            out.add(finding)
        # The recompute is held to the root the note signs when the note opens with the log key
        # for this size; otherwise (a forged or moved note) to the row's root_hash column.
        signed = _signed_root(chain, row)
        targets[row[0]] = bytes(row[1]) if signed is None else signed
        if signed is None:
            what[row[0]] = "the stored root_hash column (its note does not sign this size)"

    # 2.
    tree = Tree(targets, out, what)
    tree.check_root(0, EMPTY_ROOT)
    leaves = nodes_checked = signatures_checked = 0
    ranges = [(begin, min(begin + page_size, size)) for begin in range(0, size, page_size)]
    streams = [anyio.create_memory_object_stream[Page](_AHEAD) for _ in range(_READERS)]
    with ExitStack() as closing:
        for stream in (end for pair in streams for end in pair):
            closing.enter_context(stream)
        async with anyio.create_task_group() as tg:
            for n, (send, _) in enumerate(streams):
                tg.start_soon(_read_pages, chain, sqlite_path, ranges[n::_READERS], send)
            for n in range(len(ranges)):
                page = await streams[n % _READERS][1].receive()  # in index order; the next ones are read
                tree.start_page()
                signed: list[tuple[int, str, dict[str, Any]]] = []
                unsigned: list[tuple[int, str]] = []
                if page.clean and await anyio.to_thread.run_sync(_page_at_once, tree, page):
                    leaves += page.end - page.begin
                    if signatures is not None:
                        signed = _signed_leaves(page)
                        unsigned = _unsigned_assertions(page)
                else:
                    leaves += await _page_by_rows(chain, tree, page, signed, unsigned)
                if signatures is not None:
                    for index, fact_id in unsigned:
                        message = f"fact {fact_id} at index {index}: {UNSIGNED_ASSERTION}"
                        out.add(Finding("fact.signature", message, fact_id=fact_id, leaf_index=index))
                nodes_checked += await _compare_nodes(chain, page, tree.computed, out)
                if signatures is not None and signed:
                    signatures_checked += await _check_signatures(signatures, signed, out)
                if progress is not None:
                    result = progress(page.end, size)
                    if inspect.isawaitable(result):
                        await result
    # 3. In one snapshot per statement, against the head as it is NOW: appends that committed
    #    during the recompute are not strays (the next verify covers them).
    async with chain.reading() as session:
        stray_facts = await store.stray_facts(session, max_findings + 1)
        stray_nodes = await store.stray_nodes(session, max_findings + 1)
        now_size, now_peaks, count = await store.head_and_count(session)
        peak_nodes = await store.nodes(session, root_nodes(now_size))
    for fact_id, index in stray_facts:
        out.add(
            Finding(
                "index.beyond_head",
                f"fact {fact_id} at index {index} is beyond the log's size {now_size}",
                fact_id=fact_id,
                leaf_index=index,
            )
        )
    for level, index in stray_nodes:
        out.add(
            Finding(
                "node.unexpected",
                f"node (level {level}, index {index}) does not belong to a tree of size {now_size}",
                node=(level, index),
            )
        )
    if count != now_size:
        out.add(Finding("head.size", f"the head says {now_size} leaves, the table holds {count} facts"))
    # The head's peaks are a cache of the stored root nodes (each compared with the recompute above).
    expected_peaks = b"".join(bytes(peak_nodes.get(node, _ZERO)) for node in root_nodes(now_size))
    if now_peaks != expected_peaks:
        out.add(
            Finding(
                "head.peaks",
                f"the head's cached peaks ({len(now_peaks)} bytes) are not the stored root "
                f"nodes of a tree of size {now_size}; appends would compute wrong nodes",
            )
        )
    return LogReport(
        origin=origin,
        tree_size=size,
        root=tree.root().hex(),
        leaves_checked=leaves,
        nodes_checked=nodes_checked,
        checkpoints_checked=len(stored_checkpoints),
        findings=tuple(out.kept),
        findings_dropped=out.dropped,
        seconds=round(time.perf_counter() - started, 3),
        counts=dict(out.counts),
        signatures_checked=None if signatures is None else signatures_checked,
    )


def check_log_limits(**limits: object) -> None:
    """Raise ``InvalidInput`` naming the first of ``verify_log``'s limits that is not a positive int."""
    for name, value in limits.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInput(name, "must be a positive integer", value)


async def _read_pages(
    chain: ChainLog,
    sqlite_path: str | None,
    ranges: list[tuple[int, int]],
    send: MemoryObjectSendStream[Page],
) -> None:
    """Read the pages ``ranges`` in order into ``send`` (up to ``_AHEAD`` wait there to be
    hashed): for a SQLite file on a connection of our own in a worker thread, else in a short
    read transaction of the log's per page."""
    async with send:
        if not ranges:
            return
        if sqlite_path is None:
            for begin, end in ranges:
                async with chain.reading() as session:
                    page = await scan.read_page(session, begin, end)
                await send.send(page)
            return
        pages = await anyio.to_thread.run_sync(scan.SqlitePages, sqlite_path)
        try:
            for begin, end in ranges:
                await send.send(await anyio.to_thread.run_sync(pages.read, begin, end))
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(pages.close)


def _page_at_once(tree: Tree, page: Page) -> bool:
    """A clean page (``scan.Page``): hash its leaves, and if every id and leaf hash is the stored
    one, add them to the tree and return True. False, with nothing changed, when any differs:
    the caller then takes the page row by row to name them.

    Blocking (~30 ms for 8192 leaves): ``verify_log`` runs it in a worker thread. Not for the
    event loop's sake only: hashing on the loop thread, yielding every few hundred leaves, drops
    and retakes the GIL at each yield, and CPython forces a switch to a waiting thread only after
    a whole switch interval in which the GIL did not change hands, so the threads reading the
    next pages waited for the GIL until the page was hashed and reading and hashing took turns
    (1M leaves on SQLite: 6.9-8.5 s; hashed in a thread, which is preempted every interval,
    4.6-5.7 s)."""
    leaves = page.leaves.split(b"\n")
    if len(leaves) != page.end - page.begin:
        return False
    ids, hashes = leaf_digests(leaves)
    if ids != page.ids or b"".join(hashes) != page.leaf_hashes:
        return False
    tree.extend(hashes)
    return True


async def _page_by_rows(
    chain: ChainLog,
    tree: Tree,
    page: Page,
    signed: list[tuple[int, str, dict[str, Any]]],
    unsigned: list[tuple[int, str]],
) -> int:
    """Recompute a page leaf by leaf from its rows, reporting each finding; the rows that carry a
    signature go to ``signed`` as ``(index, fact id, fields)``, assertions without one (neither
    execution nor evidence named) to ``unsigned`` as ``(index, fact id)``. Returns the rows read."""
    async with chain.reading() as session:
        rows = await scan.read_rows(session, page.begin, page.end)
    level0: dict[int, bytes | None] | None = None

    async def stand_in(index: int) -> bytes:
        # The stored leaf hash of a missing leaf, so that the nodes above are still checked.
        nonlocal level0
        first, count, blob = page.runs.get(0, (page.begin, 0, b""))
        if first <= index < first + count:
            return blob[(index - first) * 32 : (index - first + 1) * 32]
        if level0 is None:
            async with chain.reading() as session:
                level0 = await scan.nodes_of_level(session, 0, page.begin, page.end - 1)
        return level0.get(index) or _ZERO

    async def gap(upto: int) -> None:
        tree.out.add(
            Finding(
                "index.gap", f"leaves {tree.size}..{upto - 1} are missing (no fact row)", leaf_index=tree.size
            )
        )
        while tree.size < upto:
            tree.add(await stand_in(tree.size))

    for at in range(0, len(rows), _ROW_CHUNK):
        for row in rows[at : at + _ROW_CHUNK]:
            if row[1] != tree.size:
                await gap(row[1])
            _row_leaf(tree, row)
            if row[7] is not None:  # ROW_COLUMNS: the signature
                signed.append((row[1], row[0], dict(zip(SORTED_FIELDS, row[3:], strict=True))))
            elif row[3] is None and row[4] is None:  # no evidence_id, no execution_id
                unsigned.append((row[1], row[0]))
        await anyio.lowlevel.checkpoint()
    if tree.size < page.end:
        await gap(page.end)
    return len(rows)


_SIGNATURE_KEY = b'"signature":'
"""How a signed fact's leaf (RFC 8785 JSON) spells its signature member. Inside a string every
quote is escaped (``\\"``), so these bytes can only be that member."""
_SIGNATURES_AT_ONCE = 4  # gpg processes checking signatures at once


def _signed_leaves(page: Page) -> list[tuple[int, str, dict[str, Any]]]:
    """``(index, fact id, fields)`` of the page's signed facts, found in its leaf bytes (a clean
    page whose ids and leaf hashes were checked: the bytes are what the log committed to)."""
    blob = page.leaves
    out = []
    at = blob.find(_SIGNATURE_KEY)
    line_start, index = 0, page.begin
    while at != -1:
        start = blob.rfind(b"\n", 0, at) + 1
        index += blob.count(b"\n", line_start, start)
        line_start = start
        end = blob.find(b"\n", at)
        end = len(blob) if end == -1 else end
        leaf = blob[start:end]
        try:
            values = json.loads(leaf)
        except ValueError:  # not JSON a genuine row makes: the check reports it
            values = {}
        out.append((index, hashlib.sha256(leaf).hexdigest(), values))
        at = blob.find(_SIGNATURE_KEY, end)
    return out


def _unsigned_assertions(page: Page) -> list[tuple[int, str]]:
    """``(index, fact id)`` of the page's facts that name no execution or evidence and carry no
    signature: assertions, which the server always signs. A page of execution facts only costs
    one count; member names are found as ``_SIGNATURE_KEY`` is."""
    blob = page.leaves
    if blob.count(b'"execution_id":') == page.end - page.begin:
        return []
    return [
        (page.begin + k, hashlib.sha256(leaf).hexdigest())
        for k, leaf in enumerate(blob.split(b"\n"))
        if b'"signature":' not in leaf and b'"execution_id":' not in leaf and b'"evidence_id":' not in leaf
    ]


async def _check_signatures(
    check: SignatureCheck, signed: list[tuple[int, str, dict[str, Any]]], out: Findings
) -> int:
    """Check each signed fact's signature (a few at a time); ``fact.signature`` for each that
    fails, added in index order once all are checked (they finish in any order). Returns how
    many were checked."""
    limiter = anyio.CapacityLimiter(_SIGNATURES_AT_ONCE)
    failed: list[Finding] = []

    async def one(index: int, fact_id: str, values: dict[str, Any]) -> None:
        async with limiter:
            try:
                problem = await check(values)
            except ChittyError as exc:
                problem = str(exc)
        if problem:
            failed.append(
                Finding(
                    "fact.signature",
                    f"fact {fact_id} at index {index}: {problem}",
                    fact_id=fact_id,
                    leaf_index=index,
                )
            )

    async with anyio.create_task_group() as tg:
        for item in signed:
            tg.start_soon(one, *item)
    for finding in sorted(failed, key=lambda f: f.leaf_index or 0):
        out.add(finding)
    return len(signed)


def _signed_root(chain: ChainLog, row: Any) -> bytes | None:
    """The root a checkpoint row's note signs, when it opens with the log key for the row's size."""
    try:
        checkpoint = open_checkpoint(row[2], chain.verifier, origin=chain.origin)
    except ProofRejected:
        return None
    return checkpoint.root_hash if checkpoint.tree_size == row[0] else None


def _row_leaf(tree: Tree, row: Any) -> None:
    """One leaf from its row (``scan.ROW_COLUMNS``), its fields taken as they come: a wrong type
    is reported, not raised; the leaf hash recomputed is what goes into the tree."""
    where = {"fact_id": row[0], "leaf_index": row[1]}
    try:
        leaf = canonical_leaf_sorted(row[3:])
    except TypeError as exc:
        leaf = repr(row[3:]).encode()
        tree.out.add(
            Finding(
                "fact.id",
                f"fact {row[0]} at index {row[1]}: a stored field has the wrong type ({exc})",
                **where,
            )
        )
    leaf_hash = hashlib.sha256(b"\x00" + leaf).digest()
    if leaf_hash != row[2]:
        stored = bytes(row[2]).hex() if isinstance(row[2], bytes | bytearray | memoryview) else repr(row[2])
        tree.out.add(
            Finding(
                "fact.leaf_hash",
                f"fact {row[0]} at index {row[1]}: stored leaf hash {stored} "
                f"!= recomputed {leaf_hash.hex()}",
                **where,
            )
        )
    if hashlib.sha256(leaf).hexdigest() != row[0]:
        tree.out.add(
            Finding(
                "fact.id",
                f"fact {row[0]} at index {row[1]}: the stored fields hash to another id "
                "(the row was changed)",
                **where,
            )
        )
    tree.add(leaf_hash)


async def _compare_nodes(chain: ChainLog, page: Page, computed: list[list[bytes]], out: Findings) -> int:
    """Compare the nodes a page completed with the stored ones, a level at a time; one by one only
    for a level that differs, to name each node. Returns how many stored nodes were compared (a
    missing one is a finding, not counted)."""
    checked = 0
    for level, first, last in scan.completed_ranges(page.begin, page.end):
        mine = computed[level]
        if page.runs.get(level) == (first, len(mine), b"".join(mine)):
            checked += len(mine)
            continue
        async with chain.reading() as session:
            by_index = await scan.nodes_of_level(session, level, first, last)
        for index, value in enumerate(mine, start=first):
            node, where = (level, index), f"node (level {level}, index {index})"
            if index not in by_index:
                out.add(Finding("node.missing", f"{where} is not stored", node=node))
                continue
            checked += 1
            if (have := by_index[index]) is None:
                problem = "the stored value is not a 32-byte hash"
                out.add(Finding("node.mismatch", f"{where}: {problem}", node=node))
            elif have != value:
                problem = f"stored {have.hex()} != recomputed {value.hex()}"
                out.add(Finding("node.mismatch", f"{where}: {problem}", node=node))
    return checked
