"""RFC 6962 / RFC 9162 Merkle hashing, proofs and verification: vectors, corruptions, a naive RFC twin."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chittyos.chain.merkle import (
    EMPTY_ROOT,
    CompactRange,
    NodeId,
    append_nodes_needed,
    consistency_proof,
    consistency_proof_nodes,
    inclusion_proof,
    inclusion_proof_nodes,
    leaf_hash,
    node_hash,
    nodes_completed_by_append,
    root_from_consistency_proof,
    root_from_inclusion_proof,
    root_hash,
    root_nodes,
    verify_consistency,
    verify_inclusion,
)
from chittyos.errors import InvalidInput, ProofRejected
from tests.chain.conftest import VECTORS

H = bytes.fromhex

# --- the naive reference: RFC 6962 §2.1 written as the recursion it is ------------------------------


def ref_mth(entries: Sequence[bytes]) -> bytes:
    n = len(entries)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + entries[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + ref_mth(entries[:k]) + ref_mth(entries[k:])).digest()


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_path(m: int, entries: Sequence[bytes]) -> list[bytes]:
    n = len(entries)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return ref_path(m, entries[:k]) + [ref_mth(entries[k:])]
    return ref_path(m - k, entries[k:]) + [ref_mth(entries[:k])]


def ref_subproof(m: int, entries: Sequence[bytes], whole: bool) -> list[bytes]:
    n = len(entries)
    if m == n:
        return [] if whole else [ref_mth(entries)]
    k = _k(n)
    if m <= k:
        return ref_subproof(m, entries[:k], whole) + [ref_mth(entries[k:])]
    return ref_subproof(m - k, entries[k:], False) + [ref_mth(entries[:k])]


def ref_proof(m: int, entries: Sequence[bytes]) -> list[bytes]:
    return ref_subproof(m, entries, True)


# --- a tree of 300 entries, every complete node of it stored --------------------------------------

ENTRIES = [f"chitty entry {i}".encode() for i in range(300)]
LEAF_HASHES = [leaf_hash(e) for e in ENTRIES]
ALL_NODES: dict[NodeId, bytes] = {}
_cr = CompactRange()
for _h in LEAF_HASHES:
    ALL_NODES.update(((lv, ix), h) for lv, ix, h in _cr.append(_h))


def fetch(coords: Sequence[NodeId], size: int) -> dict[NodeId, bytes]:
    """What a store returns for one query: only the named nodes, each complete in a tree of size."""
    assert len(set(coords)) == len(coords), "coordinates repeat"
    for level, index in coords:
        assert (index + 1) << level <= size, f"node {(level, index)} is not complete at size {size}"
    return {c: ALL_NODES[c] for c in coords}


# --- vectors -------------------------------------------------------------------------------------

VEC_LEAVES = [leaf_hash(H(x)) for x in VECTORS["leaf_inputs_hex"]]
VEC_NODES: dict[NodeId, bytes] = {}
_vcr = CompactRange()
for _h in VEC_LEAVES:
    VEC_NODES.update(((lv, ix), h) for lv, ix, h in _vcr.append(_h))
ROOTS = {int(n): H(r) for n, r in VECTORS["roots_by_size"].items()}


@pytest.mark.parametrize("v", VECTORS["hasher_vectors"], ids=lambda v: v["desc"])
def test_hasher_matches_published_vector(v: dict[str, Any]) -> None:
    if "leaf_input_hex" in v:
        got = leaf_hash(H(v["leaf_input_hex"]))
    elif "left_hex" in v:
        got = node_hash(H(v["left_hex"]), H(v["right_hex"]))
    else:
        got = EMPTY_ROOT
    assert got.hex() == v["expected"]


def test_empty_tree_root_is_sha256_of_nothing_for_every_root_function() -> None:
    assert VECTORS["roots_by_size"]["0"] == EMPTY_ROOT.hex()
    assert root_hash(0, {}) == EMPTY_ROOT
    assert CompactRange().root() == EMPTY_ROOT
    assert root_nodes(0) == []


@pytest.mark.parametrize("size", sorted(ROOTS))
def test_root_from_stored_nodes_and_streaming_match_published_roots(size: int) -> None:
    nodes = {c: VEC_NODES[c] for c in root_nodes(size)}
    assert root_hash(size, nodes) == ROOTS[size]
    cr = CompactRange()
    cr.extend(VEC_LEAVES[:size])
    assert cr.root() == ROOTS[size]
    assert cr.size == size


def test_stored_complete_nodes_match_published_node_hashes_by_level() -> None:
    expected = {(level, index): H(h) for level, row in enumerate(VECTORS["node_hashes_by_level"])
                for index, h in enumerate(row)}
    assert expected == VEC_NODES


def test_append_creates_exactly_the_published_nodes_when_fed_only_what_it_names() -> None:
    stored: dict[NodeId, bytes] = {}
    for i, h in enumerate(VEC_LEAVES):
        needed = append_nodes_needed(i)
        for level, index, value in nodes_completed_by_append(i, h, {c: stored[c] for c in needed}):
            assert (level, index) not in stored
            stored[(level, index)] = value
    assert stored == VEC_NODES


@pytest.mark.parametrize("v", VECTORS["inclusion_proofs"],
                         ids=lambda v: f"{v['leaf_index']}-of-{v['tree_size']}")
def test_inclusion_proof_matches_published_vector_and_verifies(v: dict[str, Any]) -> None:
    index, size = v["leaf_index"], v["tree_size"]
    nodes = {c: VEC_NODES[c] for c in inclusion_proof_nodes(index, size)}
    proof = inclusion_proof(index, size, nodes)
    assert [p.hex() for p in proof] == v["proof"]
    assert VEC_LEAVES[index].hex() == v["leaf_hash"]
    verify_inclusion(H(v["leaf_hash"]), index, size, proof, H(v["root"]))


@pytest.mark.parametrize("v", VECTORS["consistency_proofs"], ids=lambda v: f"{v['size1']}-to-{v['size2']}")
def test_consistency_proof_matches_published_vector_and_verifies(v: dict[str, Any]) -> None:
    m, n = v["size1"], v["size2"]
    nodes = {c: VEC_NODES[c] for c in consistency_proof_nodes(m, n)}
    proof = consistency_proof(m, n, nodes)
    assert [p.hex() for p in proof] == v["proof"]
    verify_consistency(m, n, proof, H(v["root1"]), H(v["root2"]))


def test_every_derived_inclusion_proof_is_reproduced_and_verifies() -> None:
    failures: list[tuple[object, ...]] = []
    for v in VECTORS["derived_exhaustive"]["inclusion"]:
        index, size = v["leaf_index"], v["tree_size"]
        proof = inclusion_proof(index, size, {c: VEC_NODES[c] for c in inclusion_proof_nodes(index, size)})
        if [p.hex() for p in proof] != v["proof"]:
            failures.append(("computed", index, size))
        try:
            verify_inclusion(VEC_LEAVES[index], index, size, [H(p) for p in v["proof"]], ROOTS[size])
        except ProofRejected as exc:
            failures.append(("rejected", index, size, str(exc)))
    assert failures == []
    assert len(VECTORS["derived_exhaustive"]["inclusion"]) == 36


def test_every_derived_consistency_proof_is_reproduced_and_verifies() -> None:
    failures: list[tuple[object, ...]] = []
    for v in VECTORS["derived_exhaustive"]["consistency"]:
        m, n = v["size1"], v["size2"]
        proof = consistency_proof(m, n, {c: VEC_NODES[c] for c in consistency_proof_nodes(m, n)})
        if [p.hex() for p in proof] != v["proof"]:
            failures.append(("computed", m, n))
        try:
            verify_consistency(m, n, [H(p) for p in v["proof"]], ROOTS[m], ROOTS[n])
        except ProofRejected as exc:
            failures.append(("rejected", m, n, str(exc)))
    assert failures == []
    assert len(VECTORS["derived_exhaustive"]["consistency"]) == 36


# --- upstream probes: wantErr must be rejected, the rest accepted ---------------------------------


def b64(s: str) -> bytes:
    return base64.b64decode(s)


@pytest.mark.parametrize("p", VECTORS["probes"]["inclusion"], ids=lambda p: p["file"])
def test_inclusion_probe_is_rejected_exactly_when_upstream_says_so(p: dict[str, Any]) -> None:
    def run() -> None:
        verify_inclusion(b64(p["leafHash"]), p["leafIdx"], p["treeSize"], [b64(x) for x in p["proof"]],
                         b64(p["root"]))

    if p["wantErr"]:
        with pytest.raises(ProofRejected):
            run()
    else:
        run()


@pytest.mark.parametrize("p", VECTORS["probes"]["consistency"], ids=lambda p: p["file"])
def test_consistency_probe_is_rejected_exactly_when_upstream_says_so(p: dict[str, Any]) -> None:
    def run() -> None:
        verify_consistency(p["size1"], p["size2"], [b64(x) for x in p["proof"]], b64(p["root1"]),
                           b64(p["root2"]))

    if p["wantErr"]:
        with pytest.raises(ProofRejected):
            run()
    else:
        run()


def test_probe_counts_are_all_used() -> None:
    probes = VECTORS["probes"]
    assert len(probes["inclusion"]) == 98 and len(probes["consistency"]) == 98
    assert sum(not p["wantErr"] for p in probes["inclusion"] + probes["consistency"]) == 12


# --- generated corruptions ------------------------------------------------------------------------


def flips(value: bytes) -> list[bytes]:
    """``value`` with one byte changed, for every byte position."""
    return [value[:i] + bytes([value[i] ^ 0x01]) + value[i + 1 :] for i in range(len(value))]


def _rejected(fn: Any, *args: Any) -> bool:
    try:
        fn(*args)
    except ProofRejected:
        return True
    return False


def inclusion_cases() -> list[tuple[int, int, bytes, list[bytes], bytes]]:
    cases = [(v["leaf_index"], v["tree_size"], H(v["leaf_hash"]), [H(x) for x in v["proof"]], H(v["root"]))
             for v in VECTORS["inclusion_proofs"]]
    cases += [(v["leaf_index"], v["tree_size"], VEC_LEAVES[v["leaf_index"]], [H(x) for x in v["proof"]],
               ROOTS[v["tree_size"]]) for v in VECTORS["derived_exhaustive"]["inclusion"]]
    return cases


def test_flipping_any_byte_of_an_inclusion_proof_root_or_leaf_is_rejected() -> None:
    accepted: list[tuple[object, ...]] = []
    for index, size, leaf, proof, root in inclusion_cases():
        for i, element in enumerate(proof):
            for bad in flips(element):
                changed = proof[:i] + [bad] + proof[i + 1 :]
                if not _rejected(verify_inclusion, leaf, index, size, changed, root):
                    accepted.append(("proof", index, size, i))
        accepted += [("root", index, size) for bad in flips(root)
                     if not _rejected(verify_inclusion, leaf, index, size, proof, bad)]
        accepted += [("leaf", index, size) for bad in flips(leaf)
                     if not _rejected(verify_inclusion, bad, index, size, proof, root)]
    assert accepted == []


def test_inclusion_proof_with_a_hash_added_removed_or_moved_is_rejected() -> None:
    accepted: list[tuple[object, ...]] = []
    for index, size, leaf, proof, root in inclusion_cases():
        variants = [proof + [root], [root] + proof, proof + [b""]]
        if proof:
            variants += [proof[:-1], proof[1:]]
        if len(proof) > 1:
            variants.append(proof[::-1])
        variants = [v for v in variants if v != proof]
        accepted += [(index, size, v) for v in variants
                     if not _rejected(verify_inclusion, leaf, index, size, v, root)]
        # (A proof for a smaller tree may fit a larger size against the smaller root: the size is
        # bound by the signed checkpoint, not by the proof. So only positions are moved here.)
        for other_index, other_size in ((index + 1, size), (index ^ 1, size), (index - 1, size)):
            if (other_index, other_size) != (index, size) and other_index >= 0 and \
                    not _rejected(verify_inclusion, leaf, other_index, other_size, proof, root):
                accepted.append((index, size, "moved to", other_index, other_size))
    assert accepted == []


def consistency_cases() -> list[tuple[int, int, list[bytes], bytes, bytes]]:
    cases = [(v["size1"], v["size2"], [H(x) for x in v["proof"]], H(v["root1"]), H(v["root2"]))
             for v in VECTORS["consistency_proofs"]]
    cases += [(v["size1"], v["size2"], [H(x) for x in v["proof"]], ROOTS[v["size1"]], ROOTS[v["size2"]])
              for v in VECTORS["derived_exhaustive"]["consistency"]]
    return cases


def test_flipping_any_byte_of_a_consistency_proof_or_either_root_is_rejected() -> None:
    accepted: list[tuple[object, ...]] = []
    for m, n, proof, root1, root2 in consistency_cases():
        for i, element in enumerate(proof):
            for bad in flips(element):
                if not _rejected(verify_consistency, m, n, proof[:i] + [bad] + proof[i + 1 :], root1, root2):
                    accepted.append(("proof", m, n, i))
        accepted += [("root1", m, n) for bad in flips(root1)
                     if not _rejected(verify_consistency, m, n, proof, bad, root2)]
        accepted += [("root2", m, n) for bad in flips(root2)
                     if not _rejected(verify_consistency, m, n, proof, root1, bad)]
    assert accepted == []


def test_consistency_proof_with_a_hash_added_or_removed_or_old_size_changed_is_rejected() -> None:
    accepted: list[tuple[object, ...]] = []
    for m, n, proof, root1, root2 in consistency_cases():
        variants = [proof + [root2], [root1] + proof, proof + [b""]]
        if proof:
            variants += [proof[:-1], proof[1:]]
        accepted += [(m, n, "proof", len(v)) for v in variants
                     if not _rejected(verify_consistency, m, n, v, root1, root2)]
        for m2, n2 in ((m - 1, n), (m + 1, n), (n, m)):
            if (m2, n2) != (m, n) and m2 >= 0 and \
                    not _rejected(verify_consistency, m2, n2, proof, root1, root2):
                accepted.append((m, n, "sizes", m2, n2))
        if m != n and not _rejected(verify_consistency, m, n, proof, root2, root1):
            accepted.append((m, n, "swapped roots"))
    assert accepted == []


# --- rules beyond the vectors -----------------------------------------------------------------------


def test_inclusion_rejects_negative_or_beyond_uint64_positions() -> None:
    leaf = LEAF_HASHES[0]
    for index, size in ((-1, 1), (0, -1), (1 << 64, (1 << 64) + 1), (0, 1 << 64)):
        with pytest.raises(ProofRejected):
            verify_inclusion(leaf, index, size, [], leaf)


def test_consistency_rejects_hashes_that_are_not_32_bytes_even_where_upstream_would_accept() -> None:
    # transparency-dev accepts this: a 12-byte "root1" whose bytes, with the 52-byte "proof",
    # re-split the real size-2 root's preimage. Hashes that get hashed must be 32 bytes here.
    left, right = LEAF_HASHES[0], LEAF_HASHES[1]
    root2 = node_hash(left, right)
    with pytest.raises(ProofRejected, match="32 bytes"):
        verify_consistency(1, 2, [left[12:] + right], left[:12], root2)
    with pytest.raises(ProofRejected, match="32 bytes"):
        verify_consistency(1, 2, [right + b"\x00"], left, root2)


def test_equal_sizes_need_an_empty_proof_and_byte_equal_roots() -> None:
    root = ROOTS[5]
    verify_consistency(5, 5, [], root, root)
    with pytest.raises(ProofRejected):
        verify_consistency(5, 5, [root], root, root)
    with pytest.raises(ProofRejected):
        verify_consistency(5, 5, [], root, ROOTS[4])


def test_consistency_from_the_empty_tree_is_neither_computed_nor_verified() -> None:
    for call in (lambda: consistency_proof_nodes(0, 5), lambda: consistency_proof(0, 5, {})):
        with pytest.raises(InvalidInput) as info:
            call()
        assert info.value.field == "size1"
    with pytest.raises(ProofRejected, match="empty tree"):
        verify_consistency(0, 5, [], EMPTY_ROOT, ROOTS[5])
    with pytest.raises(ProofRejected):
        verify_consistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)


def test_root_from_proofs_returns_the_root_the_proof_commits_to() -> None:
    proof = inclusion_proof(3, 7, VEC_NODES)
    assert root_from_inclusion_proof(3, 7, VEC_LEAVES[3], proof) == ROOTS[7]
    cproof = consistency_proof(3, 7, VEC_NODES)
    assert root_from_consistency_proof(3, 7, cproof, ROOTS[3]) == ROOTS[7]


def test_computing_functions_name_the_bad_argument() -> None:
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: inclusion_proof_nodes(5, 5), "index"),
        (lambda: inclusion_proof(-1, 5, VEC_NODES), "index"),
        (lambda: consistency_proof_nodes(6, 5), "size1"),
        (lambda: consistency_proof(6, 5, VEC_NODES), "size1"),
        (lambda: root_nodes(-1), "size"),
        (lambda: root_hash(3, {}), "nodes"),
        (lambda: root_hash(1, {(0, 0): b"short"}), "nodes"),
        (lambda: nodes_completed_by_append(1, VEC_LEAVES[1], {}), "nodes"),
        (lambda: nodes_completed_by_append(0, b"short", {}), "leaf_hash"),
        (lambda: CompactRange().append(b"short"), "leaf_hash"),
        (lambda: CompactRange().extend([b"short"]), "leaf_hash"),
        (lambda: CompactRange.from_nodes(3, {(1, 0): VEC_NODES[(1, 0)]}), "nodes"),
    ]
    for call, field in cases:
        with pytest.raises(InvalidInput) as info:
            call()
        assert info.value.field == field


# --- cross-checks against the naive RFC ------------------------------------------------------------


@pytest.mark.parametrize("size", range(1, 65))
def test_tile_functions_equal_the_naive_rfc_for_every_index_and_old_size(size: int) -> None:
    entries = ENTRIES[:size]
    assert root_hash(size, fetch(root_nodes(size), size)) == ref_mth(entries)
    for index in range(size):
        coords = inclusion_proof_nodes(index, size)
        assert inclusion_proof(index, size, fetch(coords, size)) == ref_path(index, entries)
    for m in range(1, size + 1):
        coords = consistency_proof_nodes(m, size)
        assert consistency_proof(m, size, fetch(coords, size)) == ref_proof(m, entries)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_random_trees_up_to_300_agree_with_the_naive_rfc_and_verify(data: st.DataObject) -> None:
    size = data.draw(st.integers(1, 300), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    m = data.draw(st.integers(1, size), label="size1")
    entries = ENTRIES[:size]
    root = root_hash(size, fetch(root_nodes(size), size))
    assert root == ref_mth(entries)

    coords = inclusion_proof_nodes(index, size)
    assert len(coords) <= 2 * size.bit_length()
    proof = inclusion_proof(index, size, fetch(coords, size))
    assert proof == ref_path(index, entries)
    verify_inclusion(LEAF_HASHES[index], index, size, proof, root)

    coords = consistency_proof_nodes(m, size)
    assert len(coords) <= 2 * size.bit_length() + 1
    cproof = consistency_proof(m, size, fetch(coords, size))
    assert cproof == ref_proof(m, entries)
    verify_consistency(m, size, cproof, ref_mth(ENTRIES[:m]), root)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 300), st.integers(0, 300))
def test_streaming_root_equals_mth_and_resumes_from_stored_peaks(split: int, size: int) -> None:
    split, size = min(split, size), max(split, size)
    resumed = CompactRange.from_nodes(split, fetch(root_nodes(split), split))
    assert resumed.size == split and resumed.root() == ref_mth(ENTRIES[:split])
    for h in LEAF_HASHES[split:size]:
        resumed.append(h)
    assert resumed.size == size and resumed.root() == ref_mth(ENTRIES[:size])


def test_streaming_yields_every_complete_node_once_and_the_root_after_each_leaf() -> None:
    cr, seen = CompactRange(), {}
    for i, h in enumerate(LEAF_HASHES[:130]):
        completed = cr.append(h)
        assert completed[0] == (0, i, h)
        assert [lv for lv, _, _ in completed] == list(range(len(completed)))
        for lv, ix, value in completed:
            assert (lv, ix) not in seen and (ix + 1) << lv == i + 1
            seen[(lv, ix)] = value
        assert cr.root() == ref_mth(ENTRIES[: i + 1])
    assert seen == {c: v for c, v in ALL_NODES.items() if (c[1] + 1) << c[0] <= 130}
    assert len(seen) == 2 * 130 - bin(130).count("1")


def test_the_vendored_vectors_are_the_shared_ones() -> None:
    from tests.chain.conftest import SHARED_VECTORS, VECTORS_PATH

    if SHARED_VECTORS.exists():  # beside the repository in CI and on workstations
        assert VECTORS_PATH.read_bytes() == SHARED_VECTORS.read_bytes()
    assert VECTORS_PATH.stat().st_size > 100_000
