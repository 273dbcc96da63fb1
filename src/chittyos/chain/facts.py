"""Facts: the entries of ChittyChain, and their leaf bytes. Pure, no I/O.

A fact is ``{subject, predicate, object, source, timestamp, execution_id?, evidence_id?, signer?,
signature?}``. Its leaf bytes are the RFC 8785 (JCS) canonical JSON of those fields, ``None``
fields left out; its ``fact_id`` is the hex SHA-256 of the leaf bytes and its Merkle leaf hash is
``SHA-256(0x00 || leaf bytes)`` (RFC 9162 §2.1.1)::

    {"execution_id":"…","object":"sha256:…","predicate":"completed","source":"chittyos:standard",
     "subject":"execution:…","timestamp":1764547200123}

Signing a fact (OpenPGP, detached, ASCII armor) covers ``signing_bytes()``: the leaf bytes of the
fact WITHOUT its ``signature`` (``signer``, the key fingerprint, is inside). The signature then
goes into the leaf too, so the log commits to it: stripping or swapping a signature changes the
fact id. For an unsigned fact ``signing_bytes() == leaf_bytes()``.

Encoding. Every value is a string or an integer below 2**53, and every key is ASCII, so JCS
reduces to: keys sorted, no whitespace, strings escaped as ECMAScript ``JSON.stringify`` does
(``"``, ``\\``, ``\\b \\t \\n \\f \\r``, other U+0000..U+001F as lowercase ``\\u00xx``, the rest
verbatim in UTF-8), integers in decimal. ``json.encoder.encode_basestring`` (C) does exactly that,
10x faster than the reference ``rfc8785`` package; tests check byte equality with ``rfc8785.dumps``
over generated facts, because a full-log recompute re-encodes every leaf.

Errors: ``InvalidInput`` naming the field and the rule.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any

from chittyos.errors import InvalidInput

__all__ = [
    "FACT_FIELDS",
    "MAX_LENGTHS",
    "MAX_TIMESTAMP_MS",
    "SORTED_FIELDS",
    "Fact",
    "canonical_leaf",
    "canonical_leaf_sorted",
    "check_field",
    "parse_fact_id",
    "timestamp_ms",
]

MAX_TIMESTAMP_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z: far below 2**53, so the integer is exact in every JSON reader."""

MAX_LENGTHS: Mapping[str, int] = {
    "subject": 1024,
    "predicate": 255,
    "object": 4096,
    "source": 255,
    "execution_id": 255,
    "evidence_id": 255,
    "signer": 64,
    "signature": 16384,
}
"""Upper bounds in characters; the database columns are sized to match."""

FACT_FIELDS = (
    "subject",
    "predicate",
    "object",
    "source",
    "timestamp",
    "execution_id",
    "evidence_id",
    "signer",
    "signature",
)
SORTED_FIELDS = tuple(sorted(FACT_FIELDS))
"""JCS member order (UTF-16 code units; the keys are ASCII, so plain sorting agrees)."""
assert SORTED_FIELDS == (
    "evidence_id",
    "execution_id",
    "object",
    "predicate",
    "signature",
    "signer",
    "source",
    "subject",
    "timestamp",
), "canonical_leaf_sorted spells this order out"
_PREFIXES = tuple(f'"{key}":' for key in SORTED_FIELDS)
_REQUIRED = ("subject", "predicate", "object", "source")
_OPTIONAL_TEXT = ("execution_id", "evidence_id")
_IDENTIFIERS = frozenset({"subject", "predicate", "source"})
"""Identifier-like fields: no invisible format characters (``_CF``) either."""
_FACT_ID = re.compile(r"[0-9a-f]{64}")
_FINGERPRINT = re.compile(r"[0-9A-F]{40}|[0-9A-F]{64}")
_ARMOR_BEGIN = "-----BEGIN PGP SIGNATURE-----\n"
_ARMOR_END = "-----END PGP SIGNATURE-----"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def canonical_leaf(values: Mapping[str, Any]) -> bytes:
    """RFC 8785 canonical JSON of a fact's fields (``None`` left out): the leaf bytes.

    No validation: a full-log recompute feeds stored columns through here as they are, so that a
    changed column shows as a changed hash. ``values`` must map field names to str / int / None.
    """
    return canonical_leaf_sorted(tuple(values.get(key) for key in SORTED_FIELDS))


def canonical_leaf_sorted(values: Sequence[str | int | None]) -> bytes:
    """``canonical_leaf`` of the values in ``SORTED_FIELDS`` order (the hot path of a recompute).

    Raises TypeError for a value of the wrong type (a string field that is not a str, a timestamp
    that is not an int): only a changed row can hold one.
    """
    evidence_id, execution_id, obj, predicate, signature, signer, source, subject, timestamp = values
    try:  # the four required fields and the timestamp are there: every valid fact
        if timestamp.__class__ is not int:
            raise TypeError("timestamp")
        if evidence_id is None and signature is None and signer is None:  # most facts: one C format
            if execution_id is None:
                text = _PLAIN % (
                    _encode(obj),
                    _encode(predicate),
                    _encode(source),
                    _encode(subject),
                    timestamp,
                )
            else:
                text = _WITH_EXECUTION % (
                    _encode(execution_id),
                    _encode(obj),
                    _encode(predicate),
                    _encode(source),
                    _encode(subject),
                    timestamp,
                )
            return text.encode("utf-8", "surrogatepass")
        head = "{"
        if evidence_id is not None:
            head += '"evidence_id":' + _encode(evidence_id) + ","
        if execution_id is not None:
            head += '"execution_id":' + _encode(execution_id) + ","
        head += '"object":' + _encode(obj) + ',"predicate":' + _encode(predicate) + ","
        if signature is not None:
            head += '"signature":' + _encode(signature) + ","
        if signer is not None:
            head += '"signer":' + _encode(signer) + ","
        text = (
            head
            + '"source":'
            + _encode(source)
            + ',"subject":'
            + _encode(subject)
            + ',"timestamp":'
            + str(timestamp)
            + "}"
        )
    except TypeError:
        text = _canonical_any(values)
    return text.encode("utf-8", "surrogatepass")


_PLAIN = '{"object":%s,"predicate":%s,"source":%s,"subject":%s,"timestamp":%d}'
_WITH_EXECUTION = '{"execution_id":%s,"object":%s,"predicate":%s,"source":%s,"subject":%s,"timestamp":%d}'


def _canonical_any(values: Sequence[str | int | None]) -> str:
    parts = []
    for prefix, value in zip(_PREFIXES, values, strict=True):
        if value is None:
            continue
        if value.__class__ is str:
            parts.append(prefix + _encode(value))
        elif value.__class__ is int:
            parts.append(prefix + str(value))
        else:
            raise TypeError(f"{prefix[1:-2]} must be a str or an int, not {type(value).__name__}")
    return "{" + ",".join(parts) + "}"


_encode = encode_basestring  # C; raises TypeError for anything but a str


def parse_fact_id(value: object, field: str = "fact_id") -> str:
    """A fact id: 64 lowercase hex digits (upper case is accepted and lowered)."""
    if not isinstance(value, str) or not _FACT_ID.fullmatch(value.lower()):
        raise InvalidInput(field, "must be 64 hex digits (the SHA-256 of the fact's leaf bytes)", value)
    return value.lower()


def timestamp_ms(when: datetime) -> int:
    """Milliseconds since the Unix epoch of an aware datetime. InvalidInput for a naive one."""
    if when.tzinfo is None:
        raise InvalidInput("timestamp", "must be an aware datetime (UTC); a naive one has no zone")
    delta = when.astimezone(UTC) - _EPOCH
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def _check_text(name: str, value: object, *, multiline: bool = False, identifier: bool = False) -> None:
    if not isinstance(value, str):
        raise InvalidInput(name, "must be a string", type(value).__name__)
    if not value:
        raise InvalidInput(name, "must be a non-empty string", value)
    limit = MAX_LENGTHS[name]
    if len(value) > limit:
        raise InvalidInput(name, f"must be at most {limit} characters", f"{len(value)} characters")
    # One C scan instead of a unicodedata lookup per character (every execution builds facts).
    bad = (_IDENTIFIER if identifier else _FORBIDDEN_MULTILINE if multiline else _FORBIDDEN).search(value)
    if bad is not None:
        char = bad.group()
        if _FORBIDDEN.match(char):
            rule = "must not contain control characters or lone surrogates"
        elif char in _SEPARATORS:
            rule = "must not contain line or paragraph separators (U+2028, U+2029; allowed in object only)"
        else:
            rule = (
                "must not contain invisible format characters (Unicode Cf: bidi overrides such as "
                "U+202E, zero-width characters; allowed in object only)"
            )
        raise InvalidInput(name, rule, f"U+{ord(char):04X} at offset {bad.start()}")
    if value.isspace():  # after the scan: U+0085 is a control character, and whitespace to str
        raise InvalidInput(name, "must hold more than whitespace", value)


def check_field(name: str, value: object) -> None:
    """Refuse ``value`` (``InvalidInput`` naming ``name`` and the rule) unless a ``Fact`` could
    hold it as its ``name`` field (subject, predicate, object, source, execution_id,
    evidence_id). For query filters: no stored fact matches a value the log refuses, so such a
    filter is a mistake to name, not a question to answer with nothing (on PostgreSQL a NUL
    could not even be sent)."""
    _check_text(name, value, identifier=name in _IDENTIFIERS)


# Unicode categories Cc (controls: U+0000..U+001F, U+007F..U+009F) and Cs (surrogates), exactly;
# tests compare them with unicodedata.category over every code point.
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_FORBIDDEN_MULTILINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\ud800-\udfff]")  # "\n" allowed
# Unicode category Cf (format: bidi overrides and isolates, zero-width characters, the BOM, tag
# characters...): invisible, so two subjects that print alike could differ. Refused in the
# identifier-like fields (subject, predicate, source) with the line and paragraph separators,
# allowed in the free-text object. Unicode
# 14.0 (Python 3.11's unicodedata) plus the Cf added in 15.0 (U+13439..U+1343F); tests compare the
# set with unicodedata.category over every code point.
_CF = (
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"
)
_SEPARATORS = "\u2028\u2029"  # Unicode Zl, Zp: a line break to many readers of a one-line name
_IDENTIFIER = re.compile(f"[\x00-\x1f\x7f-\x9f\ud800-\udfff{_SEPARATORS}{_CF}]")


@dataclass(frozen=True)
class Fact:
    """One statement for the log. Validated on construction; InvalidInput names the field.

    ``timestamp`` is UTC epoch milliseconds (``Fact.at`` takes a datetime). ``signer`` is the
    OpenPGP fingerprint (40 or 64 hex digits, stored upper case); ``signature`` an ASCII-armored
    detached signature over ``signing_bytes()`` and needs a ``signer``.
    """

    subject: str
    predicate: str
    object: str
    source: str
    timestamp: int
    execution_id: str | None = None
    evidence_id: str | None = None
    signer: str | None = None
    signature: str | None = None

    def __post_init__(self) -> None:
        for name in _REQUIRED:
            _check_text(name, getattr(self, name), identifier=name in _IDENTIFIERS)
        ts = self.timestamp
        if isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts <= MAX_TIMESTAMP_MS:
            raise InvalidInput(
                "timestamp", f"must be integer epoch milliseconds in [0, {MAX_TIMESTAMP_MS}]", ts
            )
        for name in _OPTIONAL_TEXT:
            if getattr(self, name) is not None:
                _check_text(name, getattr(self, name))
        if self.signer is not None:
            signer = self.signer.upper() if isinstance(self.signer, str) else self.signer
            if not isinstance(signer, str) or not _FINGERPRINT.fullmatch(signer):
                raise InvalidInput(
                    "signer", "must be an OpenPGP fingerprint: 40 or 64 hex digits", self.signer
                )
            object.__setattr__(self, "signer", signer)
        if self.signature is not None:
            _check_text("signature", self.signature, multiline=True)
            text = self.signature.strip("\n")
            if not (text.startswith(_ARMOR_BEGIN) and text.endswith(_ARMOR_END)):
                raise InvalidInput(
                    "signature", "must be an ASCII-armored OpenPGP signature (BEGIN/END PGP SIGNATURE)"
                )
            if self.signer is None:
                raise InvalidInput("signer", "is required with a signature (the signing key's fingerprint)")

    @classmethod
    def at(cls, when: datetime, **values: Any) -> Fact:
        """A fact timestamped ``when`` (an aware datetime)."""
        return cls(timestamp=timestamp_ms(when), **values)

    def fields(self) -> dict[str, str | int]:
        """The fact's fields without the ``None`` ones."""
        return {name: value for name in FACT_FIELDS if (value := getattr(self, name)) is not None}

    def leaf_bytes(self) -> bytes:
        """RFC 8785 canonical JSON of every field (``None`` left out): the log entry."""
        return self._leaf

    @cached_property
    def _leaf(self) -> bytes:
        return canonical_leaf_sorted(
            (
                self.evidence_id,
                self.execution_id,
                self.object,
                self.predicate,
                self.signature,
                self.signer,
                self.source,
                self.subject,
                self.timestamp,
            )
        )

    def signing_bytes(self) -> bytes:
        """What an OpenPGP signature of this fact covers: the leaf bytes without ``signature``."""
        return canonical_leaf({**self.fields(), "signature": None})

    @cached_property
    def fact_id(self) -> str:
        """Hex SHA-256 of the leaf bytes."""
        return hashlib.sha256(self._leaf).hexdigest()

    @cached_property
    def leaf_hash(self) -> bytes:
        """SHA-256(0x00 || leaf bytes): the Merkle leaf hash (RFC 9162 §2.1.1)."""
        return hashlib.sha256(b"\x00" + self._leaf).digest()

    @property
    def when(self) -> datetime:
        """``timestamp`` as an aware UTC datetime."""
        return _EPOCH + timedelta(milliseconds=self.timestamp)
