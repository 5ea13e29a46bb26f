"""Database engines, sessions and schema migrations.

One URL selects the backend: ``sqlite:///labels.db`` (default) or ``postgresql+psycopg://user@host/db``.
Every write is one transaction. On SQLite each transaction starts with ``BEGIN IMMEDIATE`` (WAL
journal, 30 s busy timeout), so concurrent writers queue instead of failing half-way; on PostgreSQL
the default READ COMMITTED level plus conditional updates (see ``service.submit_*``) give the same
guarantee.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import ArgumentError, DatabaseError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from instructrl.errors import InstructRLError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_PG_MIGRATION_LOCK = 7_362_915  # pg_advisory_xact_lock key: one migrator at a time


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with the settings this app relies on."""
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
            _configure_sqlite(engine)
            path = engine.url.database
            if path and path != ":memory:" and not Path(path).parent.exists():
                raise InstructRLError(f"--db {url}: folder {Path(path).parent} does not exist")
            return engine
        if url.startswith("postgresql"):
            return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
    except ArgumentError as e:
        raise InstructRLError(f"--db {url!r} is not a valid database URL: {e}") from None
    raise InstructRLError(f"--db {url!r}: expected sqlite:///FILE.db or postgresql+psycopg://USER@HOST/DB")


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # type: ignore[no-untyped-def]
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # take the write lock up front: no upgrade deadlocks


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def migrate(engine: Engine, revision: str = "head") -> str | None:
    """Upgrade the schema to ``revision``; returns the revision now applied."""
    cfg = _alembic_config()
    with reachable(engine), engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return current_revision(engine)


def current_revision(engine: Engine) -> str | None:
    with reachable(engine), engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@contextmanager
def reachable(engine: Engine) -> Iterator[None]:
    """Turn "cannot open / cannot connect" into one line naming the database and what to do."""
    try:
        yield
    except DatabaseError as e:
        # OperationalError: cannot open or connect. A plain DatabaseError from SQLite: the file is not a database
        # or is damaged ("file is not a database", "database disk image is malformed"). Its subclasses
        # (IntegrityError, ...) are the statements' own errors and pass through.
        damaged = type(e) is DatabaseError and engine.url.get_backend_name() == "sqlite"
        if not isinstance(e, OperationalError) and not damaged:
            raise
        reason = str(e.orig).strip().splitlines()[0] if e.orig is not None else str(e).splitlines()[0]
        url = engine.url
        if url.get_backend_name() == "sqlite":
            where = Path(url.database or "").resolve()
            if damaged:
                raise InstructRLError(
                    f"{where} is not a usable SQLite database ({reason}): restore it from a backup or choose another "
                    "--db"
                ) from None
            raise InstructRLError(
                f"cannot open the SQLite database {where} ({reason}): check that its folder exists and is "
                "writable by this user, or choose another --db"
            ) from None
        raise InstructRLError(
            f"cannot reach the database {url.render_as_string(hide_password=True)} ({reason}): check that the "
            "server is running and the host, port, user and database name are right, or choose another --db"
        ) from None


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def ensure_current(engine: Engine) -> None:
    """Raise a clear error when the schema is behind this version of the app."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise InstructRLError(
            f"database schema is at {current or 'nothing'}, this app needs {head}: "
            "run 'instructrl label migrate --db URL'"
        )
