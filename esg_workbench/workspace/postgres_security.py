"""Row-level security of a shared PostgreSQL workspace: roles, policies, grants.

Who is who (roles are cluster-wide, so theirs start with the workspace's prefix):

* ``<prefix>_analysts`` (NOLOGIN): every analyst. Reads and writes rows of the workspace
  tables, no DDL on them; appends to the audit chain but never changes or deletes it.
* ``<prefix>_org_<id>`` (NOLOGIN), one per organization: its analysts are members. It may
  read and write the rows of the organization's raw tables (in a schema of the same name,
  second on the session's search_path) and nothing else: it owns no object and may create
  none, so becoming it (SET ROLE) gains an analyst nothing.
* analysts: LOGIN roles of their own name, members of the group and of their organizations.
  Never superuser, never BYPASSRLS (row-level security would not apply to them).
* the owner: the ``--admin-url`` role that ran init-postgres. Owns every table, the raw
  tables included, every schema and every function.

Nothing an analyst can create or alter is ever evaluated in a colleague's session: an
analyst who also works for another organization would run it with access to that
organization's rows (and ``set_config`` alone moves a session into another organization).
So no analyst, nor any role an analyst can become, owns a table, function, view, rule,
trigger, policy or default that the app's queries touch, or may create objects in any schema
(only temporary ones, which only their own session sees). The app changes raw tables'
definitions through SECURITY DEFINER functions owned by the owner (``esg_raw_*``), which take
a raw table's name, column names and column types from a fixed list, check them, and act
only in the schema of the session's organization, which the session's login role
(``session_user``, whatever role it has SET) must belong to. Where the administrator is a
superuser, an event trigger refuses code objects (functions, types, views, ...) to every
session whose login role is an analyst, whatever role it has become.

Analysts cannot create objects in the workspace's schema (``public``): a role that could
would be able to plant functions or operators that other analysts' queries call
(CVE-2018-1058); init-postgres also revokes that right from PUBLIC where an older server
grants it.

The session's organization is a setting (``esg.organization_id``) the app sets on each new
connection. Plain SQL on the same connection can change it, so the policies never trust it
alone: ``esg_session_org()`` returns it only when ``current_user`` is a member of that
organization's role, else NULL, and NULL matches no row. Every table has ENABLE and FORCE
ROW LEVEL SECURITY (the owner is not exempt); the policies compare with
``(SELECT esg_session_org())``, an InitPlan the executor evaluates once per statement, not
once per row.

Sizes: where the administrator is a superuser, the statistics views and functions that
count rows per table (pg_stat_*, pg_statio_*, pg_sequences, the relation size functions)
are revoked from PUBLIC in the workspace's database, and analysts may only draw from the
id sequences, not read them. What remains visible is listed in the README.

init-postgres runs the steps of SETUP_STEPS in order (a feature adds its own step there)
and then, for every organization, raw_table_security.lock_down_organization.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import sqlalchemy as sa

from esg_workbench.core.errors import ConfigError, WorkspaceError
from esg_workbench.workspace import audit_trigger

SETTING = "esg.organization_id"
SESSION_FUNCTION = "esg_session_org"
MEMBER_FUNCTION = "esg_member_organizations"
AUDIT_TRIGGER_FUNCTION = "esg_audit_actor_check"
POLICY = "esg_organization"
OWNER_POLICY = "esg_owner"
AUDIT_TRIGGER = "esg_audit_actor"
DDL_GUARD_FUNCTION = "esg_refuse_analyst_code"
DDL_GUARD = "esg_analyst_code"
#: what analysts may not create: anything that runs code in a caller's session
GUARDED_COMMANDS = ("CREATE FUNCTION", "CREATE PROCEDURE", "CREATE AGGREGATE", "CREATE OPERATOR",
                    "CREATE OPERATOR CLASS", "CREATE OPERATOR FAMILY", "CREATE CAST", "CREATE TYPE",
                    "CREATE DOMAIN", "CREATE CONVERSION", "CREATE TRIGGER", "CREATE RULE", "CREATE VIEW",
                    "CREATE MATERIALIZED VIEW", "ALTER FUNCTION", "ALTER OPERATOR", "ALTER TYPE")
META_PREFIX = "rls_role_prefix"
META_OWNER = "rls_owner"
#: the column every raw table of a secured workspace gets (its lineage columns are _esg_* too,
#: and a source table may well have an "organization_id" of its own)
RAW_ORGANIZATION_COLUMN = "_esg_organization_id"
#: ids of a secured workspace come from one sequence per table and organization (in the
#: organization's schema, under the table's sequence name, so the app's nextval('x_id_seq')
#: finds it on the session's search path): organization n draws base + n, base + n + STRIDE,
#: ... so ids stay unique across organizations, and a session's ids tell nothing about how
#: many rows other organizations make. The workspace-wide sequence stays, renamed, as the
#: high-water mark of the ids drawn before.
ID_STRIDE = 65536
ID_FUNCTION = "esg_next_id"
SHARED_SEQUENCE_SUFFIX = "_shared"
#: the statistics views that count or size other organizations' tables (PostgreSQL 13 to 17),
#: and pg_locks (which tables other sessions are writing, and their advisory locks)
STATISTICS_VIEWS = (
    "pg_stat_all_tables", "pg_stat_sys_tables", "pg_stat_user_tables", "pg_stat_xact_all_tables",
    "pg_stat_xact_sys_tables", "pg_stat_xact_user_tables", "pg_statio_all_tables", "pg_statio_sys_tables",
    "pg_statio_user_tables", "pg_stat_all_indexes", "pg_stat_sys_indexes", "pg_stat_user_indexes",
    "pg_statio_all_indexes", "pg_statio_sys_indexes", "pg_statio_user_indexes", "pg_statio_all_sequences",
    "pg_statio_sys_sequences", "pg_statio_user_sequences", "pg_stat_user_functions", "pg_stat_xact_user_functions",
    "pg_stat_database", "pg_stat_database_conflicts", "pg_sequences", "pg_stat_progress_analyze",
    "pg_stat_progress_vacuum", "pg_stat_progress_copy", "pg_stat_progress_create_index",
    "pg_stat_progress_cluster", "pg_locks")
#: ... and the functions behind them: pg_stat_get_*(oid) of a table, index, function or
#: database, the size functions and a sequence's last value
STATISTICS_FUNCTIONS_SQL = (
    "SELECT p.oid::regprocedure::text AS f, p.proacl, p.proowner FROM pg_proc p WHERE p.pronamespace = 'pg_catalog'::regnamespace AND "
    "((p.proname LIKE 'pg\\_stat\\_get\\_%' AND p.proargtypes::text = '26') OR p.proname IN "
    "('pg_relation_size', 'pg_total_relation_size', 'pg_table_size', 'pg_indexes_size', 'pg_sequence_last_value', "
    "'pg_lock_status'))")

ORGANIZATION_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
ROLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.@-]{0,62}")


class OrganizationChoiceNeeded(WorkspaceError):
    """The role belongs to several organizations and none was chosen."""

    def __init__(self, role: str, organizations: list[str]):
        super().__init__(
            f"The database role '{role}' belongs to several organizations: {', '.join(organizations)}.",
            hint="Choose one with --organization ORG or ESG_WORKBENCH_ORGANIZATION=ORG.")
        self.role = role
        self.organizations = organizations


def check_organization_id(org: str) -> str:
    if not isinstance(org, str) or not ORGANIZATION_ID.fullmatch(org):
        raise ConfigError(
            f"'{org}' is not a valid organization id.",
            hint="Use 1 to 40 lower-case letters, digits, '_' or '-', starting with a letter or digit "
                 "(e.g. acme or acme-uk).")
    return org


def check_role_name(role: str) -> str:
    if not isinstance(role, str) or not ROLE_NAME.fullmatch(role):
        raise ConfigError(f"'{role}' is not a database role name this app creates.",
                          hint="Use letters, digits and '_' (e.g. alice or analyst_alice).")
    return role


def default_prefix(database: str) -> str:
    """A readable prefix unique to the database (at most 18 characters, so that prefix,
    '_org_' and a 40-character organization id fit PostgreSQL's 63)."""
    slug = re.sub(r"[^a-z0-9]+", "_", database.lower()).strip("_")[:11] or "ws"
    return f"{slug}_{hashlib.sha1(database.encode()).hexdigest()[:6]}"


@dataclass(frozen=True)
class Roles:
    prefix: str

    @property
    def analysts(self) -> str:
        return f"{self.prefix}_analysts"

    def organization(self, org: str) -> str:
        return f"{self.prefix}_org_{check_organization_id(org)}"

    def raw_schema(self, org: str) -> str:
        """The schema of the organization's raw tables (named like its role)."""
        return self.organization(org)

    @property
    def organization_role_prefix(self) -> str:
        return f"{self.prefix}_org_"


def _execute_plain(conn: sa.Connection, sql: str) -> None:
    """A DDL statement as it is, in the caller's transaction: without parameters, so that
    neither SQLAlchemy (':name') nor psycopg ('%') reads placeholders into its text."""
    with conn.connection.driver_connection.cursor() as cursor:
        cursor.execute(sql)


def _quote(conn: sa.Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def configured_roles(conn: sa.Connection) -> Roles | None:
    """The workspace's roles when init-postgres secured it, else None."""
    exists = conn.execute(sa.text("SELECT to_regclass('workspace_meta') IS NOT NULL")).scalar()
    if not exists:
        return None
    prefix = conn.execute(sa.text("SELECT value FROM workspace_meta WHERE key = :k"), {"k": META_PREFIX}).scalar()
    return Roles(prefix) if prefix else None


def role_attributes(conn: sa.Connection, role: str) -> dict[str, Any] | None:
    row = conn.execute(sa.text(
        "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcanlogin FROM pg_roles WHERE rolname = :r"), {"r": role}).first()
    return dict(row._mapping) if row else None


def member_organizations(conn: sa.Connection, roles: Roles) -> list[str]:
    """The organizations the session's role may use, sorted."""
    return sorted(conn.execute(sa.text(f"SELECT {MEMBER_FUNCTION}()")).scalars().all())


def refuse_rls_exempt(role: str, attrs: dict[str, Any] | None) -> None:
    if attrs and (attrs["rolsuper"] or attrs["rolbypassrls"]):
        kind = "a superuser" if attrs["rolsuper"] else "a role with BYPASSRLS"
        raise WorkspaceError(
            f"The app cannot connect as '{role}': it is {kind}, and row-level security would not apply to it.",
            hint="Give each analyst a role of their own (esg-workbench user add NAME --organization ORG "
                 "--admin-url ADMIN_URL) and use that in the workspace URL.")


# --- the functions, policies and grants ---------------------------------------------------------

def _function_sql(roles: Roles, schema: str) -> list[tuple[str, str]]:
    """(name, CREATE OR REPLACE statement) of the functions the policies and the app use.
    They pin their search_path: a role that can create objects must not be able to slip its
    own pg_has_role or = into them. `schema`: the workspace's schema, quoted (the raw-table
    functions call each other by their full names)."""
    org_prefix = _literal(roles.organization_role_prefix)
    analysts = _literal(roles.analysts)
    guard_roles = f"""(pg_has_role(session_user, {analysts}, 'MEMBER')
           OR pg_has_role(current_user, {analysts}, 'MEMBER')
           OR EXISTS (SELECT 1 FROM pg_roles r WHERE starts_with(r.rolname, {org_prefix})
                      AND (pg_has_role(session_user, r.oid, 'MEMBER') OR pg_has_role(current_user, r.oid, 'MEMBER'))))"""
    return [
        (MEMBER_FUNCTION, f"""
CREATE OR REPLACE FUNCTION {MEMBER_FUNCTION}() RETURNS SETOF text
LANGUAGE sql STABLE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT substr(r.rolname, length({org_prefix}) + 1)
    FROM pg_roles r
    WHERE starts_with(r.rolname, {org_prefix}) AND pg_has_role(current_user, r.oid, 'MEMBER')
$fn$"""),
        (SESSION_FUNCTION, f"""
CREATE OR REPLACE FUNCTION {SESSION_FUNCTION}() RETURNS text
LANGUAGE sql STABLE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT s.org
    FROM (SELECT nullif(current_setting('{SETTING}', true), '') AS org) s
    JOIN pg_roles r ON r.rolname = {org_prefix} || s.org
    WHERE pg_has_role(current_user, r.oid, 'MEMBER')
$fn$"""),
        (AUDIT_TRIGGER_FUNCTION, f"""
CREATE OR REPLACE FUNCTION {AUDIT_TRIGGER_FUNCTION}() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    -- the actor is 'role (os: user)': the role part must be the role writing the entry
    IF split_part(NEW.actor, ' (os: ', 1) IS DISTINCT FROM current_user::text THEN
        RAISE EXCEPTION 'an audit entry must name the database role that writes it (%), not "%"',
            current_user, NEW.actor USING ERRCODE = '42501';
    END IF;
    RETURN NEW;
END
$fn$"""),
        (DDL_GUARD_FUNCTION, f"""
CREATE OR REPLACE FUNCTION {DDL_GUARD_FUNCTION}() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    -- code of an analyst's own would run as whoever calls it: as a colleague who also works
    -- for another organization, it could read that organization's rows. Every role the
    -- session acts as counts: its login role, and whatever role it has SET.
    IF NOT coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = session_user), false)
       AND {guard_roles} THEN
        RAISE EXCEPTION 'analysts of this workspace may not run %', tg_tag USING ERRCODE = '42501';
    END IF;
END
$fn$"""),
        (ID_FUNCTION, f"""
CREATE OR REPLACE FUNCTION {ID_FUNCTION}(seq text) RETURNS bigint
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    org text := {schema}.{SESSION_FUNCTION}();
BEGIN
    -- a server-side default: the session's organization's own sequence (see ID_STRIDE)
    IF org IS NULL THEN
        RAISE EXCEPTION 'the session works in no organization of this workspace' USING ERRCODE = '42501';
    END IF;
    RETURN nextval(format('%I.%I', {org_prefix} || org, seq)::regclass);
END
$fn$"""),
    ]


def _policy_expressions(table: str, column: str = "organization_id") -> tuple[str, str]:
    """(USING, WITH CHECK) of a table's organization policy."""
    mine = f"({column} = (SELECT {SESSION_FUNCTION}()))"
    if table == "workspace_meta":  # the workspace's own rows ('*') are for every reader
        return f"(({column} = '*') OR {mine})", mine
    if table == "organizations":  # an analyst sees every organization they belong to
        member = f"({column} IN (SELECT {MEMBER_FUNCTION}()))"
        return member, member
    return mine, mine


def _privileges(table: str) -> set[str]:
    if table in ("workspace_meta", "organizations", "esg_audit_heads"):
        return {"SELECT"}
    if table == "esg_ingestion_audit":  # append-only
        return {"SELECT", "INSERT"}
    return {"SELECT", "INSERT", "UPDATE", "DELETE"}


class _Setup:
    """Brings the database to the secured state, acting only where it differs (so a second
    run takes no lock and changes nothing). Each change is described in `changes`."""

    def __init__(self, conn: sa.Connection, roles: Roles, owner: str):
        self.conn = conn
        self.roles = roles
        self.owner = owner
        self.changes: list[str] = []

    def q(self, name: str) -> str:
        return _quote(self.conn, name)

    def run(self, sql: str, change: str) -> None:
        _execute_plain(self.conn, sql)
        self.changes.append(change)

    def scalar(self, sql: str, **params) -> Any:
        return self.conn.execute(sa.text(sql), params).scalar()

    @contextlib.contextmanager
    def member_of(self, role: str) -> Iterator[None]:
        """Act on an object of `role`'s: a CREATEROLE administrator (no superuser) must be a
        member of its owner to alter or drop it, and is made one for that long."""
        if self.scalar("SELECT pg_has_role(current_user, :r, 'MEMBER')", r=role):
            yield
            return
        _execute_plain(self.conn, f"GRANT {self.q(role)} TO CURRENT_USER")
        yield  # (a failure rolls the whole transaction back, the grant with it)
        _execute_plain(self.conn, f"REVOKE {self.q(role)} FROM CURRENT_USER")

    # roles

    def group_role(self, role: str) -> None:
        if role_attributes(self.conn, role) is None:
            self.run(f"CREATE ROLE {self.q(role)} NOLOGIN NOSUPERUSER NOBYPASSRLS",
                     f"created role {role}")

    def login_role(self, role: str, password: str | None) -> bool:
        """Create the analyst's LOGIN role unless it exists; True when created."""
        attrs = role_attributes(self.conn, role)
        if attrs is not None:
            refuse_rls_exempt(role, attrs)
            return False
        sql = f"CREATE ROLE {self.q(role)} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"
        with _no_statement_in_errors(f"Cannot create the role '{role}'"):
            self.run(sql + (f" PASSWORD {_literal(scram_verifier(password))}" if password else ""),
                     f"created login role {role}")
        return True

    def membership(self, member: str, group: str) -> None:
        if not self.scalar("SELECT EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
                           "JOIN pg_roles u ON u.oid = m.member WHERE g.rolname = :g AND u.rolname = :u)",
                           g=group, u=member):
            self.run(f"GRANT {self.q(group)} TO {self.q(member)}", f"made {member} a member of {group}")

    def schema_usage(self, role: str) -> None:
        if not self.scalar("SELECT has_schema_privilege(:r, current_schema(), 'USAGE')", r=role):
            self.run(f"GRANT USAGE ON SCHEMA {self.q(self.scalar('SELECT current_schema()'))} TO {self.q(role)}",
                     f"granted USAGE on the schema to {role}")

    def no_create_for_public(self) -> None:
        """PostgreSQL before 15 lets every role create objects in public."""
        if self.scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace n, aclexplode(n.nspacl) a "
                       "WHERE n.oid = current_schema()::regnamespace AND a.grantee = 0 AND a.privilege_type = 'CREATE')"):
            self.run(f"REVOKE CREATE ON SCHEMA {self.q(self.scalar('SELECT current_schema()'))} FROM PUBLIC",
                     "revoked CREATE on the schema from PUBLIC")

    def organization_schema(self, name: str, role: str) -> None:
        """The administrator owns it; the organization's role may use it but create nothing
        in it (a workspace set up by an older version let it: that right is taken back)."""
        if self.scalar("SELECT to_regnamespace(:n) IS NULL", n=self.q(name)):
            self.run(f"CREATE SCHEMA {self.q(name)}", f"created schema {name}")
        if not self.scalar("SELECT has_schema_privilege(:r, to_regnamespace(:n), 'USAGE')", r=role, n=self.q(name)):
            self.run(f"GRANT USAGE ON SCHEMA {self.q(name)} TO {self.q(role)}",
                     f"granted USAGE on schema {name} to {role}")
        creators = self.conn.execute(sa.text(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END "
            "FROM pg_namespace n, aclexplode(n.nspacl) a WHERE n.oid = to_regnamespace(:n) "
            "AND a.privilege_type = 'CREATE' AND a.grantee <> n.nspowner ORDER BY 1"), {"n": self.q(name)}).scalars().all()
        for creator in creators:  # regrole::text is quoted already
            self.run(f"REVOKE CREATE ON SCHEMA {self.q(name)} FROM {creator}",
                     f"revoked CREATE on schema {name} from {creator}")

    # tables

    def functions(self, *more: Callable[[Roles, str], list[tuple[str, str]]]) -> None:
        """The functions of _function_sql and of `more` (functions of that signature)."""
        schema = self.q(self.scalar("SELECT current_schema()"))
        for name, sql in [f for make in (_function_sql, *more) for f in make(self.roles, schema)]:
            current = self.scalar("SELECT p.prosrc FROM pg_proc p "
                                  "WHERE p.proname = :n AND p.pronamespace = current_schema()::regnamespace", n=name)
            if current is None or current.strip() != _body(sql):
                self.run(sql, f"{'created' if current is None else 'updated'} function {name}()")

    def column_default(self, table: str, column: str, expression: str,
                       what: str = "defaults to the session's organization") -> None:
        current = self.scalar(
            "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_attribute a "
            "ON a.attrelid = d.adrelid AND a.attnum = d.adnum WHERE d.adrelid = to_regclass(:t) AND a.attname = :c",
            t=self.q(table), c=column)
        if current is None or not _same_expression(current, expression):
            self.run(f"ALTER TABLE {self.q(table)} ALTER COLUMN {self.q(column)} SET DEFAULT {expression}",
                     f"{table}.{column} {what}")

    def row_security(self, table: str, relation: str | None = None) -> None:
        """`relation`: the table's quoted (schema-qualified) name, when not in the search path."""
        relation = relation or self.q(table)
        enabled, forced = self.conn.execute(sa.text(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = to_regclass(:t)"),
            {"t": relation}).one()
        if not enabled:
            self.run(f"ALTER TABLE {relation} ENABLE ROW LEVEL SECURITY", f"enabled row-level security on {table}")
        if not forced:
            self.run(f"ALTER TABLE {relation} FORCE ROW LEVEL SECURITY", f"forced row-level security on {table}")

    def policy(self, table: str, name: str, using: str, check: str, to: str | None = None,
               relation: str | None = None) -> None:
        relation = relation or self.q(table)
        row = self.conn.execute(sa.text(
            "SELECT pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid) "
            "FROM pg_policy p WHERE p.polrelid = to_regclass(:t) AND p.polname = :n"),
            {"t": relation, "n": name}).first()
        target = f" TO {self.q(to)}" if to else ""
        if row is not None and _same_expression(row[0], using) and _same_expression(row[1], check):
            return
        if row is not None:
            self.run(f"DROP POLICY {self.q(name)} ON {relation}", f"replaced policy {name} on {table}")
        self.run(f"CREATE POLICY {self.q(name)} ON {relation}{target} USING {using} WITH CHECK {check}",
                 f"created policy {name} on {table}")

    def table_grants(self, table: str, role: str, privileges: set[str]) -> None:
        held = set(self.conn.execute(sa.text(
            "SELECT privilege_type FROM information_schema.role_table_grants "
            "WHERE table_schema = current_schema() AND table_name = :t AND grantee = :r"),
            {"t": table, "r": role}).scalars())
        missing = sorted(privileges - held)
        if missing:
            self.run(f"GRANT {', '.join(missing)} ON {self.q(table)} TO {self.q(role)}",
                     f"granted {', '.join(missing)} on {table} to {role}")

    def shared_sequence(self, table: str, sequence: str) -> None:
        """The workspace-wide id sequence of `table` steps aside for the organizations' own
        (ID_STRIDE): renamed, out of the analysts' reach, no longer the column's default."""
        shared = sequence + SHARED_SEQUENCE_SUFFIX
        if self.scalar("SELECT to_regclass(:s) IS NOT NULL", s=self.q(sequence)) and \
                self.scalar("SELECT to_regclass(:s) IS NULL", s=self.q(shared)):
            self.run(f"ALTER SEQUENCE {self.q(sequence)} RENAME TO {self.q(shared)}",
                     f"ids of {table} come from each organization's own sequence")
        self.column_default(table, "id", f"{ID_FUNCTION}({_literal(sequence)})",
                            "defaults to an id of the session's organization")
        for grantee in self.conn.execute(sa.text(
                "SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END "
                "FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = to_regclass(:s) AND a.grantee <> c.relowner "
                "ORDER BY 1"), {"s": self.q(shared)}).scalars().all():
            self.run(f"REVOKE ALL ON SEQUENCE {self.q(shared)} FROM {grantee}",
                     f"revoked the sequence {shared} from {grantee.strip(chr(34))}")

    def organization_sequence(self, org: str, sequence: str) -> None:
        """`sequence` in the organization's schema (see ID_STRIDE); only the organization's
        role may draw from it (USAGE: nextval, not its last value)."""
        schema_name, role = self.roles.raw_schema(org), self.roles.organization(org)
        qualified = f"{self.q(schema_name)}.{self.q(sequence)}"
        if self.scalar("SELECT to_regclass(:s) IS NULL", s=qualified):
            offset = 1 + self.scalar(
                "SELECT coalesce(max(s.seqstart % :stride), 0) FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = :n AND starts_with(n.nspname, :p) "
                "AND s.seqincrement = :stride", stride=ID_STRIDE, n=sequence, p=self.roles.organization_role_prefix)
            if offset >= ID_STRIDE:
                raise WorkspaceError(f"This workspace has ids for {ID_STRIDE - 1} organizations; no more fit.")
            shared = self.q(sequence + SHARED_SEQUENCE_SUFFIX)
            drawn = self.scalar(f"SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {shared}") \
                if self.scalar("SELECT to_regclass(:s) IS NOT NULL", s=shared) else 0
            start = (drawn // ID_STRIDE + 1) * ID_STRIDE + offset
            self.run(f"CREATE SEQUENCE {qualified} INCREMENT BY {ID_STRIDE} START WITH {start}",
                     f"created sequence {sequence} of {org}")
        if not self.scalar("SELECT has_sequence_privilege(:r, to_regclass(:s), 'USAGE')", r=role, s=qualified):
            self.run(f"GRANT USAGE ON SEQUENCE {qualified} TO {self.q(role)}",
                     f"granted USAGE on sequence {sequence} of {org} to {role}")

    def function_privileges(self, name: str, arguments: str, grantee: str | None) -> None:
        """Only `grantee` (None: only the owner) may call the function, not PUBLIC."""
        signature = f"{self.q(self.scalar('SELECT current_schema()'))}.{name}({arguments})"
        if self.scalar("SELECT EXISTS (SELECT 1 FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a "
                       "WHERE p.oid = to_regprocedure(:f) AND a.grantee = 0)", f=signature):
            self.run(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC", f"only the app may call {name}()")
        if grantee and not self.scalar("SELECT has_function_privilege(:r, to_regprocedure(:f), 'EXECUTE')",
                                       r=grantee, f=signature):
            self.run(f"GRANT EXECUTE ON FUNCTION {signature} TO {self.q(grantee)}",
                     f"granted EXECUTE on {name}() to {grantee}")

    def statistics(self) -> None:
        """Revoke from PUBLIC the statistics that count or size other organizations' tables
        (a superuser's set-up only: pg_catalog's objects belong to the bootstrap superuser)."""
        if not self.scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
            return
        public_may = ("EXISTS (SELECT 1 FROM aclexplode(coalesce({acl}, acldefault({kind}, {owner}))) a "
                      "WHERE a.grantee = 0)")
        views = self.conn.execute(sa.text(
            "SELECT c.oid::regclass::text FROM pg_class c WHERE c.relnamespace = 'pg_catalog'::regnamespace "
            "AND c.relname = ANY(:v) AND " + public_may.format(acl="c.relacl", kind="'r'", owner="c.relowner")
            + " ORDER BY 1"), {"v": list(STATISTICS_VIEWS)}).scalars().all()
        if views:
            self.run(f"REVOKE SELECT ON {', '.join(views)} FROM PUBLIC",
                     f"revoked the statistics views ({len(views)}) from PUBLIC")
        functions = self.conn.execute(sa.text(
            f"SELECT f FROM ({STATISTICS_FUNCTIONS_SQL}) s "
            "WHERE " + public_may.format(acl="s.proacl", kind="'f'", owner="s.proowner") + " ORDER BY 1")).scalars().all()
        if functions:
            self.run(f"REVOKE EXECUTE ON FUNCTION {', '.join(functions)} FROM PUBLIC",
                     f"revoked the statistics and size functions ({len(functions)}) from PUBLIC")

    def ddl_guard(self) -> None:
        """An event trigger refusing analysts' code objects (event triggers need a superuser:
        a CREATEROLE administrator's workspace goes without, see the README)."""
        if not self.scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
            return
        tags = ", ".join(_literal(tag) for tag in GUARDED_COMMANDS)
        current = self.scalar("SELECT array_to_string(evttags, ',') FROM pg_event_trigger WHERE evtname = :n",
                              n=DDL_GUARD)
        if current == ",".join(GUARDED_COMMANDS):
            return
        if current is not None:
            self.run(f"DROP EVENT TRIGGER {DDL_GUARD}", f"replaced event trigger {DDL_GUARD}")
        self.run(f"CREATE EVENT TRIGGER {DDL_GUARD} ON ddl_command_start WHEN TAG IN ({tags}) "
                 f"EXECUTE FUNCTION {DDL_GUARD_FUNCTION}()", "analysts may not create functions, operators, types, "
                 "triggers, rules or views")

    def audit_trigger(self) -> None:
        if not self.scalar("SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass('esg_ingestion_audit') "
                           "AND tgname = :n)", n=AUDIT_TRIGGER):
            self.run(f"CREATE TRIGGER {AUDIT_TRIGGER} BEFORE INSERT ON esg_ingestion_audit "
                     f"FOR EACH ROW EXECUTE FUNCTION {AUDIT_TRIGGER_FUNCTION}()",
                     "audit entries must name the role that writes them")


def _body(sql: str) -> str:
    """A function's body, to compare what exists with what this version of the app makes."""
    match = re.search(r"\$fn\$(.*)\$fn\$", sql, re.S)
    return match.group(1).strip() if match else sql


def _same_expression(stored: str | None, wanted: str) -> bool:
    """pg_get_expr() respells an expression (casts, parentheses): compare the words."""
    if stored is None:
        return False
    def words(text: str) -> str:
        text = re.sub(r"\s+as\s+[a-z_]+", "", text.lower())  # SELECT f() AS f
        text = re.sub(r"::(character varying|[a-z_]+)(\([0-9, ]+\))?", "", text)  # casts
        return re.sub(r"[()\s]", "", text)
    return words(stored) == words(wanted)


def _workspace_roles(setup: _Setup) -> None:
    setup.group_role(setup.roles.analysts)
    setup.schema_usage(setup.roles.analysts)
    setup.no_create_for_public()


def _functions(setup: _Setup) -> None:
    from esg_workbench.workspace import raw_table_security as raw

    setup.functions(raw.function_sql)
    for name, arguments in raw.HELPER_FUNCTIONS.items():
        setup.function_privileges(name, arguments, None)
    for name, arguments in raw.DDL_FUNCTIONS.items():
        setup.function_privileges(name, arguments, setup.roles.analysts)


def _fixed_tables(setup: _Setup) -> None:
    """Defaults, row-level security, policies and grants on every table of schema.py."""
    from esg_workbench.workspace import schema

    for table in schema.metadata.sorted_tables:
        name = table.name
        if name not in ("workspace_meta", "organizations"):
            setup.column_default(name, "organization_id", f"{SESSION_FUNCTION}()")
        setup.row_security(name)
        using, check = _policy_expressions(name)
        setup.policy(name, POLICY, using, check)
        if name in ("workspace_meta", "organizations"):  # written by the owner only
            own = "(organization_id = '*')" if name == "workspace_meta" else "(true)"
            setup.policy(name, OWNER_POLICY, own, own, to=setup.owner)
        setup.table_grants(name, setup.roles.analysts, _privileges(name))
        for sequence in _id_sequences(table):
            setup.shared_sequence(name, sequence)


def _views(setup: _Setup) -> None:
    """Analysts read the views of schema.py (staging_rows) and nothing else of them. A view
    reads its tables as the caller (security_invoker), so the tables' row-level security,
    not the view owner's rights, decides which rows a session sees."""
    from esg_workbench.workspace import schema

    for view in schema.views.sorted_tables:
        options = setup.scalar("SELECT reloptions FROM pg_class WHERE oid = to_regclass(:v)", v=setup.q(view.name))
        if "security_invoker=true" not in (options or []):
            setup.run(f"ALTER VIEW {setup.q(view.name)} SET (security_invoker = true)",
                      f"{view.name} reads its tables with the reader's rights")
        setup.table_grants(view.name, setup.roles.analysts, {"SELECT"})


def _id_sequences(table: sa.Table) -> list[str]:
    return [c.default.name for c in table.columns if isinstance(c.default, sa.Sequence)]


#: init-postgres's set-up, in order: each step brings one part of the database to the
#: secured state, acting only where it differs. A feature with tables of its own to secure
#: appends its step here.
SETUP_STEPS: list[Callable[[_Setup], None]] = [
    _workspace_roles,
    _functions,
    _fixed_tables,
    _views,
    _Setup.audit_trigger,
    audit_trigger.install,  # the server links audit entries and keeps each chain's head
    _Setup.statistics,
    _Setup.ddl_guard,
]


def secure_tables(conn: sa.Connection, roles: Roles, owner: str) -> list[str]:
    """Run SETUP_STEPS inside the caller's transaction. Returns what changed."""
    setup = _Setup(conn, roles, owner)
    for step in SETUP_STEPS:
        step(setup)
    return setup.changes


def add_organization_role(conn: sa.Connection, roles: Roles, org: str) -> list[str]:
    """The organization's role, the schema of its raw tables and its id sequences."""
    from esg_workbench.workspace import schema

    setup = _Setup(conn, roles, "")
    role = roles.organization(org)
    setup.group_role(role)
    setup.organization_schema(roles.raw_schema(org), role)
    for table in schema.metadata.sorted_tables:
        for sequence in _id_sequences(table):
            setup.organization_sequence(org, sequence)
    return setup.changes


def add_analyst(conn: sa.Connection, roles: Roles, role: str, orgs: list[str], password: str | None) -> list[str]:
    """The analyst's LOGIN role (created when missing), in the analysts group and in each
    organization's role."""
    check_role_name(role)
    setup = _Setup(conn, roles, "")
    setup.login_role(role, password)
    setup.membership(role, roles.analysts)
    for org in orgs:
        setup.membership(role, roles.organization(org))
    return setup.changes


def remove_analyst(conn: sa.Connection, roles: Roles, role: str, orgs: list[str] | None) -> list[str]:
    """Take the analyst out of the given organizations (None: out of every one, and out of
    the analysts role, so that the workspace is closed to them). The login role stays."""
    setup = _Setup(conn, roles, "")
    member_of = set(conn.execute(sa.text(
        "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
        "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = :u"), {"u": role}).scalars())
    groups = [roles.organization(o) for o in orgs] if orgs is not None else sorted(
        g for g in member_of if g.startswith(roles.organization_role_prefix)) + [roles.analysts]
    for group in groups:
        if group in member_of:
            setup.run(f"REVOKE {_quote(conn, group)} FROM {_quote(conn, role)}", f"took {role} out of {group}")
    return setup.changes


# --- passwords ------------------------------------------------------------------------------

def scram_verifier(password: str, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677): the
    role gets its password without the clear text ever reaching the server or its logs."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", unicodedata.normalize("NFKC", password).encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = lambda b: base64.b64encode(b).decode()
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def set_password(conn: sa.Connection, role: str, password: str) -> None:
    with _no_statement_in_errors(f"Cannot set the password of '{role}'"):
        _execute_plain(conn, f"ALTER ROLE {_quote(conn, check_role_name(role))} PASSWORD "
                             f"{_literal(scram_verifier(password))}")


@contextlib.contextmanager
def _no_statement_in_errors(what: str) -> Iterator[None]:
    """A failed statement that holds a password verifier is reported by the server's
    reason alone: SQLAlchemy's message would quote the statement (into logs, crash reports)."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        reason = str(exc.orig).splitlines()[0] if exc.orig is not None else type(exc).__name__
        raise WorkspaceError(f"{what}: {reason}") from None
