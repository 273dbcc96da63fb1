"""The log key: created once in the data directory (0600), reloaded as is, refused when unsafe."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from chittyos.chain import NoteVerifier, load_or_create_log_key
from chittyos.chain.keys import LOG_KEY_FILE, LOG_VKEY_FILE
from chittyos.config import load_settings
from chittyos.errors import ConfigurationError


def test_first_start_creates_an_owner_only_key_and_publishes_the_verifier(tmp_path: Path) -> None:
    signer = load_or_create_log_key(tmp_path, "chitty.example/chain")
    key_file = tmp_path / LOG_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().strip() == signer.to_skey()
    assert signer.name == "chitty.example/chain"
    vkey = (tmp_path / LOG_VKEY_FILE).read_text().strip()
    assert NoteVerifier.from_vkey(vkey) == signer.verifier()
    assert "PRIVATE" not in vkey and signer.to_skey() not in repr(signer)


def test_the_key_is_reused_on_the_next_start(tmp_path: Path) -> None:
    first = load_or_create_log_key(tmp_path, "chitty.example/chain")
    again = load_or_create_log_key(tmp_path, "chitty.example/chain")
    assert again.to_skey() == first.to_skey()
    assert not list((tmp_path / LOG_KEY_FILE).parent.glob(".*tmp"))


def test_a_key_for_another_origin_is_refused_naming_the_setting(tmp_path: Path) -> None:
    load_or_create_log_key(tmp_path, "chitty.example/chain")
    with pytest.raises(ConfigurationError, match="CHITTY_LOG_ORIGIN"):
        load_or_create_log_key(tmp_path, "other.example/chain")


def test_a_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    load_or_create_log_key(tmp_path, "chitty.example/chain")
    os.chmod(tmp_path / LOG_KEY_FILE, 0o644)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        load_or_create_log_key(tmp_path, "chitty.example/chain")


def test_a_malformed_key_file_is_refused_without_echoing_it(tmp_path: Path) -> None:
    path = tmp_path / LOG_KEY_FILE
    path.parent.mkdir(parents=True)
    path.write_text("PRIVATE+KEY+chitty.example/chain+00000000+c2VjcmV0\n")
    os.chmod(path, 0o600)
    with pytest.raises(ConfigurationError, match="malformed") as info:
        load_or_create_log_key(tmp_path, "chitty.example/chain")
    assert "c2VjcmV0" not in str(info.value)


def test_origin_setting_has_a_default_and_refuses_what_a_key_name_cannot_hold(tmp_path: Path) -> None:
    assert load_settings(chitty_data_dir=tmp_path).chitty_log_origin == "chittyos.local/chain"
    for bad in ("has space", "a+b", "", "tab\there"):
        with pytest.raises(ConfigurationError, match="CHITTY_LOG_ORIGIN"):
            load_settings(chitty_data_dir=tmp_path, chitty_log_origin=bad)
