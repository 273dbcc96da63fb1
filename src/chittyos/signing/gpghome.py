"""One gpg home shared by many processes: who writes it, who stops its agent, what a failure means.

Every ``chittyos`` process on one data directory (a server, ``chittyos exec``, several stdio
servers) uses the same GNUPGHOME, keyring and gpg-agent. The rules that keep them from breaking
each other (issue 5):

1. Setup lock, ``<home>/.chitty-keygen.lock`` (``flock`` exclusive): whatever writes the keyring
   at start (creating the first key, importing ``PGP_PRIVATE_KEY``) runs under it, so N processes
   starting on an empty data directory create exactly one key. Readers that find a key do not
   take it.
2. Agent hold, ``<home>/.chitty-agent.lock`` (``flock`` shared): every open signer holds it until
   it is closed. Closing stops the agent only when it can take the lock exclusively at once, that
   is when no signer in any process still uses the home, and it stops the agent while holding
   it, so a process starting meanwhile waits and then finds no agent instead of a dying one. The
   lock dies with its process, so a crashed process never pins anything.
3. ``run_sign`` runs one ``gpg --detach-sign`` with a timeout and reads gpg's status lines; a
   ``GpgFailure`` says what failed and whether it was transient (the connection to the agent
   broke or could not be made, the agent ran out of memory): only those are worth a retry.

``kill_agent`` stops the agent unconditionally: for tests and homes known not to be shared.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from chittyos.errors import ConfigurationError
from chittyos.signing.keyfiles import create_secret_file

__all__ = [
    "AgentHold",
    "GpgFailure",
    "SignOutcome",
    "kill_agent",
    "run_sign",
    "setup_lock",
    "write_agent_conf",
]

GPG_TIMEOUT_S = 60.0
"""Seconds one gpg or gpgconf run we start ourselves may take before it is killed."""

SETUP_LOCK = ".chitty-keygen.lock"
AGENT_LOCK = ".chitty-agent.lock"
AGENT_CONF = "gpg-agent.conf"

# GnuPG 2.2.4 added auto-expand-secmem: "for an heavy loaded gpg-agent with many concurrent
# connections this option avoids sign or decrypt errors due to out of secure memory error returns"
# (gpg-agent(1)). The value is the size of each extra secure-memory area (rounded up to 32 KiB).
_AGENT_CONF_TEXT = (
    "# Written by chittyos on first start: many processes on one data directory sign through\n"
    "# this agent at once. Edit freely; chittyos never rewrites this file.\n"
    "auto-expand-secmem 0x10000\n"
)
_AUTO_EXPAND_SECMEM_SINCE = (2, 2, 4)

# gpg-error codes (low 16 bits of a gpg_error_t, libgpg-error's err-codes.h) that mean the
# connection to gpg-agent broke or could not be made, or the agent was short of memory: a new
# attempt a moment later talks to a live agent. Anything else (no secret key 17, no pinentry 85,
# expired key 153, ...) is a property of the key and fails at once.
_SYSTEM_ERROR = 1 << 15
TRANSIENT_CODES = frozenset(
    {
        62,  # GPG_ERR_TIMEOUT
        77,  # GPG_ERR_NO_AGENT
        259,  # GPG_ERR_ASS_CONNECT_FAILED
        270,  # GPG_ERR_ASS_READ_ERROR
        271,  # GPG_ERR_ASS_WRITE_ERROR
        16383,  # GPG_ERR_EOF: the agent closed the connection mid-request
        _SYSTEM_ERROR | 6,  # EAGAIN
        _SYSTEM_ERROR | 25,  # ECONNREFUSED
        _SYSTEM_ERROR | 26,  # ECONNRESET
        _SYSTEM_ERROR | 47,  # EINTR
        _SYSTEM_ERROR | 86,  # ENOMEM: out of secure memory in the agent
        _SYSTEM_ERROR | 109,  # EPIPE
    }
)



@dataclass(frozen=True)
class GpgFailure:
    """Why one gpg run made no signature.

    ``code``: the gpg-error code (low 16 bits) of gpg's FAILURE (or first ERROR) status line,
    ``None`` when gpg printed none (it could not even reach the agent). ``messages``: gpg's own
    "gpg: ..." lines, in order, without duplicates. ``exit``: gpg's exit status, ``None`` when it
    was killed for taking longer than ``GPG_TIMEOUT_S``.
    """

    code: int | None
    messages: tuple[str, ...]
    exit: int | None

    @property
    def transient(self) -> bool:
        """The agent connection failed: another attempt may well succeed."""
        if self.exit is None:
            return False  # a minute was not enough; a retry would only double the wait
        if self.code is not None:
            return self.code in TRANSIENT_CODES
        return any("agent" in message for message in self.messages)

    def describe(self) -> str:
        """One line: gpg's last message, the code, and what that kind of failure means."""
        if self.exit is None:
            return f"gpg did not finish within {GPG_TIMEOUT_S:.0f} s (killed)"
        said = self.messages[-1] if self.messages else f"gpg exited with status {self.exit} and no message"
        code = "" if self.code is None else f", gpg error code {self.code}"
        kind = "; the connection to gpg-agent failed" if self.transient else ""
        return f"{said}{code}{kind}"


@dataclass(frozen=True)
class SignOutcome:
    """One ``gpg --detach-sign`` run: the armored signature and who made it, or why not."""

    signature: str | None
    signed_by: str | None  # fingerprint from SIG_CREATED
    binary_detached: bool  # SIG_CREATED type "D" (detached) and class "00" (binary document)
    failure: GpgFailure | None


def run_sign(
    gpg_binary: str, home: Path, fingerprint: str, payload: bytes, options: list[str]
) -> SignOutcome:
    """Sign ``payload`` with ``fingerprint``'s key: detached, ASCII-armored, binary mode.

    Never raises for a gpg failure: the outcome carries it. Raises ``ConfigurationError`` only
    when ``gpg_binary`` cannot be run at all.
    """
    cmd = [gpg_binary, "--homedir", str(home), "--batch", "--no-tty", *options, "--status-fd", "2"]
    cmd += ["--armor", "--detach-sign", "--local-user", fingerprint]
    try:
        proc = subprocess.run(
            cmd, input=payload, capture_output=True, timeout=GPG_TIMEOUT_S, check=False, env=_gpg_env()
        )
    except subprocess.TimeoutExpired:
        return SignOutcome(None, None, False, GpgFailure(None, (), None))
    except OSError as exc:
        raise ConfigurationError(f"gpg: could not run {gpg_binary!r} to sign ({exc.strerror})") from None
    created: list[str] = []
    codes: list[int] = []
    messages: list[str] = []
    for line in proc.stderr.decode("utf-8", "replace").splitlines():
        parts = line.split()
        if parts[:2] == ["[GNUPG:]", "SIG_CREATED"] and len(parts) >= 8:
            created = parts[2:]
        elif parts[:2] == ["[GNUPG:]", "FAILURE"] and len(parts) >= 4 and parts[3].isdigit():
            codes.insert(0, int(parts[3]) & 0xFFFF)  # the overall verdict comes first
        elif parts[:2] == ["[GNUPG:]", "ERROR"] and len(parts) >= 4 and parts[3].isdigit():
            codes.append(int(parts[3]) & 0xFFFF)
        elif line.startswith("gpg: ") and line[5:] not in messages:
            messages.append(line[5:].strip()[:200])
    signature = proc.stdout.decode("ascii", "replace") if proc.returncode == 0 and created else None
    if signature is None or not signature.startswith("-----BEGIN PGP SIGNATURE-----"):
        failure = GpgFailure(codes[0] if codes else None, tuple(messages), proc.returncode)
        return SignOutcome(None, None, False, failure)
    return SignOutcome(signature, created[5], created[0] == "D" and created[3] == "00", None)


@contextlib.contextmanager
def setup_lock(home: Path) -> Iterator[None]:
    """Hold the home's setup lock (exclusive, blocking) for the body: rule 1."""
    with open(home / SETUP_LOCK, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


class AgentHold:
    """A claim on a home's gpg-agent by one open signer: rule 2.

    ``acquire`` blocks only while another process is stopping the agent. ``release`` is
    idempotent and never raises. A hold that is garbage-collected unreleased lets go of its
    lock silently and leaves the agent running.
    """

    def __init__(self, home: Path, fd: int) -> None:
        self._home = home
        self._close = weakref.finalize(self, os.close, fd)

    @classmethod
    def acquire(cls, home: Path) -> AgentHold:
        """Hold ``home``'s agent. Raises ``ConfigurationError`` naming CHITTY_DATA_DIR when the
        lock file cannot be opened."""
        try:
            fd = _open_lock(home / AGENT_LOCK)
        except OSError as exc:
            raise ConfigurationError(
                f"CHITTY_DATA_DIR: cannot open {home / AGENT_LOCK} ({exc.strerror})"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        except BaseException:
            os.close(fd)
            raise
        return cls(home, fd)

    def release(self, *, gpgconf_binary: str = "gpgconf") -> bool:
        """Drop the claim; stop the agent if nobody else holds one. True when it was stopped."""
        if not self._close.alive:
            return False
        self._close()  # closing our descriptor drops our shared lock
        try:
            fd = _open_lock(self._home / AGENT_LOCK)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # another signer (here or in another process) still uses the agent
        else:
            kill_agent(self._home, gpgconf_binary=gpgconf_binary)
            return True
        finally:
            os.close(fd)  # after the kill: a process starting meanwhile waits for it

    @property
    def held(self) -> bool:
        return self._close.alive


def _gpg_env() -> dict[str, str]:
    # gpg's own messages become the error text and are matched for "agent": keep them English.
    return {**os.environ, "LC_ALL": "C", "LANGUAGE": ""}


def _open_lock(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def write_agent_conf(home: Path, gpg_version: tuple[int, ...] | None) -> bool:
    """Create ``gpg-agent.conf`` with the options for many concurrent signers, once.

    Leaves an existing file alone, and writes nothing for a GnuPG older than 2.2.4 (which does
    not know the option). True when the file was created now. Never raises.
    """
    if gpg_version is None or tuple(gpg_version[:3]) < _AUTO_EXPAND_SECMEM_SINCE:
        return False
    path = home / AGENT_CONF
    if path.exists():
        return False
    try:
        return create_secret_file(path, _AGENT_CONF_TEXT.encode("ascii"))
    except OSError:
        return False  # an agent without the option still signs; nothing to stop for


def kill_agent(gnupghome: Path, *, gpgconf_binary: str = "gpgconf") -> None:
    """Stop every gpg daemon (agent, dirmngr, ...) serving ``gnupghome`` now; never raises.

    Unconditional: processes still signing with that home fail until the agent restarts. A
    signer stops its agent with ``OpenPGPSigner.close`` instead, which leaves a shared one alone.
    """
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            [gpgconf_binary, "--homedir", str(gnupghome), "--kill", "all"],
            capture_output=True,
            timeout=GPG_TIMEOUT_S,
            check=False,
        )
