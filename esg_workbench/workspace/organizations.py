"""Organizations and analysts of a shared PostgreSQL workspace, and setting one up.

The administrator's side (`init_postgres`, `add_organization`, `add_user`,
`all_organizations`) connects with the admin URL: a role that can create roles and owns
(or will own) the workspace's tables. The analyst's side (`my_organizations`) reads
through the analyst's own workspace connection, under row-level security.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator

import sqlalchemy as sa

from esg_workbench.core.errors import ConfigError, NotFound, WorkspaceError
from esg_workbench.workspace import postgres_security as sec
from esg_workbench.workspace import raw_table_security
from esg_workbench.workspace import schema
from esg_workbench.workspace.database import (DEFAULT_ORGANIZATION, Workspace, _engine_url, take_migration_lock,
                                              utcnow)


@dataclass
class Organization:
    id: str
    name: str
    members: list[str] = field(default_factory=list)  # analysts' roles (admin view only)


@dataclass
class InitResult:
    database: str
    app_role: str
    organization: str
    role_prefix: str
    changes: list[str]

    @property
    def already_set_up(self) -> bool:
        return not self.changes


def _pg_url(url: str, what: str) -> sa.engine.URL:
    if not (url or "").startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        raise ConfigError(f"The {what} must be a postgresql:// URL.",
                          hint="e.g. postgresql://alice@db.example.com/esg (a DuckDB workspace needs no set-up)")
    return sa.engine.make_url(_engine_url(url)[1])


@contextlib.contextmanager
def admin_connection(admin_url: str, database: str | None = None) -> Iterator[sa.Connection]:
    """A transaction as the administrator, on `database` when the admin URL names none."""
    url = _pg_url(admin_url, "admin URL")
    if database and url.database and url.database != database:
        raise ConfigError(f"The admin URL points at database '{url.database}', the workspace at '{database}'.",
                          hint="Give both URLs the same database.")
    if database and not url.database:
        url = url.set(database=database)
    if not url.database:
        raise ConfigError("The admin URL names no database.", hint="e.g. postgresql://postgres@db.example.com/esg")
    engine = sa.create_engine(url, connect_args={"options": "-c TimeZone=UTC"})
    try:
        with engine.begin() as conn:
            take_migration_lock(conn)  # no analyst can hold it (an advisory key anyone could)
            yield conn
    except sa.exc.OperationalError as exc:
        raise WorkspaceError(f"Cannot connect with the admin URL: {str(exc.orig).splitlines()[0]}",
                             hint="Check the admin URL's host, database, role and password.") from exc
    finally:
        engine.dispose()


def _check_admin(conn: sa.Connection) -> str:
    admin = conn.execute(sa.text("SELECT current_user")).scalar()
    attrs = sec.role_attributes(conn, admin)
    if not (attrs["rolsuper"] or attrs["rolcreaterole"]):
        raise WorkspaceError(f"The admin role '{admin}' cannot create roles.",
                             hint="Use a superuser or a role with CREATEROLE that owns the workspace database.")
    return admin


def _secured_roles(conn: sa.Connection) -> sec.Roles:
    roles = sec.configured_roles(conn)
    if roles is None:
        raise WorkspaceError("This database is not set up as a shared workspace yet.",
                             hint="Run first: esg-workbench workspace init-postgres WORKSPACE_URL --admin-url ADMIN_URL")
    return roles


def _meta(conn: sa.Connection, key: str) -> str | None:
    meta = schema.workspace_meta
    return conn.execute(sa.select(meta.c.value).where(meta.c.key == key)).scalar()


def _put_meta(conn: sa.Connection, key: str, value: str, changes: list[str]) -> None:
    if _meta(conn, key) is None:
        conn.execute(sa.insert(schema.workspace_meta).values(key=key, value=value,
                                                             organization_id=schema.SHARED_ORGANIZATION))
        changes.append(f"recorded {key} = {value}")


def _put_organization(conn: sa.Connection, org: str, name: str | None, changes: list[str]) -> None:
    table = schema.organizations
    current = conn.execute(sa.select(table.c.name).where(table.c.organization_id == org)).first()
    if current is None:
        conn.execute(sa.insert(table).values(organization_id=org, name=name or org, created_at=utcnow()))
        changes.append(f"added organization {org}")
    elif name and current.name != name:
        conn.execute(sa.update(table).where(table.c.organization_id == org).values(name=name))
        changes.append(f"renamed organization {org} to {name}")


def init_postgres(app_url: str, admin_url: str, *, organization: str = DEFAULT_ORGANIZATION,
                  organization_name: str | None = None, password: str | None = None) -> InitResult:
    """Create (or complete) a shared workspace: the tables, the roles, the functions,
    policies and grants, the organization, and the analyst role `app_url` names. Safe to
    run again: it acts only where the database differs, so a second run changes nothing."""
    sec.check_organization_id(organization)
    app = _pg_url(app_url, "workspace URL")
    if not app.username:
        raise ConfigError("The workspace URL names no database role.",
                          hint="Name the analyst's role in it, e.g. postgresql://alice@db.example.com/esg")
    if not app.database:
        raise ConfigError("The workspace URL names no database.", hint="e.g. postgresql://alice@db.example.com/esg")
    role = sec.check_role_name(app.username)
    password = password or app.password
    with admin_connection(admin_url, app.database) as conn:
        admin = _check_admin(conn)
        sec.refuse_rls_exempt(role, sec.role_attributes(conn, role))
        if admin == role:
            raise ConfigError(f"The workspace URL uses the administrator's role '{admin}'.",
                              hint="The app connects as an analyst's own role; give one in the workspace URL.")
        existing = sec.configured_roles(conn)
        roles = existing or sec.Roles(sec.default_prefix(app.database))
        changes: list[str] = []
        workspace = Workspace("postgresql", str(app), conn.engine, organization_id=schema.SHARED_ORGANIZATION)
        version_before = workspace.schema_version(conn)
        if workspace.migrate_connection(conn) != version_before:
            changes.append(f"created or upgraded the tables (schema version {schema.SCHEMA_VERSION})")
        owner = _meta(conn, sec.META_OWNER) or admin
        # what was landed before the workspace was shared (read before the policies hide it)
        landed = conn.execute(sa.select(schema.connector_sync_state.c.organization_id,
                                        schema.connector_sync_state.c.raw_table).distinct()).all()
        _put_meta(conn, sec.META_PREFIX, roles.prefix, changes)
        _put_meta(conn, sec.META_OWNER, owner, changes)
        changes += sec.secure_tables(conn, roles, owner)
        for org in sorted({organization} | {o for o, _ in landed}):
            changes += sec.add_organization_role(conn, roles, org)
            _put_organization(conn, org, organization_name if org == organization else None, changes)
        for org, raw_table in landed:  # those still in the workspace's schema move to their organization's
            quoted = conn.dialect.identifier_preparer.quote(raw_table)
            if conn.execute(sa.text("SELECT to_regclass(:t) IS NOT NULL"), {"t": quoted}).scalar():
                changes += raw_table_security.secure_raw_table(conn, roles, raw_table, org, owner)
        # every organization's schema (also of one set up by an older version, whose
        # organization roles owned and could alter their raw tables)
        for org in conn.execute(sa.select(schema.organizations.c.organization_id)
                                .order_by(schema.organizations.c.organization_id)).scalars().all():
            changes += raw_table_security.lock_down_organization(conn, roles, org, owner)
            changes += sec.add_organization_role(conn, roles, org)
        changes += sec.add_analyst(conn, roles, role, [organization], password)
        return InitResult(database=app.database, app_role=role, organization=organization,
                          role_prefix=roles.prefix, changes=changes)


def add_organization(admin_url: str, org: str, name: str | None = None, *, database: str | None = None) -> list[str]:
    sec.check_organization_id(org)
    with admin_connection(admin_url, database) as conn:
        _check_admin(conn)
        roles = _secured_roles(conn)
        changes = sec.add_organization_role(conn, roles, org)
        _put_organization(conn, org, name, changes)
        return changes


def add_user(admin_url: str, role: str, organizations: list[str], *, password: str | None = None,
             database: str | None = None) -> list[str]:
    """An analyst's role (created when missing) in the given organizations. A password
    for an existing role replaces its password."""
    if not organizations:
        raise ConfigError("Name at least one organization.", hint="e.g. --organization acme")
    for org in organizations:
        sec.check_organization_id(org)
    with admin_connection(admin_url, database) as conn:
        _check_admin(conn)
        roles = _secured_roles(conn)
        known = set(conn.execute(sa.select(schema.organizations.c.organization_id)).scalars())
        unknown = [o for o in organizations if o not in known]
        if unknown:
            raise NotFound(f"There is no organization {', '.join(repr(o) for o in unknown)} in this workspace.",
                           hint="Add it first with: esg-workbench org add ORG --admin-url ADMIN_URL")
        existed = sec.role_attributes(conn, role) is not None
        changes = sec.add_analyst(conn, roles, role, organizations, password)
        if existed and password:
            sec.set_password(conn, role, password)
            changes.append(f"changed the password of {role}")
        return changes


def remove_user(admin_url: str, role: str, organizations: list[str] | None = None, *,
                database: str | None = None) -> list[str]:
    """Take an analyst out of organizations (None: out of the whole workspace). Their
    audit entries stay, naming them."""
    for org in organizations or []:
        sec.check_organization_id(org)
    with admin_connection(admin_url, database) as conn:
        _check_admin(conn)
        roles = _secured_roles(conn)
        if sec.role_attributes(conn, role) is None:
            raise NotFound(f"There is no database role '{role}'.", hint="See the analysts with: esg-workbench org list "
                                                                        "--admin-url ADMIN_URL")
        return sec.remove_analyst(conn, roles, role, organizations)


def all_organizations(admin_url: str, *, database: str | None = None) -> list[Organization]:
    """Every organization with the analysts' roles in it (the administrator's view)."""
    with admin_connection(admin_url, database) as conn:
        roles = _secured_roles(conn)
        rows = conn.execute(sa.select(schema.organizations).order_by(schema.organizations.c.organization_id)).all()
        result = []
        for row in rows:
            members = conn.execute(sa.text(
                "SELECT u.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
                "JOIN pg_roles u ON u.oid = m.member WHERE g.rolname = :g ORDER BY 1"),
                {"g": roles.organization(row.organization_id)}).scalars().all()
            result.append(Organization(row.organization_id, row.name, list(members)))
        return result


def my_organizations(workspace: Workspace) -> list[Organization]:
    """The organizations the workspace's session may use (one, 'default', on DuckDB or an
    unshared PostgreSQL workspace)."""
    if not workspace.secured:
        return [Organization(workspace.organization_id, workspace.organization_id)]
    with workspace.read() as conn:
        rows = conn.execute(sa.select(schema.organizations).order_by(schema.organizations.c.organization_id)).all()
    return [Organization(r.organization_id, r.name) for r in rows]


def available_organizations(url: str) -> list[Organization]:
    """The organizations the role in `url` may choose from at sign-in, with their names
    (the organizations table shows each analyst the ones they belong to)."""
    kind, engine_url = _engine_url(url)
    if kind == "duckdb":
        return [Organization(DEFAULT_ORGANIZATION, DEFAULT_ORGANIZATION)]
    engine = sa.create_engine(engine_url)
    try:
        with engine.connect() as conn:
            if sec.configured_roles(conn) is None:
                return [Organization(DEFAULT_ORGANIZATION, DEFAULT_ORGANIZATION)]
            rows = conn.execute(sa.select(schema.organizations).order_by(schema.organizations.c.organization_id)).all()
            return [Organization(r.organization_id, r.name) for r in rows]
    except sa.exc.SQLAlchemyError as exc:
        raise WorkspaceError(f"Cannot open the workspace: {str(getattr(exc, 'orig', exc)).splitlines()[0]}") from exc
    finally:
        engine.dispose()
