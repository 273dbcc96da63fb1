"""What the chittyos command says when the database or the port is not what it needs: one line
naming the problem and exit 2, never a traceback; and commands that only read never create or
migrate a database. A real subprocess, as tests/test_cli.py."""

from __future__ import annotations

import base64
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from chittyos.app import open_app
from chittyos.config import Settings
from chittyos.db import display_url, head_revision, upgrade
from chittyos.db.migrate import current_revision, sync_engine
from tests.conftest import create_database, drop_database
from tests.server.conftest import settings_env
from tests.test_cli import chittyos, one_line

READS = [
    ["chain", "verify", "--quiet"],
    ["chain", "proof", "ab" * 32],
    ["chain", "checkpoint"],
    ["budget", "show", "--user", "u"],
]


def sql(url: str, *statements: str) -> list[Any]:
    """Run ``statements`` on the database of ``url``; the rows of the last one (if any)."""
    engine = sync_engine(url, configure=False)
    try:
        with engine.begin() as conn:
            result = None
            for statement in statements:
                result = conn.execute(text(statement))
            return list(result) if result is not None and result.returns_rows else []
    finally:
        engine.dispose()


@pytest.fixture
def blank_url(database_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database with no schema: a new SQLite path (no file yet), or a new PostgreSQL database."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'blank.db'}"
        return
    server: str = request.getfixturevalue("postgres_server_url")
    name = f"chitty_blank_{uuid.uuid4().hex[:8]}"
    url = create_database(server, name)
    try:
        yield url
    finally:
        drop_database(server, name)


def _with_keys(make_settings: Any, url: str) -> dict[str, str]:
    settings: Settings = make_settings(chitty_database_url=url)
    env = settings_env(settings)
    done = chittyos("keys", "init", env=env)
    assert done.returncode == 0, done.stderr
    return env


# -- 1. commands that only read never create or migrate ---------------------------------------------


def test_read_only_commands_refuse_a_database_without_schema_and_create_none(
    make_settings: Any, blank_url: str
) -> None:
    """An empty SQLite file (or an empty PostgreSQL database) used to be migrated by `chain
    verify`, which then said "0 leaves ... OK"."""
    env = _with_keys(make_settings, blank_url)
    sqlite_file = Path(make_url(blank_url).database or "") if blank_url.startswith("sqlite") else None
    if sqlite_file is not None:
        sqlite_file.touch()
    for command in READS:
        line = one_line(chittyos(*command, env=env))
        assert line.startswith(f"chittyos: database at {display_url(blank_url)} has no ChittyOS schema, "), line
        assert f"this version needs {head_revision()}: run `chittyos db upgrade`" in line, line
    if sqlite_file is not None:
        assert sqlite_file.stat().st_size == 0
    assert current_revision(blank_url) is None


def test_read_only_commands_refuse_an_older_schema_instead_of_upgrading_it(
    make_settings: Any, blank_url: str
) -> None:
    env = _with_keys(make_settings, blank_url)
    upgrade(blank_url, "0003_chain")
    for command in READS:
        line = one_line(chittyos(*command, env=env))
        assert line.startswith(f"chittyos: database at {display_url(blank_url)} has schema revision 0003_chain, ")
        assert "run `chittyos db upgrade`" in line
    assert current_revision(blank_url) == "0003_chain"
    assert chittyos("db", "upgrade", env=env).returncode == 0
    done = chittyos("chain", "verify", "--quiet", env=env)
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stdout + done.stderr


# -- 2. chain verify reports a changed checkpoint --------------------------------------------------


def _log_with_a_checkpoint(settings: Settings) -> int:
    async def fill() -> int:
        async with open_app(settings) as app:
            for n in range(3):
                await app.chain.assert_fact(subject=f"contract:{n}", predicate="signed_by", object="acme", source="t")
            return (await app.chain.log.checkpoint()).tree_size

    return anyio.run(fill)


def test_a_checkpoint_whose_key_id_was_changed_is_reported_and_never_handed_out_again(
    settings: Settings,
) -> None:
    size = _log_with_a_checkpoint(settings)
    url = settings.database_url
    (note,) = sql(url, f"SELECT note FROM chitty_chain_checkpoints WHERE tree_size = {size}")[0]
    head, _, line = note.rstrip("\n").rpartition("\n")
    prefix, _, signature = line.rpartition(" ")
    raw = bytearray(base64.b64decode(signature))
    raw[0] ^= 0x01  # the first byte of the key hash: the note now names another key
    forged = f"{head}\n{prefix} {base64.b64encode(bytes(raw)).decode()}\n"
    sql(url, f"UPDATE chitty_chain_checkpoints SET note = '{forged}' WHERE tree_size = {size}")
    env = settings_env(settings)

    done = chittyos("chain", "verify", "--quiet", env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"MISMATCH checkpoint.signature [checkpoint at size {size}]" in done.stdout, done.stdout
    assert done.stdout.strip().endswith("FAILED")

    # This key signed the log's first checkpoint, so this is a changed row of its own log, not
    # another server's (whose keys the user was once told to copy): the server starts degraded
    # and says so, and no checkpoint is signed after the changed one.
    served = chittyos("serve", env=env, stdin="")
    assert served.returncode == 0, served.stderr
    assert f"the newest chain checkpoint (size {size}) does not verify with this server's log key" in served.stderr
    assert "signed the log's first checkpoint (size 0) (a changed checkpoint row)" in served.stderr
    refused = chittyos("chain", "checkpoint", env=env)  # the log did not grow: it would print that row
    assert refused.returncode == 1 and not refused.stdout, refused.stdout
    assert f"chain: checkpoint at size {size} does not verify" in refused.stderr, refused.stderr


# -- 3. one line, exit 2 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("port", "rule"), [("99999", "less than or equal to 65535"), ("0", "greater than or equal to 1")]
)
def test_serve_http_with_a_port_out_of_range_names_the_flag(settings: Settings, port: str, rule: str) -> None:
    line = one_line(chittyos("serve", "--http", "--port", port, env=settings_env(settings)))
    assert line == f"chittyos: --port: Input should be {rule} (got {port})"


def test_serve_http_on_a_port_in_use_says_so_in_one_line_before_touching_anything(settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line(chittyos("serve", "--http", "--port", str(port), env=settings_env(settings)))
    assert line == f"chittyos: cannot listen on 127.0.0.1:{port}: address already in use"
    assert list(settings.chitty_data_dir.iterdir()) == []  # no key made, no database opened


def test_a_dropped_table_is_one_line_naming_the_database_never_its_password(
    make_settings: Any, blank_url: str
) -> None:
    url = blank_url  # its own database: the session's PostgreSQL one is shared
    if not url.startswith("sqlite"):  # trust authentication: any password is accepted, and must not show
        url = make_url(url).set(password="s3cret-pw").render_as_string(hide_password=False)
    settings: Settings = make_settings(chitty_database_url=url)
    upgrade(url)

    async def facts() -> str:
        async with open_app(settings) as app:
            ids = [
                (await app.chain.assert_fact(subject=f"contract:{n}", predicate="signed_by", object="a", source="t"))[0]
                for n in range(8)
            ]
            await app.chain.log.checkpoint()
            return ids[0].fact_id  # its proof needs stored nodes

    fact_id = anyio.run(facts)
    sql(url, "DROP TABLE chitty_chain_nodes")
    env = settings_env(settings)
    for command in (["chain", "verify", "--quiet"], ["chain", "proof", fact_id]):
        done = chittyos(*command, env=env)
        line = one_line(done)
        assert line.startswith(f"chittyos: database error at {display_url(url)}: "), line
        assert "chitty_chain_nodes" in line and line.endswith("(run `chittyos db upgrade`?)"), line
        assert "s3cret-pw" not in done.stderr + done.stdout


SECRET = "qsecretpw"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://u@127.0.0.1:5432/db?password=qsecretpw",
            "postgresql://u@127.0.0.1:5432/db?password=***",
        ),
        (
            "postgresql://u@127.0.0.1:5432/db?user=u&password=qsecretpw&host=127.0.0.1",
            "postgresql://u@127.0.0.1:5432/db?host=127.0.0.1&password=***&user=u",
        ),
        (
            "postgresql://u@h/db?PassWord=qsecretpw&sslmode=require",
            "postgresql://u@h/db?PassWord=***&sslmode=require",
        ),
        ("postgresql://u@h/db?SSLPASSWORD=qsecretpw", "postgresql://u@h/db?SSLPASSWORD=***"),
        (
            "postgresql://u:qsecretpw@h/db?password=qsecretpw&password=qsecretpw%402&application_name=a+b",
            "postgresql://u:***@h/db?application_name=a+b&password=***&password=***",
        ),
        ("sqlite:////tmp/qsecretpw.db", "sqlite:////tmp/qsecretpw.db"),  # a path, not a password
    ],
)
def test_display_url_masks_the_password_in_the_query_string_too(url: str, shown: str) -> None:
    """`serve` logged database='postgresql://postgres:***@.../db?password=qsecretpw'."""
    assert display_url(url) == shown


def test_the_secrets_of_a_url_are_found_as_written_and_in_one_that_does_not_parse() -> None:
    from chittyos.db.engine import url_secrets
    from chittyos.errors import ConfigurationError

    found = url_secrets("postgresql://u:p%40ss@h/db?sslpassword=q%26s&x=1")
    assert found == ["p%40ss", "q%26s", "p@ss", "q&s"]  # longest first
    unparsable = f"postgresql://u:{SECRET}@h:notaport/db?password={SECRET}2"
    assert url_secrets(unparsable) == [f"{SECRET}2", SECRET]
    with pytest.raises(ConfigurationError) as raised:
        display_url(unparsable)
    assert SECRET not in str(raised.value)
    assert url_secrets("sqlite:////tmp/x.db") == url_secrets("postgresql://u@h/db?passfile=/p") == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the data dir only: no database reached
def test_a_password_in_the_query_string_never_shows_in_a_database_error(settings: Settings) -> None:
    """`chain verify` printed `database error at postgresql://u@127.0.0.1:5432/db?password=qsecretpw`."""
    assert chittyos("keys", "init", env=settings_env(settings)).returncode == 0
    nothing_listens = "postgresql://u@127.0.0.1:1/db"
    for url, shown in [
        (f"{nothing_listens}?password={SECRET}", f"{nothing_listens}?password=***"),
        (
            f"{nothing_listens}?user=u&password={SECRET}&host=127.0.0.1",
            f"{nothing_listens}?host=127.0.0.1&password=***&user=u",
        ),
        (f"{nothing_listens}?PassWord={SECRET}", f"{nothing_listens}?PassWord=***"),
        (f"{nothing_listens}?sslpassword={SECRET}%40x", f"{nothing_listens}?sslpassword=***"),
        (
            f"postgresql://u:{SECRET}@127.0.0.1:1/db?password={SECRET}",
            "postgresql://u:***@127.0.0.1:1/db?password=***",
        ),
    ]:
        env = settings_env(settings) | {"CHITTY_DATABASE_URL": url}
        commands = [["chain", "verify", "--quiet"]]
        if "host=" in url:
            commands += [["serve"], ["db", "upgrade"]]
        for command in commands:
            done = chittyos(*command, env=env, stdin="")
            line = one_line(done)
            assert line.startswith(f"chittyos: database error at {shown}: "), line
            assert SECRET not in done.stdout + done.stderr, line
    unparsable = f"postgresql://u:{SECRET}@127.0.0.1:port/db?password={SECRET}"
    env = settings_env(settings) | {"CHITTY_DATABASE_URL": unparsable}
    done = chittyos("chain", "verify", "--quiet", env=env)
    assert one_line(done) == (
        "chittyos: CHITTY_DATABASE_URL: not a database URL (expected postgresql://... or sqlite:///path)"
    )


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)  # libpq's query parameters
def test_a_password_in_the_query_string_is_masked_where_the_database_is_named(
    make_settings: Any, blank_url: str
) -> None:
    """`serve` logged `chittyos ready ... database='postgresql://postgres:***@.../db?password=qsecretpw'`
    (trust authentication: libpq sends the password, the server takes any)."""
    url = f"{blank_url}?password={SECRET}"
    shown = display_url(blank_url) + "?password=***"
    env = _with_keys(make_settings, url) | {"CHITTY_LOG_LEVEL": "INFO"}
    upgraded = chittyos("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.startswith(f"{shown} is at "), upgraded.stdout
    served = chittyos("serve", env=env, stdin="")  # stdio at end of input: starts, then stops
    assert "chittyos ready" in served.stderr and shown in served.stderr, served.stderr
    sql(url, "DROP TABLE chitty_chain_nodes")
    broken = chittyos("chain", "verify", "--quiet", env=env)
    assert one_line(broken).startswith(f"chittyos: database error at {shown}: ")
    for done in (upgraded, served, broken):
        assert SECRET not in done.stdout + done.stderr


def test_a_password_of_the_url_the_driver_quotes_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver's message is searched for every password of the URL: the userinfo one, a
    password query parameter's (as given and percent-decoded), and those of a URL that does not
    parse; before the message is cut to 300 characters, so that no part of one is left."""
    import sqlite3
    from types import SimpleNamespace

    from chittyos import cli

    for url in (
        f"postgresql://u:{SECRET}@h/db",
        f"postgresql://u@h/db?password={SECRET}",
        f"postgresql://u@h/db?Password={SECRET[:3]}%2F{SECRET[3:]}",
        f"postgresql://u@h:notaport/db?sslpassword={SECRET}",
    ):
        written = SECRET if "%2F" not in url else f"{SECRET[:3]}/{SECRET[3:]}"
        monkeypatch.setattr(cli, "_loaded", [SimpleNamespace(database_url=url)])
        said = cli._database_error(sqlite3.OperationalError(f'bad value "{written}" for the password'))
        assert said.endswith(': bad value "***" for the password'), said
        assert SECRET[3:] not in said, said
        cut = cli._database_error(sqlite3.OperationalError("x" * 296 + written))  # straddles character 300
        assert SECRET[:3] not in cut and cut.endswith("x***"), cut


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # a file only SQLite has
def test_a_file_that_is_not_a_database_is_named(settings: Settings) -> None:
    env = settings_env(settings)
    assert chittyos("keys", "init", env=env).returncode == 0
    path = Path(settings.database_url.removeprefix("sqlite:///"))
    path.write_text("junk\n")
    for command in (["chain", "verify", "--quiet"], ["serve"], ["db", "upgrade"]):
        line = one_line(chittyos(*command, env=env, stdin=""))
        assert line == f"chittyos: database error at sqlite:///{path}: file is not a database", line
    assert path.read_text() == "junk\n"


def test_a_schema_revision_from_a_newer_version_is_named_as_such(make_settings: Any, blank_url: str) -> None:
    settings: Settings = make_settings(chitty_database_url=blank_url)  # not the shared database
    env = settings_env(settings)
    assert chittyos("keys", "init", env=env).returncode == 0
    upgrade(settings.database_url)
    sql(settings.database_url, "UPDATE alembic_version SET version_num = '0003_x'")
    for command in (["chain", "verify", "--quiet"], ["serve"], ["db", "upgrade"], ["budget", "show", "--user", "u"]):
        line = one_line(chittyos(*command, env=env, stdin=""))
        assert line.startswith(
            f"chittyos: database at {display_url(settings.database_url)}: its schema revision 0003_x is unknown "
            "to this version of chittyos"
        ), line
        assert "written by a newer version?" in line
    assert current_revision(settings.database_url) == "0003_x"


# -- 4. the first message names every step -----------------------------------------------------------


def test_a_missing_data_dir_and_database_name_both_steps_and_following_them_is_enough(tmp_path: Path) -> None:
    import os

    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHITTY_", "OPENAI_", "PGP_"))}
    env |= {"CHITTY_DATA_DIR": str(data), "CHITTY_LOG_LEVEL": "WARNING"}
    line = one_line(chittyos("chain", "verify", "--quiet", env=env))
    assert line == (
        f"chittyos: CHITTY_DATA_DIR: the data directory {data} does not exist; run `chittyos keys init` and "
        "`chittyos db upgrade` first (or start the server once: `chittyos serve`)"
    )
    assert chittyos("keys", "init", env=env).returncode == 0
    assert chittyos("db", "upgrade", env=env).returncode == 0
    done = chittyos("chain", "verify", "--quiet", env=env)
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stderr
