"""OpenPGP signing and verification against a real gpg (see conftest for the homes)."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import gnupg
import pytest

from chittyos.errors import ConfigurationError, InvalidInput
from chittyos.signing.openpgp import (
    OpenPGPSigner,
    SignatureCheck,
    kill_agent,
    read_private_key_file,
    short_gnupghome,
)

DATA = bytes(range(64)) + b"ChittyOS output\r\n\x00\xff"


def gpg(home: Path, *args: str, input: bytes = b"") -> bytes:
    """Run gpg by hand in ``home`` (for what the signer must never produce itself)."""
    proc = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--no-tty", *args],
        input=input,
        capture_output=True,
        check=True,
        timeout=60,
    )
    return proc.stdout


def secret_keys(home: Path) -> list[str]:
    return [k["fingerprint"] for k in gnupg.GPG(gnupghome=str(home)).list_keys(secret=True)]


# --- sign / verify ------------------------------------------------------------------------


def test_sign_then_verify_round_trip(signer: OpenPGPSigner) -> None:
    signature = signer.sign(DATA)
    check = signer.verify(DATA, signature)
    assert signature.startswith("-----BEGIN PGP SIGNATURE-----")
    assert check == SignatureCheck(True, signer.fingerprint, check.signed_at, True, None)
    assert check.signed_at is not None and check.signed_at.tzinfo is UTC
    assert abs(datetime.now(UTC) - check.signed_at) < timedelta(minutes=5)


def test_signer_key_is_ed25519_signing_only(signer: OpenPGPSigner) -> None:
    [key] = gnupg.GPG(gnupghome=str(signer.gnupghome)).list_keys(secret=True)
    assert key["curve"] == "ed25519" and set(key["cap"].lower()) == {"s", "c"}  # no encryption
    assert len(signer.fingerprint) == 40


def test_every_single_byte_change_of_the_data_is_rejected(signer: OpenPGPSigner) -> None:
    signature = signer.sign(DATA)
    variants = {
        f"flip byte {i}": DATA[:i] + bytes([DATA[i] ^ 0x01]) + DATA[i + 1 :] for i in range(len(DATA))
    }
    variants |= {
        "one byte appended": DATA + b"\x00",
        "last byte dropped": DATA[:-1],
        "empty": b"",
        "CRLF made LF": DATA.replace(b"\r\n", b"\n"),
    }
    accepted = [name for name, data in variants.items() if signer.verify(data, signature).valid]
    assert accepted == []
    check = signer.verify(DATA[:-1], signature)
    assert check.key_known and check.reason is not None and "does not match" in check.reason


@pytest.mark.parametrize(
    "garble",
    [
        lambda sig: "",
        lambda sig: "not a signature",
        lambda sig: sig[: len(sig) // 2],
        lambda sig: sig.replace("\n\n", "\n\nAAAA", 1),
        lambda sig: "-----BEGIN PGP SIGNATURE-----\n\nAAAAAAAAAAAAAAAA\n=AAAA\n-----END PGP SIGNATURE-----\n",
        lambda sig: sig + "é",
        lambda sig: sig.upper(),
    ],
    ids=["empty", "text", "half", "bytes inserted", "armored junk", "non-ascii", "upper-cased"],
)
def test_garbled_signature_is_invalid_with_a_reason(
    signer: OpenPGPSigner, garble: Callable[[str], str]
) -> None:
    check = signer.verify(DATA, garble(signer.sign(DATA)))
    assert not check.valid and check.reason and check.fingerprint is None


@pytest.mark.parametrize("signature", ["x", "garbage", "-----BEGIN PGP SIGNATURE-----\n\nAAAA\n-----END PGP SIGNATURE-----\n"])
@pytest.mark.parametrize("explicit_key", [False, True], ids=["keyring", "public_key"])
def test_a_garbled_signature_over_more_than_a_pipe_buffer_of_data_is_invalid_not_an_error(
    signer: OpenPGPSigner, signature: str, explicit_key: bool
) -> None:
    # gpg gives up before reading 70 KB from its stdin; python-gnupg raised the broken pipe.
    data = b"x" * 70_000
    key = signer.export_public_key() if explicit_key else None
    check = signer.verify(data, signature, key)
    assert (check.valid, check.reason) == (False, "not an OpenPGP signature")


def test_an_unknown_keys_signature_over_a_megabyte_is_reported_as_unknown(
    signer: OpenPGPSigner, other_signer: OpenPGPSigner
) -> None:
    data = bytes(range(256)) * 4096
    check = signer.verify(data, other_signer.sign(data))
    assert (check.valid, check.key_known) == (False, False)
    assert check.reason is not None and "unknown key" in check.reason


def test_public_key_block_is_not_a_signature(signer: OpenPGPSigner) -> None:
    check = signer.verify(DATA, signer.export_public_key())
    assert not check.valid and check.reason


def test_signature_from_a_key_not_in_the_keyring_is_reported_as_unknown(
    signer: OpenPGPSigner, other_signer: OpenPGPSigner
) -> None:
    check = signer.verify(DATA, other_signer.sign(DATA))
    assert (check.valid, check.key_known, check.fingerprint) == (False, False, None)
    assert check.reason is not None and "unknown key" in check.reason
    assert other_signer.fingerprint in check.reason


def test_verify_against_an_explicit_public_key(signer: OpenPGPSigner, other_signer: OpenPGPSigner) -> None:
    check = signer.verify(DATA, other_signer.sign(DATA), public_key=other_signer.export_public_key())
    assert (check.valid, check.fingerprint, check.key_known) == (True, other_signer.fingerprint, True)


def test_explicit_public_key_is_the_only_key_trusted(
    signer: OpenPGPSigner, other_signer: OpenPGPSigner
) -> None:
    # Signed by the server key, which the server keyring holds: still wrong for this public key.
    check = signer.verify(DATA, signer.sign(DATA), public_key=other_signer.export_public_key())
    assert (check.valid, check.key_known) == (False, False)
    assert (
        check.reason is not None and signer.fingerprint in check.reason and "given public key" in check.reason
    )


def test_explicit_public_key_with_changed_data_is_invalid(signer: OpenPGPSigner) -> None:
    check = signer.verify(DATA + b"!", signer.sign(DATA), public_key=signer.export_public_key())
    assert (check.valid, check.key_known) == (False, True)


@pytest.mark.parametrize("public_key", ["", "junk", "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n", "ключ"])
def test_public_key_that_is_no_key_is_invalid_input(signer: OpenPGPSigner, public_key: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        signer.verify(DATA, signer.sign(DATA), public_key=public_key)
    assert caught.value.field == "public_key"


def test_private_key_given_as_public_key_is_refused(other_signer: OpenPGPSigner) -> None:
    private = gpg(
        other_signer.gnupghome, "--armor", "--export-secret-keys", other_signer.fingerprint
    ).decode()
    with pytest.raises(InvalidInput) as caught:
        other_signer.verify(DATA, other_signer.sign(DATA), public_key=private)
    assert caught.value.field == "public_key" and "private" in caught.value.rule
    assert private.splitlines()[3] not in str(caught.value)


def test_data_must_be_bytes_and_signature_str(signer: OpenPGPSigner) -> None:
    with pytest.raises(InvalidInput) as caught:
        signer.sign("text")  # type: ignore[arg-type]
    assert caught.value.field == "data"
    with pytest.raises(InvalidInput) as caught:
        signer.verify(DATA, signer.sign(DATA).encode())  # type: ignore[arg-type]
    assert caught.value.field == "signature"


def test_inline_signed_message_is_not_a_detached_signature(signer: OpenPGPSigner) -> None:
    # A signed message carries its own data; gpg must not verify that and ignore ours.
    for mode in ("--sign", "--clearsign"):
        message = gpg(signer.gnupghome, "--armor", mode, input=b"other text").decode()
        check = signer.verify(DATA, message)
        assert not check.valid, mode


def test_text_mode_signature_is_refused(signer: OpenPGPSigner) -> None:
    # A text-mode signature survives line-ending changes; only binary mode binds the bytes.
    text = b"line one\r\nline two\r\n"
    signature = gpg(signer.gnupghome, "--armor", "--textmode", "--detach-sign", input=text).decode()
    for data in (text, text.replace(b"\r\n", b"\n")):
        check = signer.verify(data, signature)
        assert not check.valid and check.reason is not None and "class 01" in check.reason


def test_two_signatures_in_one_are_refused(
    make_home: Callable[[], Path], other_signer: OpenPGPSigner
) -> None:
    home = make_home()
    first = OpenPGPSigner.open(gnupghome=home)
    gpg(home, "--import", input=gpg(other_signer.gnupghome, "--armor", "--export-secret-keys"))
    signature = gpg(
        home, "--armor", "--detach-sign", "-u", first.fingerprint, "-u", other_signer.fingerprint, input=DATA
    ).decode()
    check = first.verify(DATA, signature)
    assert not check.valid and check.reason == "expected one signature, found 2"


def test_signature_by_a_revoked_key_is_invalid(make_home: Callable[[], Path]) -> None:
    home = make_home()
    signer = OpenPGPSigner.open(gnupghome=home)
    signature = signer.sign(DATA)
    certificate = (home / "openpgp-revocs.d" / f"{signer.fingerprint}.rev").read_text()
    gpg(home, "--import", input=certificate.replace(":-----BEGIN", "-----BEGIN").encode())
    check = signer.verify(DATA, signature)
    assert (check.valid, check.key_known, check.fingerprint) == (False, True, signer.fingerprint)
    assert check.reason == "signing key was revoked"


@pytest.mark.anyio
async def test_async_wrappers_run_concurrently(signer: OpenPGPSigner, other_signer: OpenPGPSigner) -> None:
    results: dict[int, SignatureCheck] = {}

    async def one(i: int) -> None:
        data = DATA + bytes([i])
        signature = await signer.sign_async(data)
        results[i] = await signer.verify_async(data, signature)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(one, i)
        foreign = await signer.verify_async(
            DATA, await other_signer.sign_async(DATA), other_signer.export_public_key()
        )
    assert all(check.valid for check in results.values()) and len(results) == 8
    assert foreign.valid


# --- keys ---------------------------------------------------------------------------------


def test_key_is_created_once_and_reused(make_home: Callable[[], Path]) -> None:
    home = make_home()
    first = OpenPGPSigner.open(gnupghome=home)
    second = OpenPGPSigner.open(gnupghome=home)
    assert first.fingerprint == second.fingerprint
    assert secret_keys(home) == [first.fingerprint]
    assert second.verify(DATA, first.sign(DATA)).valid


def test_home_is_created_private(gpg_root: Path) -> None:
    home = gpg_root / "made-by-open"
    try:
        OpenPGPSigner.open(gnupghome=home)
        assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    finally:
        kill_agent(home)


def test_missing_pgp_key_id_names_the_variable(make_home: Callable[[], Path]) -> None:
    with pytest.raises(ConfigurationError, match="PGP_KEY_ID") as caught:
        OpenPGPSigner.open(gnupghome=make_home(), key_id="0123456789ABCDEF0123456789ABCDEF01234567")
    assert "0123456789ABCDEF0123456789ABCDEF01234567" in str(caught.value)


def test_pgp_key_id_picks_one_of_several_keys(
    make_home: Callable[[], Path], other_signer: OpenPGPSigner
) -> None:
    home = make_home()
    own = OpenPGPSigner.open(gnupghome=home)
    gpg(home, "--import", input=gpg(other_signer.gnupghome, "--armor", "--export-secret-keys"))
    with pytest.raises(ConfigurationError, match="PGP_KEY_ID"):
        OpenPGPSigner.open(gnupghome=home)  # two secret keys and no choice
    picked = OpenPGPSigner.open(gnupghome=home, key_id=other_signer.fingerprint)
    assert picked.fingerprint == other_signer.fingerprint != own.fingerprint
    check = picked.verify(DATA, picked.sign(DATA), public_key=other_signer.export_public_key())
    assert check.valid


def test_armored_private_key_is_imported_and_never_logged(
    make_home: Callable[[], Path], other_signer: OpenPGPSigner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    private = gpg(
        other_signer.gnupghome, "--armor", "--export-secret-keys", other_signer.fingerprint
    ).decode()
    home = make_home()
    imported = OpenPGPSigner.open(gnupghome=home, private_key_armored=private)
    again = OpenPGPSigner.open(gnupghome=home, private_key_armored=private)  # every start imports
    assert imported.fingerprint == again.fingerprint == other_signer.fingerprint
    signature = imported.sign(DATA)
    assert other_signer.verify(DATA, signature).valid
    body = [line for line in private.splitlines()[2:-2] if len(line) > 20]
    assert body and not [line for line in body if line in caplog.text]


@pytest.mark.parametrize("text", ["garbage", "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nAAAA\n", "ключ"])
def test_unusable_private_key_names_the_variable_not_the_value(
    make_home: Callable[[], Path], text: str
) -> None:
    with pytest.raises(ConfigurationError, match="PGP_PRIVATE_KEY") as caught:
        OpenPGPSigner.open(gnupghome=make_home(), private_key_armored=text)
    assert text not in str(caught.value)


def test_public_key_given_as_private_key_is_refused(
    make_home: Callable[[], Path], signer: OpenPGPSigner
) -> None:
    with pytest.raises(ConfigurationError, match=r"PGP_PRIVATE_KEY.*0 secret keys"):
        OpenPGPSigner.open(gnupghome=make_home(), private_key_armored=signer.export_public_key())


def test_passphrase_protected_key_is_refused_without_showing_it(make_home: Callable[[], Path]) -> None:
    source, passphrase = make_home(), "correct horse battery staple"
    loopback = ["--pinentry-mode", "loopback", "--passphrase", passphrase]
    gpg(source, *loopback, "--quick-gen-key", "Protected", "ed25519", "sign", "never")
    private = gpg(source, *loopback, "--armor", "--export-secret-keys").decode()
    with pytest.raises(ConfigurationError, match="PGP_PRIVATE_KEY: self-test") as caught:
        OpenPGPSigner.open(gnupghome=make_home(), private_key_armored=private)
    assert passphrase not in str(caught.value) and private.splitlines()[3] not in str(caught.value)


def test_private_key_file_is_read_and_its_problems_named(gpg_root: Path, other_signer: OpenPGPSigner) -> None:
    path = gpg_root / "private.asc"
    path.write_bytes(gpg(other_signer.gnupghome, "--armor", "--export-secret-keys"))
    path.chmod(0o444)  # mounted secrets are often world-readable: allowed for this file
    assert read_private_key_file(path).startswith("-----BEGIN PGP PRIVATE KEY BLOCK-----")
    path.unlink()
    with pytest.raises(ConfigurationError, match=r"PGP_PRIVATE_KEY_FILE: .* does not exist"):
        read_private_key_file(path)
    path.write_bytes(b"\xff\xfe binary")
    with pytest.raises(ConfigurationError, match=r"PGP_PRIVATE_KEY_FILE: .* not ASCII-armored"):
        read_private_key_file(path)


def test_export_public_key_is_armored_and_public(signer: OpenPGPSigner) -> None:
    exported = signer.export_public_key()
    assert exported.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert "PRIVATE" not in exported


def test_agent_restarts_after_kill(make_home: Callable[[], Path]) -> None:
    signer = OpenPGPSigner.open(gnupghome=make_home())
    kill_agent(signer.gnupghome)
    assert signer.verify(DATA, signer.sign(DATA)).valid


def test_kill_agent_without_gpgconf_does_not_raise(make_home: Callable[[], Path]) -> None:
    kill_agent(make_home(), gpgconf_binary="/nonexistent/gpgconf")


# --- GNUPGHOME length ---------------------------------------------------------------------


def test_short_data_dir_keeps_its_gnupg_home(gpg_root: Path) -> None:
    data_dir = gpg_root / "short-data"
    home = short_gnupghome(data_dir)
    assert home == data_dir / "gnupg"
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700


def test_long_data_dir_gets_a_short_stable_home_that_signs(gpg_root: Path) -> None:
    data_dir = gpg_root / ("d" * 120) / "data"
    link = short_gnupghome(data_dir)
    try:
        assert str(link).startswith("/tmp/chitty-gpg-") and len(str(link)) < 40
        assert short_gnupghome(data_dir) == link
        assert link.resolve() == (data_dir / "gnupg").resolve()
        assert stat.S_IMODE(os.stat(link).st_mode) == 0o700
        signer = OpenPGPSigner.open(gnupghome=link)
        assert signer.verify(DATA, signer.sign(DATA)).valid
        # the key lives in the data dir (listing secret keys there would need an agent socket,
        # which is exactly what the long path cannot have)
        public = gnupg.GPG(gnupghome=str(data_dir / "gnupg")).list_keys()
        assert [k["fingerprint"] for k in public] == [signer.fingerprint]
        assert any((data_dir / "gnupg" / "private-keys-v1.d").iterdir())
        kill_agent(link)
        link.unlink()  # /tmp was cleared: the link comes back, the key is still there
        assert OpenPGPSigner.open(gnupghome=short_gnupghome(data_dir)).fingerprint == signer.fingerprint
    finally:
        kill_agent(link)
        link.unlink(missing_ok=True)


def test_short_home_refuses_a_foreign_path_in_its_place(gpg_root: Path) -> None:
    data_dir = gpg_root / ("e" * 120)
    link = short_gnupghome(data_dir)
    link.unlink()
    link.mkdir(mode=0o700)  # someone else's directory, or a stale one
    try:
        with pytest.raises(ConfigurationError, match="CHITTY_DATA_DIR"):
            short_gnupghome(data_dir)
    finally:
        shutil.rmtree(link)


def test_opening_a_home_too_long_for_agent_sockets_names_the_variable(gpg_root: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"CHITTY_DATA_DIR.*short_gnupghome"):
        OpenPGPSigner.open(gnupghome=gpg_root / ("f" * 100))


# --- a refused PGP_PRIVATE_KEY leaves the keyring as it was --------------------------------


def public_keys(home: Path) -> list[str]:
    return [k["fingerprint"] for k in gnupg.GPG(gnupghome=str(home)).list_keys()]


def protected_private_key(make_home: Callable[[], Path]) -> tuple[str, str, str]:
    """A passphrase-protected signing key made elsewhere: (armored private, public, fingerprint)."""
    source = make_home()
    loopback = ["--pinentry-mode", "loopback", "--passphrase", "correct horse battery staple"]
    gpg(source, *loopback, "--quick-gen-key", "Protected", "ed25519", "sign", "never")
    [fingerprint] = public_keys(source)
    private = gpg(source, *loopback, "--armor", "--export-secret-keys").decode()
    return private, gpg(source, "--armor", "--export").decode(), fingerprint


def test_refused_private_key_is_removed_again_and_the_home_still_opens(make_home: Callable[[], Path]) -> None:
    private, _, fingerprint = protected_private_key(make_home)
    home = make_home()
    with pytest.raises(ConfigurationError, match="PGP_PRIVATE_KEY: self-test") as caught:
        OpenPGPSigner.open(gnupghome=home, private_key_armored=private)
    assert fingerprint in str(caught.value) and f"--homedir {home} --passwd" not in str(caught.value)
    assert (public_keys(home), secret_keys(home)) == ([], [])
    assert not list((home / "private-keys-v1.d").glob("*.key"))
    # the user's next start, without PGP_PRIVATE_KEY, is not blocked by the refused key
    own = OpenPGPSigner.open(gnupghome=home)
    assert own.fingerprint != fingerprint and own.verify(DATA, own.sign(DATA)).valid


def test_refused_private_key_file_is_removed_again(gpg_root: Path, make_home: Callable[[], Path]) -> None:
    from chittyos.config import load_settings
    from chittyos.signing import open_signer

    private, _, fingerprint = protected_private_key(make_home)
    path = gpg_root / "protected.asc"
    path.write_text(private)
    data_dir = gpg_root / "dk"
    try:
        with pytest.raises(ConfigurationError, match="self-test"):
            open_signer(load_settings(chitty_data_dir=data_dir, pgp_private_key_file=path))
        assert (public_keys(data_dir / "gnupg"), secret_keys(data_dir / "gnupg")) == ([], [])
        with open_signer(load_settings(chitty_data_dir=data_dir)) as own:
            assert own.fingerprint != fingerprint and own.verify(DATA, own.sign(DATA)).valid
    finally:
        kill_agent(data_dir / "gnupg")


def test_refused_private_key_already_in_the_keyring_is_left_alone(make_home: Callable[[], Path]) -> None:
    private, public, fingerprint = protected_private_key(make_home)
    both, public_only = make_home(), make_home()
    gpg(both, "--import", input=private.encode())
    gpg(public_only, "--import", input=public.encode())
    for home in (both, public_only):
        with pytest.raises(ConfigurationError, match="PGP_PRIVATE_KEY: self-test"):
            OpenPGPSigner.open(gnupghome=home, private_key_armored=private)
    assert (public_keys(both), secret_keys(both)) == ([fingerprint], [fingerprint])
    # only the secret part was new there: only it goes
    assert (public_keys(public_only), secret_keys(public_only)) == ([fingerprint], [])


def test_every_refusal_after_import_removes_what_it_imported(
    make_home: Callable[[], Path], signer: OpenPGPSigner, other_signer: OpenPGPSigner
) -> None:
    two = gpg(signer.gnupghome, "--armor", "--export-secret-keys").decode()
    two += gpg(other_signer.gnupghome, "--armor", "--export-secret-keys").decode()
    one = gpg(other_signer.gnupghome, "--armor", "--export-secret-keys").decode()
    cases = [
        ({"private_key_armored": signer.export_public_key()}, r"PGP_PRIVATE_KEY.*0 secret keys"),
        ({"private_key_armored": two}, r"PGP_KEY_ID: PGP_PRIVATE_KEY holds 2 secret keys"),
        ({"private_key_armored": one, "key_id": "0123456789ABCDEF"}, r"PGP_KEY_ID: no secret key"),
    ]
    for kwargs, message in cases:
        home = make_home()
        with pytest.raises(ConfigurationError, match=message):
            OpenPGPSigner.open(gnupghome=home, **kwargs)  # type: ignore[arg-type]
        assert (public_keys(home), secret_keys(home)) == ([], []), message


# --- what a failed check names -----------------------------------------------------------


def test_input_that_is_not_one_signature_has_no_signer_to_know(signer: OpenPGPSigner) -> None:
    inline = gpg(signer.gnupghome, "--armor", "--sign", input=DATA).decode()
    for text in ("not a signature", "é", signer.export_public_key(), inline):
        public_key = signer.export_public_key()
        for check in (signer.verify(DATA, text), signer.verify(DATA, text, public_key=public_key)):
            assert (check.valid, check.fingerprint, check.key_known) == (False, None, None), text
            assert check.reason


def test_bad_signature_by_a_known_key_names_that_key(signer: OpenPGPSigner) -> None:
    signature = signer.sign(DATA)
    for check in (
        signer.verify(DATA[:-1], signature),
        signer.verify(DATA[:-1], signature, public_key=signer.export_public_key()),
    ):
        assert (check.valid, check.fingerprint, check.key_known) == (False, signer.fingerprint, True)
        assert check.reason is not None and "does not match" in check.reason


def test_bad_signature_by_a_signing_subkey_names_the_primary_key(make_home: Callable[[], Path]) -> None:
    home = make_home()
    signer = OpenPGPSigner.open(gnupghome=home)
    no_passphrase = ["--pinentry-mode", "loopback", "--passphrase", ""]
    gpg(home, *no_passphrase, "--quick-add-key", signer.fingerprint, "ed25519", "sign", "never")
    [key] = gnupg.GPG(gnupghome=str(home)).list_keys(keys=[signer.fingerprint])
    subkey = key["subkeys"][-1][2]
    signature = gpg(home, "--armor", "--detach-sign", "-u", f"{subkey}!", input=DATA).decode()
    good, bad = signer.verify(DATA, signature), signer.verify(DATA + b"!", signature)
    assert (good.valid, good.fingerprint, good.key_known) == (True, signer.fingerprint, True)
    assert (bad.valid, bad.fingerprint, bad.key_known) == (False, signer.fingerprint, True)


def test_signature_gpg_cannot_check_reports_whether_its_key_is_known(
    signer: OpenPGPSigner, other_signer: OpenPGPSigner
) -> None:
    raw = bytearray(gpg(signer.gnupghome, "--detach-sign", "-u", signer.fingerprint, input=DATA))
    assert raw[0] == 0x88 and raw[2] == 4  # old-format signature packet, 1-byte length, v4
    raw[4] = 99  # public-key algorithm 99: gpg reports ERRSIG, code 4, whether it has the key or not
    armored = gpg(signer.gnupghome, "--enarmor", input=bytes(raw)).decode()
    armored = armored.replace("ARMORED FILE", "SIGNATURE")
    armored = "\n".join(line for line in armored.splitlines() if not line.startswith("Comment:")) + "\n"
    known = signer.verify(DATA, armored)
    assert (known.valid, known.fingerprint, known.key_known) == (False, signer.fingerprint, True)
    assert known.reason is not None and "could not be checked" in known.reason
    unknown = signer.verify(DATA, armored, public_key=other_signer.export_public_key())
    assert (unknown.valid, unknown.fingerprint, unknown.key_known) == (False, None, False)
