"""C2SP signed notes (Ed25519) and tlog-checkpoint bodies: c2sp.org/signed-note, c2sp.org/tlog-checkpoint.

Pure functions and small value classes. No I/O; keys come in as text or bytes.

Keys (signed-note §Signatures, Ed25519 type 0x01; text forms as golang.org/x/mod/sumdb/note)::

    key id   = SHA-256(name || 0x0A || 0x01 || 32-byte public key)[:4], a big-endian uint32
    verifier = name + "+" + 8 hex key id + "+" + base64(0x01 || public key)     (public: vkey)
    signer   = "PRIVATE+KEY+" + name + "+" + 8 hex key id + "+" + base64(0x01 || seed)  (secret)

    A key name is non-empty UTF-8 with no Unicode space, no "+" and no control character.

Note::

    <text, ending in "\\n">
    <empty line>
    — <key name> base64(4-byte key id || 64-byte Ed25519 signature over the text)
    ...                                     (at most 100 signature lines, as the Go reference)

``open_note`` follows the spec and the Go reference: signatures from unknown keys are ignored; a
known key's signature that does not verify rejects the whole note; a note with no verified
signature is rejected. Checkpoint body (tlog-checkpoint §Note text)::

    <origin>\\n<tree size, decimal, no leading zeros>\\n<base64 root hash>\\n[<extension line>\\n]...

Errors: ``InvalidInput`` for a caller's bad arguments and for ``parse``/key-text rules;
``ProofRejected`` from ``open_note``/``open_checkpoint`` for anything wrong with the artifact being
verified (malformed, unknown key only, bad signature, wrong origin). Signer keys never appear in a
message or a ``repr``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from chittyos.errors import InvalidInput, ProofRejected

__all__ = [
    "Checkpoint", "NoteSigner", "NoteVerifier", "OpenedNote", "generate_key", "key_id", "note_signers",
    "open_checkpoint", "open_note", "sign_checkpoint", "sign_note",
]

_ALG_ED25519 = 0x01
_SIG_PREFIX = "\u2014 "  # em dash, space
_MAX_SIGNATURES = 100  # the spec asks for at least 16; the Go reference stops at 100
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")
_UINT64 = 1 << 64


def _b64decode(text: str, field: str) -> bytes:
    """Strict RFC 4648 §4 base64: standard alphabet, padded, canonical. InvalidInput otherwise."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except ValueError:  # binascii.Error and UnicodeEncodeError are both ValueErrors
        raise InvalidInput(field, "must be standard padded base64 (RFC 4648 §4)") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise InvalidInput(field, "must be canonical base64 (RFC 4648 §4)")
    return raw


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid key name (signed-note §Format), or None."""
    if not name:
        return "must not be empty"
    if "+" in name:
        return "must not contain '+'"
    if any(ch.isspace() for ch in name):
        return "must not contain Unicode spaces"
    if _CONTROL.search(name):
        return "must not contain control characters"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid UTF-8"
    return None


def _check_name(field: str, name: str) -> None:
    problem = _name_problem(name)
    if problem:
        raise InvalidInput(field, problem, name)


def key_id(name: str, public_key: bytes) -> int:
    """SHA-256(name || 0x0A || 0x01 || public_key)[:4] as a big-endian uint32 (signed-note §Ed25519)."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([_ALG_ED25519]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


class NoteVerifier:
    """A trusted Ed25519 note key: ``name``, ``key_id`` (uint32) and the 32-byte ``public_key``."""

    __slots__ = ("_key", "key_id", "name", "public_key")

    def __init__(self, *, name: str, public_key: bytes) -> None:
        _check_name("name", name)
        if len(public_key) != 32:
            raise InvalidInput("public_key", "must be 32 bytes (Ed25519)", len(public_key))
        self.name, self.public_key = name, bytes(public_key)
        self.key_id = key_id(name, self.public_key)
        self._key = Ed25519PublicKey.from_public_bytes(self.public_key)

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteVerifier:
        """Parse ``name+<8 hex key id>+base64(0x01 || public key)``; InvalidInput names the rule.
        Surrounding whitespace (the newline ending ``log.vkey``) is ignored."""
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3:
            raise InvalidInput("verifier key", "must be name+keyid+base64key", vkey)
        name, hex_id, key64 = parts
        _check_name("verifier key name", name)
        if not _HEX8.fullmatch(hex_id):
            raise InvalidInput("verifier key id", "must be 8 hex digits", hex_id)
        raw = _b64decode(key64, "verifier key")
        if not raw:
            raise InvalidInput("verifier key", "key must not be empty")
        if int(hex_id, 16) != int.from_bytes(hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4], "big"):
            raise InvalidInput("verifier key id", "does not match SHA-256(name || 0x0A || key)[:4]", hex_id)
        if raw[0] != _ALG_ED25519:
            raise InvalidInput("verifier key", "unknown algorithm; only Ed25519 (0x01) is supported", raw[0])
        if len(raw) != 33:
            raise InvalidInput("verifier key", "Ed25519 public key must be 32 bytes", len(raw) - 1)
        return cls(name=name, public_key=raw[1:])

    def to_vkey(self) -> str:
        """The verifier key text ``name+<keyid>+base64(0x01 || public key)``."""
        return f"{self.name}+{self.key_id:08x}+{_b64(bytes([_ALG_ED25519]) + self.public_key)}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (64 bytes, no key id) is this key's Ed25519 signature of ``message``."""
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def __repr__(self) -> str:
        return f"NoteVerifier({self.to_vkey()!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NoteVerifier):
            return NotImplemented
        return (self.name, self.public_key) == (other.name, other.public_key)

    def __hash__(self) -> int:
        return hash((self.name, self.public_key))


class NoteSigner:
    """An Ed25519 note signing key. Its ``repr`` never shows the key; ``to_skey`` is the secret."""

    __slots__ = ("_key", "key_id", "name", "public_key")

    def __init__(self, *, name: str, seed: bytes) -> None:
        _check_name("name", name)
        if len(seed) != 32:
            raise InvalidInput("seed", "must be 32 bytes (Ed25519)")
        self.name = name
        self._key = Ed25519PrivateKey.from_private_bytes(bytes(seed))
        self.public_key = self._key.public_key().public_bytes_raw()
        self.key_id = key_id(name, self.public_key)

    @classmethod
    def generate(cls, name: str) -> NoteSigner:
        """A new random key for ``name``."""
        return cls(name=name, seed=Ed25519PrivateKey.generate().private_bytes_raw())

    @classmethod
    def from_skey(cls, skey: str) -> NoteSigner:
        """Parse ``PRIVATE+KEY+name+<keyid>+base64(0x01 || seed)``; messages never echo the key."""
        parts = skey.split("+", 4)
        if len(parts) != 5 or parts[0] != "PRIVATE" or parts[1] != "KEY":
            raise InvalidInput("signer key", "must be PRIVATE+KEY+name+keyid+base64key")
        _, _, name, hex_id, key64 = parts
        _check_name("signer key name", name)
        if not _HEX8.fullmatch(hex_id):
            raise InvalidInput("signer key id", "must be 8 hex digits")
        try:
            raw = _b64decode(key64, "signer key")
        except InvalidInput:
            raise InvalidInput("signer key", "must be standard canonical base64") from None
        if not raw or raw[0] != _ALG_ED25519:
            raise InvalidInput("signer key", "unknown algorithm; only Ed25519 (0x01) is supported")
        if len(raw) != 33:
            raise InvalidInput("signer key", "Ed25519 seed must be 32 bytes")
        signer = cls(name=name, seed=raw[1:])
        if signer.key_id != int(hex_id, 16):
            raise InvalidInput("signer key id", "does not match the key derived from the seed")
        return signer

    def to_skey(self) -> str:
        """SECRET: the signer key text. Store it as a secret; never log it."""
        seed = self._key.private_bytes_raw()
        return f"PRIVATE+KEY+{self.name}+{self.key_id:08x}+{_b64(bytes([_ALG_ED25519]) + seed)}"

    def verifier(self) -> NoteVerifier:
        """The public half, for ``open_note``."""
        return NoteVerifier(name=self.name, public_key=self.public_key)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message`` (without the key id)."""
        return self._key.sign(message)

    def __repr__(self) -> str:
        return f"NoteSigner(name={self.name!r}, key_id={self.key_id:08x}, key=***)"


def generate_key(name: str) -> tuple[str, str]:
    """A new Ed25519 key for ``name`` as ``(signer key text, verifier key text)``; the first is secret."""
    signer = NoteSigner.generate(name)
    return signer.to_skey(), signer.verifier().to_vkey()


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise InvalidInput("text", "must end with a newline")
    bad = _CONTROL.search(text)
    if bad:
        raise InvalidInput("text", "must not contain control characters other than newline",
                           f"U+{ord(bad.group()):04X} at offset {bad.start()}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("text", "must be valid UTF-8") from None


def sign_note(text: str, *signers: NoteSigner) -> str:
    """The signed note: ``text`` (ending in newline), an empty line, one signature line per signer.

    Raises InvalidInput if there is no signer or ``text`` breaks the note rules.
    """
    if not signers:
        raise InvalidInput("signers", "at least one signer is required")
    _check_text(text)
    message = text.encode("utf-8")
    lines: list[str] = []
    seen: set[tuple[str, int]] = set()
    for signer in signers:
        if (signer.name, signer.key_id) in seen:
            continue
        seen.add((signer.name, signer.key_id))
        sig = signer.key_id.to_bytes(4, "big") + signer.sign(message)
        lines.append(f"{_SIG_PREFIX}{signer.name} {_b64(sig)}\n")
    return text + "\n" + "".join(lines)


class OpenedNote(NamedTuple):
    """A note whose signatures were checked: its ``text`` and the names of keys that verified it."""

    text: str
    signers: list[str]


def _malformed(rule: str) -> ProofRejected:
    return ProofRejected(f"note: malformed: {rule}")


def _signature_line(number: int, line: str) -> tuple[str, int, bytes]:
    """``(key name, key id, keyid || signature)`` of signature line ``number`` (``— name base64``,
    a valid name, canonical base64 of >= 5 bytes); ProofRejected naming the rule otherwise."""
    if not line.startswith(_SIG_PREFIX):
        raise _malformed(f"signature line {number} must start with an em dash and a space")
    name, _, sig64 = line[len(_SIG_PREFIX) :].partition(" ")
    problem = _name_problem(name)
    if problem:
        raise _malformed(f"signature line {number}: key name {problem}")
    try:
        sig = _b64decode(sig64, "signature")
    except InvalidInput:
        raise _malformed(f"signature line {number}: signature is not canonical base64") from None
    if len(sig) < 5:
        raise _malformed(f"signature line {number}: signature shorter than a key id and 1 byte")
    return name, int.from_bytes(sig[:4], "big"), sig


def note_signers(note: str) -> list[str]:
    """``name+keyid`` of each well-formed signature line of ``note``, UNVERIFIED: for saying who
    signed a note that ``open_note`` refused, never for trusting it."""
    split = note.rfind("\n\n")
    if split < 0:
        return []
    found = []
    for number, line in enumerate(note[split + 2 :].rstrip("\n").split("\n"), start=1):
        try:
            name, kid, _ = _signature_line(number, line)
        except ProofRejected:
            continue
        found.append(f"{name}+{kid:08x}")
    return found


def open_note(note: str | bytes, verifiers: Iterable[NoteVerifier]) -> OpenedNote:
    """Check a signed note against trusted ``verifiers`` and return its text and verifying key names.

    Steps (signed-note §Format, §Signatures; golang.org/x/mod/sumdb/note Open):
      1. valid UTF-8, no ASCII control character but newline;
      2. the text ends at the last empty line; the signature block is non-empty and ends in newline;
      3. each signature line is ``— name base64(keyid || sig)`` with a valid name, >= 5 bytes;
      4. unknown (name, key id) pairs are ignored; a known key's signature must verify;
      5. at least one known key must have signed.
    Raises ProofRejected naming the step; InvalidInput if two verifiers share name and key id.
    """
    known: dict[tuple[str, int], NoteVerifier] = {}
    for v in verifiers:
        if known.setdefault((v.name, v.key_id), v) != v:
            raise InvalidInput("verifiers", "two different keys share a name and key id", v.to_vkey())
    # 1.
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError:
            raise _malformed("not valid UTF-8") from None
    try:
        note.encode("utf-8")
    except UnicodeEncodeError:
        raise _malformed("not valid UTF-8") from None
    bad = _CONTROL.search(note)
    if bad:
        raise _malformed(f"control character U+{ord(bad.group()):04X} at offset {bad.start()}")
    # 2.
    split = note.rfind("\n\n")
    if split < 0:
        raise _malformed("no empty line before the signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block.endswith("\n"):
        raise _malformed("the signature block must be non-empty and end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > _MAX_SIGNATURES:
        raise _malformed(f"more than {_MAX_SIGNATURES} signatures")
    message = text.encode("utf-8")
    verified: list[str] = []
    unknown: list[str] = []
    seen: set[tuple[str, int]] = set()
    for number, line in enumerate(lines, start=1):
        name, kid, sig = _signature_line(number, line)  # 3.
        # 4.
        verifier = known.get((name, kid))
        if verifier is None:
            unknown.append(f"{name}+{kid:08x}")
            continue
        if (name, kid) in seen:
            continue
        seen.add((name, kid))
        if not verifier.verify(message, sig[4:]):
            raise ProofRejected(f"note: signature by known key {name}+{kid:08x} does not verify")
        verified.append(name)
    # 5.
    if not verified:
        found = ", ".join(dict.fromkeys(unknown)) or "none"
        raise ProofRejected(f"note: no signature from a known key (signed by unknown keys: {found})")
    return OpenedNote(text, verified)


@dataclass(frozen=True)
class Checkpoint:
    """A tlog-checkpoint body: ``origin``, ``tree_size``, 32-byte SHA-256 ``root_hash``, extensions."""

    origin: str
    tree_size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin or _CONTROL.search(self.origin):
            raise InvalidInput("checkpoint.origin", "must be one non-empty line without control characters",
                               self.origin)
        size = self.tree_size
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < _UINT64:
            raise InvalidInput("checkpoint.tree_size", "must be an integer in [0, 2**64)", self.tree_size)
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != 32:
            raise InvalidInput("checkpoint.root_hash", "must be 32 bytes (SHA-256)", self.root_hash)
        object.__setattr__(self, "extensions", tuple(self.extensions))
        for i, ext in enumerate(self.extensions):
            if not ext or "\n" in ext or _CONTROL.search(ext):
                raise InvalidInput(f"checkpoint.extensions[{i}]",
                                   "must be one non-empty line without control characters", ext)

    def to_body(self) -> str:
        """The note text: origin, size, base64 root, extension lines, each ending in a newline."""
        lines = [self.origin, str(self.tree_size), _b64(self.root_hash), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, body: str) -> Checkpoint:
        """Parse a checkpoint note text strictly (tlog-checkpoint §Note text); InvalidInput on any rule."""
        if not body.endswith("\n"):
            raise InvalidInput("checkpoint", "must end with a newline")
        lines = body[:-1].split("\n")
        if len(lines) < 3:
            raise InvalidInput("checkpoint", "must have at least 3 lines (origin, size, root)", len(lines))
        origin, size, root, *extensions = lines
        if not _DECIMAL.fullmatch(size):
            raise InvalidInput("checkpoint.tree_size", "must be ASCII decimal without leading zeros", size)
        return cls(origin, int(size), _b64decode(root, "checkpoint.root_hash"), tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, *signers: NoteSigner) -> str:
    """The checkpoint as a signed note."""
    return sign_note(checkpoint.to_body(), *signers)


def open_checkpoint(note: str | bytes, verifier: NoteVerifier, *, origin: str | None = None) -> Checkpoint:
    """Verify a signed checkpoint with the log's key and parse it.

    ``origin`` (default: the key's name) must equal the checkpoint's origin line. Other signatures
    (witness cosignatures) are ignored. Raises ProofRejected naming the failed step.
    """
    opened = open_note(note, [verifier])
    try:
        checkpoint = Checkpoint.parse(opened.text)
    except InvalidInput as exc:
        raise ProofRejected(f"checkpoint: malformed: {exc}") from exc
    expected = verifier.name if origin is None else origin
    if checkpoint.origin != expected:
        raise ProofRejected(f"checkpoint.origin: expected {expected!r}, got {checkpoint.origin!r}")
    return checkpoint
