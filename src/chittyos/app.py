"""Composition root: builds every part from ``Settings`` and wires the event subscribers.

This is the only module that knows every room. ``open_app`` is an async context manager so
that the HTTP lifespan, the stdio runner, the CLI and the tests share one way to start and stop.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import structlog
from sqlalchemy import Connection, Table, make_url, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from chittyos import __version__
from chittyos.analytics import UsageAnalytics
from chittyos.chat import (
    BudgetService,
    CallPricer,
    ChatSealer,
    ChatService,
    ExecutionSpendGuard,
    RateLimiter,
    SEALED_CHAT_COLUMNS,
    SessionService,
    UsageRecorder,
)
from chittyos.chain import (
    ChainLog,
    NoteSigner,
    NoteVerifier,
    execution_subscriber,
    load_or_create_log_key,
    note_signers,
    open_note,
)
from chittyos.chain import store as chain_store
from chittyos.chain.keys import LOG_KEY_FILE
from chittyos.chain.log import CheckpointFailure
from chittyos.chain.service import ChainService
from chittyos.config import Settings
from chittyos.db import (
    UnitOfWork,
    create_engine,
    display_url,
    ensure_current,
    head_revision,
    is_sqlite,
    make_session_factory,
)
from chittyos.db.migrate import sync_engine
from chittyos.errors import ChittyError, ConfigurationError, ProofRejected
from chittyos.events import EventBus, ExecutionCompleted, ExecutionFailed
from chittyos.db.models import Base, ChainFact, SecureExecution, utcnow
from chittyos.execution import SEALED_COLUMNS as EXECUTION_SEALED_COLUMNS
from chittyos.execution import ExecutionService
from chittyos.llm.openai_provider import OpenAIProvider
from chittyos.llm.pricing import PriceBook
from chittyos.llm.selection import ProviderSelector
from chittyos.signing import OpenPGPSigner, Sealer, open_sealer, open_signer
from chittyos.signing.sealing import KEY_VARIABLE, envelope_key_id
from chittyos.signing.setup import ENCRYPTION_KEY_FILE, SealerSetup
from chittyos.tiers import StandardTier, TierRegistry

__all__ = [
    "App",
    "check_log_key",
    "open_app",
    "require_existing",
    "sealed_columns",
]

log = structlog.get_logger("chittyos.app")


@dataclass
class App:
    """Everything a request handler may reach. Built by ``open_app``, never at import."""

    settings: Settings
    engine: AsyncEngine
    uow: UnitOfWork
    bus: EventBus
    tiers: TierRegistry
    providers: ProviderSelector
    executions: ExecutionService
    signer: OpenPGPSigner
    sealer: Sealer
    chain: ChainService
    chat: ChatService
    sessions: SessionService
    budgets: BudgetService
    usage_analytics: UsageAnalytics
    pricer: CallPricer
    version: str = __version__
    schema_head: str = ""
    """The migration revision this version needs (``db.migrate.head_revision``)."""

    async def health(self) -> dict[str, Any]:
        """``{status, version, database{backend, reachable, round_trip_ms, error?}, provider, tiers,
        signer{ready, fingerprint}, sealing{algorithm, active_key_id}, chain{origin, checkpoint{ok,
        error?, failed_at?}}}``; ``degraded`` when the database is unreachable, its schema is not
        this version's, or the last checkpoint attempt failed. An SQLite database that gives no
        connection within 5 s is ``busy`` (``reachable`` null), not degraded."""
        database: dict[str, Any] = {"backend": self.engine.dialect.name, "schema_head": self.schema_head}
        started = time.perf_counter()
        try:
            with anyio.fail_after(5):
                async with self.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
                    database.update(reachable=True, round_trip_ms=round((time.perf_counter() - started) * 1000, 3))
                    # A reachable database whose schema was dropped or rolled back cannot serve.
                    database["schema_revision"] = await _schema_revision(conn)
        except Exception as exc:  # health reports, it does not raise
            if isinstance(exc, TimeoutError) and self.engine.dialect.name == "sqlite":
                # A local file does not go away: no answer within 5 s means every connection is
                # busy (a burst of writes beside a full `chain verify`), no reason for a restart.
                database.update(reachable=None, busy=True)
            else:
                database.update(reachable=False, error=type(exc).__name__)
        checkpoint: dict[str, Any] = {"ok": True}
        failure = self.chain.log.checkpoint_failure
        if failure is not None:
            checkpoint = {"ok": False, "error": failure.error, "failed_at": failure.at.isoformat()}
        answered = database["reachable"] and database.get("schema_revision") == self.schema_head
        healthy = (answered or database.get("busy", False)) and checkpoint["ok"]
        return {
            "status": "ok" if healthy else "degraded",
            "version": self.version,
            "database": database,
            "provider": {
                "configured": self.providers.configured,
                "fallback": "mcp-sampling when the client supports it",
            },
            "tiers": self.tiers.names(),
            "signer": {"ready": True, "kind": "openpgp", "fingerprint": self.signer.fingerprint},
            "sealing": {"algorithm": "AES-256-GCM", "active_key_id": self.sealer.keyring.active_key_id},
            "chain": {"origin": self.chain.log.origin, "checkpoint": checkpoint},
        }


async def _schema_revision(conn: AsyncConnection) -> str | None:
    """The migration revision the database is at; None when it has no schema."""
    try:
        async with conn.begin_nested():
            return await conn.scalar(text("SELECT version_num FROM alembic_version"))
    except DBAPIError:
        return None


def sealed_columns() -> dict[Table, tuple[str, ...]]:
    """Every column stored sealed, by table: what key rotation re-seals."""
    tables = Base.metadata.tables
    return {
        SecureExecution.__table__: EXECUTION_SEALED_COLUMNS,
        **{tables[name]: columns for name, columns in SEALED_CHAT_COLUMNS.items()},
    }


@asynccontextmanager
async def open_app(
    settings: Settings,
    *,
    background: bool = False,
    serving: bool = True,
    create: bool = True,
    log_key_check: bool = True,
) -> AsyncIterator[App]:
    """Start every part; dispose of them on exit.

    ``background`` runs the long-lived tasks of a server (the checkpoint signer) beside the
    caller; one-shot users (CLI commands, tests) leave it off, and checkpoints are then signed
    when a proof asks for one.

    ``serving``: this process is the server (stdio or HTTP, and the tests that stand in for it):
    at start it marks failed the executions a dead process left running and logs ``chittyos
    ready``. CLI commands pass False: only a server may decide that a run is abandoned.

    ``create``: make the data directory, its keys and the embedded SQLite database when missing
    (``serve``, ``keys init``, ``exec``). Commands that only read pass False and get a
    ``ConfigurationError`` naming what is missing instead (``require_existing``); they never
    create or migrate a schema either: one not at this version's head raises ``SchemaBehind``.

    ``log_key_check``: refuse a database whose log was signed with another log key. Only
    ``chain verify`` passes False: a changed checkpoint is what it is there to report.

    Raises ``SchemaBehind`` when a PostgreSQL schema is older than this version (SQLite, the
    embedded default, is migrated in place when ``create``), ``SchemaAhead`` when it is at a
    revision this version does not know, and ``ConfigurationError`` when this database's log
    was signed with another log key (another server's data directory).
    """
    if create:
        settings.chitty_data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    else:
        require_existing(settings)
    url = settings.database_url
    sqlite = is_sqlite(url)
    await anyio.to_thread.run_sync(lambda: ensure_current(url, auto_upgrade=sqlite, read_only=not create))
    engine = create_engine(url, pool_size=settings.chitty_db_pool_size)
    openai = _openai_provider(settings)
    signer: OpenPGPSigner | None = None
    try:
        log_key = await anyio.to_thread.run_sync(
            load_or_create_log_key, settings.chitty_data_dir, settings.chitty_log_origin
        )
        # Before the other keys: a replica started on the wrong data directory creates no more.
        checkpoint_problem = None
        if log_key_check:
            checkpoint_problem = await check_log_key(engine, log_key, settings.chitty_data_dir / LOG_KEY_FILE)
        signer = await anyio.to_thread.run_sync(open_signer, settings)
        sealing = await anyio.to_thread.run_sync(open_sealer, settings)
        if create:
            await check_sealing_keys(engine, sealing)
        if sealing.created:
            log.warning(
                "created an encryption key for sealing at rest; back it up, or set CHITTY_ENCRYPTION_KEY",
                key_file=sealing.key_source,
            )
        app = _wire(settings, engine, openai, signer, sealing.sealer, log_key)
        if checkpoint_problem is not None:  # /health says so from the start, not a minute later
            app.chain.log.checkpoint_failure = CheckpointFailure(at=utcnow(), error=checkpoint_problem)
        if create:
            await _claim_empty_log(app, engine, log_key, settings.chitty_data_dir / LOG_KEY_FILE)
            await check_assertion_signer(app)
        if serving:
            await app.executions.fail_abandoned(older_than_s=settings.chitty_execution_stale_s)
            log.info(
                "chittyos ready",
                version=__version__,
                database=display_url(url),
                provider=app.providers.configured or "mcp-sampling (client) only",
                chain_origin=app.chain.log.origin,
            )
        if not background:
            yield app
        else:
            async with anyio.create_task_group() as tasks:
                # Checkpoints are signed lazily, off the append path (DESIGN.md, ChittyChain).
                await tasks.start(app.chain.log.run_checkpointer)
                try:
                    yield app
                finally:
                    tasks.cancel_scope.cancel()
    finally:
        if openai is not None:
            await openai.aclose()
        await engine.dispose()
        if signer is not None:
            # stops the agent only if no other process on this data directory still signs
            await anyio.to_thread.run_sync(signer.close)


_FIRST = "start the server (`chittyos serve`) or run `chittyos keys init` first"
_FIRST_BOTH = (
    "run `chittyos keys init` and `chittyos db upgrade` first (or start the server once: `chittyos serve`)"
)


def require_existing(
    settings: Settings,
    *,
    openpgp: bool = True,
    sealing: bool = True,
    log_key: bool = True,
    database: bool = True,
) -> None:
    """Refuse to read through a data directory that no server or ``keys init`` made.

    A mistyped ``CHITTY_DATA_DIR`` would otherwise get new keys and an empty database, and
    ``chain verify`` would report "0 leaves ... OK". Checks the directory, then (as asked) the
    OpenPGP keyring and the encryption key file (unless given by variables), the chain log key
    and the embedded SQLite file. The keys live in the data directory whatever the database, so
    this holds with ``CHITTY_DATABASE_URL`` too. Raises ``ConfigurationError`` naming the path.
    """
    data_dir = settings.chitty_data_dir
    sqlite_file = _sqlite_file(settings.database_url) if database else None
    # A missing database too: name both steps, so that following the first message is enough.
    first = _FIRST_BOTH if sqlite_file is not None and not sqlite_file.exists() else _FIRST
    if not data_dir.is_dir():
        raise ConfigurationError(f"CHITTY_DATA_DIR: the data directory {data_dir} does not exist; {first}")
    needed: list[tuple[str, Path]] = []
    if openpgp and settings.pgp_private_key is None and settings.pgp_private_key_file is None:
        needed.append(("OpenPGP keyring", data_dir / "gnupg"))
    if sealing and settings.chitty_encryption_key is None:
        needed.append(("encryption key", data_dir / ENCRYPTION_KEY_FILE))
    if log_key:
        needed.append(("chain log key", data_dir / LOG_KEY_FILE))
    for what, path in needed:
        if path.exists():
            continue
        if what == "encryption key" and (data_dir / LOG_KEY_FILE).exists():  # it was here: lost
            raise ConfigurationError(
                f"CHITTY_DATA_DIR: no encryption key at {path}; restore it from a backup, or set "
                "CHITTY_ENCRYPTION_KEY to it (a new key opens nothing sealed before)"
            )
        raise ConfigurationError(f"CHITTY_DATA_DIR: no {what} at {path}; {first}")
    if sqlite_file is not None and not sqlite_file.exists():
        variable = "CHITTY_DATABASE_URL" if settings.chitty_database_url else "CHITTY_DATA_DIR"
        raise ConfigurationError(
            f"{variable}: no database at {sqlite_file}; start the server (`chittyos serve`) or run "
            "`chittyos db upgrade` first"
        )


def log_signers_of_existing_database(settings: Settings) -> list[str]:
    """``name+keyid`` of the keys that signed the newest checkpoint of the database ``settings``
    name, if it exists and holds one; else ``[]`` (no database, no log yet, unreachable).
    Blocking, and creates nothing (``_read_existing_database``)."""
    note = _read_existing_database(
        settings,
        lambda connection: connection.execute(
            text("SELECT note FROM chitty_chain_checkpoints ORDER BY tree_size DESC LIMIT 1")
        ).scalar(),
    )
    return note_signers(note) if isinstance(note, str) else []


def _read_existing_database(settings: Settings, read: Callable[[Connection], Any]) -> Any:
    """``read(connection)`` on the database ``settings`` name; None, without calling it, when an
    embedded SQLite file does not exist (it is not opened, so not created), and None when the
    database is unreachable or lacks what ``read`` reads (a ``DBAPIError``). Blocking."""
    url = settings.database_url
    sqlite_file = _sqlite_file(url)
    if is_sqlite(url) and (sqlite_file is None or not sqlite_file.exists()):
        return None
    engine = sync_engine(url, configure=False)
    try:
        with engine.connect() as connection:
            return read(connection)
    except DBAPIError:
        return None
    finally:
        engine.dispose()


def _sqlite_file(url: str) -> Path | None:
    """The file of an embedded SQLite database; None for PostgreSQL and in-memory SQLite."""
    if not is_sqlite(url):
        return None
    name = make_url(url).database
    return Path(name) if name and name != ":memory:" else None


async def check_log_key(engine: AsyncEngine, log_key: NoteSigner, key_file: Path) -> str | None:
    """Refuse a log key that this database's log was not signed with.

    Two servers on one database with different data directories have different log keys: the
    second would accept appends and then fail every checkpoint. So the newest stored checkpoint
    must verify with ``log_key`` (and the log's origin be the key's). A checkpoint that carries
    this key's signature but does not verify is a changed row, not a configuration: that is for
    ``chittyos chain verify`` to name; it is logged and returned (the problem, for /health),
    and the server starts. Raises ``ConfigurationError``.
    """
    verifier = log_key.verifier()
    async with UnitOfWork(session_factory=make_session_factory(engine)).read() as session:
        head = await chain_store.head(session)
        latest = await chain_store.latest_checkpoints(session, 1)
        first = await chain_store.first_checkpoint(session)
    if head is not None and head[1] != log_key.name:
        raise ConfigurationError(
            f"CHITTY_LOG_ORIGIN: this database's log has origin {head[1]!r}, the log key {key_file} is for "
            f"{log_key.name!r}; set CHITTY_LOG_ORIGIN={head[1]}"
        )
    if not latest:
        return None
    size, note = latest[0][0], latest[0][2]
    if _opens(note, verifier):
        return None
    ours = f"{verifier.name}+{verifier.key_id:08x}"
    signers = note_signers(note)
    # The log's first checkpoint by this key: this key signed the log, so the newest row was
    # changed (its signature line too, so that it names no key of ours), not another server's.
    claimed = first is not None and first[0] < size and _opens(first[2], verifier)
    # No signature line that parses at all: a changed row too; another server's key signs.
    if ours in signers or claimed or not signers:
        problem = (
            f"the newest chain checkpoint (size {size}) does not verify with this server's log key "
            f"{ours}" + (f", which signed the log's first checkpoint (size {first[0]})" if claimed else "")
            + (", whose name and key id it carries" if ours in signers and not claimed else "")
            + (" (it carries no signature line that parses)" if not signers else "")
            + " (a changed checkpoint row): no checkpoint can be signed after it; run `chittyos chain verify`"
        )
        log.error(problem, tree_size=size)
        return problem
    raise ConfigurationError(
        f"chain log key: this database's log is signed by {', '.join(signers) or 'no key'} "
        f"(checkpoint at size {size}), not by this server's log key {ours} ({key_file}); servers "
        "sharing a database must share the data directory's chain/log.key, gnupg/ and encryption.key "
        "(or the same PGP_PRIVATE_KEY and CHITTY_ENCRYPTION_KEY): copy them from the first server's "
        "data directory, or set CHITTY_DATA_DIR to it"
    )


def _opens(note: str, verifier: NoteVerifier) -> bool:
    try:
        open_note(note, [verifier])
        return True
    except ProofRejected:
        return False


async def check_sealing_keys(engine: AsyncEngine, sealing: SealerSetup) -> None:
    """Refuse to start sealing when the database holds values sealed with a key that is not
    loaded (``_check_sealing_keys``). Raises ``ConfigurationError``."""
    async with engine.connect() as conn:
        await conn.run_sync(_check_sealing_keys, sealing)


def check_sealing_keys_of_existing_database(settings: Settings, sealing: SealerSetup) -> None:
    """``check_sealing_keys`` for ``keys init``: blocking, and creates nothing; a database that
    does not exist yet, or has no schema yet, holds nothing sealed (an unreachable one: the
    server's own start reports that). Raises ``ConfigurationError``."""
    _read_existing_database(settings, lambda connection: _check_sealing_keys(connection, sealing))


def _check_sealing_keys(conn: Connection, sealing: SealerSetup) -> None:
    """A server started with the old key after a rotation would otherwise seal new rows under
    it and leave the rotated ones unopenable.

    Two values per sealed table: the first and the last row by id. Rotation re-seals in id
    order, so after a finished one both name the new key, and an interrupted one left its first
    row under the new key and its last under the old: whichever key is missing shows. A key file
    created just now is removed again when refused: it opens nothing of this database, and a
    user would back it up. The error names the key id and the variable; never the key."""
    keyring = sealing.sealer.keyring
    for table, columns in sealed_columns().items():
        column = table.c[columns[0]]
        for order in (table.c.id.asc(), table.c.id.desc()):
            value = conn.scalar(select(column).where(column.is_not(None)).order_by(order).limit(1))
            kid = envelope_key_id(value)
            if kid is None or kid in keyring.key_ids:
                continue
            if sealing.created:
                Path(sealing.key_source).unlink(missing_ok=True)
            raise ConfigurationError(
                f"{KEY_VARIABLE}: {table.name}.{column.name} holds values sealed with key id {kid}, "
                f"which is not loaded (loaded from {sealing.key_source}: {', '.join(keyring.key_ids)}); "
                f"sealing on would mix keys: load that key first ({KEY_VARIABLE}=<key {kid}>,<other keys>), "
                "as after `chittyos keys rotate-encryption`, and run that again if it was interrupted"
            )


async def check_assertion_signer(app: App) -> None:
    """Refuse an OpenPGP keyring that does not hold the key of the log's newest signed fact.

    The log key check does not cover ``gnupg/``: a server with the shared ``chain/log.key`` but
    a keyring of its own would sign assertions that every other server's ``chain verify`` then
    reports as by an unknown key, and theirs likewise. A key that is only in the keyring as a
    public key (an earlier signing key kept for checking) is fine; whether the signature holds is
    for ``chittyos chain verify``. Raises ``ConfigurationError``.
    """
    async with app.uow.read() as session:
        signed = select(ChainFact.id).where(ChainFact.signature.is_not(None))
        newest = await session.scalar(signed.order_by(ChainFact.leaf_index.desc()).limit(1))
    if newest is None:
        return
    try:
        fact = (await app.chain.log.get(newest)).fact()
    except ChittyError:  # a changed row that is no fact any more: for `chain verify` to name
        return
    assert fact.signature is not None
    check = await anyio.to_thread.run_sync(app.signer.verify, fact.signing_bytes(), fact.signature)
    if check.key_known is False:
        raise ConfigurationError(
            f"PGP_KEY_ID: this database's log holds assertions signed by {fact.signer}, a key that is not in "
            f"this server's keyring ({app.signer.gnupghome}); servers sharing a database must share the "
            "data directory's gnupg/ (or the same PGP_PRIVATE_KEY): copy it from the first server's data "
            "directory, or import that public key to keep checking an earlier signing key"
        )


async def _claim_empty_log(app: App, engine: AsyncEngine, log_key: NoteSigner, key_file: Path) -> None:
    """Sign a checkpoint of an empty log that has none yet, so the database is bound to this log
    key from the start: a second server with another data directory is then refused by
    ``check_log_key`` before either appends, not after. When two start at once the checkpoint
    lock lets one sign; the other's attempt fails or finds it, and ``check_log_key`` names it.
    A log that already has leaves but no checkpoint (left so by an older version) is not claimed:
    its facts may be another server's."""
    async with app.uow.read() as session:
        head = await chain_store.head(session)
        signed = await chain_store.latest_checkpoints(session, 1)
    if not signed and (head is None or head[0] == 0):
        try:
            await app.chain.log.checkpoint()
        except ChittyError:
            pass  # another server's checkpoint came first: check_log_key says whose
    # Again in every case: a server starting at the same moment may have signed since the first
    # check_log_key, and then this one must be the one refused.
    await check_log_key(engine, log_key, key_file)


def _openai_provider(settings: Settings) -> OpenAIProvider | None:
    if not settings.openai_configured:
        return None
    return OpenAIProvider(
        api_key=settings.openai_api_key.get_secret_value() if settings.openai_api_key else None,
        base_url=settings.openai_base_url,
        timeout_s=settings.chitty_model_timeout_s,
        max_retries=settings.chitty_model_max_retries,
    )


def _wire(
    settings: Settings,
    engine: AsyncEngine,
    openai: OpenAIProvider | None,
    signer: OpenPGPSigner,
    sealer: Sealer,
    log_key: NoteSigner,
) -> App:
    uow = UnitOfWork(session_factory=make_session_factory(engine))
    bus = EventBus()
    tiers = TierRegistry([StandardTier()])
    providers = ProviderSelector(openai=openai, sampling_timeout_s=settings.chitty_model_timeout_s)
    chat, guard = _wire_chat(settings, uow, bus, providers, openai, ChatSealer(sealer=sealer))
    executions = ExecutionService(
        spend_guard=guard,
        uow=uow,
        tiers=tiers,
        providers=providers,
        bus=bus,
        sealer=sealer,
        default_model=settings.chitty_default_model,
        default_max_tokens=settings.chitty_max_tokens,
        max_prompt_chars=settings.chitty_max_prompt_chars,
        max_concurrent=settings.chitty_max_concurrent_executions,
    )
    chain_log = ChainLog(
        uow=uow,
        signer=log_key,
        checkpoint_every=settings.chitty_checkpoint_every,
        checkpoint_interval_s=settings.chitty_checkpoint_interval_s,
        page_size_max=settings.chitty_page_size_max,
    )
    # Registered last: the append holds the log lock until the completing transaction commits.
    bus.subscribe(ExecutionCompleted, execution_subscriber(chain_log))
    return App(
        settings=settings,
        engine=engine,
        uow=uow,
        bus=bus,
        tiers=tiers,
        providers=providers,
        executions=executions,
        signer=signer,
        sealer=sealer,
        chain=ChainService(chain=chain_log, signer=signer, uow=uow, sealer=sealer),
        schema_head=head_revision(),
        **chat,
    )


def _wire_chat(
    settings: Settings,
    uow: UnitOfWork,
    bus: EventBus,
    providers: ProviderSelector,
    openai: OpenAIProvider | None,
    chat_sealer: ChatSealer,
) -> tuple[dict[str, Any], ExecutionSpendGuard]:
    """Chat, sessions, budgets, usage (the App fields) and the executions' spend guard; subscribes
    usage recording and budget settling to the execution events."""
    prices = PriceBook(prices_file=settings.chitty_prices_file, free_base_urls=settings.chitty_free_base_urls)
    base_urls = {} if openai is None else {openai.name: settings.chitty_pricing_base_url or openai.base_url}
    pricer = CallPricer(prices=prices, base_urls=base_urls)
    budgets = BudgetService(
        uow=uow, pricer=pricer, reservation_ttl_s=settings.chitty_budget_reservation_ttl_s
    )
    recorder = UsageRecorder(pricer=pricer)
    limiter = RateLimiter(per_minute=settings.chitty_rate_limit_per_minute)
    guard = ExecutionSpendGuard(limiter=limiter, budgets=budgets, recorder=recorder)
    bus.subscribe(ExecutionCompleted, guard.on_execution_completed)
    bus.subscribe(ExecutionFailed, guard.on_execution_failed)
    chat = ChatService(
        sealer=chat_sealer,
        uow=uow,
        providers=providers,
        budgets=budgets,
        limiter=limiter,
        recorder=recorder,
        default_model=settings.chitty_default_model,
        default_max_tokens=settings.chitty_max_tokens,
        max_prompt_chars=settings.chitty_max_prompt_chars,
    )
    fields = {
        "chat": chat,
        "sessions": SessionService(
            sealer=chat_sealer,
            uow=uow,
            max_content_chars=settings.chitty_max_prompt_chars,
            page_size_max=settings.chitty_page_size_max,
        ),
        "budgets": budgets,
        "usage_analytics": UsageAnalytics(uow=uow, budgets=budgets),
        "pricer": pricer,
    }
    return fields, guard
