"""The ``chittyos`` command: serve, db, exec, claude-config.

Thin: parse, call one service, shape the answer. A configuration error prints one line that
names the variable and exits 2; a failed execution prints its JSON and exits 1.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Annotated, Any

import anyio
import typer

from chittyos import __version__
from chittyos.config import Settings, load_settings
from chittyos.errors import ChittyError, ConfigurationError, IntegrityError, InvalidInput, ProofRejected
from chittyos.logs import configure_logging

app = typer.Typer(
    name="chittyos",
    help="ChittyOS: AI runs you can prove, contain and account for, as an MCP server.",
    no_args_is_help=True,
    add_completion=False,
    # Locals in tracebacks would print prompts and keys; main() turns the unexpected into one line.
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
keys_app = typer.Typer(help="Signing and encryption keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
chain_app = typer.Typer(help="ChittyChain: verify the log, prove a fact, sign a checkpoint.", no_args_is_help=True)
app.add_typer(chain_app, name="chain")
budget_app = typer.Typer(help="Spending limits per user (and model), in USD.", no_args_is_help=True)
app.add_typer(budget_app, name="budget")


_loaded: list[Settings] = []
"""The settings this command runs with, once loaded: ``main`` names their database in an error."""


def _settings(**overrides: Any) -> Settings:
    try:
        settings = load_settings(**overrides)
    except ConfigurationError as exc:
        typer.echo(f"chittyos: {exc}", err=True)
        raise typer.Exit(2) from None
    configure_logging(settings.chitty_log_level, json=settings.chitty_log_json)
    _loaded[:] = [settings]
    return settings


def _fail(exc: BaseException, code: int = 2) -> typer.Exit:
    typer.echo(f"chittyos: {exc}", err=True)
    return typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"chittyos {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """ChittyOS: AI runs you can prove, contain and account for, as an MCP server."""


@app.command()
def serve(
    http: Annotated[bool, typer.Option("--http", help="Serve Streamable HTTP on /mcp instead of stdio.")] = False,
    host: Annotated[str | None, typer.Option(help="Bind address (default CHITTY_HTTP_HOST, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default CHITTY_HTTP_PORT, 8765).")] = None,
) -> None:
    """Run the MCP server over stdio (Claude Desktop) or Streamable HTTP."""
    settings = _settings()
    try:
        if http:
            _serve_http(
                settings,
                host or settings.chitty_http_host,
                settings.chitty_http_port if port is None else _port(port),
            )
        else:
            anyio.run(_serve_stdio, settings)
    except ChittyError as exc:
        raise _fail(exc) from None


def _port(port: int) -> int:
    """``--port`` by the rule of CHITTY_HTTP_PORT; raises ``InvalidInput`` naming the flag."""
    from pydantic import TypeAdapter, ValidationError

    rule = TypeAdapter(Annotated[int, *Settings.model_fields["chitty_http_port"].metadata])
    try:
        return rule.validate_python(port)
    except ValidationError as exc:
        raise InvalidInput("--port", exc.errors()[0]["msg"], port) from None


def _listen(host: str, port: int) -> list[Any]:
    """Bind ``host:port`` as uvicorn (asyncio's ``create_server``) would, one socket per address
    it resolves to. Here, before any key or database is touched: a port in use is one line, not
    uvicorn's error and the traceback of the task group it ran in. Raises ``ConfigurationError``."""
    import socket

    bound: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _name, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            bound.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.set_inheritable(True)
    except OSError as exc:
        for sock in bound:
            sock.close()
        reason = exc.strerror or str(exc)
        reason = reason[:1].lower() + reason[1:]
        raise ConfigurationError(f"cannot listen on {host}:{port}: {reason}") from None
    return bound


async def _serve_stdio(settings: Settings) -> None:
    from chittyos.app import open_app
    from chittyos.server import build_server

    async with open_app(settings, background=True) as opened:
        await build_server(opened).run_stdio_async()


def _serve_http(settings: Settings, host: str, port: int) -> None:
    """Open the App here, then hand it to uvicorn: a start-up error (a schema behind, a foreign
    log key) is one line and exit 2, as for stdio, not a traceback from uvicorn's lifespan and
    exit 3.

    uvicorn re-raises the SIGTERM/SIGINT it shut down on once ``serve()`` returns, which would
    end the process before the App is closed (the gpg-agent stopped, the pool drained). So while
    it serves, those signals land in ``deferred``; after the App is closed a SIGTERM is raised
    again (exit status 143, as before) and a SIGINT ends in exit 0, as uvicorn.run did.
    """
    import signal

    from chittyos.server.http import check_bind

    check_bind(settings, host)  # before any key or database is touched
    sockets = _listen(host, port)
    deferred: list[int] = []
    try:
        anyio.run(_serve_http_async, settings, host, port, deferred, sockets)
    finally:
        for sock in sockets:
            sock.close()
    if signal.SIGTERM in deferred:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)


async def _serve_http_async(
    settings: Settings, host: str, port: int, deferred: list[int], sockets: list[Any]
) -> None:
    import signal

    import uvicorn

    from chittyos.app import open_app
    from chittyos.server.http import create_http_app

    async with open_app(settings, background=True) as opened:
        config = uvicorn.Config(
            create_http_app(settings, host=host, app=opened),
            host=host,
            port=port,
            log_level=settings.chitty_log_level.lower(),
            access_log=False,
            timeout_graceful_shutdown=settings.chitty_shutdown_grace_s,
        )
        server = uvicorn.Server(config)
        handled = (signal.SIGTERM, signal.SIGINT)
        previous = {sig: signal.signal(sig, lambda sig, _frame: deferred.append(sig)) for sig in handled}
        try:
            await server.serve(sockets)  # installs its own handlers; restores ours and re-raises on exit
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if not server.started:
        raise SystemExit(3)  # uvicorn said why (a port in use was refused before, by _listen)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Migrate the database to this version's schema."""
    from chittyos.db import display_url, head_revision, upgrade

    settings = _settings()
    settings.chitty_data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        upgrade(settings.database_url)
    except ChittyError as exc:
        raise _fail(exc) from None
    typer.echo(f"{display_url(settings.database_url)} is at {head_revision()}")


@app.command("exec")
def exec_(
    prompt: Annotated[str, typer.Argument(help="The prompt; '-' reads it from stdin.")],
    tier: Annotated[str, typer.Option("--tier", help="standard | fortress | verified")] = "standard",
    model: Annotated[str | None, typer.Option(help="Model (default CHITTY_DEFAULT_MODEL).")] = None,
    user: Annotated[str, typer.Option("--user", help="user_id recorded with the execution.")] = "cli",
    case_id: Annotated[str | None, typer.Option("--case-id")] = None,
    label: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Run one execution and print its JSON result."""
    from chittyos.execution import ExecutionFailedError, ExecutionRequest

    settings = _settings()
    text = sys.stdin.read() if prompt == "-" else prompt
    request = ExecutionRequest(
        prompt=text, user_id=user, security_level=tier, model=model, case_id=case_id, label=label
    )

    async def run() -> dict[str, Any]:
        from dataclasses import asdict

        from chittyos.app import open_app

        async with open_app(settings, serving=False) as opened:
            try:
                view = await opened.executions.execute(request)
            except ExecutionFailedError as exc:
                failed = await opened.executions.status(exc.execution_id)
                typer.echo(json.dumps(asdict(failed), indent=2, default=str))
                raise _fail(exc, 1) from None
            return asdict(view)

    try:
        result = anyio.run(run)
    except ChittyError as exc:
        raise _fail(exc) from None
    typer.echo(json.dumps(result, indent=2, default=str))


@app.command("claude-config")
def claude_config() -> None:
    """Print the Claude Desktop ``mcpServers`` snippet for this installation (absolute paths)."""
    executable = shutil.which("chittyos")
    if executable is None:
        candidate = Path(sys.executable).with_name("chittyos")
        executable = str(candidate) if candidate.exists() else None
    command = [str(Path(executable).resolve())] if executable else [str(Path(sys.executable).resolve()), "-m", "chittyos"]
    entry: dict[str, Any] = {"command": command[0], "args": [*command[1:], "serve"], "env": {}}
    settings = _settings()
    entry["env"]["CHITTY_DATA_DIR"] = str(settings.chitty_data_dir.resolve())
    if settings.openai_base_url:
        entry["env"]["OPENAI_BASE_URL"] = settings.openai_base_url
    if settings.openai_api_key is not None:
        entry["env"]["OPENAI_API_KEY"] = "<your OpenAI API key>"
    typer.echo(json.dumps({"mcpServers": {"chittyos": entry}}, indent=2))


@keys_app.command("init")
def keys_init() -> None:
    """Create (or load) the signing and encryption keys in the data directory; print what is in use.
    Refuses to create a log key for a database whose log another key signed (keys lost), and an
    encryption key that does not open what the database holds sealed."""
    from chittyos.app import check_sealing_keys_of_existing_database, log_signers_of_existing_database
    from chittyos.chain import load_or_create_log_key
    from chittyos.chain.keys import LOG_KEY_FILE
    from chittyos.db import display_url
    from chittyos.signing import open_sealer, open_signer

    settings = _settings()
    if not (settings.chitty_data_dir / LOG_KEY_FILE).exists():
        signers = log_signers_of_existing_database(settings)
        if signers:  # a new log key could never continue that log: the keys were lost
            raise _fail(
                ConfigurationError(
                    f"CHITTY_DATA_DIR: {settings.chitty_data_dir / LOG_KEY_FILE} does not exist, but the "
                    f"database at {display_url(settings.database_url)} holds a log signed by "
                    f"{', '.join(signers)}: a new key could not continue it. Restore the data "
                    "directory's chain/log.key (with gnupg/ and encryption.key) from a backup, or "
                    "point CHITTY_DATABASE_URL at another database"
                )
            ) from None
    settings.chitty_data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        signer = open_signer(settings)
        try:
            sealing = open_sealer(settings)
            check_sealing_keys_of_existing_database(settings, sealing)
            log_key = load_or_create_log_key(settings.chitty_data_dir, settings.chitty_log_origin)
        finally:
            signer.close()  # a server on this data directory keeps its agent
    except ChittyError as exc:
        raise _fail(exc) from None
    typer.echo(f"openpgp signing key   {signer.fingerprint}")
    typer.echo(f"chain verifier key    {log_key.verifier().to_vkey()}")
    created = " (created now: back it up)" if sealing.created else ""
    typer.echo(f"encryption key id     {sealing.sealer.keyring.active_key_id} from {sealing.key_source}{created}")


@keys_app.command("export")
def keys_export() -> None:
    """Print the OpenPGP public key (armored), for verifying signatures offline."""
    from chittyos.app import require_existing
    from chittyos.signing import open_signer

    settings = _settings()
    try:
        require_existing(settings, sealing=False, log_key=False, database=False)
        signer = open_signer(settings)
    except ChittyError as exc:
        raise _fail(exc) from None
    signer.close()  # a server on this data directory keeps its agent
    typer.echo(signer.export_public_key(), nl=False)


@keys_app.command("rotate-encryption")
def keys_rotate_encryption(
    batch_size: Annotated[int, typer.Option(min=1, max=100_000, help="Rows per committed batch.")] = 500,
) -> None:
    """Re-seal every sealed value under the first key of CHITTY_ENCRYPTION_KEY (resumable)."""
    from chittyos.app import open_app, sealed_columns
    from chittyos.signing.rotation import rotate_sealed_values

    settings = _settings()

    async def run() -> Any:
        async with open_app(settings, serving=False, create=False) as opened:
            return await rotate_sealed_values(
                uow=opened.uow, sealer=opened.sealer, sealed=sealed_columns(), batch_size=batch_size
            )

    try:
        report = anyio.run(run)
    except ConfigurationError as exc:
        raise _fail(exc) from None
    except ChittyError as exc:
        raise _fail(exc, 1) from None
    typer.echo(
        f"scanned {report.rows_scanned} rows, re-sealed {report.values_resealed} values "
        f"under key {report.active_key_id}"
    )


@budget_app.command("set")
def budget_set(
    user: Annotated[str, typer.Option("--user", help="The user_id the budget applies to.")],
    limit: Annotated[str, typer.Option("--limit", help="Limit in USD, e.g. 10 or 2.50.")],
    window: Annotated[str, typer.Option("--window", help="day | month | total (UTC day or month).")],
    model: Annotated[str | None, typer.Option("--model", help="Only this model (default: all).")] = None,
    soft: Annotated[str, typer.Option("--soft", help="Share of the limit from which calls warn.")] = "0.8",
) -> None:
    """Create or replace a budget; print it as JSON."""
    settings = _settings()

    async def run(opened: Any) -> Any:
        try:
            return await opened.budgets.set(
                user_id=user, limit_usd=limit, window=window, model=model, soft_limit_ratio=soft
            )
        except InvalidInput as exc:  # name the flag the user typed, not the service's argument
            flag = _BUDGET_FLAGS.get(exc.field)
            raise exc if flag is None else InvalidInput(flag, exc.rule, exc.got) from None

    typer.echo(json.dumps(_budget_json(_with_app(settings, run)), indent=2))


_BUDGET_FLAGS = {
    "user_id": "--user",
    "limit_usd": "--limit",
    "window": "--window",
    "model": "--model",
    "soft_limit_ratio": "--soft",
}


@budget_app.command("show")
def budget_show(
    user: Annotated[str, typer.Option("--user", help="The user_id whose budgets to show.")],
) -> None:
    """Print the user's budgets as they stand now (spent, held, remaining, resets_at) as JSON."""
    settings = _settings()

    async def run(opened: Any) -> Any:
        return await opened.budgets.show(user)

    typer.echo(json.dumps([_budget_json(v) for v in _with_app(settings, run, create=False)], indent=2))


@budget_app.command("remove")
def budget_remove(
    user: Annotated[str, typer.Option("--user", help="The user_id of the budget.")],
    model: Annotated[str | None, typer.Option("--model", help="The model budget (default: all).")] = None,
) -> None:
    """Delete a budget (and the holds of calls in flight on it)."""
    settings = _settings()

    async def run(opened: Any) -> None:
        await opened.budgets.remove(user_id=user, model=model)

    _with_app(settings, run, create=False)
    typer.echo(f"removed the budget of {user} for {model or 'all models'}")


def _with_app(
    settings: Settings, work: Any, *, create: bool = True, log_key_check: bool = True
) -> Any:
    """Open the app as a one-shot command, run ``work(app)``; a ChittyError prints one line and
    exits 1 when stored data failed a check (``IntegrityError``, ``ProofRejected``: the log's
    proof or checkpoint does not hold), else 2 (bad input, configuration). ``create=False``
    (commands that only read, or only change what exists) refuses a data directory no server
    made, and a database not at this version's schema, instead of creating or migrating
    anything. ``log_key_check=False``: see ``open_app``."""
    from chittyos.app import open_app

    async def run() -> Any:
        async with open_app(settings, serving=False, create=create, log_key_check=log_key_check) as opened:
            return await work(opened)

    try:
        return anyio.run(run)
    except (IntegrityError, ProofRejected) as exc:
        raise _fail(exc, 1) from None
    except ChittyError as exc:
        raise _fail(exc) from None


@chain_app.command("verify")
def chain_verify(
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    no_signatures: Annotated[
        bool, typer.Option("--no-signatures", help="Skip checking each signed fact's OpenPGP signature.")
    ] = False,
    no_cross_reference: Annotated[
        bool,
        typer.Option(
            "--no-cross-reference",
            help="Skip checking that each fact naming an execution names one that exists, at its tier.",
        ),
    ] = False,
) -> None:
    """Recompute the whole log from its facts (streaming), check every signed fact's OpenPGP
    signature and that every execution fact names an existing execution; exit 1 naming every
    mismatch."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    settings = _settings()
    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=quiet,
        transient=True,
    )

    async def run(opened: Any) -> Any:
        task = bar.add_task("verifying leaves", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        with bar:
            return await opened.chain.verify_log(
                progress, verify_signatures=not no_signatures, cross_reference=not no_cross_reference
            )

    # Opened whatever key signed the newest checkpoint: a changed one is a finding to report.
    report = _with_app(settings, run, create=False, log_key_check=False)
    # In leaf-index order (signatures are checked a few at a time, and finish in any order); the
    # findings without an index (nodes, checkpoints, the head) after them, in the order found.
    in_order = sorted(report.findings, key=lambda f: (f.leaf_index is None, f.leaf_index or 0))
    for finding in in_order:
        where = ", ".join(
            part
            for part in (
                f"index {finding.leaf_index}" if finding.leaf_index is not None else "",
                f"fact {finding.fact_id}" if finding.fact_id else "",
                f"node {finding.node}" if finding.node is not None else "",
                f"checkpoint at size {finding.tree_size}" if finding.tree_size is not None else "",
            )
            if part
        )
        typer.echo(f"MISMATCH {finding.check}{f' [{where}]' if where else ''}: {finding.message}")
    if report.findings_dropped:
        typer.echo(f"... and {report.findings_dropped} more mismatches")
    if report.counts:  # per code, the most frequent first; dropped ones included
        per_code = sorted(report.counts.items(), key=lambda item: (-item[1], item[0]))
        typer.echo("mismatches: " + ", ".join(f"{count} {check}" for check, count in per_code if count))
    if report.leaves_checked and not report.checkpoints_checked:
        # Consistent, but nothing signed commits to it: deleted checkpoints look just like this.
        typer.echo(
            f"WARNING: no signed checkpoint commits to these {report.leaves_checked} leaves (none was "
            "signed yet, or they were deleted); `chittyos chain checkpoint` signs one"
        )
    typer.echo(
        f"{report.origin}: {report.leaves_checked} leaves, {report.nodes_checked} stored nodes, "
        f"{report.checkpoints_checked} checkpoints"
        + ("" if report.signatures_checked is None else f", {report.signatures_checked} signatures")
        + f" checked in {report.seconds:.2f} s; root {report.root}; "
        + ("OK" if report.ok else "FAILED")
    )
    if not report.ok:
        raise typer.Exit(1)


@chain_app.command("proof")
def chain_proof(fact_id: Annotated[str, typer.Argument(help="The fact id (64 hex digits).")]) -> None:
    """Print the C2SP tlog-proof of one fact against the newest signed checkpoint."""
    settings = _settings()

    async def run(opened: Any) -> Any:
        return await opened.chain.log.inclusion_proof(fact_id)

    proof = _with_app(settings, run, create=False)
    typer.echo(proof.tlog_proof, nl=False)


@chain_app.command("checkpoint")
def chain_checkpoint() -> None:
    """Sign a checkpoint of the log now (if it grew) and print the signed note."""
    settings = _settings()

    async def run(opened: Any) -> Any:
        return await opened.chain.log.checkpoint()

    typer.echo(_with_app(settings, run, create=False).note, nl=False)


def _budget_json(view: Any) -> dict[str, Any]:
    """A BudgetView as the MCP tools show it: USD amounts as plain decimal strings, times as
    ISO 8601 UTC."""
    from pydantic import TypeAdapter

    return TypeAdapter(type(view)).dump_python(view, mode="json")


def _one_error(exc: BaseException) -> BaseException:
    """The error a task group failed with: a database error among its errors (the others, such
    as a reader's stream ending, follow from it), else the group's when all it holds are of one
    kind (two readers of a dropped table), else the group itself."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves: list[BaseException] = []

    def flatten(group: BaseExceptionGroup[BaseException]) -> None:
        for inner in group.exceptions:
            flatten(inner) if isinstance(inner, BaseExceptionGroup) else leaves.append(inner)

    flatten(exc)
    database = [leaf for leaf in leaves if _is_database_error(leaf)]
    if database:
        return database[0]
    return leaves[0] if leaves and len({type(leaf) for leaf in leaves}) == 1 else exc


def _is_database_error(exc: BaseException) -> bool:
    """SQLAlchemy's, or a driver's own (the chain's page readers use the driver directly)."""
    import sqlite3

    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, (DBAPIError, sqlite3.Error)):
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover - a dependency
        return False
    return isinstance(exc, psycopg.Error)


_SCHEMA_MISSING = ("no such table", "no such column", 'relation "', 'column "')
"""How SQLite and PostgreSQL say a table or column is missing (not a database: upgrade cannot make one)."""


def _database_error(exc: Exception) -> str:
    """One line naming the database (passwords masked: the userinfo one and any password query
    parameter) and what its driver said, with those passwords replaced there too."""
    from chittyos.db import display_url
    from chittyos.db.engine import url_secrets

    said = str(getattr(exc, "orig", None) or exc).strip()
    where = ""
    if _loaded:
        url = _loaded[0].database_url
        try:
            where = f" at {display_url(url)}"
        except Exception:  # an unparsable URL: name none
            where = ""
        for secret in url_secrets(url):  # longest first; found in a URL that does not parse too
            said = said.replace(secret, "***")
    said = (said.splitlines() or [type(exc).__name__])[0][:300]
    missing = any(words in said for words in _SCHEMA_MISSING) and ("does not exist" in said or "no such" in said)
    hint = " (run `chittyos db upgrade`?)" if missing else ""
    return f"chittyos: database error{where}: {said}{hint}"


def main() -> None:
    """The console script. A database error ends in one line naming the database and exit 2;
    anything else unexpected (a full disk) in one line on stderr and exit 1; the traceback only
    with CHITTY_LOG_LEVEL=DEBUG. A task group's errors of one kind count as that error."""
    import logging
    import os

    from click.exceptions import Exit

    try:
        app()
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as raised:
        exc = _one_error(raised)
        if isinstance(exc, (SystemExit, KeyboardInterrupt)):
            raise exc from None
        if isinstance(exc, Exit):
            raise SystemExit(exc.exit_code) from None
        if not isinstance(exc, Exception):
            raise
        if os.environ.get("CHITTY_LOG_LEVEL", "").upper() == "DEBUG":
            logging.getLogger("chittyos").exception("unexpected failure", exc_info=raised)
        if isinstance(exc, ChittyError):
            typer.echo(f"chittyos: {exc}", err=True)
            raise SystemExit(2) from None
        if _is_database_error(exc):
            typer.echo(_database_error(exc), err=True)
            raise SystemExit(2) from None
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        typer.echo(f"chittyos: {type(exc).__name__}: {first}", err=True)
        raise SystemExit(1) from None
