"""Opening a workspace, its schema version, and its transactions."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa

from esg_workbench.core.errors import WorkspaceError, WorkspaceTooNew
from esg_workbench.workspace import schema
from esg_workbench.workspace.migrations import MIGRATIONS

ENV_WORKSPACE = "ESG_WORKBENCH_WORKSPACE"


# PostgreSQL advisory lock keys (any constant bigint unique to this app)
AUDIT_LOCK_KEY = 0x45534757_0001
MIGRATION_LOCK_KEY = 0x45534757_0002


def connector_lock_key(connector_id: str) -> int:
    """The PostgreSQL advisory lock a sync of this connector holds while it runs."""
    import hashlib

    return int(hashlib.sha1(connector_id.encode()).hexdigest()[:15], 16)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def default_workspace_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("esg-workbench", appauthor=False)) / "workspace.duckdb"


def _engine_url(url: str | None) -> tuple[str, str]:
    """(kind, SQLAlchemy URL) for a path, a duckdb:/// URL or a postgresql:// URL."""
    url = url or os.environ.get(ENV_WORKSPACE) or str(default_workspace_path())
    if url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        rest = url.split("://", 1)[1]
        return "postgresql", f"postgresql+psycopg://{rest}"
    if url.startswith("duckdb:///"):
        path = Path(url[len("duckdb:///"):])
    elif "://" in url:
        raise WorkspaceError(f"'{url}' is not a workspace: give a DuckDB file path or a postgresql:// URL.")
    else:
        path = Path(url)
    path = path.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return "duckdb", f"duckdb:///{path}"


class Workspace:
    """An open workspace. Thread-safe: each thread takes its own connections.

    DuckDB allows one writing process; inside it, write transactions are serialized by
    a lock so that parallel syncs never conflict. On PostgreSQL, writers run in
    parallel and only the audit append is serialized (an advisory lock).
    """

    def __init__(self, kind: str, url: str, engine: sa.Engine, organization_id: str = "default"):
        self.kind = kind
        self.url = url
        self.engine = engine
        self.organization_id = organization_id
        self._write_lock = threading.RLock()

    @property
    def is_duckdb(self) -> bool:
        return self.kind == "duckdb"

    @property
    def display_url(self) -> str:
        """The URL without a password, for titles and messages."""
        return self.engine.url.render_as_string(hide_password=True)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        """A write transaction: committed if the block ends normally, else rolled back."""
        if self.is_duckdb:
            with self._write_lock, self.engine.begin() as conn:
                yield conn
        else:
            with self.engine.begin() as conn:
                yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn:
            yield conn

    def lock_audit_chain(self, conn: sa.Connection) -> None:
        """Serialize audit appends across processes until `conn` commits."""
        if not self.is_duckdb:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": AUDIT_LOCK_KEY})

    def close(self) -> None:
        self.engine.dispose()

    # --- schema version -------------------------------------------------------------

    def schema_version(self, conn: sa.Connection) -> int | None:
        if not sa.inspect(conn).has_table("workspace_meta"):
            return None
        row = conn.execute(
            sa.select(schema.workspace_meta.c.value).where(schema.workspace_meta.c.key == "schema_version")
        ).first()
        return int(row[0]) if row else None

    def _set_version(self, conn: sa.Connection, version: int) -> None:
        meta = schema.workspace_meta
        conn.execute(sa.delete(meta).where(meta.c.key == "schema_version"))
        conn.execute(sa.insert(meta).values(key="schema_version", value=str(version)))

    def migrate(self) -> int:
        """Create or upgrade the tables; refuse a workspace made by a newer app."""
        with self.transaction() as conn:
            if not self.is_duckdb:
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            version = self.schema_version(conn)
            if version is None:
                schema.metadata.create_all(conn)
                self._set_version(conn, schema.SCHEMA_VERSION)
                conn.execute(sa.insert(schema.workspace_meta).values(key="created_at", value=utcnow().isoformat()))
                return schema.SCHEMA_VERSION
            if version > schema.SCHEMA_VERSION:
                raise WorkspaceTooNew(
                    f"This workspace was made by a newer ESG Workbench (schema version {version}; "
                    f"this app knows up to {schema.SCHEMA_VERSION})."
                )
            while version < schema.SCHEMA_VERSION:
                MIGRATIONS[version](conn)
                version += 1
                self._set_version(conn, version)
            return version


def open_workspace(url: str | None = None, *, organization_id: str = "default") -> Workspace:
    """Open (creating or upgrading) the workspace at `url`, `$ESG_WORKBENCH_WORKSPACE`
    or the default DuckDB file in the user's data directory."""
    kind, engine_url = _engine_url(url)
    try:
        if kind == "duckdb":
            engine = sa.create_engine(engine_url, poolclass=sa.pool.QueuePool, pool_size=8, max_overflow=8)
        else:
            engine = sa.create_engine(engine_url, pool_pre_ping=True, connect_args={"options": "-c TimeZone=UTC"})
        workspace = Workspace(kind, engine_url, engine, organization_id)
        workspace.migrate()
        from esg_workbench.workspace import sync_records

        sync_records.mark_dead_runs(workspace)
    except (WorkspaceError,):
        raise
    except sa.exc.SQLAlchemyError as exc:
        orig = getattr(exc, "orig", exc)
        text = str(orig).splitlines()[0] if str(orig) else type(orig).__name__
        if "lock" in text.lower():
            raise WorkspaceError(
                f"The workspace {engine_url.split('://')[-1]} is open in another ESG Workbench process.",
                hint="Close the other window or command, then try again.",
            ) from exc
        raise WorkspaceError(f"Cannot open the workspace: {text}") from exc
    except Exception as exc:  # duckdb raises its own IOException for locked / broken files
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "lock" in text.lower():
            raise WorkspaceError(
                "The workspace is open in another ESG Workbench process.",
                hint="Close the other window or command, then try again.",
            ) from exc
        raise WorkspaceError(f"Cannot open the workspace: {text}") from exc
    return workspace
