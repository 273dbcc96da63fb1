"""Sealing at rest: AES-256-GCM envelopes that open only in the row they were sealed for.

Envelope, ASCII text that fits any TEXT column::

    cs1:<key id>:<nonce>:<sealed>
     |     |        |       +-- ciphertext || 16-byte GCM tag, base64url without padding
     |     |        +---------- 12 random bytes, base64url without padding (16 characters)
     |     +------------------- 8 lower-case hex: the first 4 bytes of sha256(key)
     +------------------------- format version 1

Associated data (authenticated, not stored)::

    b"chittyos-seal" 0x00 b"cs1" 0x00 <key id> 0x00
    then for each of table, column, row_id: 4-byte big-endian length || UTF-8 bytes

so an envelope copied to another table, column or row, or with its header edited, fails to
open. ``row_id`` is its ``str()``: the int 7 and the string "7" name the same row.

Keys: ``CHITTY_ENCRYPTION_KEY`` holds one or more comma-separated keys, each 32 bytes as base64
(standard or urlsafe, padding optional) or hex; the first seals, all open. Rotation: put the new
key first and keep the old ones after it, re-seal rows whose ``needs_rotation`` is true
(``reseal``), then drop the old keys. When the variable is unset, ``load_or_create_key_file``
keeps one key in the data directory, in a file made 0600 once and refused later if group or
others may access it (such a key may already be copied; fix the mode or rotate).

Errors: anything wrong with a stored envelope (malformed, truncated, unknown version or key id,
failed authentication) is ``ProofRejected`` naming the row and the step; ``InvalidInput`` is
only for the caller's own arguments (an empty table name, an envelope that is not a str); key
configuration problems are ``ConfigurationError`` naming the variable, never the key. Random
96-bit nonces: rotate a key well before it has sealed 2**32 values.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import struct
import uuid
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chittyos.errors import ConfigurationError, InvalidInput, ProofRejected
from chittyos.signing.keyfiles import create_secret_file, read_secret_file

__all__ = ["KeyRing", "Sealer", "envelope_key_id", "key_id", "load_or_create_key_file", "parse_key"]

KEY_VARIABLE = "CHITTY_ENCRYPTION_KEY"
KEY_BYTES = 32
_VERSION = "cs1"
_NONCE_BYTES = 12
_TAG_BYTES = 16
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_KEY_ID = re.compile(r"[0-9a-f]{8}")
_KEY_RULE = "must be 32 bytes as base64 (44 characters, or 43 without padding) or hex (64 characters)"

RowId = str | int | uuid.UUID


def key_id(key: bytes) -> str:
    """8 lower-case hex: the first 4 bytes of sha256(key). Names a key without revealing it."""
    return hashlib.sha256(key).hexdigest()[:8]


def envelope_key_id(envelope: object) -> str | None:
    """The key id an envelope names (``cs1:<key id>:...``), None for anything else. Reads the
    envelope's label only: whether it opens is ``Sealer.open``'s question."""
    if not isinstance(envelope, str):
        return None
    parts = envelope.split(":", 2)
    if len(parts) < 3 or parts[0] != _VERSION or not _KEY_ID.fullmatch(parts[1]):
        return None
    return parts[1]


def parse_key(text: str, *, source: str = KEY_VARIABLE) -> bytes:
    """The 32 key bytes written in ``text`` as base64 (std or urlsafe) or hex.

    Raises ``ConfigurationError`` naming ``source`` and the rule; the value is never echoed.
    """
    value = text.strip()
    decoded: bytes | None = None
    if len(value) == 2 * KEY_BYTES and re.fullmatch(r"[0-9a-fA-F]+", value):
        decoded = bytes.fromhex(value)
    else:
        padded = value + "=" * (-len(value) % 4)
        alphabet = "-_" if ("-" in value or "_" in value) else "+/"
        try:
            decoded = base64.b64decode(padded, altchars=alphabet.encode(), validate=True) if value else None
        except (binascii.Error, ValueError):
            decoded = None
    if decoded is None:
        raise ConfigurationError(f"{source}: {_KEY_RULE}; got a value that is neither base64 nor hex")
    if len(decoded) != KEY_BYTES:
        raise ConfigurationError(f"{source}: {_KEY_RULE}; got a value that decodes to {len(decoded)} bytes")
    return decoded


class KeyRing:
    """Every key that may open envelopes; ``active`` is the one that seals.

    Raises ``InvalidInput`` for a key that is not 32 bytes and ``ConfigurationError`` when two
    keys share a key id (the same key twice, or a 32-bit collision).
    """

    def __init__(self, *, active: bytes, retired: Sequence[bytes] = ()) -> None:
        self._ciphers: dict[str, AESGCM] = {}
        for position, key in enumerate([active, *retired], start=1):
            if not isinstance(key, bytes) or len(key) != KEY_BYTES:
                got = f"{len(key)} bytes" if isinstance(key, bytes) else type(key).__name__
                raise InvalidInput("active" if position == 1 else "retired", "must be 32 bytes", got)
            kid = key_id(key)
            if kid in self._ciphers:
                raise ConfigurationError(
                    f"{KEY_VARIABLE}: key {position} has the same key id {kid} as an earlier key; "
                    "list each key once"
                )
            self._ciphers[kid] = AESGCM(key)
        self._active = key_id(active)

    @classmethod
    def from_text(cls, text: str, *, source: str = KEY_VARIABLE) -> KeyRing:
        """Keys from ``"new,old,older"`` (the format of CHITTY_ENCRYPTION_KEY); the first is active."""
        parts = [part.strip() for part in text.split(",")]
        if not any(parts):
            raise ConfigurationError(f"{source}: is empty; {_KEY_RULE}")
        keys = []
        for position, part in enumerate(parts, start=1):
            where = source if len(parts) == 1 else f"{source} (key {position} of {len(parts)})"
            if not part:
                raise ConfigurationError(f"{where}: is empty; separate keys with single commas")
            keys.append(parse_key(part, source=where))
        return cls(active=keys[0], retired=keys[1:])

    @property
    def active_key_id(self) -> str:
        return self._active

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every loaded key id, the active one first."""
        return tuple(self._ciphers)

    def _cipher(self, kid: str) -> AESGCM | None:
        return self._ciphers.get(kid)

    def __repr__(self) -> str:
        return f"KeyRing(active_key_id={self._active!r}, key_ids={self.key_ids!r})"


class Sealer:
    """Seals values for one row column and opens them again, with the keys of ``keyring``."""

    def __init__(self, *, keyring: KeyRing) -> None:
        self._keyring = keyring

    @property
    def keyring(self) -> KeyRing:
        return self._keyring

    def seal(self, plaintext: str | bytes, *, table: str, column: str, row_id: RowId) -> str:
        """The envelope of ``plaintext`` (str as UTF-8), sealed with the active key for this row."""
        if isinstance(plaintext, str):
            data = plaintext.encode("utf-8")
        elif isinstance(plaintext, bytes | bytearray | memoryview):
            data = bytes(plaintext)
        else:
            raise InvalidInput("plaintext", "must be str or bytes", type(plaintext).__name__)
        kid = self._keyring.active_key_id
        aad = _associated_data(kid, table, column, row_id)
        nonce = os.urandom(_NONCE_BYTES)
        cipher = self._keyring._cipher(kid)
        assert cipher is not None  # the active key is always loaded
        sealed = cipher.encrypt(nonce, data, aad)
        return f"{_VERSION}:{kid}:{_b64(nonce)}:{_b64(sealed)}"

    def open(self, envelope: str, *, table: str, column: str, row_id: RowId) -> bytes:
        """The plaintext bytes sealed in ``envelope`` for this row.

        Steps: 1. parse (version, key id, nonce, sealed bytes); 2. find the key by id;
        3. authenticate and decrypt with the row as associated data.
        Raises ``ProofRejected`` at the first step that fails, naming the row and the step.
        """
        aad_parts = _row_parts(table, column, row_id)
        where = f"sealed {table}.{column} of row {row_id}"
        kid, nonce, sealed = _parse(envelope, where)
        cipher = self._keyring._cipher(kid)
        if cipher is None:
            raise ProofRejected(
                f"{where}: unknown key id {kid}; load the key that sealed it "
                f"({KEY_VARIABLE}=<active>,<old key>), loaded: {', '.join(self._keyring.key_ids)}"
            )
        try:
            return cipher.decrypt(nonce, sealed, _aad_bytes(kid, aad_parts))
        except InvalidTag:
            raise ProofRejected(
                f"{where}: authentication failed with key {kid} (the envelope was changed, or "
                "belongs to another table, column or row)"
            ) from None

    def needs_rotation(self, envelope: str) -> bool:
        """True when ``envelope`` was sealed with a key other than the active one.

        Raises ``ProofRejected`` when ``envelope`` is malformed.
        """
        kid, _, _ = _parse(envelope, "sealed value")
        return kid != self._keyring.active_key_id

    def reseal(self, envelope: str, *, table: str, column: str, row_id: RowId) -> str:
        """``envelope`` under the active key: itself when already so, else opened and sealed anew.

        Raises ``ProofRejected`` like ``open``.
        """
        if not self.needs_rotation(envelope):
            return envelope
        plaintext = self.open(envelope, table=table, column=column, row_id=row_id)
        return self.seal(plaintext, table=table, column=column, row_id=row_id)

    def __repr__(self) -> str:
        return f"Sealer(keyring={self._keyring!r})"


def load_or_create_key_file(path: Path) -> tuple[bytes, bool]:
    """The key kept in ``path`` and whether it was created just now.

    Used when CHITTY_ENCRYPTION_KEY is unset. A new file holds one base64 key and a newline
    (so it can be moved into the variable), mode 0600, created atomically; a racing process
    reads the winner's key. Raises ``ConfigurationError`` when the file is group/world
    accessible, unreadable or not a key (never showing its content).
    """
    for _ in range(2):
        existing = read_secret_file(path, variable=KEY_VARIABLE, private=True)
        if existing is not None:
            try:
                text = existing.decode("ascii")
            except UnicodeDecodeError:
                text = ""
            return parse_key(text, source=f"{KEY_VARIABLE} is unset and key file {str(path)!r}"), False
        key = os.urandom(KEY_BYTES)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            created = create_secret_file(path, base64.b64encode(key) + b"\n")
        except OSError as exc:
            raise ConfigurationError(
                f"{KEY_VARIABLE}: is unset and the key file {str(path)!r} cannot be created ({exc.strerror})"
            ) from None
        if created:
            return key, True
    raise ConfigurationError(f"{KEY_VARIABLE}: is unset and key file {str(path)!r} keeps disappearing")


# --- envelope parts -----------------------------------------------------------------------


def _parse(envelope: str, where: str) -> tuple[str, bytes, bytes]:
    if not isinstance(envelope, str):
        raise InvalidInput("envelope", "must be a str", type(envelope).__name__)
    parts = envelope.split(":")
    if parts[0] != _VERSION:
        version = parts[0][:8] if len(parts) > 1 and parts[0].isalnum() else "?"
        raise ProofRejected(
            f"{where}: unsupported envelope version {version!r} (expected {_VERSION!r}) or not an envelope"
        )
    if len(parts) != 4:
        raise ProofRejected(f"{where}: malformed envelope: {len(parts)} fields, expected 4")
    _, kid, nonce_text, sealed_text = parts
    if not _KEY_ID.fullmatch(kid):
        raise ProofRejected(f"{where}: malformed envelope: key id must be 8 lower-case hex")
    nonce = _unb64(nonce_text)
    if nonce is None or len(nonce) != _NONCE_BYTES:
        raise ProofRejected(f"{where}: malformed envelope: nonce must be {_NONCE_BYTES} bytes of base64url")
    sealed = _unb64(sealed_text)
    if sealed is None or len(sealed) < _TAG_BYTES:
        raise ProofRejected(
            f"{where}: truncated or malformed envelope: sealed part must be base64url of at least "
            f"{_TAG_BYTES} bytes"
        )
    return kid, nonce, sealed


def _row_parts(table: str, column: str, row_id: RowId) -> tuple[bytes, bytes, bytes]:
    for name, value in (("table", table), ("column", column)):
        if not isinstance(value, str) or not value:
            raise InvalidInput(name, "must be a non-empty str", value)
    if isinstance(row_id, bool) or not isinstance(row_id, str | int | uuid.UUID):
        raise InvalidInput("row_id", "must be a str, int or UUID", type(row_id).__name__)
    row = str(row_id)
    if not row:
        raise InvalidInput("row_id", "must not be empty", row_id)
    return table.encode("utf-8"), column.encode("utf-8"), row.encode("utf-8")


def _associated_data(kid: str, table: str, column: str, row_id: RowId) -> bytes:
    return _aad_bytes(kid, _row_parts(table, column, row_id))


def _aad_bytes(kid: str, parts: tuple[bytes, bytes, bytes]) -> bytes:
    # Length prefixes keep ("a", "bc") and ("ab", "c") apart.
    head = b"chittyos-seal\x00" + _VERSION.encode() + b"\x00" + kid.encode() + b"\x00"
    return head + b"".join(struct.pack(">I", len(p)) + p for p in parts)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes | None:
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        return None
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    # Only the canonical spelling: no second text for the same bytes.
    return data if _b64(data) == text else None
