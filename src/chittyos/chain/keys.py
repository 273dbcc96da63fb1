"""The log's Ed25519 checkpoint key, kept in the data directory.

``load_or_create_log_key(data_dir, origin)`` reads ``<data_dir>/chain/log.key`` (the signer key
text, mode 0600) or creates it on first start, and writes the public verifier key beside it
(``log.vkey``) for whoever checks proofs offline. The key is named after the log's origin, as
C2SP checkpoints expect. Blocking file I/O: call it from a worker thread in async code.

Errors: ``ConfigurationError`` when the key file is unreadable, readable by others, malformed, or
names another origin (the message says which file; never the key).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from chittyos.chain.note import NoteSigner
from chittyos.errors import ConfigurationError, InvalidInput

__all__ = ["LOG_KEY_FILE", "LOG_VKEY_FILE", "load_or_create_log_key"]

LOG_KEY_FILE = Path("chain") / "log.key"
LOG_VKEY_FILE = Path("chain") / "log.vkey"


def load_or_create_log_key(data_dir: Path, origin: str) -> NoteSigner:
    """The log signing key for ``origin``: read from the data directory, or created there (0600)."""
    path = data_dir / LOG_KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        try:
            signer = NoteSigner.generate(origin)
        except InvalidInput as exc:
            raise ConfigurationError(f"CHITTY_LOG_ORIGIN: not usable as a key name: {exc.rule}") from None
        _create_secret(path, signer.to_skey() + "\n")
    signer = _read(path, origin)
    vkey = data_dir / LOG_VKEY_FILE
    if not vkey.exists() or vkey.read_text(encoding="utf-8").strip() != signer.verifier().to_vkey():
        vkey.write_text(signer.verifier().to_vkey() + "\n", encoding="utf-8")
    return signer


def _create_secret(path: Path, text: str) -> None:
    """Create ``path`` holding ``text``, owner-only, all at once; a file created meanwhile wins.

    Written to a private temporary name first and then hard-linked into place, so a concurrent
    reader never sees a half-written key.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:  # another process created it first: use theirs
        pass
    finally:
        tmp.unlink()


def _read(path: Path, origin: str) -> NoteSigner:
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"chain log key {path}: cannot read ({type(exc).__name__})") from None
    if stat.S_IMODE(mode) & 0o077:
        raise ConfigurationError(f"chain log key {path}: must be readable by its owner only (chmod 600)")
    try:
        signer = NoteSigner.from_skey(text)
    except InvalidInput as exc:
        raise ConfigurationError(f"chain log key {path}: malformed ({exc.field}: {exc.rule})") from None
    if signer.name != origin:
        raise ConfigurationError(
            f"CHITTY_LOG_ORIGIN: the log key {path} belongs to origin {signer.name!r}, not {origin!r}; "
            "set CHITTY_LOG_ORIGIN to the log's origin"
        )
    return signer
