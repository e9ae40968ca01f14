"""Helpers for tests of a shared (row-level secured) PostgreSQL workspace: a fresh database,
analyst roles with names unique to the test, and dropping every role the test made."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from typing import Iterator

import psycopg

from tests.conftest import PG_HOST, PG_PORT, PG_USER, port_open, service_missing


@dataclass
class SharedDatabase:
    database: str
    tag: str  # unique to the test: analyst roles are cluster-wide

    @property
    def admin_url(self) -> str:
        return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{self.database}"

    def role(self, name: str) -> str:
        return f"t{self.tag}_{name}"

    def url(self, role: str) -> str:
        return f"postgresql://{role}@{PG_HOST}:{PG_PORT}/{self.database}"

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=self.database, autocommit=True)


@contextlib.contextmanager
def shared_database() -> Iterator[SharedDatabase]:
    """A fresh database; afterwards every role made for it (the workspace's prefix, and the
    analysts named with the tag) is dropped, then the database."""
    if not port_open(PG_HOST, PG_PORT):
        service_missing(f"PostgreSQL on {PG_HOST}:{PG_PORT}")
    tag = uuid.uuid4().hex[:8]
    name = f"esg_rls_{tag}"
    server = psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True)
    server.execute(f'CREATE DATABASE "{name}"')
    shared = SharedDatabase(name, tag)
    try:
        yield shared
    finally:
        drop_roles(shared)
        server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        server.close()


def drop_roles(shared: SharedDatabase) -> None:
    from esg_workbench.workspace.postgres_security import default_prefix

    with shared.admin() as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                     (shared.database,))
        prefix = conn.execute("SELECT value FROM workspace_meta WHERE key = 'rls_role_prefix'").fetchone() \
            if conn.execute("SELECT to_regclass('workspace_meta')").fetchone()[0] else None
        patterns = [f"t{shared.tag}\\_%", (prefix[0] if prefix else default_prefix(shared.database)) + "\\_%"]
        roles = [r[0] for r in conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE %s OR rolname LIKE %s ORDER BY rolname", patterns)]
        conn.execute(f'ALTER DATABASE "{shared.database}" OWNER TO "{PG_USER}"')
        conn.execute('ALTER SCHEMA public OWNER TO pg_database_owner')
        for role in roles:
            conn.execute(f'DROP OWNED BY "{role}" CASCADE')
        for role in roles:
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')
