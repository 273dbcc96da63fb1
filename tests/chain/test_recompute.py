"""recompute: the tree a full verify rebuilds, a level at a time, is the tree of RFC 9162.

``Tree.extend`` (a level at a time, any split into pieces) and ``Tree.add`` (leaf by leaf) must
complete the same nodes, in the same order, as ``CompactRange`` (merkle.py, itself checked
against the RFC vectors), have the same root, and report exactly the checkpoint sizes whose
signed root differs from the recomputed one.
"""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chittyos.chain.merkle import EMPTY_ROOT, CompactRange
from chittyos.chain.recompute import Findings, Tree, leaf_digests
from chittyos.chain.records import Finding


def leaf_hashes(n: int) -> list[bytes]:
    return [hashlib.sha256(b"\x00" + f"leaf {i}".encode()).digest() for i in range(n)]


def reference(hashes: list[bytes]) -> tuple[dict[int, list[tuple[int, bytes]]], dict[int, bytes]]:
    """Per level, ``(index, hash)`` of every node CompactRange completes, and the root at each size."""
    cr = CompactRange()
    nodes: dict[int, list[tuple[int, bytes]]] = {}
    roots = {0: cr.root()}
    for h in hashes:
        for level, index, value in cr.append(h):
            nodes.setdefault(level, []).append((index, value))
        roots[cr.size] = cr.root()
    return nodes, roots


def rebuild(tree: Tree, hashes: list[bytes], cuts: list[int], one_by_one: set[int]) -> dict[int, list[bytes]]:
    """Feed ``hashes`` to ``tree`` in the pieces between ``cuts``, some of them leaf by leaf;
    returns every node the tree completed, per level, in order."""
    completed: dict[int, list[bytes]] = {}
    bounds = [0, *sorted(set(cuts)), len(hashes)]
    for n, (begin, end) in enumerate(zip(bounds, bounds[1:], strict=False)):
        tree.start_page()
        if n in one_by_one:
            for h in hashes[begin:end]:
                tree.add(h)
        else:
            tree.extend(hashes[begin:end])
        for level, values in enumerate(tree.computed):
            completed.setdefault(level, []).extend(values)
    return {level: values for level, values in completed.items() if values}


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(0, 300),
    cuts=st.lists(st.integers(0, 300), max_size=8),
    one_by_one=st.sets(st.integers(0, 8), max_size=3),
)
def test_extend_and_add_complete_the_nodes_of_compact_range(
    n: int, cuts: list[int], one_by_one: set[int]
) -> None:
    hashes = leaf_hashes(n)
    nodes, roots = reference(hashes)
    tree = Tree(roots, Findings(100))  # every size is a checkpoint, with the right root
    completed = rebuild(tree, hashes, [c for c in cuts if c <= n], one_by_one)
    assert completed == {level: [value for _, value in pairs] for level, pairs in nodes.items()}
    assert tree.size == n and tree.root() == roots[n]
    assert tree.out.kept == []


@pytest.mark.parametrize("page", [1, 7, 16, 64, 300])
def test_a_wrong_checkpoint_root_is_reported_at_its_size_only(page: int) -> None:
    hashes = leaf_hashes(100)
    _, roots = reference(hashes)
    signed = {size: roots[size] for size in (1, 20, 33, 64, 100)}
    signed[33] = bytes(32)
    signed[64] = EMPTY_ROOT
    tree = Tree(signed, Findings(100))
    rebuild(tree, hashes, list(range(page, 100, page)), set())
    assert [(f.check, f.tree_size) for f in tree.out.kept] == [
        ("checkpoint.root", 33),
        ("checkpoint.root", 64),
    ]


def test_a_changed_leaf_changes_the_nodes_above_it_and_later_roots() -> None:
    hashes = leaf_hashes(40)
    nodes, roots = reference(hashes)
    changed = list(hashes)
    changed[13] = bytes(32)
    tree = Tree({20: roots[20], 40: roots[40], 8: roots[8]}, Findings(100))
    completed = rebuild(tree, changed, [16, 32], set())
    differ = {
        (level, index)
        for level, pairs in nodes.items()
        for (index, value), mine in zip(pairs, completed[level], strict=True)
        if value != mine
    }
    assert differ == {(0, 13), (1, 6), (2, 3), (3, 1), (4, 0), (5, 0)}
    assert {f.tree_size for f in tree.out.kept} == {20, 40}


def test_leaf_digests_are_the_fact_ids_and_leaf_hashes() -> None:
    rng = random.Random(5)
    leaves = [rng.randbytes(rng.randrange(0, 600)) for _ in range(50)]
    ids, hashes = leaf_digests(leaves)
    assert ids.split(" ") == [hashlib.sha256(leaf).hexdigest() for leaf in leaves]
    assert hashes == [hashlib.sha256(b"\x00" + leaf).digest() for leaf in leaves]
    assert leaf_digests([]) == ("", [])


def test_findings_are_kept_up_to_the_limit_and_all_counted() -> None:
    out = Findings(2)
    for n in range(5):
        out.add(Finding("node.mismatch" if n % 2 else "fact.id", str(n)))
    assert [f.message for f in out.kept] == ["0", "1"] and out.dropped == 3
    assert out.counts == {"fact.id": 3, "node.mismatch": 2}
