"""OpenPGP signatures made and checked by gpg: detached, ASCII-armored, over exact bytes.

Choosing the key, ``OpenPGPSigner.open(gnupghome=..., key_id=..., private_key_armored=...)``::

    1. private_key_armored (PGP_PRIVATE_KEY / PGP_PRIVATE_KEY_FILE) is imported; it must hold
       one secret key, or key_id must pick one of those it holds. Import, choice and self-test
       run under the setup lock, and when the key is refused (any of the errors here) every key
       and secret part this import added is deleted again: the keyring is as it was before, so
       a refused key never becomes the keyring's key for the next start. Keys that were in the
       keyring before the import are left alone.
    2. key_id (PGP_KEY_ID) picks a secret key in the keyring; none or several matches -> error
    3. neither: the keyring's only secret key; with none, an Ed25519 signing key without a
       passphrase is made now (under a lock, so two starts make one key) and reused next time
    4. a self-test signature proves that gpg can sign with the key without a passphrase

Many processes, one home (issue 5): an open signer holds the home's gpg-agent and ``close()``
stops the agent only when no other signer, in any process, still uses it; key creation and
import run under one setup lock (``gpghome`` has the rules). ``sign`` retries, a few times and
briefly, only failures that gpg reports as a broken or refused connection to the agent; any
other failure, and the last transient one, is a ``ConfigurationError`` carrying gpg's own
message and error code.

What ``verify`` calls valid: exactly one binary-mode (class 00) signature, by a key in the
keyring used, not expired or revoked, over exactly ``data``. The keyring used is the server's,
or, when ``public_key`` is given, a throwaway home holding only that key (the server keyring is
not read). Trust levels are not consulted (``--trust-model always``): a key in the keyring is
trusted, so put only keys you trust there. A failed check is a ``SignatureCheck`` with
``valid=False`` and a ``reason``, never an exception; ``InvalidInput`` is only for arguments of
the wrong type and a ``public_key`` that holds no public key (or holds a private one).

GNUPGHOME length: gpg-agent binds sockets such as ``<home>/S.gpg-agent.browser`` and a Unix
socket path is at most 107 bytes, so a deep data directory breaks signing with an obscure
agent error. ``short_gnupghome(data_dir)`` returns ``data_dir/gnupg`` when it is short enough;
otherwise ``/tmp/chitty-gpg-<first 16 hex of sha256(data_dir/gnupg)>``, a symlink (owned by
us, checked on every start) to ``data_dir/gnupg``. The keys stay in the data directory (a
cleared /tmp loses nothing; the link is remade), while gpg binds its sockets through the short
name. Either way the real home is mode 0700.

Secrets: private keys are imported by running gpg directly (python-gnupg logs the first bytes
of what it imports at DEBUG); neither a private key nor gpg's output about it reaches a log
or an error message.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import random
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import anyio.to_thread
import gnupg
import structlog

from chittyos.errors import ConfigurationError, InvalidInput
from chittyos.signing.gpghome import (
    GPG_TIMEOUT_S,
    AgentHold,
    GpgFailure,
    kill_agent,
    run_sign,
    setup_lock,
    write_agent_conf,
)
from chittyos.signing.keyfiles import make_private_dir, read_secret_file

__all__ = [
    "OpenPGPSigner",
    "SignatureCheck",
    "kill_agent",
    "read_private_key_file",
    "short_gnupghome",
    "verify_detached",
]

_SIGN_RETRY_PAUSES_S = (0.05, 0.2, 0.5, 1.0)
"""Pauses (each scaled by 0.5-1.5 at random) before the retries of a transient failure."""

log = structlog.get_logger("chittyos.signing")

DEFAULT_USER_ID = "ChittyOS signing key"
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes with the terminating NUL
_LONGEST_SOCKET = "/S.gpg-agent.browser"
# never prompt (a passphrase-protected key fails instead of hanging), never fetch keys, treat
# every key in the keyring as trusted (see the module docstring), and so never check or rebuild
# the trust database either (that would write it, under its lock, from a sign or a verify)
_COMMON_OPTIONS = [
    "--pinentry-mode",
    "error",
    "--trust-model",
    "always",
    "--no-auto-check-trustdb",
    "--no-auto-key-retrieve",
]
_SELF_TEST = b"chittyos openpgp self-test"
_GPG_TIMEOUT = GPG_TIMEOUT_S  # seconds; only for the subprocesses we run ourselves


@dataclass(frozen=True)
class SignatureCheck:
    """The outcome of checking one detached signature.

    ``fingerprint``: primary-key fingerprint of the key the signature names, set whenever
    ``key_known`` is True (for a bad signature it is the key that would have made it, not proof
    that it did; should gpg name a key that the keyring no longer lists, gpg's key id), ``None``
    for an unknown key or no signature. Only a ``valid`` result proves who signed.
    ``signed_at``: the signature's creation time, aware UTC, when gpg checked it with the key.
    ``key_known``: the key the signature names is in the keyring used (server or
    ``public_key``); ``None`` when there is no one signature to name a key (not a signature,
    not a detached one, several).
    ``reason``: why ``valid`` is False; ``None`` when valid.
    """

    valid: bool
    fingerprint: str | None
    signed_at: datetime | None
    key_known: bool | None
    reason: str | None


class OpenPGPSigner:
    """Signs with one secret key in a gpg home and verifies against that home or a given key.

    Build with ``open``; the constructor only wraps a home whose key is already chosen.
    """

    def __init__(self, *, gnupghome: Path, fingerprint: str, gpg_binary: str = "gpg") -> None:
        self._home = gnupghome
        self._gpg_binary = gpg_binary
        self._gpg = _new_gpg(gpg_binary, gnupghome, [])
        self._fingerprint = fingerprint
        self._signing_fingerprints = _key_fingerprints(self._gpg, fingerprint)
        self._key_variable = "PGP_KEY_ID"
        self._public_key: str | None = None
        self._hold: AgentHold | None = None

    @classmethod
    def open(
        cls,
        *,
        gnupghome: Path,
        key_id: str | None = None,
        private_key_armored: str | None = None,
        user_id: str = DEFAULT_USER_ID,
        gpg_binary: str = "gpg",
    ) -> OpenPGPSigner:
        """Choose (import, pick or create) the signing key in ``gnupghome`` and self-test it.

        Precondition: ``gnupghome`` is short (see ``short_gnupghome``); it is created 0700.
        The signer holds the home's gpg-agent until ``close``. Raises ``ConfigurationError``
        naming PGP_PRIVATE_KEY, PGP_KEY_ID or CHITTY_DATA_DIR.
        """
        _require_gpg(gpg_binary)
        make_private_dir(gnupghome, variable="CHITTY_DATA_DIR")
        _check_socket_room(gnupghome)
        hold = AgentHold.acquire(gnupghome)
        try:
            if private_key_armored is None:
                signer = cls._choose_key(gnupghome, key_id, user_id, gpg_binary)
                signer._hold = hold
                signer._self_test()
            else:
                signer = cls._import_key(gnupghome, key_id, private_key_armored, gpg_binary, hold)
        except BaseException:
            hold.release()
            raise
        return signer

    @classmethod
    def _import_key(
        cls, gnupghome: Path, key_id: str | None, armored_text: str, gpg_binary: str, hold: AgentHold
    ) -> OpenPGPSigner:
        """Import PGP_PRIVATE_KEY, choose its key and self-test it; on refusal, undo the import."""
        gpg = _new_gpg(gpg_binary, gnupghome, [])
        write_agent_conf(gnupghome, gpg.version)
        armored = _armored_private_key(armored_text)
        # N processes starting together import one after another. The choice and the self-test
        # run under the lock too, so that one process undoing its import never deletes a key
        # that another has just imported and is still testing.
        with setup_lock(gnupghome):
            status = _run_import(gpg_binary, gnupghome, armored, autostart=True)
            try:
                if not status.secret:
                    raise ConfigurationError(
                        f"PGP_PRIVATE_KEY: {_PRIVATE_KEY_RULE}; gpg imported "
                        f"{len(status.fingerprints)} public and 0 secret keys"
                    )
                if key_id is None:
                    if len(status.secret) != 1:
                        raise ConfigurationError(
                            f"PGP_KEY_ID: PGP_PRIVATE_KEY holds {len(status.secret)} secret keys; "
                            "set PGP_KEY_ID to the fingerprint of the one to sign with"
                        )
                    fingerprint = status.secret[0]
                else:
                    fingerprint = _find_secret_key(gpg, key_id, gnupghome)
                signer = cls(gnupghome=gnupghome, fingerprint=fingerprint, gpg_binary=gpg_binary)
                signer._key_variable = "PGP_PRIVATE_KEY"
                signer._hold = hold
                signer._self_test()
            except ConfigurationError as exc:
                undone = _undo_import(gpg_binary, gnupghome, status)
                raise ConfigurationError(f"{exc}; {undone}" if undone else str(exc)) from None
            except BaseException:
                _undo_import(gpg_binary, gnupghome, status)
                raise
        log.info("pgp_private_key_imported", fingerprints=list(status.secret), gnupghome=str(gnupghome))
        return signer

    @classmethod
    def _choose_key(cls, gnupghome: Path, key_id: str | None, user_id: str, gpg_binary: str) -> OpenPGPSigner:
        gpg = _new_gpg(gpg_binary, gnupghome, [])
        write_agent_conf(gnupghome, gpg.version)
        if key_id is not None:
            variable = "PGP_KEY_ID"
            fingerprint = _find_secret_key(gpg, key_id, gnupghome)
        else:
            variable = "CHITTY_DATA_DIR"
            fingerprint = _only_or_new_key(gpg, gnupghome, user_id)
        signer = cls(gnupghome=gnupghome, fingerprint=fingerprint, gpg_binary=gpg_binary)
        signer._key_variable = variable
        return signer

    def _self_test(self) -> None:
        variable, fingerprint = self._key_variable, self._fingerprint
        signature, problem = self._try_sign(_SELF_TEST)
        if signature is None:
            if variable == "PGP_PRIVATE_KEY":  # the key is not kept here: fix it where it came from
                remedy = f"`gpg --passwd {fingerprint}` in the keyring it came from, then export it again"
            else:
                remedy = f"`gpg --homedir {self._home} --passwd {fingerprint}`"
            raise ConfigurationError(
                f"{variable}: self-test: gpg cannot sign with key {fingerprint} ({problem}); the key "
                "must be able to sign, be unexpired and unrevoked, and have no passphrase "
                f"(remove one with {remedy})"
            )
        check = self.verify(_SELF_TEST, signature)
        if not check.valid:
            raise ConfigurationError(f"{variable}: self-test signature of key {fingerprint}: {check.reason}")

    @property
    def fingerprint(self) -> str:
        """Primary-key fingerprint (40 upper-case hex for v4 keys) of the signing key."""
        return self._fingerprint

    @property
    def gnupghome(self) -> Path:
        return self._home

    def export_public_key(self) -> str:
        """The signing key's public key, ASCII-armored, minimal (self-signatures only)."""
        if self._public_key is None:
            armored = self._gpg.export_keys(self._fingerprint, armor=True, minimal=True)
            if not armored.strip():
                raise ConfigurationError(
                    f"{self._key_variable}: gpg exported nothing for key {self._fingerprint}"
                )
            self._public_key = armored
        return self._public_key

    def sign(self, data: bytes) -> str:
        """A detached, ASCII-armored, binary-mode signature over ``data``.

        Raises ``InvalidInput`` when ``data`` is not bytes; ``ConfigurationError`` when gpg
        cannot sign with the key (deleted, expired, passphrase) or the agent stays unreachable
        after the retries; its message carries gpg's own words and error code.
        """
        signature, problem = self._try_sign(_as_bytes(data))
        if signature is None:
            raise ConfigurationError(
                f"{self._key_variable}: gpg could not sign with key {self._fingerprint} ({problem})"
            )
        return signature

    def _try_sign(self, payload: bytes) -> tuple[str | None, str]:
        """The signature, or None and why: gpg's reason, with the attempts when it retried."""
        # Retried: only a broken or refused connection to the agent (it was being stopped or
        # started by someone else, or ran short of memory); a key that cannot sign fails at once.
        attempt = 0
        while True:
            attempt += 1
            signature, failure, problem = self._sign_once(payload)
            if signature is not None:
                if attempt > 1:
                    log.info("pgp_sign_retried", attempts=attempt, fingerprint=self._fingerprint)
                return signature, ""
            if failure is None or not failure.transient or attempt > len(_SIGN_RETRY_PAUSES_S):
                return None, problem + (f"; {attempt} attempts" if attempt > 1 else "")
            # scaled at random so that processes failed by the same event do not retry in step
            time.sleep(_SIGN_RETRY_PAUSES_S[attempt - 1] * random.uniform(0.5, 1.5))

    def _sign_once(self, payload: bytes) -> tuple[str | None, GpgFailure | None, str]:
        outcome = run_sign(self._gpg_binary, self._home, self._fingerprint, payload, _COMMON_OPTIONS)
        if outcome.failure is not None:
            return None, outcome.failure, outcome.failure.describe()
        if not outcome.binary_detached:
            return None, None, "gpg made a signature that is not a detached binary-document one"
        if outcome.signed_by not in self._signing_fingerprints:
            # --local-user should make this impossible; a signature by another key is never returned.
            return None, None, f"gpg signed with key {outcome.signed_by} instead"
        return outcome.signature, None, ""

    def verify(self, data: bytes, signature: str, public_key: str | None = None) -> SignatureCheck:
        """Check a detached signature over ``data``.

        With ``public_key``: against that key only (a throwaway home, server keyring unread).
        Without: against the server keyring. Raises ``InvalidInput`` only for a ``data`` that is
        not bytes or a ``public_key`` that holds no public key.
        """
        if public_key is not None:
            return verify_detached(data, signature, public_key=public_key, gpg_binary=self._gpg_binary)
        return _verify_in(self._gpg, data, signature, where="this server's keyring")

    async def sign_async(self, data: bytes) -> str:
        """``sign`` in a worker thread, off the event loop."""
        return await anyio.to_thread.run_sync(self.sign, data)

    async def verify_async(
        self, data: bytes, signature: str, public_key: str | None = None
    ) -> SignatureCheck:
        """``verify`` in a worker thread, off the event loop."""
        return await anyio.to_thread.run_sync(functools.partial(self.verify, data, signature, public_key))

    def close(self) -> None:
        """Release this signer's hold on the home's gpg-agent; stop the agent when no other signer
        (in this process or another) still uses it. Idempotent; never raises. Signing after
        ``close`` still works (gpg restarts the agent) but no longer keeps it alive."""
        if self._hold is not None:
            hold, self._hold = self._hold, None
            hold.release()

    def __enter__(self) -> OpenPGPSigner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"OpenPGPSigner(fingerprint={self._fingerprint!r}, gnupghome={str(self._home)!r})"


def verify_detached(
    data: bytes, signature: str, *, public_key: str, gpg_binary: str = "gpg"
) -> SignatureCheck:
    """Check a detached signature over ``data`` against ``public_key`` and nothing else.

    The key is imported into a throwaway gpg home (gpg-agent is never started there) that is
    removed afterwards. Raises ``InvalidInput("public_key", ...)`` when it holds no public key,
    or holds a private key.
    """
    payload = _as_bytes(data)
    if not isinstance(public_key, str):
        raise InvalidInput(
            "public_key", "must be an ASCII-armored OpenPGP public key (str)", type(public_key).__name__
        )
    try:
        armored = public_key.encode("ascii")
    except UnicodeEncodeError:
        raise InvalidInput("public_key", "must be an ASCII-armored OpenPGP public key") from None
    home = Path(tempfile.mkdtemp(prefix="cgv", dir=_short_tmp()))
    try:
        status = _run_import(gpg_binary, home, armored, autostart=False)
        if status.secret_read:
            raise InvalidInput("public_key", "must be a public key, not a private key")
        if not status.fingerprints:
            raise InvalidInput("public_key", "must be an ASCII-armored OpenPGP public key")
        gpg = _new_gpg(gpg_binary, home, ["--no-autostart"])
        return _verify_in(gpg, payload, signature, where="the given public key")
    finally:
        shutil.rmtree(home, ignore_errors=True)


def short_gnupghome(data_dir: Path) -> Path:
    """A GNUPGHOME for ``data_dir`` whose agent sockets fit the 107-byte Unix socket limit.

    Returns ``data_dir/gnupg`` (created 0700) when short enough, else the stable link
    ``/tmp/chitty-gpg-<hash>`` to it (see the module docstring). Raises ``ConfigurationError``
    naming CHITTY_DATA_DIR when that link exists and is not ours or points elsewhere.
    """
    home = Path(os.path.abspath(data_dir)) / "gnupg"
    make_private_dir(home, variable="CHITTY_DATA_DIR")
    if _fits(home):
        return home
    digest = hashlib.sha256(os.fsencode(home)).hexdigest()[:16]
    link = Path(_short_tmp()) / f"chitty-gpg-{digest}"
    for _ in range(2):
        try:
            os.symlink(home, link, target_is_directory=True)
            return link
        except FileExistsError:
            pass
        try:
            st = os.lstat(link)
            target = os.readlink(link) if stat.S_ISLNK(st.st_mode) else None
        except FileNotFoundError:
            continue  # removed between the two calls: try once more
        if target == str(home) and st.st_uid == os.geteuid():
            return link
        raise ConfigurationError(
            f"CHITTY_DATA_DIR: {link} should be this user's symlink to {home} (the short "
            "GNUPGHOME for a long data directory) but is something else; remove it or choose "
            "a shorter CHITTY_DATA_DIR"
        )
    raise ConfigurationError(f"CHITTY_DATA_DIR: could not create the short GNUPGHOME link {link}")


def read_private_key_file(path: Path) -> str:
    """The armored private key in ``path`` (for PGP_PRIVATE_KEY_FILE).

    Group/other permissions are allowed (mounted secrets are often 0444). Raises
    ``ConfigurationError`` naming PGP_PRIVATE_KEY_FILE when missing or not text.
    """
    content = read_secret_file(path, variable="PGP_PRIVATE_KEY_FILE", private=False)
    if content is None:
        raise ConfigurationError(f"PGP_PRIVATE_KEY_FILE: {str(path)!r} does not exist")
    try:
        return content.decode("ascii")
    except UnicodeDecodeError:
        raise ConfigurationError(
            f"PGP_PRIVATE_KEY_FILE: {str(path)!r} is not ASCII-armored (gpg --export-secret-keys --armor)"
        ) from None


# --- verification -------------------------------------------------------------------------


class _RecordingVerify(gnupg.Verify):  # type: ignore[misc]
    """python-gnupg's Verify result, reduced to keeping every status line in order."""

    def __init__(self, gpg: gnupg.GPG) -> None:
        super().__init__(gpg)
        self.statuses: list[tuple[str, list[str]]] = []

    def handle_status(self, key: str, value: str) -> None:
        # We read the statuses ourselves; python-gnupg's parser also logs and can choke on
        # unusual lines, so it is not called.
        self.statuses.append((key, value.split()))


class _GPG(gnupg.GPG):  # type: ignore[misc]
    result_map: ClassVar[dict[str, type]] = {**gnupg.GPG.result_map, "verify": _RecordingVerify}

    def _handle_io(
        self, args: Any, fileobj_or_path: Any, result: Any, passphrase: Any = None, binary: bool = False
    ) -> Any:
        try:
            return super()._handle_io(args, fileobj_or_path, result, passphrase, binary)
        except BrokenPipeError:
            # gpg stopped reading the data (more than a pipe's 64 KiB) before its end: it had
            # decided without it (not a signature, a key it cannot use). python-gnupg raises the
            # writer's broken pipe after collecting every status line, which say why.
            if result.returncode is None:
                raise
            return result


def _verify_in(gpg: _GPG, data: bytes, signature: str, *, where: str) -> SignatureCheck:
    payload = _as_bytes(data)
    if not isinstance(signature, str):
        raise InvalidInput("signature", "must be an ASCII-armored signature (str)", type(signature).__name__)
    try:
        sig_bytes = signature.encode("ascii")
    except UnicodeEncodeError:
        return _invalid("not an ASCII-armored OpenPGP signature")
    fd, sig_path = tempfile.mkstemp(prefix="cgs", suffix=".asc")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(sig_bytes)
        result = gpg.verify_data(sig_path, payload)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sig_path)
    return _interpret(result.statuses, result.returncode, where, functools.partial(_primary_fingerprint, gpg))


def _primary_fingerprint(gpg: _GPG, key_id: str) -> str | None:
    """The primary-key fingerprint of the one key in ``gpg``'s keyring that ``key_id`` (a key
    id or fingerprint of it or of one of its subkeys) names; None when none or several do."""
    if not key_id or not all(c in "0123456789ABCDEFabcdef" for c in key_id):
        return None  # a status field, never a search pattern of another kind
    found = {str(key["fingerprint"]) for key in gpg.list_keys(secret=False, keys=[key_id])}
    return found.pop() if len(found) == 1 else None


def _interpret(
    statuses: list[tuple[str, list[str]]],
    returncode: int | None,
    where: str,
    resolve: Callable[[str], str | None],
) -> SignatureCheck:
    """Read gpg's status lines for one ``--verify`` (doc/DETAILS in GnuPG).

    ``resolve`` maps a key id or fingerprint gpg names to the primary-key fingerprint of that
    key in the keyring used, None when the keyring does not hold it.
    """
    keys = [key for key, _ in statuses]
    # 1. the input must be a detached signature: no literal data, at least one signature
    if "PLAINTEXT" in keys:
        return _invalid("not a detached signature (it carries its own signed data)")
    signatures = keys.count("NEWSIG")
    if signatures == 0:
        return _invalid("not an OpenPGP signature")
    if signatures > 1:
        return _invalid(f"expected one signature, found {signatures}")
    fields = {key: value for key, value in statuses}
    # 2. the key must be in the keyring used
    if "ERRSIG" in fields:
        err = fields["ERRSIG"]
        # ERRSIG <key id> ... <rc> <fingerprint, or "-" when the signature carries none>
        issuer = err[6] if len(err) > 6 and err[6] != "-" else err[0] if err else "?"
        if "NO_PUBKEY" in fields or (len(err) > 5 and err[5] == "9"):
            return _invalid(f"unknown key {issuer}: not in {where}", key_known=False)
        code = err[5] if len(err) > 5 else "?"
        # gpg reports some failures (an unsupported algorithm) before it looks for the key
        named = resolve(issuer) or (resolve(err[0]) if err and err[0] != issuer else None)
        return SignatureCheck(
            False,
            named,
            None,
            named is not None,
            f"signature by {issuer} could not be checked (gpg ERRSIG code {code})",
        )
    valid_sig = fields.get("VALIDSIG")
    fingerprint = signed_at = None
    if valid_sig:
        fingerprint = valid_sig[9] if len(valid_sig) > 9 else valid_sig[0]
        signed_at = _parse_timestamp(valid_sig[2]) if len(valid_sig) > 2 else None
    # 3. the math must hold and the key must be usable
    if "BADSIG" in fields:
        # gpg checked it with the key the signature names (BADSIG <long key id or fingerprint>)
        named = fields["BADSIG"][0] if fields["BADSIG"] else None
        return SignatureCheck(
            False,
            fingerprint or (named and (resolve(named) or named)),
            None,
            True,
            "signature does not match the data (data or signature changed)",
        )
    for key, reason in (
        ("REVKEYSIG", "signing key was revoked"),
        ("EXPKEYSIG", "signing key has expired"),
        ("EXPSIG", "signature has expired"),
    ):
        if key in fields:  # gpg found the key; VALIDSIG, when it came, names it already
            named = fields[key][0] if fields[key] else None
            return SignatureCheck(False, fingerprint or (named and resolve(named)), signed_at, True, reason)
    if "GOODSIG" not in fields or valid_sig is None:
        return _invalid(f"gpg did not report a good signature (statuses: {' '.join(keys)})")
    # 4. binary mode only: a text-mode signature still verifies after line endings change
    sig_class = valid_sig[8] if len(valid_sig) > 8 else "?"
    if sig_class != "00":
        return SignatureCheck(
            False,
            fingerprint,
            signed_at,
            True,
            f"signature class {sig_class} is not a binary-document signature (00)",
        )
    if returncode != 0:
        return SignatureCheck(False, fingerprint, signed_at, True, f"gpg exited with status {returncode}")
    return SignatureCheck(True, fingerprint, signed_at, True, None)


def _invalid(reason: str, *, key_known: bool | None = None) -> SignatureCheck:
    """No valid signature and no key to name: ``key_known`` None unless a key was looked for."""
    return SignatureCheck(valid=False, fingerprint=None, signed_at=None, key_known=key_known, reason=reason)


def _parse_timestamp(text: str) -> datetime | None:
    # gpg gives seconds since the epoch, or ISO 8601 basic ("20260101T120000") on request.
    with contextlib.suppress(ValueError, OverflowError):
        if "T" in text:
            return datetime.strptime(text, "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
        return datetime.fromtimestamp(int(text), tz=UTC)
    return None


# --- keys ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ImportStatus:
    fingerprints: tuple[str, ...]  # every primary key imported or already present
    secret: tuple[str, ...]  # those with a secret part
    secret_read: int
    new_public: tuple[str, ...] = ()  # keys that were not in the keyring before this import
    new_secret: tuple[str, ...] = ()  # keys whose secret part was not in the keyring before


def _run_import(gpg_binary: str, home: Path, armored: bytes, *, autostart: bool) -> _ImportStatus:
    """``gpg --import`` run by us, so that no library logs the key material."""
    cmd = [
        gpg_binary,
        "--homedir",
        str(home),
        "--batch",
        "--no-tty",
        "--pinentry-mode",
        "error",
        "--status-fd",
        "1",
    ]
    if not autostart:
        cmd.append("--no-autostart")
    try:
        proc = subprocess.run(
            [*cmd, "--import"], input=armored, capture_output=True, timeout=_GPG_TIMEOUT, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigurationError(
            f"gpg: could not run {gpg_binary!r} to import a key ({type(exc).__name__})"
        ) from None
    fingerprints: list[str] = []
    secret: list[str] = []
    new_public: list[str] = []
    new_secret: list[str] = []
    secret_read = 0
    for line in proc.stdout.decode("latin-1").splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[:2] == ["[GNUPG:]", "IMPORT_OK"] and parts[2].isdigit():
            # flags (doc/DETAILS): 1 new key, 16 the line is about a secret key; a secret key is
            # reported twice, its public part first ("1" or "0") and then its secret part ("17"
            # when that is new, "16" when it was there already)
            flags, fpr = int(parts[2]), parts[3]
            if fpr not in fingerprints:
                fingerprints.append(fpr)
            if flags & 16 and fpr not in secret:
                secret.append(fpr)
            if flags & 1:
                new = new_secret if flags & 16 else new_public
                if fpr not in new:
                    new.append(fpr)
        elif len(parts) >= 12 and parts[:2] == ["[GNUPG:]", "IMPORT_RES"] and parts[11].isdigit():
            secret_read = int(parts[11])
    return _ImportStatus(
        tuple(fingerprints), tuple(secret), secret_read, tuple(new_public), tuple(new_secret)
    )


_PRIVATE_KEY_RULE = "must be an ASCII-armored OpenPGP private key (gpg --export-secret-keys --armor)"


def _armored_private_key(armored_text: str) -> bytes:
    try:
        return armored_text.encode("ascii")
    except (UnicodeEncodeError, AttributeError):
        raise ConfigurationError(f"PGP_PRIVATE_KEY: {_PRIVATE_KEY_RULE}") from None


def _undo_import(gpg_binary: str, home: Path, status: _ImportStatus) -> str:
    """Delete what ``status``'s import added: new keys whole, new secret parts of old keys.

    What the import changed in keys that were there before (new user IDs, subkeys or
    signatures) stays. Returns a clause for the refusal's message, "" when gpg imported nothing:
    the keyring is unchanged, or which deletions failed and the commands to finish them by
    hand. Never raises; gpg's output is not shown (it is about a private key).
    """
    if not status.fingerprints:
        return ""
    if not status.new_public and not status.new_secret:
        return f"the keyring at {home} already held this key and keeps it"
    failed: list[str] = []
    for fpr in dict.fromkeys([*status.new_public, *status.new_secret]):
        if fpr in status.new_public and fpr in status.new_secret:
            what = "--delete-secret-and-public-keys"
        elif fpr in status.new_secret:
            what = "--delete-secret-keys"  # the public key was there before: it stays
        else:
            what = "--delete-keys"
        # --batch needs a fingerprint and --yes to delete a secret key; with --yes gpg asks the
        # agent to delete it without confirmation, and no passphrase is needed (GnuPG 2.1+)
        cmd = [gpg_binary, "--homedir", str(home), "--batch", "--no-tty", "--yes", "--pinentry-mode", "error"]
        try:
            proc = subprocess.run(
                [*cmd, what, fpr],
                capture_output=True,
                timeout=_GPG_TIMEOUT,
                check=False,
                stdin=subprocess.DEVNULL,
            )
            ok = proc.returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
        if not ok:
            failed.append(f"`gpg --homedir {home} --batch --yes {what} {fpr}`")
    if failed:
        log.warning("pgp_refused_key_not_removed", gnupghome=str(home), count=len(failed))
        return (
            f"gpg could not remove what this import added to the keyring at {home}; "
            f"remove it by hand: {' and '.join(failed)}"
        )
    log.info("pgp_refused_key_removed", gnupghome=str(home))
    return f"what this import added to the keyring at {home} was removed again"


def _find_secret_key(gpg: _GPG, key_id: str, home: Path) -> str:
    keys = _secret_keys(gpg, home, key_id) if key_id.strip() else []
    if not keys:
        raise ConfigurationError(
            f"PGP_KEY_ID: no secret key matching {key_id!r} in the keyring at {home}; "
            "import it (PGP_PRIVATE_KEY) or unset PGP_KEY_ID"
        )
    if len(keys) > 1:
        raise ConfigurationError(
            f"PGP_KEY_ID: {key_id!r} matches {len(keys)} secret keys ({', '.join(keys)}); use a fingerprint"
        )
    return keys[0]


def _only_or_new_key(gpg: _GPG, home: Path, user_id: str) -> str:
    # Most starts find the key and need no lock; the lock makes "look, then create" one step,
    # so N processes starting together on an empty home make exactly one key.
    keys = _secret_keys(gpg, home)
    if not keys:
        with setup_lock(home):
            keys = _secret_keys(gpg, home)
            if not keys:
                return _create_key(gpg, home, user_id)
    if len(keys) > 1:
        raise ConfigurationError(
            f"PGP_KEY_ID: the keyring at {home} holds {len(keys)} secret keys ({', '.join(keys)}); "
            "set PGP_KEY_ID to the one to sign with"
        )
    return keys[0]


def _create_key(gpg: _GPG, home: Path, user_id: str) -> str:
    params = (
        "Key-Type: EDDSA\nKey-Curve: ed25519\nKey-Usage: sign\n"
        f"Name-Real: {user_id}\nExpire-Date: 0\n%no-protection\n%commit\n"
    )
    result = gpg.gen_key(params)
    if not result.fingerprint:
        tail = (result.stderr or "").strip().splitlines()[-1:] or ["no output"]
        raise ConfigurationError(
            f"CHITTY_DATA_DIR: gpg could not create a signing key in {home}: {tail[0][:200]}"
        )
    log.info("pgp_signing_key_created", fingerprint=result.fingerprint, gnupghome=str(home))
    return str(result.fingerprint)


def _secret_keys(gpg: _GPG, home: Path, pattern: str | None = None) -> list[str]:
    """Primary fingerprints of the keyring's keys whose private part is in ``home``.

    Read from the public keyring and ``private-keys-v1.d/<keygrip>.key`` (where gpg-agent keeps
    private keys, gpg-agent(1)), not from ``gpg --list-secret-keys``: that asks the agent, and
    when the connection to it breaks it lists no secret key and still exits 0, which would make
    a second key. Raises ``ConfigurationError`` when the keyring cannot be read.
    """
    listing = gpg.list_keys(secret=False, keys=[pattern] if pattern else None)
    if pattern is None and listing.returncode != 0:
        raise ConfigurationError(
            f"CHITTY_DATA_DIR: gpg could not list the keyring at {home} (gpg exit {listing.returncode})"
        )
    private = home / "private-keys-v1.d"
    found = []
    for key in listing:
        grips = [key.get("keygrip"), *(sub[3] for sub in key.get("subkeys", []) if len(sub) > 3)]
        if any(grip and (private / f"{grip}.key").is_file() for grip in grips):
            found.append(str(key["fingerprint"]))
    return found


def _key_fingerprints(gpg: _GPG, fingerprint: str) -> frozenset[str]:
    """The primary and subkey fingerprints of ``fingerprint``: what SIG_CREATED may name."""
    found = {fingerprint}
    for key in gpg.list_keys(secret=False, keys=[fingerprint]):
        found.add(key["fingerprint"])
        found.update(sub[2] for sub in key.get("subkeys", []) if sub[2])
    return frozenset(found)


# --- plumbing -----------------------------------------------------------------------------


def _new_gpg(gpg_binary: str, home: Path, options: list[str]) -> _GPG:
    try:
        return _GPG(gpgbinary=gpg_binary, gnupghome=str(home), options=[*_COMMON_OPTIONS, *options])
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"gpg: cannot use {gpg_binary!r} with home {home} ({exc})") from None


def _require_gpg(gpg_binary: str) -> None:
    if shutil.which(gpg_binary) is None:
        raise ConfigurationError(f"gpg: {gpg_binary!r} not found on PATH; install GnuPG 2.2 or later")


def _fits(home: Path) -> bool:
    return len(os.fsencode(home)) + len(_LONGEST_SOCKET) <= _SUN_PATH_MAX


def _check_socket_room(home: Path) -> None:
    if not _fits(home):
        raise ConfigurationError(
            f"CHITTY_DATA_DIR: GNUPGHOME {home} is {len(os.fsencode(home))} bytes; gpg-agent "
            f"sockets need it at most {_SUN_PATH_MAX - len(_LONGEST_SOCKET)} (use short_gnupghome)"
        )


def _short_tmp() -> str:
    return "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()


def _as_bytes(data: Any) -> bytes:
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    raise InvalidInput("data", "must be bytes (encode text first)", type(data).__name__)
