"""RFC 6962 / RFC 9162 Merkle tree hashing over SHA-256 from stored complete subtrees. Pure, no I/O.

Hashes (RFC 9162 §2.1.1): ``leaf_hash(d) = SHA-256(0x00 || d)``, ``node_hash(l, r) =
SHA-256(0x01 || l || r)``, and the empty tree's root ``EMPTY_ROOT = SHA-256("")``.

Storage keeps only *complete subtrees*: node ``(level, index)`` is the hash of leaves
``[index * 2**level, (index + 1) * 2**level)`` (level 0: the leaf hash). It exists once the tree
has ``(index + 1) * 2**level`` leaves and never changes. Incomplete right-hand subtrees are never
stored; they are folded on the fly from the complete nodes covering the same leaves.

Every computation comes as a pair, so a store fetches what it needs in ONE query::

    coords = inclusion_proof_nodes(index, size)       # list[(level, index)], O(log n) of them
    nodes  = store.fetch(coords)                      # Mapping[(level, index), bytes]
    proof  = inclusion_proof(index, size, nodes)      # list[bytes], RFC 9162 §2.1.3.1 order

    root_nodes(size)               -> root_hash(size, nodes)               (§2.1.1 MTH)
    inclusion_proof_nodes(i, n)    -> inclusion_proof(i, n, nodes)         (§2.1.3.1 PATH)
    consistency_proof_nodes(m, n)  -> consistency_proof(m, n, nodes)       (§2.1.4.1 PROOF)
    append_nodes_needed(i)         -> nodes_completed_by_append(i, h, nodes)   (writes)

Appending leaf ``i`` creates ``(0, i)`` plus one node per trailing one-bit of ``i``, hashing with
the lowest peaks of the tree of size ``i``. ``CompactRange`` streams leaf hashes in O(log n) memory,
yielding each completed node and the root: a full-log recompute checks every stored node in one pass.

Verification follows transparency-dev/merkle ``proof/verify.go`` (RFC 9162 §2.1.3.2, §2.1.4.2)
and raises ``ProofRejected``. It is stricter in one way only: hashes that get hashed must be 32
bytes (upstream lets a short root1 or proof hash through). Like upstream, ``size1 == size2``
compares the two roots byte for byte, and a consistency proof from size 0 is always rejected,
even 0 -> 0 (upstream's current order of checks; older releases accepted 0 -> 0).

Errors: ``InvalidInput`` for bad arguments to the computing functions (index out of range, a node
missing from ``nodes``); ``ProofRejected`` from every ``verify_*`` / ``root_from_*``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence

from chittyos.errors import InvalidInput, ProofRejected

__all__ = [
    "EMPTY_ROOT", "HASH_SIZE", "CompactRange", "NodeId", "append_nodes_needed", "consistency_proof",
    "consistency_proof_nodes", "inclusion_proof", "inclusion_proof_nodes", "leaf_hash", "node_hash",
    "nodes_completed_by_append", "root_from_consistency_proof", "root_from_inclusion_proof", "root_hash",
    "root_nodes", "verify_consistency", "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_UINT64 = 1 << 64
_sha256 = hashlib.sha256

NodeId = tuple[int, int]
"""``(level, index)`` of a complete subtree: leaves ``[index << level, (index + 1) << level)``."""

Nodes = Mapping[NodeId, bytes]
_Range = tuple[int, int]  # half-open leaf range [begin, end)


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the hash of one log entry (RFC 9162 §2.1.1)."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): an interior node (RFC 9162 §2.1.1)."""
    return _sha256(b"\x01" + left + right).digest()


# --- shapes: which complete subtrees a computation needs ------------------------------------------


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n >= 2): RFC 9162's k."""
    return 1 << ((n - 1).bit_length() - 1)


def _range_nodes(begin: int, end: int) -> list[NodeId]:
    """Complete subtrees covering ``[begin, end)``, left to right, largest first.

    Precondition: ``begin`` is a multiple of the largest power of two <= ``end - begin``, which
    holds for every range the RFC recursion produces. The range's MTH is their right fold.
    """
    out: list[NodeId] = []
    rest = end - begin
    while rest:
        level = rest.bit_length() - 1
        out.append((level, begin >> level))
        begin += 1 << level
        rest -= 1 << level
    return out


def _path_ranges(index: int, size: int) -> list[_Range]:
    """Leaf ranges whose MTH form PATH(index, D[size]) (RFC 9162 §2.1.3.1), leaf side first."""
    out: list[_Range] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo += k
    out.reverse()
    return out


def _subproof_ranges(m: int, n: int) -> list[_Range]:
    """Leaf ranges whose MTH form PROOF(m, D[n]) = SUBPROOF(m, D[n], true), 0 < m < n (§2.1.4.1)."""
    out: list[_Range] = []
    lo, hi, whole = 0, n, True
    while m != hi:
        k = _split(hi - lo)
        if m - lo <= k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo += k
            whole = False
    if not whole:
        out.append((lo, hi))
    out.reverse()
    return out


def _coords(ranges: Sequence[_Range]) -> list[NodeId]:
    return list(dict.fromkeys(node for begin, end in ranges for node in _range_nodes(begin, end)))


def _check_size(field: str, value: int) -> None:
    if not 0 <= value < _UINT64:
        raise InvalidInput(field, "must be an integer in [0, 2**64)", value)


def _check_index(index: int, size: int) -> None:
    _check_size("size", size)
    if not 0 <= index < size:
        raise InvalidInput("index", f"must satisfy 0 <= index < size={size}", index)


def _check_sizes(size1: int, size2: int) -> None:
    _check_size("size2", size2)
    if not 0 < size1 <= size2:
        raise InvalidInput("size1", f"must satisfy 0 < size1 <= size2={size2}", size1)


def root_nodes(size: int) -> list[NodeId]:
    """Coordinates of the complete subtrees ("peaks") whose fold is the root of a tree of ``size``."""
    _check_size("size", size)
    return _range_nodes(0, size)


def inclusion_proof_nodes(index: int, size: int) -> list[NodeId]:
    """Coordinates needed by ``inclusion_proof(index, size, nodes)``. Requires 0 <= index < size."""
    _check_index(index, size)
    return _coords(_path_ranges(index, size))


def consistency_proof_nodes(size1: int, size2: int) -> list[NodeId]:
    """Coordinates needed by ``consistency_proof(size1, size2, nodes)``. Requires 0 < size1 <= size2."""
    _check_sizes(size1, size2)
    if size1 == size2:
        return []
    return _coords(_subproof_ranges(size1, size2))


def append_nodes_needed(leaf_index: int) -> list[NodeId]:
    """Left siblings that ``nodes_completed_by_append(leaf_index, ...)`` hashes with, lowest first."""
    _check_size("leaf_index", leaf_index)
    trailing_ones = (leaf_index ^ (leaf_index + 1)).bit_length() - 1
    return [(level, (leaf_index >> level) - 1) for level in range(trailing_ones)]


# --- values: computing from fetched nodes ---------------------------------------------------------


def _node(nodes: Nodes, node: NodeId) -> bytes:
    try:
        value = nodes[node]
    except KeyError:
        raise InvalidInput("nodes", f"missing complete subtree (level, index) = {node}") from None
    if len(value) != HASH_SIZE:
        raise InvalidInput("nodes", f"node {node} must be {HASH_SIZE} bytes", len(value))
    return value


def _fold(nodes: Nodes, begin: int, end: int) -> bytes:
    """MTH of leaves ``[begin, end)`` from its complete subtrees: right fold of the peaks."""
    ids = _range_nodes(begin, end)
    acc = _node(nodes, ids[-1])
    for node in reversed(ids[:-1]):
        acc = node_hash(_node(nodes, node), acc)
    return acc


def root_hash(size: int, nodes: Nodes) -> bytes:
    """MTH(D[size]) (RFC 9162 §2.1.1) from the nodes named by ``root_nodes(size)``; 0 -> EMPTY_ROOT."""
    _check_size("size", size)
    return EMPTY_ROOT if size == 0 else _fold(nodes, 0, size)


def inclusion_proof(index: int, size: int, nodes: Nodes) -> list[bytes]:
    """PATH(index, D[size]) (RFC 9162 §2.1.3.1): sibling hashes from the leaf's up to the root's child.

    ``nodes`` must hold ``inclusion_proof_nodes(index, size)``. Requires 0 <= index < size.
    """
    _check_index(index, size)
    return [_fold(nodes, begin, end) for begin, end in _path_ranges(index, size)]


def consistency_proof(size1: int, size2: int, nodes: Nodes) -> list[bytes]:
    """PROOF(size1, D[size2]) (RFC 9162 §2.1.4.1), from ``consistency_proof_nodes(size1, size2)``.

    Empty when ``size1 == size2``. Requires 0 < size1 <= size2: a proof from the empty tree means
    nothing (as upstream ``proof.Consistency``); whoever has no earlier tree needs no proof.
    """
    _check_sizes(size1, size2)
    if size1 == size2:
        return []
    return [_fold(nodes, begin, end) for begin, end in _subproof_ranges(size1, size2)]


def nodes_completed_by_append(leaf_index: int, leaf: bytes, nodes: Nodes) -> list[tuple[int, int, bytes]]:
    """The complete subtrees created when leaf hash ``leaf`` is appended at ``leaf_index``.

    Returns ``[(0, leaf_index, leaf), (1, leaf_index >> 1, h1), ...]``, lowest level first. ``nodes``
    must hold ``append_nodes_needed(leaf_index)`` (stored earlier, or returned by earlier appends).
    """
    if len(leaf) != HASH_SIZE:
        raise InvalidInput("leaf_hash", f"must be {HASH_SIZE} bytes", len(leaf))
    out = [(0, leaf_index, leaf)]
    acc = leaf
    for level, index in append_nodes_needed(leaf_index):
        acc = node_hash(_node(nodes, (level, index)), acc)
        out.append((level + 1, index >> 1, acc))
    return out


class CompactRange:
    """The peaks of a growing tree, O(log n) memory: ``append`` returns the nodes it completed (as
    ``nodes_completed_by_append``), ``root()`` the MTH. Resume with ``from_nodes(size, nodes)``."""

    __slots__ = ("_peaks", "_size")

    def __init__(self) -> None:
        self._peaks: list[bytes] = []  # left to right, largest subtree first
        self._size = 0

    @classmethod
    def from_nodes(cls, size: int, nodes: Nodes) -> CompactRange:
        """The range ``[0, size)`` from the stored peaks named by ``root_nodes(size)``."""
        cr = cls()
        cr._peaks = [_node(nodes, node) for node in root_nodes(size)]
        cr._size = size
        return cr

    @property
    def size(self) -> int:
        """Number of leaves appended so far (including those of ``from_nodes``)."""
        return self._size

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Append one leaf hash; return ``[(level, index, hash), ...]`` completed, lowest first."""
        if len(leaf) != HASH_SIZE:
            raise InvalidInput("leaf_hash", f"must be {HASH_SIZE} bytes", len(leaf))
        index, level, acc, peaks = self._size, 0, leaf, self._peaks
        out = [(0, index, leaf)]
        while index & 1:
            acc = _sha256(b"\x01" + peaks.pop() + acc).digest()
            index >>= 1
            level += 1
            out.append((level, index, acc))
        peaks.append(acc)
        self._size += 1
        return out

    def extend(self, leaves: Iterator[bytes] | Sequence[bytes]) -> None:
        """Append many leaf hashes without reporting nodes: the fast path for a bare root."""
        size, peaks, sha = self._size, self._peaks, _sha256
        for leaf in leaves:
            if len(leaf) != HASH_SIZE:
                raise InvalidInput("leaf_hash", f"must be {HASH_SIZE} bytes", len(leaf))
            index, acc = size, leaf
            while index & 1:
                acc = sha(b"\x01" + peaks.pop() + acc).digest()
                index >>= 1
            peaks.append(acc)
            size += 1
            self._size = size

    def root(self) -> bytes:
        """MTH of the leaves so far (RFC 9162 §2.1.1); EMPTY_ROOT when none."""
        if not self._peaks:
            return EMPTY_ROOT
        acc = self._peaks[-1]
        for peak in reversed(self._peaks[:-1]):
            acc = node_hash(peak, acc)
        return acc


# --- verification: RFC 9162 §2.1.3.2 and §2.1.4.2, as transparency-dev/merkle proof/verify.go ------


def _reject_uint64(field: str, value: int) -> None:
    if not 0 <= value < _UINT64:
        raise ProofRejected(f"{field}: must be an integer in [0, 2**64) (got {value})")


def _reject_lengths(field: str, hashes: Sequence[bytes]) -> None:
    for i, h in enumerate(hashes):
        if len(h) != HASH_SIZE:
            raise ProofRejected(f"{field}[{i}]: must be {HASH_SIZE} bytes (got {len(h)})")


def _decomp_incl_proof(index: int, size: int) -> tuple[int, int]:
    """(inner, border): proof lengths below and above where the paths to index and size-1 part."""
    inner = (index ^ (size - 1)).bit_length()
    return inner, (index >> inner).bit_count()


def _chain_inner(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, h in enumerate(proof):
        seed = node_hash(seed, h) if (index >> i) & 1 == 0 else node_hash(h, seed)
    return seed


def _chain_inner_right(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, h in enumerate(proof):
        if (index >> i) & 1:
            seed = node_hash(h, seed)
    return seed


def _chain_border_right(seed: bytes, proof: Sequence[bytes]) -> bytes:
    for h in proof:
        seed = node_hash(h, seed)
    return seed


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` places leaf hash ``leaf`` under at ``index`` of a tree of ``size``.

    Raises ProofRejected unless 0 <= index < size, the leaf hash and proof hashes are 32 bytes and
    the proof has exactly the length RFC 9162 §2.1.3.2 implies for (index, size).
    """
    _reject_uint64("size", size)
    _reject_uint64("index", index)
    if index >= size:
        raise ProofRejected(f"index: must be < size={size} (got {index})")
    if len(leaf) != HASH_SIZE:
        raise ProofRejected(f"leaf_hash: must be {HASH_SIZE} bytes (got {len(leaf)})")
    inner, border = _decomp_incl_proof(index, size)
    if len(proof) != inner + border:
        raise ProofRejected(f"proof: want {inner + border} hashes for {index} of {size}, got {len(proof)}")
    _reject_lengths("proof", proof)
    return _chain_border_right(_chain_inner(leaf, proof[:inner], index), proof[inner:])


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Check that ``leaf`` is at ``index`` in the tree of ``size`` with ``root`` (RFC 9162 §2.1.3.2).

    Returns None; raises ProofRejected naming the failed rule.
    """
    calculated = root_from_inclusion_proof(index, size, leaf, proof)
    if calculated != root:
        raise ProofRejected(f"inclusion proof: calculated root {calculated.hex()} != expected {root.hex()}")


def root_from_consistency_proof(size1: int, size2: int, proof: Sequence[bytes], root1: bytes) -> bytes:
    """The size2 root that ``proof`` extends ``root1`` (of size1) to, checking root1 on the way.

    Requires 0 < size1 <= size2 (size1 == size2: the proof must be empty and root1 is returned as
    is). Raises ProofRejected on any violation or if the proof does not rebuild root1.
    """
    _reject_uint64("size1", size1)
    _reject_uint64("size2", size2)
    if size2 < size1:
        raise ProofRejected(f"size2: must be >= size1={size1} (got {size2})")
    if size1 == 0:  # checked before size1 == size2, as upstream does since 2024: 0 -> 0 is rejected too
        raise ProofRejected("size1: a consistency proof from the empty tree is meaningless (got 0)")
    if size1 == size2:
        if proof:
            raise ProofRejected(f"proof: must be empty when size1 == size2 (got {len(proof)} hashes)")
        return root1
    if not proof:
        raise ProofRejected(f"proof: must not be empty for sizes {size1} -> {size2}")
    if len(root1) != HASH_SIZE:
        raise ProofRejected(f"root1: must be {HASH_SIZE} bytes (got {len(root1)})")

    # 1. The proof is a suffix of the inclusion proof of leaf size1-1 in size2, starting at the level
    #    of the largest complete subtree ending at size1 (2**shift leaves).
    inner, border = _decomp_incl_proof(size1 - 1, size2)
    shift = (size1 & -size1).bit_length() - 1
    inner -= shift
    # 2. That subtree's hash is proof[0], unless size1 is exactly 2**shift and it is root1 itself.
    seed, start = (root1, 0) if size1 == 1 << shift else (proof[0], 1)
    if len(proof) != start + inner + border:
        want = start + inner + border
        raise ProofRejected(f"proof: want {want} hashes for sizes {size1} -> {size2}, got {len(proof)}")
    _reject_lengths("proof", proof)
    rest = proof[start:]
    mask = (size1 - 1) >> shift
    # 3. Rebuild root1 from the left-hand hashes only, and check it.
    hash1 = _chain_border_right(_chain_inner_right(seed, rest[:inner], mask), rest[inner:])
    if hash1 != root1:
        raise ProofRejected(f"consistency proof: calculated root1 {hash1.hex()} != root1 {root1.hex()}")
    # 4. Rebuild root2 from all of them.
    return _chain_border_right(_chain_inner(seed, rest[:inner], mask), rest[inner:])


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """Check that the tree (size2, root2) extends (size1, root1) (RFC 9162 §2.1.4.2).

    Returns None; raises ProofRejected naming the failed rule. Requires 0 < size1 <= size2.
    """
    calculated = root_from_consistency_proof(size1, size2, proof, root1)
    if size1 != size2 and len(root2) != HASH_SIZE:
        raise ProofRejected(f"root2: must be {HASH_SIZE} bytes (got {len(root2)})")
    if calculated != root2:
        raise ProofRejected(f"consistency proof: calculated root2 {calculated.hex()} != {root2.hex()}")
