"""tlog-proof@v1 helpers refuse arguments of the wrong type with ``InvalidInput`` naming the
argument and the rule, never a raw ``TypeError`` / ``AttributeError`` from deep inside."""

from __future__ import annotations

from typing import Any

import pytest

from chittyos.chain.merkle import CompactRange, inclusion_proof, inclusion_proof_nodes, leaf_hash
from chittyos.chain.note import Checkpoint, NoteSigner, sign_checkpoint
from chittyos.chain.proof_text import format_tlog_proof, parse_tlog_proof, verify_tlog_proof
from chittyos.errors import InvalidInput

LOG = NoteSigner(name="chitty.example/log", seed=bytes(range(32)))
ENTRIES = [f"fact {i}".encode() for i in range(5)]
_cr = CompactRange()
_NODES: dict[tuple[int, int], bytes] = {}
for _e in ENTRIES:
    _NODES.update(((lv, ix), h) for lv, ix, h in _cr.append(leaf_hash(_e)))
CHECKPOINT = sign_checkpoint(Checkpoint(LOG.name, len(ENTRIES), _cr.root()), LOG)
PROOF = format_tlog_proof(
    3,
    inclusion_proof(3, len(ENTRIES), {c: _NODES[c] for c in inclusion_proof_nodes(3, len(ENTRIES))}),
    CHECKPOINT,
)


def refused(**kwargs: Any) -> InvalidInput:
    args: dict[str, Any] = {"verifier": LOG.verifier()} | kwargs
    text = args.pop("text", PROOF)
    with pytest.raises(InvalidInput) as info:
        verify_tlog_proof(text, **args)
    return info.value


def test_the_proof_verifies_with_the_right_arguments() -> None:
    assert verify_tlog_proof(PROOF, verifier=LOG.verifier(), leaf=ENTRIES[3]).index == 3
    assert verify_tlog_proof(PROOF, verifier=LOG.verifier(), leaf=bytearray(ENTRIES[3])).index == 3
    assert verify_tlog_proof(PROOF, verifier=LOG.verifier(), leaf_hash=leaf_hash(ENTRIES[3])).index == 3


@pytest.mark.parametrize("leaf", [ENTRIES[3].hex(), ENTRIES[3].decode(), 3, 3.0, [1, 2], None], ids=repr)
def test_a_leaf_that_is_not_bytes_is_refused_naming_leaf_and_the_rule(leaf: object) -> None:
    error = refused(leaf=leaf)
    assert error.field == "leaf"
    assert "bytes" in error.rule and "RFC 8785" in error.rule


@pytest.mark.parametrize("leaf_hash_", [leaf_hash(ENTRIES[3]).hex(), 7, b"\x00" * 31, b"\x00" * 33], ids=repr)
def test_a_leaf_hash_that_is_not_32_bytes_is_refused_naming_leaf_hash(leaf_hash_: object) -> None:
    error = refused(leaf_hash=leaf_hash_)
    assert error.field == "leaf_hash" and "32 bytes" in error.rule


def test_both_leaf_and_leaf_hash_is_refused() -> None:
    assert refused(leaf=ENTRIES[3], leaf_hash=leaf_hash(ENTRIES[3])).field == "leaf"


@pytest.mark.parametrize("verifier", [LOG.verifier().to_vkey(), LOG.verifier().to_vkey().encode(), None, LOG],
                         ids=["vkey-str", "vkey-bytes", "None", "signer"])
def test_a_verifier_that_is_not_a_note_verifier_is_refused_naming_verifier(verifier: object) -> None:
    error = refused(verifier=verifier, leaf=ENTRIES[3])
    assert error.field == "verifier" and "NoteVerifier.from_vkey" in error.rule


@pytest.mark.parametrize("text", [PROOF.encode(), None, 5], ids=["bytes", "None", "int"])
def test_proof_text_that_is_not_str_is_refused_naming_text(text: object) -> None:
    error = refused(text=text, leaf=ENTRIES[3])
    assert error.field == "text" and "str" in error.rule


def test_an_origin_that_is_not_str_is_refused_naming_origin() -> None:
    assert refused(leaf=ENTRIES[3], origin=b"chitty.example/log").field == "origin"


@pytest.mark.parametrize("text", [PROOF.encode(), None], ids=["bytes", "None"])
def test_parse_refuses_text_that_is_not_str(text: object) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_tlog_proof(text)  # type: ignore[arg-type]
    assert info.value.field == "tlog_proof"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"inclusion_proof": [b"\x00" * 32, "00" * 32]}, "inclusion_proof[1]"),
        ({"inclusion_proof": [7]}, "inclusion_proof[0]"),
        ({"inclusion_proof": b"\x00" * 32}, "inclusion_proof"),
        ({"inclusion_proof": None}, "inclusion_proof"),
        ({"checkpoint": CHECKPOINT.encode()}, "checkpoint"),
        ({"checkpoint": None}, "checkpoint"),
        ({"extra": "ctx"}, "extra"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_format_refuses_arguments_of_the_wrong_type(kwargs: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {"inclusion_proof": [], "checkpoint": CHECKPOINT} | kwargs
    with pytest.raises(InvalidInput) as info:
        format_tlog_proof(0, args.pop("inclusion_proof"), args.pop("checkpoint"), **args)
    assert info.value.field == field
