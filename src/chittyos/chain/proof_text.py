"""The C2SP tlog-proof@v1 text form: an offline-verifiable proof that an entry is in a log.

Read from c2sp.org/tlog-proof (C2SP/C2SP tlog-proof.md, §Format)::

    c2sp.org/tlog-proof@v1
    extra <base64 opaque data>          optional, NOT authenticated
    index <decimal, no leading zeros>
    <base64 hash>                       zero or more: RFC 6962 §2.1.1 inclusion proof, leaf's
    ...                                 sibling first, up to the root's child
    <empty line>
    <signed checkpoint note, verbatim>  c2sp.org/tlog-checkpoint in a c2sp.org/signed-note

Lines end with "\\n". Parsing is strict: canonical padded base64, 32-byte hashes, an index below
2**64, no carriage returns. ``verify_tlog_proof`` checks the log's signature on the checkpoint and
the inclusion proof against its root (witness cosignatures are ignored); it follows
transparency-dev/merkle ``proof/tlog_proof.go`` VerifyTLogProof without a witness policy.

Errors: ``parse_tlog_proof``/``format_tlog_proof`` raise InvalidInput; ``verify_tlog_proof``
raises ProofRejected for anything wrong with the proof (InvalidInput only for its own arguments).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from chittyos.chain.merkle import HASH_SIZE, verify_inclusion
from chittyos.chain.merkle import leaf_hash as _leaf_hash
from chittyos.chain.note import Checkpoint, NoteVerifier, _b64, _b64decode, open_checkpoint
from chittyos.errors import InvalidInput, ProofRejected

__all__ = ["TLOG_PROOF_HEADER", "TlogProof", "VerifiedTlogProof", "format_tlog_proof",
           "parse_tlog_proof", "verify_tlog_proof"]

TLOG_PROOF_HEADER = "c2sp.org/tlog-proof@v1"
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")


@dataclass(frozen=True)
class TlogProof:
    """A parsed tlog-proof: entry ``index``, ``inclusion_proof`` hashes, the signed ``checkpoint``
    note text (verbatim, unverified) and the optional unauthenticated ``extra`` bytes."""

    index: int
    inclusion_proof: tuple[bytes, ...]
    checkpoint: str
    extra: bytes | None = None


@dataclass(frozen=True)
class VerifiedTlogProof:
    """What a verified proof establishes: the entry is at ``index`` under ``checkpoint``.
    ``extra`` is carried along but is NOT authenticated."""

    index: int
    checkpoint: Checkpoint
    extra: bytes | None = None


def format_tlog_proof(index: int, inclusion_proof: Sequence[bytes], checkpoint: str, *,
                      extra: bytes | None = None) -> str:
    """The tlog-proof@v1 text for entry ``index``, its inclusion proof and a signed checkpoint note.

    Raises InvalidInput for an index outside [0, 2**64), a hash that is not 32 bytes, or a
    checkpoint that is not a note (empty, no final newline, control characters).
    """
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 1 << 64:
        raise InvalidInput("index", "must be an integer in [0, 2**64)", index)
    if isinstance(inclusion_proof, (str, bytes, bytearray)) or not isinstance(inclusion_proof, Sequence):
        raise InvalidInput("inclusion_proof", f"must be a sequence of {HASH_SIZE}-byte hashes",
                           type(inclusion_proof).__name__)
    for i, h in enumerate(inclusion_proof):
        if not isinstance(h, (bytes, bytearray)):
            raise InvalidInput(f"inclusion_proof[{i}]", f"must be bytes ({HASH_SIZE}-byte hash)", type(h).__name__)
        if len(h) != HASH_SIZE:
            raise InvalidInput(f"inclusion_proof[{i}]", f"must be {HASH_SIZE} bytes", len(h))
    if not isinstance(checkpoint, str):
        raise InvalidInput("checkpoint", "must be str: the signed checkpoint note text", type(checkpoint).__name__)
    if extra is not None and not isinstance(extra, (bytes, bytearray)):
        raise InvalidInput("extra", "must be bytes or None", type(extra).__name__)
    if not checkpoint or checkpoint.startswith("\n") or not checkpoint.endswith("\n"):
        raise InvalidInput("checkpoint", "must be a signed note: non-empty lines ending in a newline")
    if _CONTROL.search(checkpoint):
        raise InvalidInput("checkpoint", "must not contain control characters other than newline")
    lines = [TLOG_PROOF_HEADER]
    if extra is not None:
        lines.append(f"extra {_b64(extra)}")
    lines.append(f"index {index}")
    lines.extend(_b64(h) for h in inclusion_proof)
    return "\n".join(lines) + "\n\n" + checkpoint


def parse_tlog_proof(text: str) -> TlogProof:
    """Parse tlog-proof@v1 text strictly; InvalidInput names the line and the rule broken.

    The checkpoint is returned verbatim and is not verified here: use ``verify_tlog_proof``.
    """
    if not isinstance(text, str):
        raise InvalidInput("tlog_proof", "must be str: the tlog-proof@v1 text (decode bytes as UTF-8 first)",
                           type(text).__name__)
    pos = 0

    def next_line(what: str) -> str:
        nonlocal pos
        end = text.find("\n", pos)
        if end < 0:
            raise InvalidInput("tlog_proof", f"{what}: missing (or not ended by a newline)")
        line, pos = text[pos:end], end + 1
        return line

    if next_line("header line") != TLOG_PROOF_HEADER:
        raise InvalidInput("tlog_proof", f"first line must be {TLOG_PROOF_HEADER!r}")
    line = next_line("index line")
    extra: bytes | None = None
    if line.startswith("extra "):
        extra = _b64decode(line[len("extra ") :], "tlog_proof.extra")
        line = next_line("index line")
    if not line.startswith("index "):
        raise InvalidInput("tlog_proof", "expected 'index <n>' after the header (and extra line)", line)
    digits = line[len("index ") :]
    if not _DECIMAL.fullmatch(digits) or int(digits) >= 1 << 64:
        raise InvalidInput("tlog_proof.index", "must be ASCII decimal below 2**64, no leading zeros", digits)
    hashes: list[bytes] = []
    while (line := next_line("empty line before the checkpoint")) != "":
        h = _b64decode(line, f"tlog_proof.inclusion_proof[{len(hashes)}]")
        if len(h) != HASH_SIZE:
            raise InvalidInput(f"tlog_proof.inclusion_proof[{len(hashes)}]", f"must be {HASH_SIZE} bytes",
                               len(h))
        hashes.append(h)
    checkpoint = text[pos:]
    if not checkpoint:
        raise InvalidInput("tlog_proof.checkpoint", "missing after the empty line")
    return TlogProof(int(digits), tuple(hashes), checkpoint, extra)


def verify_tlog_proof(text: str, *, verifier: NoteVerifier, leaf: bytes | None = None,
                      leaf_hash: bytes | None = None, origin: str | None = None) -> VerifiedTlogProof:
    """Verify a tlog-proof@v1 for an entry given as ``leaf`` bytes or as its ``leaf_hash``.

    Steps: 1. parse the text; 2. open the checkpoint with the log's ``verifier`` and check its
    origin (default: the key name); 3. verify the inclusion proof of the leaf hash at ``index``
    against the checkpoint's size and root (RFC 9162 §2.1.3.2).
    Raises ProofRejected naming the failed step; InvalidInput (naming the argument) for an
    argument of the wrong type (``text`` not str, ``verifier`` not a NoteVerifier, ``leaf`` not
    bytes, ``leaf_hash`` not 32 bytes, ``origin`` not str) or unless exactly one of ``leaf`` /
    ``leaf_hash`` is given.
    """
    if not isinstance(text, str):
        raise InvalidInput("text", "must be str: the tlog-proof@v1 text (decode bytes as UTF-8 first)",
                           type(text).__name__)
    if not isinstance(verifier, NoteVerifier):
        raise InvalidInput("verifier", "must be a NoteVerifier: NoteVerifier.from_vkey(<vkey text>)",
                           type(verifier).__name__)
    if origin is not None and not isinstance(origin, str):
        raise InvalidInput("origin", "must be str or None", type(origin).__name__)
    if leaf is not None and leaf_hash is None:
        if not isinstance(leaf, (bytes, bytearray)):
            raise InvalidInput("leaf", "must be bytes: the leaf's bytes, i.e. its RFC 8785 canonical JSON "
                               "encoded as UTF-8 (not hex, not a str)", type(leaf).__name__)
        wanted = _leaf_hash(bytes(leaf))
    elif leaf is None and leaf_hash is not None:
        if not isinstance(leaf_hash, (bytes, bytearray)) or len(leaf_hash) != HASH_SIZE:
            got = len(leaf_hash) if isinstance(leaf_hash, (bytes, bytearray)) else type(leaf_hash).__name__
            raise InvalidInput("leaf_hash", f"must be {HASH_SIZE} bytes (the RFC 6962 leaf hash, not hex)", got)
        wanted = bytes(leaf_hash)
    else:
        raise InvalidInput("leaf", "give exactly one of leaf (bytes: the leaf's RFC 8785 canonical JSON) or "
                           f"leaf_hash ({HASH_SIZE} bytes)")
    # 1.
    try:
        proof = parse_tlog_proof(text)
    except InvalidInput as exc:
        raise ProofRejected(f"tlog proof: malformed: {exc}") from exc
    # 2.
    checkpoint = open_checkpoint(proof.checkpoint, verifier, origin=origin)
    # 3.
    try:
        verify_inclusion(wanted, proof.index, checkpoint.tree_size, proof.inclusion_proof,
                         checkpoint.root_hash)
    except ProofRejected as exc:
        raise ProofRejected(f"tlog proof: inclusion in checkpoint {checkpoint.origin} "
                            f"size {checkpoint.tree_size} fails: {exc}") from exc
    return VerifiedTlogProof(proof.index, checkpoint, proof.extra)
