"""C2SP signed notes, checkpoints and tlog-proof@v1 text: round trips, the spec example, tampering."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chittyos.chain.merkle import CompactRange, inclusion_proof, inclusion_proof_nodes, leaf_hash
from chittyos.chain.note import (
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    generate_key,
    key_id,
    open_checkpoint,
    open_note,
    sign_checkpoint,
    sign_note,
)
from chittyos.chain.proof_text import (
    TLOG_PROOF_HEADER,
    TlogProof,
    format_tlog_proof,
    parse_tlog_proof,
    verify_tlog_proof,
)
from chittyos.errors import InvalidInput, ProofRejected
from tests.chain.conftest import VECTORS

EXAMPLE = VECTORS["signed_note_example"]
# Fixed seeds keep every run identical.
LOG = NoteSigner(name="chitty.example/log", seed=bytes(range(32)))
OTHER = NoteSigner(name="chitty.example/log", seed=bytes(range(1, 33)))  # same name, other key
WITNESS = NoteSigner(name="witness.example/w1", seed=bytes(range(2, 34)))


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def field_of(call: Callable[[], Any]) -> str:
    with pytest.raises(InvalidInput) as info:
        call()
    return info.value.field


# --- the spec's example --------------------------------------------------------------------------


def test_spec_example_note_verifies_with_its_verifier_key() -> None:
    verifier = NoteVerifier.from_vkey(EXAMPLE["vkey"])
    opened = open_note(EXAMPLE["note"], [verifier])
    assert opened.text == EXAMPLE["signed_text"]
    assert opened.signers == ["example.com/foo"]
    text, signers = opened  # also a plain (text, names) pair
    assert (text, signers) == (EXAMPLE["signed_text"], ["example.com/foo"])


def test_spec_example_key_id_follows_the_key_id_rule() -> None:
    verifier = NoteVerifier.from_vkey(EXAMPLE["vkey"])
    assert f"{verifier.key_id:08x}" == "530d903a"
    assert key_id("example.com/foo", verifier.public_key) == 0x530D903A
    assert verifier.to_vkey() == EXAMPLE["vkey"]


def test_spec_example_with_the_text_altered_is_rejected() -> None:
    verifier = NoteVerifier.from_vkey(EXAMPLE["vkey"])
    with pytest.raises(ProofRejected, match="does not verify"):
        open_note(EXAMPLE["note"].replace("example message", "exemplary message"), [verifier])


# --- keys ----------------------------------------------------------------------------------------


def test_generated_keys_round_trip_through_their_text_forms() -> None:
    skey, vkey = generate_key("chitty.example/fresh")
    signer, verifier = NoteSigner.from_skey(skey), NoteVerifier.from_vkey(vkey)
    assert signer.verifier() == verifier
    assert signer.to_skey() == skey and verifier.to_vkey() == vkey
    assert skey.startswith("PRIVATE+KEY+chitty.example/fresh+") and vkey.startswith("chitty.example/fresh+")
    assert skey.split("+")[3] == vkey.split("+")[1] == f"{verifier.key_id:08x}"


def test_signer_repr_and_key_errors_never_show_the_secret() -> None:
    skey = LOG.to_skey()
    secret = skey.split("+", 4)[4]
    assert secret not in repr(LOG) and "***" in repr(LOG)
    wrong_id = skey.replace(skey.split("+")[3], "00000000")
    with pytest.raises(InvalidInput) as info:
        NoteSigner.from_skey(wrong_id)
    assert secret not in str(info.value) and info.value.field == "signer key id"


@pytest.mark.parametrize(
    ("vkey", "field"),
    [
        ("example.com/foo", "verifier key"),
        ("example.com/foo+530d903a", "verifier key"),
        ("+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "verifier key name"),
        ("exa mple+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "verifier key name"),
        ("example.com/foo+530d903+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "verifier key id"),
        ("example.com/foo+530d903g+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "verifier key id"),
        ("example.com/foo+530d903b+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "verifier key id"),
        ("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2", "verifier key"),
        ("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k=", "verifier key"),
    ],
)
def test_malformed_verifier_key_text_is_refused_naming_the_part(vkey: str, field: str) -> None:
    assert field_of(lambda: NoteVerifier.from_vkey(vkey)) == field


def test_verifier_key_with_another_algorithm_or_length_is_refused() -> None:
    def vkey(raw: bytes) -> str:  # with a correct key id, so only the key part is wrong
        kid = int.from_bytes(hashlib.sha256(b"n\n" + raw).digest()[:4], "big")
        return f"n+{kid:08x}+{b64(raw)}"

    with pytest.raises(InvalidInput, match="unknown algorithm"):
        NoteVerifier.from_vkey(vkey(b"\x02" + bytes(32)))
    with pytest.raises(InvalidInput, match="32 bytes"):
        NoteVerifier.from_vkey(vkey(b"\x01" + bytes(31)))


@pytest.mark.parametrize("name", ["", "a+b", "a b", "a\u00a0b", "a\u2028b", "a\tb"])
def test_key_names_must_be_non_empty_without_spaces_plus_or_controls(name: str) -> None:
    assert field_of(lambda: NoteSigner(name=name, seed=bytes(32))) == "name"


def test_malformed_signer_key_text_is_refused() -> None:
    skey = LOG.to_skey()
    for bad in ("PRIVATE+KEY+x", skey.replace("PRIVATE", "PUBLIC"), skey[:-2], skey + "AA=="):
        with pytest.raises(InvalidInput):
            NoteSigner.from_skey(bad)


# --- sign and open -------------------------------------------------------------------------------


def test_signed_note_opens_with_the_signers_key() -> None:
    note = sign_note("hello\nworld\n", LOG)
    assert note.startswith("hello\nworld\n\n\u2014 chitty.example/log ")
    assert open_note(note, [LOG.verifier()]) == ("hello\nworld\n", ["chitty.example/log"])
    assert open_note(note.encode(), [LOG.verifier()]).text == "hello\nworld\n"


def test_text_with_empty_lines_and_dash_lines_survives_a_round_trip() -> None:
    text = "a\n\n\u2014 not a signature\n\n"
    assert open_note(sign_note(text, LOG), [LOG.verifier()]).text == text


def test_several_signers_are_reported_in_order_and_unknown_ones_ignored() -> None:
    note = sign_note("cosigned\n", LOG, WITNESS)
    assert open_note(note, [LOG.verifier(), WITNESS.verifier()]).signers == [LOG.name, WITNESS.name]
    assert open_note(note, [WITNESS.verifier()]).signers == [WITNESS.name]


def test_note_signed_by_another_key_of_the_same_name_is_rejected() -> None:
    note = sign_note("hello\n", OTHER)
    with pytest.raises(ProofRejected, match="no signature from a known key"):
        open_note(note, [LOG.verifier()])


def test_note_with_no_verifiers_is_rejected_naming_the_unknown_signers() -> None:
    with pytest.raises(ProofRejected, match=f"{LOG.name}\\+{LOG.key_id:08x}"):
        open_note(sign_note("hello\n", LOG), [])


def test_note_whose_text_changed_after_signing_is_rejected() -> None:
    note = sign_note("pay 100\n", LOG)
    with pytest.raises(ProofRejected, match="does not verify"):
        open_note(note.replace("100", "900"), [LOG.verifier()])


def test_note_with_any_signature_byte_changed_is_rejected() -> None:
    note = sign_note("hello\n", LOG)
    text, line = note.split("\n\n")
    name, sig64 = line.rstrip("\n").split(" ")[1:]
    raw = base64.b64decode(sig64)
    accepted: list[object] = []
    for i in range(len(raw)):
        bad = raw[:i] + bytes([raw[i] ^ 0x80]) + raw[i + 1 :]
        try:
            open_note(f"{text}\n\n\u2014 {name} {b64(bad)}\n", [LOG.verifier()])
            accepted.append(i)
        except ProofRejected:
            pass
    assert accepted == []


def test_known_key_with_bad_signature_rejects_the_note_even_beside_a_good_one() -> None:
    good = sign_note("hello\n", LOG)
    bad_line = sign_note("other\n", WITNESS).split("\n\n")[1]
    with pytest.raises(ProofRejected, match="witness.example/w1"):
        open_note(good + bad_line, [LOG.verifier(), WITNESS.verifier()])


def test_signature_with_an_unknown_key_id_is_ignored() -> None:
    note = sign_note("hello\n", LOG)
    text, line = note.split("\n\n")
    raw = base64.b64decode(line.rstrip("\n").split(" ")[2])
    zero_id = b64(bytes(4) + raw[4:])
    renamed = f"{text}\n\n\u2014 {LOG.name} {zero_id}\n"
    with pytest.raises(ProofRejected, match="no signature from a known key"):
        open_note(renamed, [LOG.verifier()])
    assert open_note(renamed + line, [LOG.verifier()]).signers == [LOG.name]


def test_repeated_signature_lines_count_once() -> None:
    note = sign_note("hello\n", LOG)
    line = note.split("\n\n")[1]
    assert open_note(note + line, [LOG.verifier()]).signers == [LOG.name]


def test_two_different_keys_with_one_name_and_id_are_refused_as_verifiers() -> None:
    impostor = OTHER.verifier()
    impostor.key_id = LOG.key_id  # what a tampered key list would look like
    assert field_of(lambda: open_note(sign_note("x\n", LOG), [LOG.verifier(), impostor])) == "verifiers"


def _good_sig_line() -> str:
    return sign_note("hello\n", LOG).split("\n\n")[1]


@pytest.mark.parametrize(
    ("note", "why"),
    [
        ("hello\n", "no empty line"),
        ("hello\n\n", "signature block"),
        ("hello\n\n" + _good_sig_line().rstrip("\n"), "signature block"),
        ("hello\n\n" + _good_sig_line().replace("\u2014", "-"), "em dash"),
        ("hello\n\n" + _good_sig_line().replace("\u2014 ", "\u2014"), "em dash"),
        ("hello\n\n" + _good_sig_line().replace(LOG.name, "a+b"), "key name"),
        ("hello\n\n" + _good_sig_line().replace(LOG.name + " ", LOG.name), "key name"),
        ("hello\n\n\u2014 chitty.example/log \n", "shorter than"),
        ("hello\n\n\u2014 chitty.example/log AAAAAA==\n", "shorter than"),
        ("hello\n\n\u2014 chitty.example/log AAAAAAB=\n", "canonical base64"),
        ("hello\n\n" + _good_sig_line() + "\n", "signature block"),
        ("hel\rlo\n\n" + _good_sig_line(), "control character U\\+000D"),
        ("hel\tlo\n\n" + _good_sig_line(), "control character U\\+0009"),
        ("hello\n\n" + _good_sig_line() * 101, "more than 100"),
    ],
)
def test_malformed_note_is_rejected_saying_why(note: str, why: str) -> None:
    with pytest.raises(ProofRejected, match=why):
        open_note(note, [LOG.verifier()])


def test_note_that_is_not_utf8_is_rejected() -> None:
    with pytest.raises(ProofRejected, match="UTF-8"):
        open_note(b"hel\xfflo\n\n" + _good_sig_line().encode(), [LOG.verifier()])


def test_sign_note_refuses_text_a_note_cannot_carry() -> None:
    assert field_of(lambda: sign_note("no newline", LOG)) == "text"
    assert field_of(lambda: sign_note("tab\there\n", LOG)) == "text"
    assert field_of(lambda: sign_note("surrogate \ud800\n", LOG)) == "text"
    assert field_of(lambda: sign_note("nobody\n")) == "signers"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=30), min_size=1))
def test_any_valid_text_round_trips(lines: list[str]) -> None:
    text = "\n".join(lines) + "\n"
    assert open_note(sign_note(text, LOG), [LOG.verifier()]).text == text


# --- checkpoints ---------------------------------------------------------------------------------

SPEC_BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"


def test_spec_checkpoint_body_parses_and_formats_back_identically() -> None:
    cp = Checkpoint.parse(SPEC_BODY)
    assert (cp.origin, cp.tree_size, cp.extensions) == ("example.com/behind-the-sofa", 20852163, ())
    assert cp.root_hash == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert cp.to_body() == SPEC_BODY


def test_checkpoint_with_extension_lines_round_trips() -> None:
    cp = Checkpoint("o", 0, bytes(32), ("ext one", "ext two"))
    assert cp.to_body() == f"o\n0\n{b64(bytes(32))}\next one\next two\n"
    assert Checkpoint.parse(cp.to_body()) == cp


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("o\n5\n" + b64(bytes(32)), "checkpoint"),
        ("o\n5\n", "checkpoint"),
        ("\n5\n" + b64(bytes(32)) + "\n", "checkpoint.origin"),
        ("o\n05\n" + b64(bytes(32)) + "\n", "checkpoint.tree_size"),
        ("o\n+5\n" + b64(bytes(32)) + "\n", "checkpoint.tree_size"),
        ("o\n-1\n" + b64(bytes(32)) + "\n", "checkpoint.tree_size"),
        ("o\n 5\n" + b64(bytes(32)) + "\n", "checkpoint.tree_size"),
        ("o\n\uff15\n" + b64(bytes(32)) + "\n", "checkpoint.tree_size"),
        ("o\n\n" + b64(bytes(32)) + "\n", "checkpoint.tree_size"),
        (f"o\n{1 << 64}\n" + b64(bytes(32)) + "\n", "checkpoint.tree_size"),
        ("o\n5\n" + b64(bytes(31)) + "\n", "checkpoint.root_hash"),
        ("o\n5\n" + b64(bytes(32)).rstrip("=") + "\n", "checkpoint.root_hash"),
        ("o\n5\n" + b64(bytes(32))[:-2] + "B=\n", "checkpoint.root_hash"),
        ("o\n5\n" + b64(bytes(32)) + "\n\n", "checkpoint.extensions[0]"),
        ("o\r\n5\n" + b64(bytes(32)) + "\n", "checkpoint.origin"),
    ],
)
def test_malformed_checkpoint_body_is_refused_naming_the_line(body: str, field: str) -> None:
    assert field_of(lambda: Checkpoint.parse(body)) == field


def test_checkpoint_values_are_checked_when_built() -> None:
    assert field_of(lambda: Checkpoint("o", -1, bytes(32))) == "checkpoint.tree_size"
    assert field_of(lambda: Checkpoint("o", 1, bytes(31))) == "checkpoint.root_hash"
    assert field_of(lambda: Checkpoint("o\nx", 1, bytes(32))) == "checkpoint.origin"
    assert field_of(lambda: Checkpoint("o", 1, bytes(32), ("a\nb",))) == "checkpoint.extensions[0]"


def test_signed_checkpoint_opens_with_the_log_key_and_ignores_cosignatures() -> None:
    cp = Checkpoint(LOG.name, 7, bytes(range(32)))
    note = sign_checkpoint(cp, LOG, WITNESS)
    assert open_checkpoint(note, LOG.verifier()) == cp


def test_checkpoint_from_another_origin_or_key_is_rejected() -> None:
    note = sign_checkpoint(Checkpoint("elsewhere.example/log", 7, bytes(32)), LOG)
    with pytest.raises(ProofRejected, match="origin"):
        open_checkpoint(note, LOG.verifier())
    assert open_checkpoint(note, LOG.verifier(), origin="elsewhere.example/log").tree_size == 7
    with pytest.raises(ProofRejected):
        open_checkpoint(sign_checkpoint(Checkpoint(LOG.name, 7, bytes(32)), OTHER), LOG.verifier())


def test_signed_note_that_is_not_a_checkpoint_is_rejected() -> None:
    with pytest.raises(ProofRejected, match="checkpoint: malformed"):
        open_checkpoint(sign_note(f"{LOG.name}\n007\n{b64(bytes(32))}\n", LOG), LOG.verifier())


# --- tlog-proof@v1 -------------------------------------------------------------------------------

ENTRIES = [f"fact {i}".encode() for i in range(13)]
NODES: dict[tuple[int, int], bytes] = {}
_cr = CompactRange()
for _e in ENTRIES:
    NODES.update(((lv, ix), h) for lv, ix, h in _cr.append(leaf_hash(_e)))
CHECKPOINT = sign_checkpoint(Checkpoint(LOG.name, 13, _cr.root()), LOG, WITNESS)


def proof_for(index: int, *, extra: bytes | None = None) -> str:
    nodes = {c: NODES[c] for c in inclusion_proof_nodes(index, 13)}
    return format_tlog_proof(index, inclusion_proof(index, 13, nodes), CHECKPOINT, extra=extra)


def test_tlog_proof_text_has_the_spec_layout() -> None:
    hashes = inclusion_proof(5, 13, NODES)
    text = proof_for(5, extra=b"ctx")
    expected = "\n".join([TLOG_PROOF_HEADER, f"extra {b64(b'ctx')}", "index 5", *map(b64, hashes)])
    assert text == expected + "\n\n" + CHECKPOINT


@pytest.mark.parametrize("extra", [None, b"", b"opaque \x00 bytes"])
def test_tlog_proof_parses_back_to_what_was_formatted(extra: bytes | None) -> None:
    parsed = parse_tlog_proof(proof_for(12, extra=extra))
    assert parsed == TlogProof(12, tuple(inclusion_proof(12, 13, NODES)), CHECKPOINT, extra)


def test_every_entry_of_a_log_verifies_by_bytes_and_by_leaf_hash() -> None:
    for index, entry in enumerate(ENTRIES):
        got = verify_tlog_proof(proof_for(index), verifier=LOG.verifier(), leaf=entry)
        assert (got.index, got.checkpoint.tree_size, got.extra) == (index, 13, None)
        assert verify_tlog_proof(proof_for(index), verifier=LOG.verifier(), leaf_hash=leaf_hash(entry)) == got


def test_tree_of_one_entry_has_a_proof_with_no_hashes() -> None:
    cp = sign_checkpoint(Checkpoint(LOG.name, 1, leaf_hash(b"only")), LOG)
    text = format_tlog_proof(0, [], cp)
    assert text == f"{TLOG_PROOF_HEADER}\nindex 0\n\n{cp}"
    assert verify_tlog_proof(text, verifier=LOG.verifier(), leaf=b"only").index == 0


def test_tlog_proof_for_another_entry_position_or_key_is_rejected() -> None:
    text = proof_for(4)
    with pytest.raises(ProofRejected, match="inclusion"):
        verify_tlog_proof(text, verifier=LOG.verifier(), leaf=ENTRIES[5])
    with pytest.raises(ProofRejected, match="inclusion"):
        verify_tlog_proof(text.replace("index 4", "index 5"), verifier=LOG.verifier(), leaf=ENTRIES[4])
    with pytest.raises(ProofRejected, match="no signature from a known key"):
        verify_tlog_proof(text, verifier=OTHER.verifier(), leaf=ENTRIES[4])
    with pytest.raises(ProofRejected, match="origin"):
        verify_tlog_proof(text, verifier=LOG.verifier(), leaf=ENTRIES[4], origin="other")


def test_tlog_proof_with_any_hash_line_changed_is_rejected() -> None:
    text = proof_for(6)
    lines = text.split("\n")
    accepted: list[object] = []
    for i in range(2, 2 + len(inclusion_proof(6, 13, NODES))):
        raw = base64.b64decode(lines[i])
        for j in range(len(raw)):
            bad = lines[:i] + [b64(raw[:j] + bytes([raw[j] ^ 1]) + raw[j + 1 :])] + lines[i + 1 :]
            try:
                verify_tlog_proof("\n".join(bad), verifier=LOG.verifier(), leaf=ENTRIES[6])
                accepted.append((i, j))
            except ProofRejected:
                pass
    assert accepted == []


def test_tlog_proof_with_a_changed_checkpoint_is_rejected() -> None:
    text = proof_for(6).replace(f"\n13\n{b64(_cr.root())}", f"\n14\n{b64(_cr.root())}")
    with pytest.raises(ProofRejected, match="does not verify"):
        verify_tlog_proof(text, verifier=LOG.verifier(), leaf=ENTRIES[6])


def _mangle(old: str, new: str) -> str:
    text = proof_for(3)
    assert old in text
    return text.replace(old, new, 1)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: "c2sp.org/tlog-proof@v2\nindex 0\n\n" + CHECKPOINT, "tlog_proof"),
        (lambda: TLOG_PROOF_HEADER, "tlog_proof"),
        (lambda: _mangle("index 3", "index 03"), "tlog_proof.index"),
        (lambda: _mangle("index 3", "index -3"), "tlog_proof.index"),
        (lambda: _mangle("index 3", f"index {1 << 64}"), "tlog_proof.index"),
        (lambda: _mangle("index 3", "index  3"), "tlog_proof.index"),
        (lambda: _mangle("index 3", "idx 3"), "tlog_proof"),
        (lambda: _mangle("index 3\n", "index 3\nnot base64!\n"), "tlog_proof.inclusion_proof[0]"),
        (lambda: _mangle("index 3\n", f"index 3\n{b64(bytes(31))}\n"), "tlog_proof.inclusion_proof[0]"),
        (lambda: _mangle("index 3\n", "extra !!\nindex 3\n"), "tlog_proof.extra"),
        (lambda: _mangle("\n\n", "\n"), "tlog_proof.inclusion_proof[4]"),  # origin read as a hash
        (lambda: f"{TLOG_PROOF_HEADER}\nindex 0\n{b64(bytes(32))}\n", "tlog_proof"),
        (lambda: proof_for(3).split("\n\n")[0] + "\n\n", "tlog_proof.checkpoint"),
        (lambda: proof_for(3).replace("\n", "\r\n", 2), "tlog_proof"),
    ],
)
def test_malformed_tlog_proof_is_refused_by_parse_and_rejected_by_verify(make: Callable[[], str],
                                                                         field: str) -> None:
    text = make()
    assert field_of(lambda: parse_tlog_proof(text)) == field
    with pytest.raises(ProofRejected, match="malformed"):
        verify_tlog_proof(text, verifier=LOG.verifier(), leaf=ENTRIES[3])


def test_verify_tlog_proof_needs_exactly_one_form_of_the_entry() -> None:
    assert field_of(lambda: verify_tlog_proof(proof_for(1), verifier=LOG.verifier())) == "leaf"
    assert field_of(lambda: verify_tlog_proof(proof_for(1), verifier=LOG.verifier(), leaf=ENTRIES[1],
                                              leaf_hash=leaf_hash(ENTRIES[1]))) == "leaf"


def test_format_tlog_proof_refuses_what_it_cannot_write() -> None:
    assert field_of(lambda: format_tlog_proof(-1, [], CHECKPOINT)) == "index"
    assert field_of(lambda: format_tlog_proof(0, [bytes(31)], CHECKPOINT)) == "inclusion_proof[0]"
    assert field_of(lambda: format_tlog_proof(0, [], "")) == "checkpoint"
    assert field_of(lambda: format_tlog_proof(0, [], "no newline")) == "checkpoint"


def test_a_verifier_key_read_from_its_file_with_the_final_newline_parses() -> None:
    assert NoteVerifier.from_vkey(EXAMPLE["vkey"] + "\n") == NoteVerifier.from_vkey(EXAMPLE["vkey"])
