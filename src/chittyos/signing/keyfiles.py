"""Files and directories that hold keys: made private, written once, read carefully.

``make_private_dir(path, *, variable)``
    ``mkdir -p``; the leaf is mode 0700. An existing leaf owned by us with group/other bits is
    tightened to 0700 (gpg warns about such homes); one owned by someone else is refused.
``create_secret_file(path, data) -> bool``
    Writes ``data`` to ``path`` with mode 0600, atomically and without clobbering: the bytes go to
    a temporary file opened with ``O_EXCL`` next to ``path``, are fsynced, then hard-linked into
    place. Returns False (and writes nothing) when ``path`` already exists, e.g. when another
    process won the race; readers never see a half-written file.
``read_secret_file(path, *, variable, private) -> bytes | None``
    ``None`` when the file does not exist. With ``private=True`` a file that grants any permission
    to group or others is refused, as ssh refuses such private keys.

Every error is a ``ConfigurationError`` naming ``variable`` and the path, never the file's content.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from chittyos.errors import ConfigurationError

__all__ = ["create_secret_file", "make_private_dir", "read_secret_file"]

_MAX_SECRET_FILE = 1 << 20  # a key file is a few hundred bytes; an armored private key a few KiB


def make_private_dir(path: Path, *, variable: str) -> Path:
    """Create ``path`` (and parents) with the leaf at mode 0700; return ``path``.

    Raises ``ConfigurationError`` naming ``variable`` when ``path`` is not a directory or is owned
    by another user.
    """
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.stat(path)
    except OSError as exc:
        raise ConfigurationError(
            f"{variable}: cannot create directory {str(path)!r} ({exc.strerror})"
        ) from exc
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigurationError(f"{variable}: {str(path)!r} exists and is not a directory")
    if st.st_uid != os.geteuid():
        raise ConfigurationError(
            f"{variable}: directory {str(path)!r} belongs to uid {st.st_uid}, not to this user "
            f"(uid {os.geteuid()}); keys must live in a directory only we can read"
        )
    if stat.S_IMODE(st.st_mode) != 0o700:
        # mkdir honours the umask, and an existing home may have been made by hand.
        os.chmod(path, 0o700)
    return path


def create_secret_file(path: Path, data: bytes) -> bool:
    """Write ``data`` to a new file ``path`` with mode 0600; False if ``path`` already exists.

    Raises ``OSError`` for I/O failures other than "already exists" (callers convert).
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            os.fchmod(fd, 0o600)  # mkstemp makes 0600 already; say it, do not rely on it
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # atomic and refuses to replace an existing file
        except FileExistsError:
            return False
        _fsync_dir(path.parent)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def read_secret_file(path: Path, *, variable: str, private: bool) -> bytes | None:
    """The bytes of ``path``, or ``None`` if it does not exist.

    ``private``: refuse a file that grants any permission to group or others.
    Raises ``ConfigurationError`` naming ``variable`` and ``path`` (never the content).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigurationError(f"{variable}: cannot read {str(path)!r} ({exc.strerror})") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigurationError(f"{variable}: {str(path)!r} is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if private and mode & 0o077:
            raise ConfigurationError(
                f"{variable}: key file {str(path)!r} is accessible by group or others "
                f"(mode {mode:04o}); run `chmod 600 {path}` or remove it"
            )
        if st.st_size > _MAX_SECRET_FILE:
            raise ConfigurationError(
                f"{variable}: {str(path)!r} is {st.st_size} bytes; a key file is at most "
                f"{_MAX_SECRET_FILE} bytes"
            )
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    # Makes the new directory entry durable; some filesystems cannot open directories.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
