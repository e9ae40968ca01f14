"""Row-level security of a shared PostgreSQL workspace: roles, policies, grants.

Who is who (roles are cluster-wide, so theirs start with the workspace's prefix):

* ``<prefix>_analysts`` (NOLOGIN): every analyst. Reads and writes rows of the workspace
  tables, no DDL on them; appends to the audit chain but never changes or deletes it.
* ``<prefix>_org_<id>`` (NOLOGIN), one per organization: its analysts are members. It owns
  the organization's raw tables, in a schema of the same name only it may use, so
  every analyst of the organization can sync, widen and swap them, and nobody else has any
  privilege on them. Sessions find them first on their search_path.
* analysts: LOGIN roles of their own name, members of the group and of their organizations.
  Never superuser, never BYPASSRLS (row-level security would not apply to them).
* the owner: the ``--admin-url`` role that ran init-postgres. Owns the fixed tables.

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
from typing import Any, Iterator

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

def _function_sql(roles: Roles) -> list[tuple[str, str]]:
    """(name, CREATE OR REPLACE statement) of the functions the policies use. They pin
    their search_path: a role that can create objects must not be able to slip its own
    pg_has_role or = into them."""
    org_prefix = _literal(roles.organization_role_prefix)
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
    -- for another organization, it could read that organization's rows
    IF pg_has_role(current_user, {_literal(roles.analysts)}, 'MEMBER')
       AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RAISE EXCEPTION 'analysts of this workspace may not run %', tg_tag USING ERRCODE = '42501';
    END IF;
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
        """The administrator owns it (a CREATEROLE administrator may not give it away to a
        role it is no member of); the organization's role may use it and create in it."""
        if self.scalar("SELECT to_regnamespace(:n) IS NULL", n=self.q(name)):
            self.run(f"CREATE SCHEMA {self.q(name)}", f"created schema {name}")
        for privilege in ("USAGE", "CREATE"):
            if not self.scalar("SELECT has_schema_privilege(:r, to_regnamespace(:n), :p)", r=role, n=self.q(name),
                               p=privilege):
                self.run(f"GRANT {privilege} ON SCHEMA {self.q(name)} TO {self.q(role)}",
                         f"granted {privilege} on schema {name} to {role}")

    # tables

    def functions(self) -> None:
        for name, sql in _function_sql(self.roles):
            current = self.scalar("SELECT p.prosrc FROM pg_proc p "
                                  "WHERE p.proname = :n AND p.pronamespace = current_schema()::regnamespace", n=name)
            if current is None or current.strip() != _body(sql):
                self.run(sql, f"{'created' if current is None else 'updated'} function {name}()")

    def column_default(self, table: str, column: str, expression: str) -> None:
        current = self.scalar(
            "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_attribute a "
            "ON a.attrelid = d.adrelid AND a.attnum = d.adnum WHERE d.adrelid = to_regclass(:t) AND a.attname = :c",
            t=self.q(table), c=column)
        if current != expression:
            self.run(f"ALTER TABLE {self.q(table)} ALTER COLUMN {self.q(column)} SET DEFAULT {expression}",
                     f"{table}.{column} defaults to the session's organization")

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

    def sequence_grants(self, sequence: str, role: str) -> None:
        if not self.scalar("SELECT has_sequence_privilege(:r, to_regclass(:s), 'USAGE')", r=role, s=self.q(sequence)):
            self.run(f"GRANT USAGE, SELECT ON SEQUENCE {self.q(sequence)} TO {self.q(role)}",
                     f"granted USAGE on sequence {sequence} to {role}")

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


def secure_tables(conn: sa.Connection, roles: Roles, owner: str) -> list[str]:
    """Functions, defaults, row-level security, policies, grants and the audit trigger on
    every fixed table, inside the caller's transaction. Returns what changed."""
    from esg_workbench.workspace import schema

    setup = _Setup(conn, roles, owner)
    setup.group_role(roles.analysts)
    setup.schema_usage(roles.analysts)
    setup.no_create_for_public()
    setup.functions()
    for table in schema.metadata.sorted_tables:
        name = table.name
        if name not in ("workspace_meta", "organizations"):
            setup.column_default(name, "organization_id", f"{SESSION_FUNCTION}()")
        setup.row_security(name)
        using, check = _policy_expressions(name)
        setup.policy(name, POLICY, using, check)
        if name in ("workspace_meta", "organizations"):  # written by the owner only
            own = "(organization_id = '*')" if name == "workspace_meta" else "(true)"
            setup.policy(name, OWNER_POLICY, own, own, to=owner)
        setup.table_grants(name, roles.analysts, _privileges(name))
        for column in table.columns:
            if isinstance(column.default, sa.Sequence):
                setup.sequence_grants(column.default.name, roles.analysts)
    setup.audit_trigger()
    audit_trigger.install(setup)  # the server links audit entries and keeps each chain's head
    setup.ddl_guard()
    return setup.changes


def add_organization_role(conn: sa.Connection, roles: Roles, org: str) -> list[str]:
    """The organization's role and the schema it owns for the organization's raw tables."""
    setup = _Setup(conn, roles, "")
    role = roles.organization(org)
    setup.group_role(role)
    setup.organization_schema(roles.raw_schema(org), role)
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


def secure_raw_table(conn: sa.Connection, roles: Roles, table: str, org: str) -> list[str]:
    """A raw table of a secured workspace: in the organization's schema (one landed before
    the workspace was shared moves there), with the organization column, owned by the
    organization's role, row-level security like every other table."""
    q = lambda name: _quote(conn, name)
    setup = _Setup(conn, roles, "")
    schema_name = roles.raw_schema(org)
    current = conn.execute(sa.text("SELECT relnamespace::regnamespace::text FROM pg_class WHERE oid = to_regclass(:t)"),
                           {"t": q(table)}).scalar()
    if current is not None and current != q(schema_name):
        setup.run(f"ALTER TABLE {current}.{q(table)} SET SCHEMA {q(schema_name)}", f"{table} moved to {schema_name}")
    qualified = f"{q(schema_name)}.{q(table)}"
    columns = set(conn.execute(sa.text(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(:t) AND attnum > 0 AND NOT attisdropped"),
        {"t": qualified}).scalars())
    if RAW_ORGANIZATION_COLUMN not in columns:
        setup.run(f"ALTER TABLE {qualified} ADD COLUMN {q(RAW_ORGANIZATION_COLUMN)} varchar(64) "
                  f"DEFAULT {_literal(check_organization_id(org))}", f"{table} gets its organization")
    owner = roles.organization(org)
    if conn.execute(sa.text("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = to_regclass(:t)"),
                    {"t": qualified}).scalar() != owner:
        setup.run(f"ALTER TABLE {qualified} OWNER TO {q(owner)}", f"{table} is owned by {owner}")
    setup.row_security(table, qualified)
    mine = f"({RAW_ORGANIZATION_COLUMN} = (SELECT {SESSION_FUNCTION}()))"
    setup.policy(table, POLICY, mine, mine, relation=qualified)
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
