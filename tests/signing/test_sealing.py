"""Sealing at rest: AES-256-GCM envelopes bound to their row."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import uuid
from pathlib import Path

import pytest

from chittyos.errors import ConfigurationError, InvalidInput, ProofRejected
from chittyos.signing.sealing import KeyRing, Sealer, key_id, load_or_create_key_file, parse_key

KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))
ROW = {"table": "secure_executions", "column": "prompt", "row_id": "7f1c0b52-3a55-4d8e-9f7e-1a2b3c4d5e6f"}


@pytest.fixture
def sealer() -> Sealer:
    return Sealer(keyring=KeyRing(active=KEY_A))


def test_round_trip_str_and_bytes(sealer: Sealer) -> None:
    for plaintext, expected in (
        ("Grüße, counsel", "Grüße, counsel".encode()),
        (b"\x00\xff" * 50, b"\x00\xff" * 50),
        ("", b""),
    ):
        envelope = sealer.seal(plaintext, **ROW)
        assert envelope.startswith(f"cs1:{key_id(KEY_A)}:")
        assert sealer.open(envelope, **ROW) == expected


def test_each_seal_uses_a_fresh_nonce(sealer: Sealer) -> None:
    envelopes = {sealer.seal("same", **ROW) for _ in range(20)}
    assert len(envelopes) == 20
    assert len({e.split(":")[2] for e in envelopes}) == 20


def test_key_id_is_first_8_hex_of_sha256() -> None:
    assert key_id(KEY_A) == hashlib.sha256(KEY_A).hexdigest()[:8]


@pytest.mark.parametrize(
    "other",
    [
        {"table": "chat_messages"},
        {"column": "response"},
        {"row_id": "7f1c0b52-3a55-4d8e-9f7e-1a2b3c4d5e60"},
        {"table": "secure_executions\x00"},
    ],
    ids=["table", "column", "row", "nul appended"],
)
def test_envelope_moved_to_another_row_fails_to_open(sealer: Sealer, other: dict[str, str]) -> None:
    envelope = sealer.seal("privileged", **ROW)
    with pytest.raises(ProofRejected, match="authentication failed"):
        sealer.open(envelope, **(ROW | other))


def test_row_identity_is_length_prefixed(sealer: Sealer) -> None:
    envelope = sealer.seal("x", table="a", column="bc", row_id=1)
    with pytest.raises(ProofRejected, match="authentication failed"):
        sealer.open(envelope, table="ab", column="c", row_id=1)


def test_int_and_str_row_ids_name_the_same_row(sealer: Sealer) -> None:
    row = uuid.UUID(ROW["row_id"])
    assert (
        sealer.open(sealer.seal("x", table="t", column="c", row_id=42), table="t", column="c", row_id="42")
        == b"x"
    )
    assert (
        sealer.open(
            sealer.seal("x", table="t", column="c", row_id=row), table="t", column="c", row_id=str(row)
        )
        == b"x"
    )


def test_every_changed_character_is_rejected(sealer: Sealer) -> None:
    envelope = sealer.seal("the answer", **ROW)
    accepted = []
    for i, char in enumerate(envelope):
        for replacement in {"A", "b", "0", "_"} - {char}:
            changed = envelope[:i] + replacement + envelope[i + 1 :]
            try:
                sealer.open(changed, **ROW)
                accepted.append(changed)
            except ProofRejected:
                pass
    assert accepted == []


def test_every_truncation_is_rejected(sealer: Sealer) -> None:
    envelope = sealer.seal("the answer", **ROW)
    accepted = []
    for end in range(len(envelope)):
        try:
            sealer.open(envelope[:end], **ROW)
            accepted.append(end)
        except ProofRejected:
            pass
    assert accepted == []
    with pytest.raises(ProofRejected, match="truncated"):
        sealer.open(envelope[: envelope.rindex(":") + 10], **ROW)


@pytest.mark.parametrize(
    ("envelope", "reason"),
    [
        ("", "not an envelope"),
        ("plain text", "not an envelope"),
        ("cs2:00000000:AAAAAAAAAAAAAAAA:AAAAAAAAAAAAAAAAAAAAAA", "unsupported envelope version 'cs2'"),
        ("cs1:00000000:AAAAAAAAAAAAAAAA", "3 fields"),
        ("cs1:00000000:AAAAAAAAAAAAAAAA:AAAAAAAAAAAAAAAAAAAAAA:x", "5 fields"),
        ("cs1:0000000G:AAAAAAAAAAAAAAAA:AAAAAAAAAAAAAAAAAAAAAA", "key id"),
        ("cs1:00000000:AAAAAAAA:AAAAAAAAAAAAAAAAAAAAAA", "nonce"),
        ("cs1:00000000:AAAAAAAAAAAAAAA+:AAAAAAAAAAAAAAAAAAAAAA", "nonce"),
        ("cs1:00000000:AAAAAAAAAAAAAAAA:AAAA", "truncated"),
        ("cs1:00000000:AAAAAAAAAAAAAAAA:AAAAAAAAAAAAAAAAAAAAAB", "truncated or malformed"),
    ],
)
def test_malformed_envelope_is_rejected_with_the_step(sealer: Sealer, envelope: str, reason: str) -> None:
    with pytest.raises(ProofRejected, match=reason):
        sealer.open(envelope, **ROW)


def test_envelope_must_be_a_str(sealer: Sealer) -> None:
    with pytest.raises(InvalidInput) as caught:
        sealer.open(sealer.seal("x", **ROW).encode(), **ROW)  # type: ignore[arg-type]
    assert caught.value.field == "envelope"


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"table": ""}, "table"),
        ({"column": ""}, "column"),
        ({"row_id": ""}, "row_id"),
        ({"row_id": True}, "row_id"),
    ],
)
def test_row_identity_must_be_given(sealer: Sealer, row: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        sealer.seal("x", **(ROW | row))  # type: ignore[arg-type]
    assert caught.value.field == field


def test_wrong_key_names_the_unknown_key_id(sealer: Sealer) -> None:
    envelope = sealer.seal("x", **ROW)
    other = Sealer(keyring=KeyRing(active=KEY_B))
    with pytest.raises(ProofRejected) as caught:
        other.open(envelope, **ROW)
    message = str(caught.value)
    assert f"unknown key id {key_id(KEY_A)}" in message and "load the key" in message
    assert key_id(KEY_B) in message


def test_edited_key_id_in_the_header_fails(sealer: Sealer) -> None:
    both = Sealer(keyring=KeyRing(active=KEY_A, retired=[KEY_B]))
    envelope = both.seal("x", **ROW)
    moved = envelope.replace(key_id(KEY_A), key_id(KEY_B), 1)
    with pytest.raises(ProofRejected, match="authentication failed"):
        both.open(moved, **ROW)


def test_rotation_opens_old_envelopes_and_reseals_them() -> None:
    old = Sealer(keyring=KeyRing(active=KEY_A))
    envelope = old.seal("kept across rotation", **ROW)
    rotated = Sealer(keyring=KeyRing.from_text(f"{base64.b64encode(KEY_B).decode()},{KEY_A.hex()}"))
    assert rotated.keyring.key_ids == (key_id(KEY_B), key_id(KEY_A))
    assert rotated.needs_rotation(envelope) and not old.needs_rotation(envelope)
    assert rotated.open(envelope, **ROW) == b"kept across rotation"
    resealed = rotated.reseal(envelope, **ROW)
    assert not rotated.needs_rotation(resealed) and resealed.split(":")[1] == key_id(KEY_B)
    assert rotated.reseal(resealed, **ROW) == resealed
    assert Sealer(keyring=KeyRing(active=KEY_B)).open(resealed, **ROW) == b"kept across rotation"
    with pytest.raises(ProofRejected, match="authentication failed"):
        rotated.reseal(envelope, **(ROW | {"row_id": "other"}))


def test_needs_rotation_rejects_garbage(sealer: Sealer) -> None:
    with pytest.raises(ProofRejected):
        sealer.needs_rotation("nonsense")


def test_repr_never_shows_key_material() -> None:
    ring = KeyRing(active=KEY_A, retired=[KEY_B])
    sealer = Sealer(keyring=ring)
    for text in (repr(ring), repr(sealer), str(sealer)):
        for key in (KEY_A, KEY_B):
            for form in (
                key.hex(),
                base64.b64encode(key).decode(),
                base64.urlsafe_b64encode(key).decode()[:20],
                repr(key),
            ):
                assert form not in text
        assert key_id(KEY_A) in text


# --- keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        base64.b64encode(KEY_B).decode(),
        base64.b64encode(KEY_B).decode().rstrip("="),
        base64.urlsafe_b64encode(KEY_B).decode(),
        base64.urlsafe_b64encode(KEY_B).decode().rstrip("="),
        KEY_B.hex(),
        KEY_B.hex().upper(),
        f"  {KEY_B.hex()}\n",
    ],
    ids=["base64", "base64 unpadded", "urlsafe", "urlsafe unpadded", "hex", "HEX", "whitespace"],
)
def test_parse_key_accepts_base64_and_hex_of_32_bytes(text: str) -> None:
    assert parse_key(text) == KEY_B


@pytest.mark.parametrize(
    "text",
    [
        base64.b64encode(os.urandom(31)).decode(),
        base64.b64encode(os.urandom(33)).decode(),
        os.urandom(31).hex(),
        os.urandom(33).hex(),
        "correct horse battery staple correct horse",
        "zz" * 32,
        "",
        base64.b64encode(KEY_B).decode()[:-2] + "!=",
    ],
    ids=[
        "b64 31 bytes",
        "b64 33 bytes",
        "hex 31 bytes",
        "hex 33 bytes",
        "passphrase",
        "not hex",
        "empty",
        "bad char",
    ],
)
def test_parse_key_rejects_other_values_without_echoing_them(text: str) -> None:
    with pytest.raises(ConfigurationError, match="CHITTY_ENCRYPTION_KEY: must be 32 bytes") as caught:
        parse_key(text)
    assert not text or text not in str(caught.value)


def test_several_keys_in_the_variable_first_is_active() -> None:
    ring = KeyRing.from_text(f"{KEY_A.hex()}, {base64.b64encode(KEY_B).decode()}")
    assert ring.active_key_id == key_id(KEY_A) and ring.key_ids == (key_id(KEY_A), key_id(KEY_B))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (f"{KEY_A.hex()},,{KEY_B.hex()}", r"key 2 of 3\): is empty"),
        (f"{KEY_A.hex()},{KEY_A.hex()}", "same key id"),
        (f"{KEY_A.hex()},{KEY_B.hex()[:-2]}", r"key 2 of 2\): must be 32 bytes"),
        (" , ", "is empty"),
    ],
)
def test_bad_key_lists_are_refused(text: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match) as caught:
        KeyRing.from_text(text)
    assert "CHITTY_ENCRYPTION_KEY" in str(caught.value)
    assert KEY_A.hex() not in str(caught.value) and KEY_B.hex()[:-2] not in str(caught.value)


def test_keyring_refuses_a_key_of_the_wrong_length() -> None:
    with pytest.raises(InvalidInput) as caught:
        KeyRing(active=KEY_A[:31])
    assert caught.value.field == "active"


def test_key_file_is_created_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "data" / "encryption.key"
    key, created = load_or_create_key_file(path)
    assert created and len(key) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_key_file(path) == (key, False)
    assert parse_key(path.read_text()) == key  # can be moved into CHITTY_ENCRYPTION_KEY as is
    assert [p.name for p in path.parent.iterdir()] == ["encryption.key"]  # no temp file left


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "encryption.key"
    load_or_create_key_file(path)
    path.chmod(0o640)
    with pytest.raises(ConfigurationError, match=r"CHITTY_ENCRYPTION_KEY.*mode 0640") as caught:
        load_or_create_key_file(path)
    assert path.read_text().strip() not in str(caught.value)


def test_corrupt_key_file_is_refused_without_its_content(tmp_path: Path) -> None:
    path = tmp_path / "encryption.key"
    path.write_text("not-a-key-but-maybe-a-secret\n")
    path.chmod(0o600)
    with pytest.raises(ConfigurationError, match="CHITTY_ENCRYPTION_KEY is unset and key file") as caught:
        load_or_create_key_file(path)
    assert "not-a-key" not in str(caught.value)
