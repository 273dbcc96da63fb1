"""The Merkle tree rebuilt over recomputed leaves: the arithmetic of a full-log verify. Pure, no I/O.

A full verify hashes every leaf twice (the fact id ``SHA-256(leaf)`` and the leaf hash
``SHA-256(0x00 || leaf)``) and every complete subtree once (``SHA-256(0x01 || l || r)``); that
hashing is its floor. So the loops here are the cost of a verify and are written to stay close to
it: ``leaf_digests`` and ``Tree.extend`` hash a page a level at a time with ``map`` over C
callables (no Python bytecode per hash); ``Tree.add`` takes one leaf at a time, for the pages
that need looking at row by row (a gap, a changed row).

``Tree`` is ``CompactRange`` (merkle.py) unrolled: ``peaks`` are the roots of the perfect
subtrees that make up the tree of ``size`` leaves, largest first (one per set bit of ``size``);
``computed[level]`` collects, per page, the nodes the page completed at each level in index
order (the first at index ``page_begin >> level``), for comparison with the stored ones; at each
size in ``targets`` (signed checkpoints) the root is compared with the signed one.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import repeat

from chittyos.chain.merkle import EMPTY_ROOT
from chittyos.chain.records import Finding

__all__ = ["Findings", "Tree", "leaf_digests"]

_sha256 = hashlib.sha256
_HASH = type(_sha256())
_digest = _HASH.digest  # unbound: map(_digest, hashes) runs in C
_hexdigest = _HASH.hexdigest
_LEAF_PREFIX = b"\x00".__add__
_NODE = b"\x01"


class Findings:
    """Findings kept up to ``limit`` (the rest counted as dropped), and counted per check."""

    def __init__(self, limit: int) -> None:
        self.kept: list[Finding] = []
        self.dropped = 0
        self.counts: Counter[str] = Counter()
        self._limit = limit

    def add(self, finding: Finding) -> None:
        self.counts[finding.check] += 1
        if len(self.kept) < self._limit:
            self.kept.append(finding)
        else:
            self.dropped += 1


def leaf_digests(leaves: Sequence[bytes]) -> tuple[str, list[bytes]]:
    """``(the hex fact ids joined by " ", the leaf hashes)`` of ``leaves`` (leaf bytes), in order."""
    ids = " ".join(map(_hexdigest, map(_sha256, leaves)))
    return ids, list(map(_digest, map(_sha256, map(_LEAF_PREFIX, leaves))))


def _parents(nodes: Sequence[bytes]) -> list[bytes]:
    """``node_hash(nodes[2k], nodes[2k + 1])`` for each pair (``len(nodes)`` even)."""
    return list(map(_digest, map(_sha256, map(b"".join, zip(repeat(_NODE), nodes[0::2], nodes[1::2])))))


def _fold(peaks: Sequence[bytes]) -> bytes:
    """The root over the peaks (``CompactRange.root``)."""
    acc = peaks[-1]
    for peak in reversed(peaks[:-1]):
        acc = _sha256(_NODE + peak + acc).digest()
    return acc


class Tree:
    """The tree rebuilt so far (see the module docstring); checkpoint roots reported to ``out``."""

    def __init__(self, targets: Mapping[int, bytes], out: Findings, what: Mapping[int, str] | None = None) -> None:
        self.targets, self.out = targets, out
        self.what = what or {}
        """What each target root is, for the finding (default: the signed root)."""
        self._sizes = sorted(targets)
        self.peaks: list[bytes] = []
        self.size = 0
        self.computed: list[list[bytes]] = [[] for _ in range(64)]

    def start_page(self) -> None:
        """Forget the nodes the previous page completed (they have been compared)."""
        self.computed = [[] for _ in range(64)]

    def root(self) -> bytes:
        return _fold(self.peaks) if self.peaks else EMPTY_ROOT

    def check_root(self, at: int, root: bytes) -> None:
        """``checkpoint.root`` if a checkpoint signed at size ``at`` has another root."""
        want = self.targets.get(at)
        if want is not None and want != root:
            self.out.add(
                Finding(
                    "checkpoint.root",
                    f"checkpoint at size {at}: {self.what.get(at, 'signed root')} {want.hex()} != "
                    f"recomputed root {root.hex()}",
                    tree_size=at,
                )
            )

    def add(self, leaf_hash: bytes) -> None:
        """Append one leaf hash: leaf ``i`` completes (0, i) and one node per trailing 1-bit of i."""
        acc, size, peaks, computed = leaf_hash, self.size, self.peaks, self.computed
        computed[0].append(acc)
        i, level = size, 0
        while i & 1:
            acc = _sha256(_NODE + peaks.pop() + acc).digest()
            i >>= 1
            level += 1
            computed[level].append(acc)
        peaks.append(acc)
        self.size = size + 1
        if self.size in self.targets:
            self.check_root(self.size, _fold(peaks))

    def extend(self, leaf_hashes: Sequence[bytes]) -> None:
        """Append many leaf hashes, a level at a time: the same nodes as ``add`` one by one.

        At level L the nodes completed here are ``(L, begin >> L) ..``; when ``begin >> L`` is
        odd, the first one's left sibling is the old peak of level L (bit L of ``begin``). Pairs
        are hashed from there; an odd one out is the new peak of level L (bit L of ``end``).
        """
        begin, end = self.size, self.size + len(leaf_hashes)
        if begin == end:
            return
        old = dict(zip(_set_bits(begin), self.peaks, strict=True))
        mine: list[Sequence[bytes]] = []  # mine[L]: nodes completed here at level L, from (L, begin >> L)
        new: dict[int, bytes] = {}
        level, nodes = 0, leaf_hashes
        while nodes or any(lv >= level for lv in old):
            self.computed[level].extend(nodes)
            mine.append(nodes)
            row = [old[level], *nodes] if begin >> level & 1 else nodes
            if len(row) & 1:
                new[level] = row[-1]
                row = row[:-1]
            nodes = _parents(row)
            level += 1
        self.peaks = [new[lv] for lv in _set_bits(end)]
        self.size = end
        sizes = self._sizes
        for at in sizes[bisect_right(sizes, begin) : bisect_right(sizes, end)]:
            peaks = [_node_at(lv, (at >> lv) - 1, begin, old, mine) for lv in _set_bits(at)]
            self.check_root(at, _fold(peaks))


def _set_bits(n: int) -> list[int]:
    """The set bits of ``n``, highest first: the levels of the peaks of a tree of size ``n``."""
    return [lv for lv in range(n.bit_length() - 1, -1, -1) if n >> lv & 1]


def _node_at(
    level: int, index: int, begin: int, old: Mapping[int, bytes], mine: Sequence[Sequence[bytes]]
) -> bytes:
    """Node (level, index) of a tree that had ``begin`` leaves before ``mine`` were completed."""
    first = begin >> level
    return old[level] if index < first else mine[level][index - first]
