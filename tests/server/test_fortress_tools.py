"""fortress_verify_signature and the public-key resource through a real MCP client."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from chittyos.signing import OpenPGPSigner, kill_agent
from tests.server.conftest import Connect
from tests.server.test_tools import payload

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def stranger() -> Any:
    """A second, unrelated OpenPGP key (someone else's)."""
    home = Path(tempfile.mkdtemp(prefix="cs", dir="/tmp"))
    signer = OpenPGPSigner.open(gnupghome=home / "g", user_id="Stranger")
    yield signer
    kill_agent(signer.gnupghome)
    shutil.rmtree(home, ignore_errors=True)


async def test_the_public_key_resource_checks_what_the_server_key_signs(connect: Connect, settings: Any) -> None:
    from chittyos.signing import open_signer

    async with connect() as client:
        armored = (await client.read_resource("chittyos://keys/openpgp")).contents[0].text
        assert armored.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
        # The key the server created in its data directory signs; the published key checks it.
        server_key = open_signer(settings)
        try:
            signature = server_key.sign(b"exhibit A")
        finally:
            server_key.close()  # the running server shares this agent: it stays up
        result = payload(
            await client.call_tool(
                "fortress_verify_signature", {"content": "exhibit A", "signature": signature, "public_key": armored}
            )
        )
        own = payload(await client.call_tool("fortress_verify_signature", {"content": "exhibit A", "signature": signature}))
    assert result["signature_valid"] is True
    assert own["signature_valid"] is True and own["checked_against"] == "server key"


async def test_signatures_are_checked_cryptographically(connect: Connect, stranger: Any, settings: Any) -> None:
    content = "Settlement: USD 1,000,000"
    by_stranger = stranger.sign(content.encode())
    async with connect() as client:
        # a valid signature from a key the server does not know: reported as such
        unknown = payload(
            await client.call_tool("fortress_verify_signature", {"content": content, "signature": by_stranger})
        )
        assert unknown["signature_valid"] is False and unknown["key_known"] is False
        assert unknown["reason"]
        assert unknown["content_hash"] == hashlib.sha256(content.encode()).hexdigest()

        # the same, checked against the stranger's public key: valid
        valid = payload(
            await client.call_tool(
                "fortress_verify_signature",
                {"content": content, "signature": by_stranger, "public_key": stranger.export_public_key()},
            )
        )
        assert valid["signature_valid"] is True and valid["signer_fingerprint"] == stranger.fingerprint
        assert valid["checked_against"] == "given public key" and valid["reason"] is None

        # one changed byte
        changed = payload(
            await client.call_tool(
                "fortress_verify_signature",
                {"content": content + ".", "signature": by_stranger, "public_key": stranger.export_public_key()},
            )
        )
        assert changed["signature_valid"] is False and changed["reason"]

        # a garbled signature
        garbled = payload(
            await client.call_tool(
                "fortress_verify_signature",
                {"content": content, "signature": by_stranger.replace("A", "B", 3)},
            )
        )
        assert garbled["signature_valid"] is False and garbled["reason"]

        empty = await client.call_tool("fortress_verify_signature", {"content": content, "signature": "  "})
        assert empty.is_error and "signature" in empty.content[0].text


async def test_input_that_is_no_signature_leaves_key_known_null(connect: Connect, settings: Any) -> None:
    async with connect() as client:
        armored = (await client.read_resource("chittyos://keys/openpgp")).contents[0].text
        for signature in ("not a signature", armored):
            for extra in ({}, {"public_key": armored}):
                result = payload(
                    await client.call_tool(
                        "fortress_verify_signature", {"content": "exhibit A", "signature": signature, **extra}
                    )
                )
                assert result["signature_valid"] is False and result["reason"], result
                assert result["key_known"] is None and result["signer_fingerprint"] is None, result
        tools = {t.name: t for t in (await client.list_tools()).tools}
    schema = tools["fortress_verify_signature"].output_schema
    assert schema is not None and {"type": "null"} in schema["properties"]["key_known"]["anyOf"]


async def test_bad_signature_by_the_server_key_names_that_key(connect: Connect, settings: Any) -> None:
    from chittyos.signing import open_signer

    server_key = open_signer(settings)
    try:
        signature = server_key.sign(b"exhibit A")
    finally:
        server_key.close()  # the running server shares this agent: it stays up
    async with connect() as client:
        armored = (await client.read_resource("chittyos://keys/openpgp")).contents[0].text
        for extra in ({}, {"public_key": armored}):
            result = payload(
                await client.call_tool(
                    "fortress_verify_signature", {"content": "exhibit B", "signature": signature, **extra}
                )
            )
            assert result["signature_valid"] is False and "does not match" in result["reason"], result
            assert result["key_known"] is True, result
            assert result["signer_fingerprint"] == server_key.fingerprint, result
