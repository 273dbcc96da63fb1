"""Real gpg for the signing tests: one short gpg root per session, every agent killed after.

Homes live under ``/tmp/cgXXXXXXXX`` (not pytest's long tmp_path) so gpg-agent sockets fit.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chittyos.signing.openpgp import OpenPGPSigner, kill_agent


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def gpg_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="cg", dir="/tmp"))
    yield root
    for home in sorted(root.iterdir()):
        if home.is_dir():
            kill_agent(home)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def make_home(gpg_root: Path) -> Callable[[], Path]:
    """A new, empty gpg home under the session root (its agent is killed at session end)."""
    counter = itertools.count()

    def make() -> Path:
        home = gpg_root / f"h{next(counter)}"
        home.mkdir(mode=0o700)
        return home

    return make


@pytest.fixture(scope="session")
def signer(make_home: Callable[[], Path]) -> OpenPGPSigner:
    """The server's signer: its own generated key in its own keyring."""
    return OpenPGPSigner.open(gnupghome=make_home())


@pytest.fixture(scope="session")
def other_signer(make_home: Callable[[], Path]) -> OpenPGPSigner:
    """Someone else: a key the server keyring does not hold."""
    return OpenPGPSigner.open(gnupghome=make_home(), user_id="Someone else")
