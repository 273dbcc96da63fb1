"""Facts: validation names the field, leaf bytes are RFC 8785 (checked against the rfc8785 package)."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from chittyos.chain import MAX_LENGTHS, MAX_TIMESTAMP_MS, Fact, canonical_leaf, timestamp_ms
from chittyos.chain.merkle import leaf_hash
from chittyos.errors import InvalidInput
from tests.chain.conftest import make_fact

ARMOR = "-----BEGIN PGP SIGNATURE-----\n\niQEzBAABCAAdFiEE\n=abcd\n-----END PGP SIGNATURE-----\n"
FPR = "0123456789ABCDEF0123456789ABCDEF01234567"
BASE: dict[str, Any] = {"subject": "s", "predicate": "p", "object": "o", "source": "src", "timestamp": 0}


def field_of(**changes: Any) -> str:
    with pytest.raises(InvalidInput) as info:
        Fact(**{**BASE, **changes})
    return info.value.field


def test_leaf_bytes_are_sorted_compact_json_without_none_fields() -> None:
    fact = Fact(
        subject="execution:1",
        predicate="completed",
        object="sha256:ab",
        source="chittyos:standard",
        timestamp=1764547200123,
        execution_id="1",
    )
    assert fact.leaf_bytes() == (
        b'{"execution_id":"1","object":"sha256:ab","predicate":"completed","source":"chittyos:standard",'
        b'"subject":"execution:1","timestamp":1764547200123}'
    )
    assert fact.fact_id == hashlib.sha256(fact.leaf_bytes()).hexdigest()
    assert fact.leaf_hash == leaf_hash(fact.leaf_bytes())


def test_a_signature_is_in_the_leaf_and_signs_everything_else() -> None:
    unsigned = make_fact(1, signer=FPR.lower())
    assert unsigned.signer == FPR  # fingerprints are stored upper case
    assert unsigned.signing_bytes() == unsigned.leaf_bytes()
    signed = dataclasses.replace(unsigned, signature=ARMOR)
    assert signed.signing_bytes() == unsigned.leaf_bytes()
    assert b'"signature":' in signed.leaf_bytes() and signed.fact_id != unsigned.fact_id


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"subject": ""}, "subject"),
        ({"subject": "   "}, "subject"),
        ({"subject": 5}, "subject"),
        ({"predicate": "a\nb"}, "predicate"),
        ({"object": "tab\there"}, "object"),
        ({"object": "nul\x00"}, "object"),
        ({"object": "c1\x85"}, "object"),
        ({"source": "lone \ud800 surrogate"}, "source"),
        ({"subject": "x" * (MAX_LENGTHS["subject"] + 1)}, "subject"),
        ({"object": "x" * (MAX_LENGTHS["object"] + 1)}, "object"),
        ({"timestamp": -1}, "timestamp"),
        ({"timestamp": MAX_TIMESTAMP_MS + 1}, "timestamp"),
        ({"timestamp": 1.5}, "timestamp"),
        ({"timestamp": True}, "timestamp"),
        ({"execution_id": ""}, "execution_id"),
        ({"evidence_id": "a\x7f"}, "evidence_id"),
        ({"signer": "not hex"}, "signer"),
        ({"signer": FPR[:-1]}, "signer"),
        ({"signature": ARMOR, "signer": None}, "signer"),
        ({"signature": "not armored", "signer": FPR}, "signature"),
        ({"signature": ARMOR.replace("\n", "\r\n"), "signer": FPR}, "signature"),
    ],
)
def test_invalid_fields_are_named(changes: dict[str, Any], field: str) -> None:
    assert field_of(**changes) == field


def test_limits_are_inclusive() -> None:
    Fact(**{**BASE, "subject": "x" * MAX_LENGTHS["subject"], "timestamp": MAX_TIMESTAMP_MS})


def test_timestamps_come_from_aware_datetimes_only() -> None:
    when = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=UTC)
    assert timestamp_ms(when) == 1_796_040_000_123
    assert timestamp_ms(when.astimezone(timezone(timedelta(hours=-5)))) == 1_796_040_000_123
    fact = Fact.at(when, subject="s", predicate="p", object="o", source="src")
    assert fact.when == when.replace(microsecond=123000)
    with pytest.raises(InvalidInput) as info:
        timestamp_ms(datetime(2026, 1, 1))
    assert info.value.field == "timestamp"


def test_equal_facts_have_equal_ids_and_compare_equal() -> None:
    assert make_fact(7) == make_fact(7) and make_fact(7).fact_id == make_fact(7).fact_id
    assert make_fact(7).fact_id != make_fact(8).fact_id


# Any text a fact may hold (no control characters or surrogates), with JSON's awkward characters
# made likely: quotes, backslashes, U+2028/9, non-BMP; in the object also format characters (a
# right-to-left override, a zero-width joiner), which the identifier-like fields refuse.
TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from("\"\\/\u2028\u2029\u00e9\U0001f600<>&'\u202e\u200d"),
        st.characters(blacklist_categories=("Cc", "Cs")),
    ),
    min_size=1,
    max_size=40,
).filter(str.strip)
IDENTIFIER_TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from("\"\\/\u2028\u2029\u00e9\U0001f600<>&'"),
        st.characters(blacklist_categories=("Cc", "Cs", "Cf")),
    ),
    min_size=1,
    max_size=40,
).filter(str.strip)


@settings(max_examples=300, deadline=None)
@given(
    subject=IDENTIFIER_TEXT,
    predicate=IDENTIFIER_TEXT,
    obj=TEXT,
    source=IDENTIFIER_TEXT,
    timestamp=st.integers(0, MAX_TIMESTAMP_MS),
    execution_id=st.none() | TEXT,
    evidence_id=st.none() | TEXT,
    signed=st.booleans(),
)
def test_leaf_bytes_equal_the_rfc8785_reference(
    subject: str,
    predicate: str,
    obj: str,
    source: str,
    timestamp: int,
    execution_id: str | None,
    evidence_id: str | None,
    signed: bool,
) -> None:
    fact = Fact(
        subject=subject,
        predicate=predicate,
        object=obj,
        source=source,
        timestamp=timestamp,
        execution_id=execution_id,
        evidence_id=evidence_id,
        signer=FPR if signed else None,
        signature=ARMOR if signed else None,
    )
    assert fact.leaf_bytes() == rfc8785.dumps(fact.fields())
    assert fact.signing_bytes() == rfc8785.dumps({k: v for k, v in fact.fields().items() if k != "signature"})


@settings(max_examples=200, deadline=None)
@given(
    values=st.dictionaries(
        st.sampled_from(["subject", "predicate", "object", "source", "execution_id"]),
        st.text(max_size=30).filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s)),
    )
)
def test_canonical_leaf_matches_rfc8785_even_for_control_characters(values: dict[str, str]) -> None:
    # A tampered row may hold anything; the recompute must still encode it exactly as JCS does.
    values = {**values, "timestamp": 12}
    assert canonical_leaf(values) == rfc8785.dumps(values)
