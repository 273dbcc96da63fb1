"""Open the signer and the sealer from ``Settings`` (blocking: call from a worker thread)."""

from __future__ import annotations

from dataclasses import dataclass

from chittyos.config import Settings
from chittyos.errors import ConfigurationError
from chittyos.signing.openpgp import OpenPGPSigner, read_private_key_file, short_gnupghome
from chittyos.signing.sealing import KeyRing, Sealer, load_or_create_key_file

__all__ = ["ENCRYPTION_KEY_FILE", "SealerSetup", "open_sealer", "open_signer"]

ENCRYPTION_KEY_FILE = "encryption.key"


def open_signer(settings: Settings) -> OpenPGPSigner:
    """The OpenPGP signer: ``PGP_PRIVATE_KEY`` / ``PGP_PRIVATE_KEY_FILE`` imported, ``PGP_KEY_ID``
    picked from the keyring, or (neither) an Ed25519 key created on first start in
    ``<data dir>/gnupg``. Raises ``ConfigurationError`` naming the variable."""
    armored: str | None = None
    if settings.pgp_private_key is not None:
        armored = settings.pgp_private_key.get_secret_value()
    elif settings.pgp_private_key_file is not None:
        if not settings.pgp_private_key_file.is_file():
            raise ConfigurationError(f"PGP_PRIVATE_KEY_FILE: no such file ({settings.pgp_private_key_file})")
        armored = read_private_key_file(settings.pgp_private_key_file)
    return OpenPGPSigner.open(
        gnupghome=short_gnupghome(settings.chitty_data_dir), key_id=settings.pgp_key_id, private_key_armored=armored
    )


@dataclass(frozen=True)
class SealerSetup:
    sealer: Sealer
    key_source: str
    """``CHITTY_ENCRYPTION_KEY`` or the key file's path."""
    created: bool
    """True when the key file was created just now."""


def open_sealer(settings: Settings) -> SealerSetup:
    """The AES-256-GCM sealer from ``CHITTY_ENCRYPTION_KEY`` or the data directory's key file."""
    if settings.chitty_encryption_key is not None:
        ring = KeyRing.from_text(settings.chitty_encryption_key.get_secret_value())
        return SealerSetup(sealer=Sealer(keyring=ring), key_source="CHITTY_ENCRYPTION_KEY", created=False)
    path = settings.chitty_data_dir / ENCRYPTION_KEY_FILE
    key, created = load_or_create_key_file(path)
    return SealerSetup(sealer=Sealer(keyring=KeyRing(active=key)), key_source=str(path), created=created)
