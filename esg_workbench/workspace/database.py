"""Opening a workspace, its schema version, and its transactions."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa

from esg_workbench.core.errors import EsgError, WorkspaceError, WorkspaceTooNew
from esg_workbench.workspace import schema
from esg_workbench.workspace.migrations import MIGRATIONS

ENV_WORKSPACE = "ESG_WORKBENCH_WORKSPACE"


ENV_ORGANIZATION = "ESG_WORKBENCH_ORGANIZATION"
DEFAULT_ORGANIZATION = "default"

# The PostgreSQL advisory lock of creating the tables in a new database (any constant
# bigint unique to this app); see take_migration_lock.
MIGRATION_LOCK_KEY = 0x45534757_0002


def take_migration_lock(conn: sa.Connection) -> None:
    """Serialize creating, upgrading and administering a PostgreSQL workspace until `conn`
    commits. Opening a current workspace takes no such lock. Once the tables exist it is
    LOCK TABLE workspace_meta IN EXCLUSIVE MODE: analysts may only read workspace_meta,
    and the only lock that right gives (ACCESS SHARE) does not conflict with it, so no
    analyst can hold it, as anyone could an advisory key. In a database without tables
    yet, the advisory key."""
    if conn.execute(sa.text("SELECT to_regclass('workspace_meta') IS NOT NULL")).scalar():
        conn.execute(sa.text("LOCK TABLE workspace_meta IN EXCLUSIVE MODE"))
    else:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})


# glibc's malloc gives threads that allocate at once arenas of their own (up to 8 per
# core), and memory freed into one arena is not reused by the others: a sync's reader
# thread, DuckDB's threads and the main thread each kept their own high-water mark, about
# 50 MB of a 1M-row sync's 320 MB peak (README, Benchmarks). One arena per core keeps
# DuckDB's parallel work (a thread per core) from waiting on another thread's arena; on
# the 2-core benchmark machine it cost no measurable CPU.
_M_ARENA_MAX = -8  # mallopt's parameter number in glibc's malloc.h


def limit_malloc_arenas() -> bool:
    """Cap glibc's malloc arenas for this process (before the threads that would make
    them start). True if set; False where the C library is not glibc (macOS, Windows,
    musl), which is harmless. MALLOC_ARENA_MAX in the environment takes precedence."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # no mallopt; Windows: CDLL(None) is a TypeError
        return False
    return mallopt(_M_ARENA_MAX, max(2, os.cpu_count() or 2)) == 1


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


def _duckdb_connect(engine_url: str):
    """What the pool opens a DuckDB workspace's connections with: the connection
    duckdb_engine's Dialect.connect makes for a URL without options, without its lookup of
    DuckDB's setting names on the first connect (to tell settings from extension options
    in the URL), which opens a throwaway in-memory database: 0.02-0.05 s of every process
    that opens a workspace. The user agent is the one duckdb_engine gives DuckDB."""
    import duckdb
    import duckdb_engine

    path = sa.engine.make_url(engine_url).database
    config = {"custom_user_agent": f"duckdb_engine/{duckdb_engine.__version__}(sqlalchemy/{sa.__version__})"}

    def connect() -> duckdb_engine.ConnectionWrapper:
        return duckdb_engine.ConnectionWrapper(duckdb.connect(path, config=config))

    return connect


class Workspace:
    """An open workspace. Thread-safe: each thread takes its own connections.

    DuckDB allows one writing process; inside it, write transactions are serialized by
    a lock so that parallel syncs never conflict. On PostgreSQL, writers run in
    parallel; where two would step on each other (a mapping's versions, its staging
    rows, the KPIs, the audit chain) row locks make one wait: see concurrency.py.
    """

    def __init__(self, kind: str, url: str, engine: sa.Engine, organization_id: str = DEFAULT_ORGANIZATION):
        self.kind = kind
        self.url = url
        self.engine = engine
        self.organization_id = organization_id
        #: a PostgreSQL workspace secured by init-postgres: its roles (else None)
        self.roles = None
        #: the database role the session runs as (PostgreSQL), for the audit chain's actor
        self.database_role: str | None = None
        self._search_path: str | None = None
        self._write_lock = threading.RLock()

    @property
    def secured(self) -> bool:
        """Row-level security by organization applies (a PostgreSQL workspace after init-postgres)."""
        return self.roles is not None

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
    def between_writes(self) -> Iterator[None]:
        """While the block runs, no write transaction of this process is open on a DuckDB
        workspace (its writers take the lock this holds); on PostgreSQL, nothing to wait for."""
        if self.is_duckdb:
            with self._write_lock:
                yield
        else:
            yield

    @contextlib.contextmanager
    def read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn:
            yield conn

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
            return self.migrate_connection(conn)

    def migrate_connection(self, conn: sa.Connection) -> int:
        """migrate() inside the caller's transaction (init-postgres runs it as the owner)."""
        version = self.schema_version(conn)
        if version == schema.SCHEMA_VERSION:
            return version  # the everyday case takes no lock that another session could hold
        self._check_may_migrate(conn, version)
        if not self.is_duckdb:
            take_migration_lock(conn)
            version = self.schema_version(conn)  # another process may have migrated meanwhile
            if version == schema.SCHEMA_VERSION:
                return version
            self._check_may_migrate(conn, version)
        if version is None:
            schema.metadata.create_all(conn)
            self._set_version(conn, schema.SCHEMA_VERSION)
            conn.execute(sa.insert(schema.workspace_meta).values(key="created_at", value=utcnow().isoformat()))
            return schema.SCHEMA_VERSION
        while version < schema.SCHEMA_VERSION:
            MIGRATIONS[version](conn)
            version += 1
            self._set_version(conn, version)
        return version

    def _check_may_migrate(self, conn: sa.Connection, version: int | None) -> None:
        """Refuse a workspace of a newer app, and an upgrade by an analyst of a shared one."""
        if version is not None and version > schema.SCHEMA_VERSION:
            raise WorkspaceTooNew(
                f"This workspace was made by a newer ESG Workbench (schema version {version}; "
                f"this app knows up to {schema.SCHEMA_VERSION})."
            )
        if not self.is_duckdb:
            from esg_workbench.workspace import postgres_security

            if postgres_security.configured_roles(conn) is not None and not self._owns_tables(conn):
                raise WorkspaceError(
                    f"This shared workspace needs an upgrade (schema version {version} to {schema.SCHEMA_VERSION}) "
                    "that only its owner can make.",
                    hint="Ask the workspace's administrator to run: esg-workbench workspace init-postgres "
                         "WORKSPACE_URL --admin-url ADMIN_URL")

    @staticmethod
    def _owns_tables(conn: sa.Connection) -> bool:
        return bool(conn.execute(sa.text(
            "SELECT pg_has_role(current_user, relowner, 'USAGE') FROM pg_class WHERE oid = to_regclass('workspace_meta')"
        )).scalar())

    # --- the session's organization (PostgreSQL) -----------------------------------------------

    def _on_connect(self, dbapi_conn, _record) -> None:
        """Every new connection carries the session's organization (a setting the row-level
        security policies read; see postgres_security.py)."""
        from esg_workbench.workspace.postgres_security import SETTING

        with dbapi_conn.cursor() as cursor:
            cursor.execute("SELECT set_config(%s, %s, false)", (SETTING, self.organization_id or ""))
            if self._search_path:  # the workspace's tables, then the organization's raw tables
                cursor.execute("SELECT set_config('search_path', %s, false)", (self._search_path,))
        dbapi_conn.commit()  # a setting made in a transaction that is rolled back would be undone

    def _check_access(self) -> None:
        """Before anything else on an existing PostgreSQL workspace: a role that may not
        read it gets a plain answer, not a "permission denied" for some table."""
        from esg_workbench.workspace import postgres_security as sec

        with self.engine.connect() as conn:
            if not conn.execute(sa.text("SELECT to_regclass('workspace_meta') IS NOT NULL")).scalar():
                if conn.execute(sa.text("SELECT has_schema_privilege(current_schema(), 'CREATE')")).scalar():
                    return  # a new workspace: migrate() makes it
                role = conn.execute(sa.text("SELECT current_user")).scalar()
                raise WorkspaceError(
                    f"This database holds no workspace yet, and the database role '{role}' may not make one.",
                    hint="An administrator sets it up with: esg-workbench workspace init-postgres WORKSPACE_URL "
                         "--admin-url ADMIN_URL")
            if conn.execute(sa.text("SELECT has_table_privilege('workspace_meta', 'SELECT')")).scalar():
                return
            role = conn.execute(sa.text("SELECT current_user")).scalar()
            sec.refuse_rls_exempt(role, sec.role_attributes(conn, role))
        raise WorkspaceError(
            f"The database role '{role}' has no access to this shared workspace.",
            hint="An administrator adds it with: esg-workbench user add ROLE --organization ORG --admin-url ADMIN_URL")

    def _choose_organization(self, requested: str | None) -> None:
        """Pick the session's organization on a PostgreSQL workspace: the one asked for (it
        must be one of the role's), else the role's only one; several: OrganizationChoiceNeeded."""
        from esg_workbench.core.errors import NotFound
        from esg_workbench.workspace import postgres_security as sec

        with self.engine.connect() as conn:
            self.database_role = conn.execute(sa.text("SELECT current_user")).scalar()
            self.roles = sec.configured_roles(conn)
            if self.roles is None:  # not shared: one organization, as on DuckDB
                self.organization_id = requested or DEFAULT_ORGANIZATION
                return
            sec.refuse_rls_exempt(self.database_role, sec.role_attributes(conn, self.database_role))
            mine = sec.member_organizations(conn, self.roles)
            tables_schema = conn.execute(sa.text("SELECT current_schema()")).scalar()
        if requested:
            sec.check_organization_id(requested)
            if requested not in mine:
                raise NotFound(
                    f"The database role '{self.database_role}' is not a member of organization '{requested}'.",
                    hint=(f"Its organizations: {', '.join(mine)}." if mine else "It belongs to no organization yet.")
                    + " An administrator adds it with: esg-workbench user add ROLE --organization ORG --admin-url ADMIN_URL")
            self.organization_id = requested
        elif len(mine) == 1:
            self.organization_id = mine[0]
        elif not mine:
            raise WorkspaceError(
                f"The database role '{self.database_role}' belongs to no organization of this workspace.",
                hint="An administrator adds it with: esg-workbench user add ROLE --organization ORG --admin-url ADMIN_URL")
        else:
            raise sec.OrganizationChoiceNeeded(self.database_role, mine)
        quote = self.engine.dialect.identifier_preparer.quote
        # the workspace's tables first: a table an analyst makes in the organization's schema
        # cannot stand in for one of them
        self._search_path = f"{quote(tables_schema)}, {quote(self.roles.raw_schema(self.organization_id))}"
        self.engine.dispose()  # connections made before the choice carry no organization


def open_workspace(url: str | None = None, *, organization_id: str | None = None) -> Workspace:
    """Open (creating or upgrading) the workspace at `url`, `$ESG_WORKBENCH_WORKSPACE`
    or the default DuckDB file in the user's data directory.

    The organization: a DuckDB workspace has one ('default'). On a PostgreSQL workspace
    it is `organization_id`, else `$ESG_WORKBENCH_ORGANIZATION`, else the only one the
    database role belongs to (several: OrganizationChoiceNeeded, which lists them)."""
    limit_malloc_arenas()  # before the connections' and the syncs' threads allocate
    kind, engine_url = _engine_url(url)
    if kind == "duckdb" and organization_id not in (None, DEFAULT_ORGANIZATION):
        raise WorkspaceError(
            f"A DuckDB workspace has one organization ('{DEFAULT_ORGANIZATION}'), not '{organization_id}'.",
            hint="Share a PostgreSQL workspace to keep several organizations apart (see the README).")
    try:
        if kind == "duckdb":
            engine = sa.create_engine(engine_url, poolclass=sa.pool.QueuePool, pool_size=8, max_overflow=8,
                                      creator=_duckdb_connect(engine_url))
            workspace = Workspace(kind, engine_url, engine)
        else:
            engine = sa.create_engine(engine_url, pool_pre_ping=True, connect_args={"options": "-c TimeZone=UTC"})
            workspace = Workspace(kind, engine_url, engine, organization_id="")
            sa.event.listen(engine, "connect", workspace._on_connect)
            workspace._check_access()
        workspace.migrate()
        if not workspace.is_duckdb:
            workspace._choose_organization(organization_id or os.environ.get(ENV_ORGANIZATION) or None)
        from esg_workbench.workspace import sync_records

        sync_records.mark_dead_runs(workspace)
    except EsgError:
        engine.dispose()
        raise
    except sa.exc.SQLAlchemyError as exc:
        orig = getattr(exc, "orig", exc)
        text = str(orig).splitlines()[0] if str(orig) else type(orig).__name__
        if "lock" in text.lower():
            raise WorkspaceError(
                f"The workspace {sa.engine.make_url(engine_url).render_as_string(hide_password=True).split('://')[-1]} "
                "is open in another ESG Workbench process.",
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
