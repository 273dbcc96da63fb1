"""Signing and sealing: OpenPGP detached signatures (python-gnupg), AES-256-GCM envelopes at rest."""

from chittyos.signing.openpgp import (
    OpenPGPSigner,
    SignatureCheck,
    kill_agent,
    read_private_key_file,
    short_gnupghome,
    verify_detached,
)
from chittyos.signing.sealing import KeyRing, Sealer, key_id, load_or_create_key_file, parse_key
from chittyos.signing.setup import SealerSetup, open_sealer, open_signer

__all__ = [
    "KeyRing",
    "OpenPGPSigner",
    "Sealer",
    "SealerSetup",
    "SignatureCheck",
    "key_id",
    "kill_agent",
    "load_or_create_key_file",
    "open_sealer",
    "open_signer",
    "parse_key",
    "read_private_key_file",
    "short_gnupghome",
    "verify_detached",
]
