"""Fortress tools of the seed: signature checks, the trust resources (public keys, checkpoint)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import ToolAnnotations
from pydantic import Field

from chittyos.app import App
from chittyos.errors import InvalidInput
from chittyos.server.errors import tool_errors

OPENPGP_KEY_URI = "chittyos://keys/openpgp"


@dataclass(frozen=True)
class SignatureVerification:
    """The result of checking one detached OpenPGP signature. Times are aware UTC."""

    content_hash: str
    """Hex SHA-256 of the UTF-8 content."""
    signature_valid: bool
    signer_fingerprint: str | None
    """Primary-key fingerprint of the key the signature names, whenever key_known is true; it
    proves the signer only when signature_valid is true (a bad signature names a key it fails)."""
    signed_at: datetime | None
    key_known: bool | None
    """False when the signature names a key that was not offered (and so cannot be checked);
    None when the input is not one detached signature, so that no key is named."""
    checked_against: str
    """``server key`` or ``given public key``."""
    verified_at: datetime
    reason: str | None
    """Why the signature is not valid; None when it is."""


def register(mcp: MCPServer[App], app: App) -> None:
    @mcp.tool(annotations=ToolAnnotations(title="Verify an OpenPGP signature", read_only_hint=True))
    async def fortress_verify_signature(
        content: Annotated[str, Field(description="The signed text; its UTF-8 bytes are checked.")],
        signature: Annotated[str, Field(description="An ASCII-armored detached OpenPGP signature.")],
        ctx: Context[App],
        public_key: Annotated[
            str | None, Field(description="An armored public key to check against; default: the server's.")
        ] = None,
    ) -> SignatureVerification:
        """Check an ASCII-armored detached OpenPGP signature over content (UTF-8 bytes).

        public_key (armored) checks against that key only; without it, the server's signing key.
        """
        app = ctx.request_context.lifespan_context
        with tool_errors():
            limit = app.settings.chitty_max_content_chars
            if len(content) > limit:
                raise InvalidInput("content", f"must be at most {limit} characters (CHITTY_MAX_CONTENT_CHARS)")
            if not signature.strip():
                raise InvalidInput("signature", "must be an ASCII-armored OpenPGP signature")
            data = content.encode("utf-8")
            check = await app.signer.verify_async(data, signature, public_key)
        return SignatureVerification(
            content_hash=hashlib.sha256(data).hexdigest(),
            signature_valid=check.valid,
            signer_fingerprint=check.fingerprint,
            signed_at=check.signed_at,
            key_known=check.key_known,
            checked_against="given public key" if public_key else "server key",
            verified_at=datetime.now(UTC),
            reason=check.reason,
        )

    @mcp.resource(
        OPENPGP_KEY_URI,
        name="openpgp-public-key",
        title="OpenPGP public key of this server",
        description="Armored public key that checks every signature this server makes.",
        mime_type="application/pgp-keys",
    )
    async def openpgp_public_key() -> str:
        return await anyio.to_thread.run_sync(app.signer.export_public_key)
