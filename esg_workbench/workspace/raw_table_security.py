"""Raw tables of a shared PostgreSQL workspace: the only way analysts change their
definitions, and how init-postgres brings them (and each organization's schema) to the
secured state.

A raw table belongs to the workspace's owner, lives in its organization's schema and has
row-level security like every other table (postgres_security.py); the organization's role
may read and write its rows, nothing else. Analysts change a raw table's definition only
through the owner's SECURITY DEFINER functions below (create, add a column, retype one,
swap in a full load's shadow table, drop), which accept only a raw table's name, column
names and column types from RAW_COLUMN_TYPES, and act only in the schema of the session's
organization, which the session's login role (session_user: inside such a function
current_user is its owner) must belong to. So nothing an analyst adds to a raw table
(a default, a CHECK, a generated column, a trigger, a rule, a policy) can run in a
colleague's session.

A workspace set up by an earlier version let the organization's role own and alter its raw
tables and create objects in its schema: `lock_down_organization` takes all that back.
"""

from __future__ import annotations

import re

import sqlalchemy as sa

from esg_workbench.workspace.postgres_security import (POLICY, RAW_ORGANIZATION_COLUMN, SESSION_FUNCTION, SETTING,
                                                       Roles, _id_sequences, _literal, _quote, _same_expression,
                                                       _Setup, check_organization_id)

#: the raw tables' lineage columns (raw_tables.py) and their server-side defaults
RAW_LANDED_DEFAULT = "(now() AT TIME ZONE 'UTC')"
#: _esg_ columns the app itself adds to raw tables besides the lineage ones: a file's path,
#: row, modification time and etag (connectors/files), and the mark of a row deleted in the
#: source (raw_tables.DELETED_COLUMN). Every other _esg_ name is refused, so a source
#: column can never pose as lineage or as the organization column.
APP_RAW_COLUMNS = ("_esg_file", "_esg_row", "_esg_modified", "_esg_etag", "_esg_deleted_at")
RAW_LINEAGE_SQL = "_esg_sync_id bigint, _esg_chunk_id bigint, _esg_landed_at timestamp DEFAULT " + RAW_LANDED_DEFAULT
#: a raw table's name as raw_tables.raw_table_name() and shadow_table_name() make it
RAW_TABLE_PATTERN = r"^raw_[a-z0-9_]{1,40}_[0-9a-f]{8}(__shadow_[0-9]{1,19})?$"
#: the column types raw_tables._pg_type() gives, as format_type() spells them: the only
#: types the esg_raw_* functions accept (anything else could carry a default, a CHECK, ...)
RAW_COLUMN_TYPES = ("boolean", "smallint", "integer", "bigint", "real", "double precision", "date", "bytea",
                    "interval", "text", "time without time zone", "time with time zone", "timestamp with time zone",
                    "timestamp without time zone", "uuid", "bit varying", "jsonb", r"numeric\([0-9]{1,4},[0-9]{1,4}\)")
RAW_COLUMN_TYPE_PATTERN = "^(" + "|".join(RAW_COLUMN_TYPES) + ")$"
#: the raw-table DDL analysts may run (SECURITY DEFINER, owned by the workspace's owner):
#: name -> argument types
DDL_FUNCTIONS = {
    "esg_raw_create": "text, text[], text[]",
    "esg_raw_add_column": "text, text, text",
    "esg_raw_retype_column": "text, text, text",
    "esg_raw_drop": "text",
    "esg_raw_swap": "text, text",
}
#: their helpers: executable by the owner only
HELPER_FUNCTIONS = {"esg_raw_schema": "", "esg_raw_relation": "text", "esg_raw_column": "text, text"}


def function_sql(roles: Roles, schema: str) -> list[tuple[str, str]]:
    """(name, CREATE OR REPLACE statement) of the raw-table functions. `schema`: the
    workspace's schema, quoted (they call each other by their full names, their search_path
    being pinned)."""
    org_prefix = _literal(roles.organization_role_prefix)
    analysts = _literal(roles.analysts)
    definer = "LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp"
    return [
        ("esg_raw_schema", f"""
CREATE OR REPLACE FUNCTION esg_raw_schema() RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    org text := nullif(current_setting('{SETTING}', true), '');
    org_role text := {org_prefix} || org;
BEGIN
    -- session_user: inside a SECURITY DEFINER function current_user is the function's owner
    IF org IS NULL OR NOT pg_has_role(session_user, {analysts}, 'MEMBER') OR NOT EXISTS (
            SELECT 1 FROM pg_roles r WHERE r.rolname = org_role AND pg_has_role(session_user, r.oid, 'MEMBER')) THEN
        RAISE EXCEPTION 'the role % may not change raw tables of organization "%"', session_user, org
            USING ERRCODE = '42501';
    END IF;
    RETURN org_role;
END
$fn$"""),
        ("esg_raw_relation", f"""
CREATE OR REPLACE FUNCTION esg_raw_relation(tbl text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF tbl IS NULL OR tbl !~ {_literal(RAW_TABLE_PATTERN)} THEN
        RAISE EXCEPTION '"%" is not the name of a raw table', tbl USING ERRCODE = '22023';
    END IF;
    RETURN format('%I.%I', {schema}.esg_raw_schema(), tbl);
END
$fn$"""),
        ("esg_raw_column", f"""
CREATE OR REPLACE FUNCTION esg_raw_column(col text, col_type text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF col IS NULL OR col = '' OR (starts_with(col, '_esg_') AND NOT col = ANY ({_literal('{' + ','.join(APP_RAW_COLUMNS) + '}')}::text[])) THEN
        RAISE EXCEPTION '"%" cannot be the name of a raw table''s column', col USING ERRCODE = '22023';
    END IF;
    IF col_type IS NULL OR col_type !~ {_literal(RAW_COLUMN_TYPE_PATTERN)} THEN
        RAISE EXCEPTION '"%" is not a column type of raw tables', col_type USING ERRCODE = '22023';
    END IF;
    RETURN format('%I %s', col, col_type);
END
$fn$"""),
        ("esg_raw_create", f"""
CREATE OR REPLACE FUNCTION esg_raw_create(tbl text, cols text[], col_types text[]) RETURNS void
{definer} AS $fn$
DECLARE
    relation text := {schema}.esg_raw_relation(tbl);
    org_role text := {schema}.esg_raw_schema();
    org text := substr(org_role, length({org_prefix}) + 1);
    mine text := format('({RAW_ORGANIZATION_COLUMN} = (SELECT %s.{SESSION_FUNCTION}()))', {_literal(schema)});
    definitions text := '';
BEGIN
    IF coalesce(cardinality(cols), 0) <> coalesce(cardinality(col_types), 0) THEN
        RAISE EXCEPTION 'one type for each column' USING ERRCODE = '22023';
    END IF;
    FOR i IN 1 .. coalesce(cardinality(cols), 0) LOOP
        definitions := definitions || {schema}.esg_raw_column(cols[i], col_types[i]) || ', ';
    END LOOP;
    EXECUTE format('CREATE TABLE %s (%s{RAW_LINEAGE_SQL.replace("'", "''")}, {RAW_ORGANIZATION_COLUMN} varchar(64) DEFAULT %L)',
                   relation, definitions, org);
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY', relation);
    EXECUTE format('CREATE POLICY {POLICY} ON %s USING %s WITH CHECK %s', relation, mine, mine);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO %I', relation, org_role);
END
$fn$"""),
        ("esg_raw_add_column", f"""
CREATE OR REPLACE FUNCTION esg_raw_add_column(tbl text, col text, col_type text) RETURNS void
{definer} AS $fn$
BEGIN
    EXECUTE format('ALTER TABLE %s ADD COLUMN %s', {schema}.esg_raw_relation(tbl), {schema}.esg_raw_column(col, col_type));
END
$fn$"""),
        ("esg_raw_retype_column", f"""
CREATE OR REPLACE FUNCTION esg_raw_retype_column(tbl text, col text, col_type text) RETURNS void
{definer} AS $fn$
BEGIN
    PERFORM {schema}.esg_raw_column(col, col_type);
    EXECUTE format('ALTER TABLE %s ALTER COLUMN %I TYPE %s USING %I::%s', {schema}.esg_raw_relation(tbl),
                   col, col_type, col, col_type);
END
$fn$"""),
        ("esg_raw_drop", f"""
CREATE OR REPLACE FUNCTION esg_raw_drop(tbl text) RETURNS void
{definer} AS $fn$
BEGIN
    EXECUTE format('DROP TABLE IF EXISTS %s', {schema}.esg_raw_relation(tbl));
END
$fn$"""),
        ("esg_raw_swap", f"""
CREATE OR REPLACE FUNCTION esg_raw_swap(shadow text, target text) RETURNS void
{definer} AS $fn$
DECLARE
    replacement text := {schema}.esg_raw_relation(shadow);
    replaced text := {schema}.esg_raw_relation(target);
BEGIN
    EXECUTE format('DROP TABLE IF EXISTS %s', replaced);
    EXECUTE format('ALTER TABLE %s RENAME TO %I', replacement, target);
END
$fn$"""),
    ]


def secure_raw_table(conn: sa.Connection, roles: Roles, table: str, org: str, owner: str,
                     plain_types: bool = True) -> list[str]:
    """A raw table of a secured workspace, as esg_raw_create() makes one: in the
    organization's schema (one landed before the workspace was shared moves there), with the
    organization column, owned by the workspace's owner, row-level security like every
    other table, and nothing in it that runs code but the app's own defaults and policy.
    The organization's role may read and write its rows, nothing else. `plain_types`: also
    turn columns of types not of PostgreSQL's own into text (lock_down_organization does
    that after dropping the views that would hold them)."""
    q = lambda name: _quote(conn, name)
    setup = _Setup(conn, roles, owner)
    schema_name = roles.raw_schema(org)
    current = conn.execute(sa.text("SELECT relnamespace::regnamespace::text FROM pg_class WHERE oid = to_regclass(:t)"),
                           {"t": q(table)}).scalar()
    if current is not None and current != q(schema_name):
        setup.run(f"ALTER TABLE {current}.{q(table)} SET SCHEMA {q(schema_name)}", f"{table} moved to {schema_name}")
    qualified = f"{q(schema_name)}.{q(table)}"
    org_role = roles.organization(org)
    if conn.execute(sa.text("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = to_regclass(:t)"),
                    {"t": qualified}).scalar() != owner:
        with setup.member_of(_table_owner(conn, qualified)):
            setup.run(f"ALTER TABLE {qualified} OWNER TO {q(owner)}", f"{table} is owned by {owner}")
    _strip_code(setup, table, qualified)
    if plain_types:
        _plain_types(setup, table, qualified)
    columns = set(conn.execute(sa.text(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(:t) AND attnum > 0 AND NOT attisdropped"),
        {"t": qualified}).scalars())
    if RAW_ORGANIZATION_COLUMN not in columns:
        setup.run(f"ALTER TABLE {qualified} ADD COLUMN {q(RAW_ORGANIZATION_COLUMN)} varchar(64) "
                  f"DEFAULT {_literal(check_organization_id(org))}", f"{table} gets its organization")
    setup.row_security(table, qualified)
    mine = f"({RAW_ORGANIZATION_COLUMN} = (SELECT {SESSION_FUNCTION}()))"
    setup.policy(table, POLICY, mine, mine, relation=qualified)
    _only_row_privileges(setup, table, qualified, org_role)
    return setup.changes


def _table_owner(conn: sa.Connection, qualified: str) -> str:
    return conn.execute(sa.text("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = to_regclass(:t)"),
                        {"t": qualified}).scalar()


#: what the app's raw tables have by default: anything else was planted
_RAW_DEFAULTS = {"_esg_landed_at": RAW_LANDED_DEFAULT}


def _strip_code(setup: _Setup, table: str, qualified: str) -> None:
    """Remove from a raw table whatever an analyst could have added that runs code in a
    colleague's session (a workspace set up by an older version let the organization's role
    own and alter its raw tables): triggers, rules, other policies, constraints, indexes,
    generated columns, defaults other than the app's, columns of types of their own."""
    conn, q = setup.conn, setup.q
    oid = conn.execute(sa.text("SELECT to_regclass(:t)::oid"), {"t": qualified}).scalar()
    rows = lambda sql: conn.execute(sa.text(sql), {"oid": oid}).all()
    for (name,) in rows("SELECT tgname FROM pg_trigger WHERE tgrelid = :oid AND NOT tgisinternal ORDER BY 1"):
        setup.run(f"DROP TRIGGER {q(name)} ON {qualified}", f"dropped trigger {name} of {table}")
    for (name,) in rows("SELECT rulename FROM pg_rewrite WHERE ev_class = :oid AND rulename <> '_RETURN' ORDER BY 1"):
        setup.run(f"DROP RULE {q(name)} ON {qualified}", f"dropped rule {name} of {table}")
    for (name,) in rows(f"SELECT polname FROM pg_policy WHERE polrelid = :oid AND polname <> {_literal(POLICY)} ORDER BY 1"):
        setup.run(f"DROP POLICY {q(name)} ON {qualified}", f"dropped policy {name} of {table}")
    for (name,) in rows("SELECT conname FROM pg_constraint WHERE conrelid = :oid ORDER BY 1"):
        setup.run(f"ALTER TABLE {qualified} DROP CONSTRAINT {q(name)}", f"dropped constraint {name} of {table}")
    for (name,) in rows("SELECT i.indexrelid::regclass::text FROM pg_index i WHERE i.indrelid = :oid ORDER BY 1"):
        setup.run(f"DROP INDEX {name}", f"dropped index {name} of {table}")
    for parent, partitioned in rows("SELECT i.inhparent::regclass::text, p.relkind = 'p' FROM pg_inherits i "
                                    "JOIN pg_class p ON p.oid = i.inhparent WHERE i.inhrelid = :oid"):
        setup.run(f"ALTER TABLE {parent} DETACH PARTITION {qualified}" if partitioned
                  else f"ALTER TABLE {qualified} NO INHERIT {parent}", f"{table} no longer belongs to {parent}")
    for (child,) in rows("SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = :oid"):
        setup.run(f"ALTER TABLE {child} NO INHERIT {qualified}", f"{child} no longer inherits from {table}")
    columns = rows("SELECT a.attname, a.attgenerated <> '', pg_get_expr(d.adbin, d.adrelid), "
                   "t.typnamespace <> 'pg_catalog'::regnamespace FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
                   "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
                   "WHERE a.attrelid = :oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum")
    for name, generated, _, _ in columns:  # first: a generated column pins the type of those it reads
        if generated:  # its values stay, as a plain column
            setup.run(f"ALTER TABLE {qualified} ALTER COLUMN {q(name)} DROP EXPRESSION",
                      f"{table}.{name} is no longer generated")
    for name, generated, default, _ in columns:
        if not generated and default is not None and not _app_default(name, default):
            setup.run(f"ALTER TABLE {qualified} ALTER COLUMN {q(name)} DROP DEFAULT",
                      f"dropped the default of {table}.{name}")


def _plain_types(setup: _Setup, table: str, qualified: str) -> None:
    """A column of a type of an analyst's (a domain's CHECK, an enum's or a composite's
    functions) becomes text, keeping its values."""
    for (name,) in setup.conn.execute(sa.text(
            "SELECT a.attname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid WHERE a.attrelid = "
            "to_regclass(:t) AND a.attnum > 0 AND NOT a.attisdropped AND t.typnamespace <> 'pg_catalog'::regnamespace "
            "ORDER BY a.attnum"), {"t": qualified}).all():
        setup.run(f"ALTER TABLE {qualified} ALTER COLUMN {setup.q(name)} TYPE text USING {setup.q(name)}::text",
                  f"{table}.{name} is text now")


def _app_default(column: str, expression: str) -> bool:
    if column == RAW_ORGANIZATION_COLUMN:  # a literal: the organization's id
        return re.fullmatch(r"'[a-z0-9_-]+'::character varying", expression) is not None
    return column in _RAW_DEFAULTS and _same_expression(expression, _RAW_DEFAULTS[column])


def _only_row_privileges(setup: _Setup, table: str, qualified: str, org_role: str) -> None:
    """SELECT, INSERT, UPDATE, DELETE for the organization's role; nothing for anyone else
    (TRUNCATE would ignore row-level security, TRIGGER would let one plant code)."""
    wanted = {"SELECT", "INSERT", "UPDATE", "DELETE"}
    held: dict[str, set[str]] = {}
    for grantee, privilege in setup.conn.execute(sa.text(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END, a.privilege_type "
            "FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = to_regclass(:t) AND a.grantee <> c.relowner"),
            {"t": qualified}).all():
        held.setdefault(grantee, set()).add(privilege)
    for grantee in sorted(held):
        extra = held[grantee] - (wanted if grantee == setup.q(org_role) else set())
        if extra:
            setup.run(f"REVOKE {', '.join(sorted(extra))} ON {qualified} FROM {grantee}",
                      f"revoked {', '.join(sorted(extra))} on {table} from {grantee.strip(chr(34))}")
    missing = wanted - held.get(setup.q(org_role), set())
    if missing:
        setup.run(f"GRANT {', '.join(sorted(missing))} ON {qualified} TO {setup.q(org_role)}",
                  f"granted {', '.join(sorted(missing))} on {table} to {org_role}")


def lock_down_organization(conn: sa.Connection, roles: Roles, org: str, owner: str) -> list[str]:
    """Bring the organization's schema to the secured state: its raw tables as
    secure_raw_table() leaves them, and nothing else in it that the owner did not make
    (an older version let the organization's role create tables, functions, views ... there).
    Returns what changed."""
    q = lambda name: _quote(conn, name)
    schema_name = roles.raw_schema(org)
    changes: list[str] = []
    tables = conn.execute(sa.text(
        "SELECT relname FROM pg_class WHERE relnamespace = to_regnamespace(:s) AND relkind IN ('r', 'p') "
        "AND relname ~ :pattern ORDER BY 1"), {"s": q(schema_name), "pattern": RAW_TABLE_PATTERN}).scalars().all()
    for table in tables:
        changes += secure_raw_table(conn, roles, table, org, owner, plain_types=False)
    setup = _Setup(conn, roles, owner)
    _drop_planted(setup, schema_name, ("VIEW", "MATERIALIZED VIEW"))  # they would pin the raw tables' types
    for table in tables:
        _plain_types(setup, table, f"{q(schema_name)}.{q(table)}")
    _drop_planted(setup, schema_name, None)
    return changes + setup.changes


def _drop_planted(setup: _Setup, schema_name: str, kinds: tuple[str, ...] | None) -> None:
    """Drop what is in the organization's schema besides its raw tables (of `kinds`, None:
    of every kind): the app makes nothing else there but the organization's id sequences."""
    from esg_workbench.workspace import schema

    conn = setup.conn
    planted = conn.execute(sa.text(
        "SELECT 'TABLE', c.oid::regclass::text, c.relowner FROM pg_class c WHERE c.relnamespace = to_regnamespace(:s) "
        "  AND c.relkind IN ('r', 'p', 'f') AND NOT (c.relname ~ :pattern) "
        "UNION ALL SELECT 'VIEW', c.oid::regclass::text, c.relowner FROM pg_class c "
        "  WHERE c.relnamespace = to_regnamespace(:s) AND c.relkind = 'v' "
        "UNION ALL SELECT 'MATERIALIZED VIEW', c.oid::regclass::text, c.relowner FROM pg_class c "
        "  WHERE c.relnamespace = to_regnamespace(:s) AND c.relkind = 'm' "
        "UNION ALL SELECT 'SEQUENCE', c.oid::regclass::text, c.relowner FROM pg_class c "
        "  WHERE c.relnamespace = to_regnamespace(:s) AND c.relkind = 'S' "
        "  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')) "
        "  AND NOT (c.relname = ANY(:ids) AND pg_get_userbyid(c.relowner) = :owner) "
        "UNION ALL SELECT 'ROUTINE', p.oid::regprocedure::text, p.proowner FROM pg_proc p "
        "  WHERE p.pronamespace = to_regnamespace(:s) "
        "UNION ALL SELECT 'TYPE', t.oid::regtype::text, t.typowner FROM pg_type t "
        "  WHERE t.typnamespace = to_regnamespace(:s) AND t.typcategory <> 'A' AND (t.typrelid = 0 "
        "  OR EXISTS (SELECT 1 FROM pg_class k WHERE k.oid = t.typrelid AND k.relkind = 'c')) "
        "ORDER BY 1, 2"), {"s": setup.q(schema_name), "pattern": RAW_TABLE_PATTERN, "owner": setup.owner,
                           "ids": [n for t in schema.metadata.sorted_tables for n in _id_sequences(t)]}).all()
    for kind, name, object_owner in planted:
        if kinds is not None and kind not in kinds:
            continue
        with setup.member_of(conn.execute(sa.text("SELECT pg_get_userbyid(:o)"), {"o": object_owner}).scalar()):
            setup.run(f"DROP {kind} IF EXISTS {name} CASCADE",
                      f"dropped {kind.lower()} {name} (the app makes none in {schema_name})")
