"""A shared PostgreSQL workspace against a hostile analyst.

alice (organization org-a) connects with her own role, exactly as the app does, and tries
everything plain SQL offers to reach org-b's rows, to count them, or to plant code that a
colleague's session would run: each attack statement below is refused, or answers only
with what is org-a's. carol belongs to both organizations: the last test plants alice's
two-session attack of issue 11 and lets carol sync alice's connector; nothing of org-b's
may leak or move.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable

import psycopg
import pytest

from esg_workbench.sync import operations
from esg_workbench.sync.engine import SyncEngine, SyncRequest
from esg_workbench.workspace import open_workspace, organizations
from esg_workbench.workspace.postgres_security import Roles
from tests.conftest import PG_HOST, PG_PORT, PG_USER
from tests.pg_shared import shared_database

DENIED = "42501"  # insufficient privilege (also a row-level security WITH CHECK violation)
NOT_SUPPORTED = "0A000"  # COPY FROM into a table with row-level security
INVALID = "22023"
UNDEFINED_TABLE, UNDEFINED_FUNCTION = "42P01", "42883"  # invalid parameter: the raw-table functions refuse what is not a name or a type
SECRET = "bobs-org-b-marker-4711"  # in org-b's connector config: must never reach org-a


@dataclass
class Team:
    shared: object
    roles: Roles
    alice: str
    bob: str
    carol: str
    raw_a: str  # org-a's raw table of connector 'erp'
    raw_b: str

    def names(self) -> dict[str, str]:
        org_a, org_b = self.roles.organization("org-a"), self.roles.organization("org-b")
        return {"own_schema": f'"{org_a}"', "other_schema": f'"{org_b}"', "org_a": f'"{org_a}"',
                "org_b": f'"{org_b}"', "own_raw": f'"{org_a}".{self.raw_a}', "other_raw": f'"{org_b}".{self.raw_b}',
                "raw_a": self.raw_a, "bob": f'"{self.bob}"', "carol": f'"{self.carol}"', "admin": f'"{PG_USER}"',
                "db": f'"{self.shared.database}"'}


def connect_as(team: Team, role: str, org: str) -> psycopg.Connection:
    """A session set up as the app sets up its own (organization, then search path)."""
    conn = psycopg.connect(host=PG_HOST, port=PG_PORT, user=role, dbname=team.shared.database)
    conn.execute("SELECT set_config('esg.organization_id', %s, false), "
                 "set_config('search_path', %s, false)", (org, f'public, "{team.roles.raw_schema(org)}"'))
    conn.commit()
    return conn


def make_source(shared) -> None:
    with shared.admin() as conn:
        conn.execute("""
            CREATE SCHEMA src;
            CREATE TABLE src.energy (id int PRIMARY KEY, site text, kwh numeric(10,2), updated_at timestamptz NOT NULL);
            INSERT INTO src.energy SELECT g, 'S' || g % 3, g, '2024-01-01'::timestamptz + g * interval '1 hour'
            FROM generate_series(1, 200) g""")


def source_options(shared, **extra) -> dict:
    return {"host": PG_HOST, "port": PG_PORT, "database": shared.database, "username": PG_USER, "schema": "src",
            "cursor_field": "updated_at", "load_type": "delta", "chunk_size": 100, **extra}


@pytest.fixture(scope="module")
def team():
    with shared_database() as shared:
        alice, bob, carol = shared.role("alice"), shared.role("bob"), shared.role("carol")
        result = organizations.init_postgres(shared.url(alice), shared.admin_url, organization="org-a")
        organizations.add_organization(shared.admin_url, "org-b")
        organizations.add_user(shared.admin_url, bob, ["org-b"])
        organizations.add_user(shared.admin_url, carol, ["org-a", "org-b"])
        make_source(shared)
        raw = {}
        for role, org, extra in ((alice, "org-a", {}), (bob, "org-b", {"application_name": SECRET})):
            ws = open_workspace(shared.url(role))
            try:
                operations.add_connector(ws, "erp", "postgres", source_options(shared, **extra))
                synced = SyncEngine(ws, retry_delays=(0.01,)).run(SyncRequest(connector="erp"))
                assert synced.status.value == "success", synced.error
                raw[org] = synced.streams[0].raw_table
            finally:
                ws.close()
        with shared.admin() as conn:  # statistics exist, as on any server that ran a while
            conn.execute("ANALYZE")
        yield Team(shared, Roles(result.role_prefix), alice, bob, carol, raw["org-a"], raw["org-b"])


# --- one row per attack statement -----------------------------------------------------------------

def rows_only_of_org_a(rows: list[tuple]) -> bool:
    return bool(rows) and all(row == ("org-a",) for row in rows)


def nothing_of_org_b(rows: list[tuple]) -> bool:
    return all(row == ("org-a",) for row in rows)


def nothing(rows: list[tuple]) -> bool:
    return rows == [] or rows == [(0,)]


@dataclass
class Attack:
    id: str
    statements: tuple[str, ...]  # run in this order; the last one is judged
    refused: str | None = None  # the SQLSTATE it must fail with
    reveals: Callable[[list[tuple]], bool] | None = None  # else: what its rows must satisfy
    copy_in: bytes | None = None  # the data a COPY FROM STDIN sends


def refuse(id_: str, *statements: str, code: str = DENIED) -> Attack:
    return Attack(id_, statements, refused=code)


def answer(id_: str, *statements: str, check=rows_only_of_org_a) -> Attack:
    return Attack(id_, statements, reveals=check)


SET_ORG_B = "SELECT set_config('esg.organization_id', 'org-b', false)"
AS_ORG_ROLE = "SET ROLE {org_a}"  # the role alice may become: it must not be a way around anything
PLANT = "set_config('esg.organization_id', 'org-b', true)"  # enough to move a colleague's session

ATTACKS = [
    # setting the organization by hand
    answer("setting org-b by hand shows none of its connectors", SET_ORG_B, "SELECT organization_id FROM connectors",
           check=nothing),
    answer("SET of the setting shows none of org-b's audit entries", "SET esg.organization_id = 'org-b'",
           "SELECT organization_id FROM esg_ingestion_audit", check=nothing),
    refuse("setting org-b by hand does not let one write org-b's rows", SET_ORG_B,
           "INSERT INTO mappings (organization_id, name, version, definition, created_at) "
           "VALUES ('org-b', 'evil', 1, '{{}}', now())"),
    answer("set_config inside WHERE moves no row of org-b into the answer",
           f"SELECT organization_id FROM connectors WHERE {PLANT} IS NOT NULL", check=nothing_of_org_b),
    # SET ROLE and SET SESSION AUTHORIZATION
    refuse("SET ROLE to a colleague of another organization", "SET ROLE {bob}"),
    refuse("SET ROLE to a colleague of one's own organization", "SET ROLE {carol}"),
    refuse("SET ROLE to another organization's role", "SET ROLE {org_b}"),
    refuse("SET ROLE to the administrator", "SET ROLE {admin}"),
    refuse("SET SESSION AUTHORIZATION to a colleague", "SET SESSION AUTHORIZATION {bob}"),
    refuse("SET SESSION AUTHORIZATION to the administrator", "SET SESSION AUTHORIZATION {admin}"),
    refuse("one's organization's role reads no workspace table", AS_ORG_ROLE, "SELECT count(*) FROM connectors"),
    refuse("one's organization's role with org-b set reads no raw table of org-b", AS_ORG_ROLE, SET_ORG_B,
           "SELECT count(*) FROM {other_raw}"),
    # COPY in every direction
    answer("COPY TO STDOUT of a workspace table gives one's own rows",
           "COPY (SELECT organization_id FROM connectors) TO STDOUT"),
    answer("COPY TO STDOUT with org-b set gives nothing", SET_ORG_B, "COPY connectors TO STDOUT", check=nothing),
    Attack("COPY FROM STDIN into a workspace table", ("COPY connectors (id, organization_id) FROM STDIN",),
           refused=NOT_SUPPORTED, copy_in=b"evil\torg-b\n"),
    Attack("COPY FROM STDIN into one's own raw table", ("COPY {own_raw} (site) FROM STDIN",),
           refused=NOT_SUPPORTED, copy_in=b"evil\n"),
    refuse("COPY TO STDOUT of org-b's raw table", "COPY {other_raw} TO STDOUT"),
    refuse("COPY TO STDOUT of a query on org-b's raw table", "COPY (SELECT * FROM {other_raw}) TO STDOUT"),
    answer("COPY TO STDOUT of one's own raw table gives one's own rows",
           "COPY (SELECT _esg_organization_id FROM {own_raw}) TO STDOUT"),
    refuse("COPY TO a server file", "COPY connectors TO '/tmp/esg-hostile-copy'"),
    refuse("COPY FROM a server file", "COPY connectors (id) FROM '/etc/hostname'"),
    refuse("COPY TO PROGRAM", "COPY (SELECT 1) TO PROGRAM 'true'"),
    refuse("COPY FROM PROGRAM", "COPY connectors (id) FROM PROGRAM 'echo evil'"),
    refuse("pg_read_file of a server file", "SELECT pg_read_file('/etc/hostname')"),
    refuse("lo_import of a server file", "SELECT lo_import('/etc/hostname')"),
    # functions
    refuse("a function in the workspace's schema", "CREATE FUNCTION public.lower(varchar) RETURNS text "
                                                   "LANGUAGE sql AS 'SELECT 1::text'"),
    refuse("a function in one's organization's schema", "CREATE FUNCTION {own_schema}.f() RETURNS int "
                                                        "LANGUAGE sql AS 'SELECT 1'"),
    refuse("a function in one's organization's schema as its role", AS_ORG_ROLE,
           "CREATE FUNCTION {own_schema}.f() RETURNS int LANGUAGE sql AS 'SELECT 1'"),
    refuse("a temporary function", "CREATE FUNCTION pg_temp.f() RETURNS text LANGUAGE sql "
                                   f"AS $$SELECT {PLANT}$$"),
    refuse("a temporary function as one's organization's role (only the event trigger stands in the way)",
           AS_ORG_ROLE, "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'SELECT 1'"),
    refuse("a procedure as one's organization's role", AS_ORG_ROLE,
           "CREATE PROCEDURE {own_schema}.p() LANGUAGE sql AS 'SELECT 1'"),
    refuse("an operator", "CREATE OPERATOR pg_temp.=== (LEFTARG = text, RIGHTARG = text, FUNCTION = texteq)"),
    refuse("replacing the session function", "CREATE OR REPLACE FUNCTION public.esg_session_org() RETURNS text "
                                             "LANGUAGE sql AS $$SELECT 'org-b'$$"),
    # triggers
    refuse("a trigger on one's own raw table", "CREATE TRIGGER evil BEFORE UPDATE ON {own_raw} FOR EACH ROW "
                                               "EXECUTE FUNCTION suppress_redundant_updates_trigger()"),
    refuse("a trigger on one's own raw table as the organization's role", AS_ORG_ROLE,
           "CREATE TRIGGER evil BEFORE UPDATE ON {own_raw} FOR EACH ROW "
           "EXECUTE FUNCTION suppress_redundant_updates_trigger()"),
    refuse("a trigger on a workspace table", "CREATE TRIGGER evil BEFORE UPDATE ON connectors FOR EACH ROW "
                                             "EXECUTE FUNCTION suppress_redundant_updates_trigger()"),
    refuse("switching off the audit table's triggers", "ALTER TABLE esg_ingestion_audit DISABLE TRIGGER ALL"),
    # rules
    refuse("a rule on one's own raw table", f"CREATE RULE evil AS ON INSERT TO {{own_raw}} DO ALSO SELECT {PLANT}"),
    refuse("a rule on one's own raw table as the organization's role", AS_ORG_ROLE,
           f"CREATE RULE evil AS ON INSERT TO {{own_raw}} DO ALSO SELECT {PLANT}"),
    refuse("a rule on a workspace table", f"CREATE RULE evil AS ON INSERT TO connectors DO ALSO SELECT {PLANT}"),
    # views and tables that could stand in for the app's
    refuse("a view in one's organization's schema", "CREATE VIEW {own_schema}.connectors AS SELECT 1 AS id"),
    refuse("a table in one's organization's schema", "CREATE TABLE {own_schema}.connectors (id text)"),
    refuse("a table in one's organization's schema as its role", AS_ORG_ROLE,
           "CREATE TABLE {own_schema}.loot (organization_id text, config text)"),
    refuse("a temporary view", "CREATE TEMP VIEW v AS SELECT * FROM connectors"),
    refuse("a schema of one's own", "CREATE SCHEMA evil"),
    # column defaults
    refuse("a column default on one's own raw table",
           f"ALTER TABLE {{own_raw}} ALTER COLUMN _esg_landed_at SET DEFAULT now() + ({PLANT} || ' s')::interval"),
    refuse("a column default as the organization's role", AS_ORG_ROLE,
           f"ALTER TABLE {{own_raw}} ALTER COLUMN site SET DEFAULT {PLANT}"),
    refuse("a column default on a workspace table", "ALTER TABLE connectors ALTER COLUMN organization_id "
                                                    "SET DEFAULT 'org-b'"),
    refuse("a new column with a default", f"ALTER TABLE {{own_raw}} ADD COLUMN evil text DEFAULT {PLANT}"),
    # generated columns
    refuse("a generated column on one's own raw table",
           "ALTER TABLE {own_raw} ADD COLUMN evil text GENERATED ALWAYS AS (upper(site)) STORED"),
    refuse("a generated column as the organization's role", AS_ORG_ROLE,
           "ALTER TABLE {own_raw} ADD COLUMN evil text GENERATED ALWAYS AS (upper(site)) STORED"),
    refuse("a generated column through the app's own column function",
           "SELECT esg_raw_add_column('{raw_a}', 'evil', 'text GENERATED ALWAYS AS (upper(site)) STORED')",
           code=INVALID),
    refuse("retyping the organization column through the app's own column function",
           "SELECT esg_raw_retype_column('{raw_a}', '_esg_organization_id', 'integer')", code=INVALID),
    # check constraints
    refuse("a check constraint on one's own raw table",
           f"ALTER TABLE {{own_raw}} ADD CONSTRAINT evil CHECK ({PLANT} IS NOT NULL) NOT VALID"),
    refuse("a check constraint as the organization's role", AS_ORG_ROLE,
           f"ALTER TABLE {{own_raw}} ADD CONSTRAINT evil CHECK ({PLANT} IS NOT NULL) NOT VALID"),
    refuse("a check constraint through the app's table function",
           "SELECT esg_raw_create('raw_evil_0123abcd', ARRAY['x'], "
           f"ARRAY['int CHECK ({PLANT.replace(chr(39), chr(39) * 2)} IS NOT NULL)'])",
           code=INVALID),
    refuse("the app's table function with a name that is not a raw table's",
           "SELECT esg_raw_create('connectors', ARRAY['x'], ARRAY['integer'])", code=INVALID),
    refuse("the app's table functions in an organization one is not a member of", SET_ORG_B,
           "SELECT esg_raw_drop('{raw_a}')"),
    refuse("the app's table functions under another organization's role", AS_ORG_ROLE,
           "SELECT esg_raw_drop('{raw_a}')"),
    # policies and row-level security
    refuse("a policy on one's own raw table", "CREATE POLICY evil ON {own_raw} USING (true)"),
    refuse("a policy as the organization's role", AS_ORG_ROLE, "CREATE POLICY evil ON {own_raw} USING (true)"),
    refuse("a policy on a workspace table", "CREATE POLICY evil ON connectors USING (true)"),
    refuse("changing the organization policy", "ALTER POLICY esg_organization ON {own_raw} USING (true)"),
    refuse("switching off forced row-level security", AS_ORG_ROLE,
           "ALTER TABLE {own_raw} NO FORCE ROW LEVEL SECURITY"),
    # other DDL on raw tables
    refuse("TRUNCATE of one's own raw table (it would bypass row-level security)", "TRUNCATE {own_raw}"),
    refuse("DROP of one's own raw table outside the app", AS_ORG_ROLE, "DROP TABLE {own_raw}"),
    refuse("a raw table made a child of a table of one's own", "CREATE TEMP TABLE parent (site text)",
           "ALTER TABLE {own_raw} INHERIT parent"),
    refuse("settings for every session of one's organization's role", "ALTER ROLE {org_a} SET search_path = pg_temp"),
    refuse("settings for every session of the database", "ALTER DATABASE {db} SET esg.organization_id = 'org-b'"),
    # event triggers
    refuse("an event trigger", "CREATE EVENT TRIGGER evil ON ddl_command_start "
                               "EXECUTE FUNCTION esg_refuse_analyst_code()"),
    refuse("switching off the analysts' event trigger", "ALTER EVENT TRIGGER esg_analyst_code DISABLE"),
    refuse("dropping the analysts' event trigger", AS_ORG_ROLE, "DROP EVENT TRIGGER esg_analyst_code"),
    # leaky functions in WHERE: the policy is applied first, so they never see org-b's rows
    answer("a division by zero on org-b's rows raises nothing",
           "SELECT organization_id FROM connectors WHERE 1 / (CASE WHEN organization_id = 'org-b' THEN 0 ELSE 1 END) = 1"),
    answer("a failing cast on org-b's config raises nothing",
           "SELECT organization_id FROM connectors "
           "WHERE (CASE WHEN config LIKE '%" + SECRET + "%' THEN config::int ELSE 0 END) = 0"),
    answer("an error message quoting org-b's config is never raised",
           "SELECT organization_id FROM connectors "
           "WHERE (CASE WHEN organization_id <> 'org-a' THEN to_date(config, 'YYYY') IS NULL ELSE true END)"),
    refuse("a LEAKPROOF function of one's own, to be pushed below the policy",
           "CREATE FUNCTION pg_temp.leak(text) RETURNS boolean LANGUAGE sql LEAKPROOF AS 'SELECT true'"),
    # statistics
    refuse("pg_stat_user_tables", "SELECT relname, n_live_tup FROM pg_stat_user_tables"),
    refuse("pg_stat_all_tables", "SELECT relname, n_tup_ins FROM pg_stat_all_tables"),
    refuse("pg_stat_xact_user_tables", "SELECT relname, n_tup_ins FROM pg_stat_xact_user_tables"),
    refuse("pg_statio_user_tables", "SELECT relname, heap_blks_read FROM pg_statio_user_tables"),
    refuse("pg_stat_user_indexes", "SELECT relname, idx_tup_read FROM pg_stat_user_indexes"),
    refuse("pg_stat_database", "SELECT tup_inserted FROM pg_stat_database"),
    refuse("pg_locks: which tables other sessions write", "SELECT relation::regclass::text, mode FROM pg_locks"),
    refuse("the statistics function behind the views", "SELECT pg_stat_get_live_tuples('connectors'::regclass)"),
    refuse("the size of org-b's raw table", "SELECT pg_total_relation_size('{other_raw}')"),
    refuse("the size of a workspace table", "SELECT pg_relation_size('connectors')"),
    answer("pg_stats of a table under row-level security", "SELECT most_common_vals::text FROM pg_stats "
                                                            "WHERE tablename IN ('connectors', '{raw_a}')",
           check=nothing),
    # sequences
    refuse("a sequence's last value", "SELECT last_value FROM connector_sync_logs_id_seq"),
    refuse("pg_sequences", "SELECT sequencename, last_value FROM pg_sequences"),
    refuse("pg_sequence_last_value", "SELECT pg_sequence_last_value('connector_sync_logs_id_seq')"),
    refuse("setting a sequence back", "SELECT setval('connector_sync_logs_id_seq', 1)"),
    refuse("altering a sequence", "ALTER SEQUENCE connector_sync_logs_id_seq RESTART"),
]


def run_attack(conn: psycopg.Connection, team: Team, attack: Attack) -> list[tuple]:
    names = team.names()
    rows: list[tuple] = []
    with conn.cursor() as cursor:
        for sql in attack.statements:
            sql = sql.format(**names)
            if sql.startswith("COPY") and "STDOUT" in sql:
                out = io.BytesIO()
                with cursor.copy(sql) as copy:
                    for data in copy:
                        out.write(bytes(data))
                rows = [tuple(line.split("\t")) for line in out.getvalue().decode().splitlines()]
            elif sql.startswith("COPY") and "STDIN" in sql:
                with cursor.copy(sql) as copy:
                    copy.write(attack.copy_in or b"")
            else:
                cursor.execute(sql)  # no parameters: psycopg sends the text as it is
                rows = cursor.fetchall() if cursor.description else []
    return rows


def leftovers(team: Team) -> list[tuple]:
    """Objects an attack could have left behind (seen by the administrator)."""
    with team.shared.admin() as conn:
        return conn.execute(
            "SELECT 'relation', relname FROM pg_class WHERE relname IN ('loot', 'evil', 'parent') "
            "UNION ALL SELECT 'function', proname FROM pg_proc WHERE proname IN ('f', 'p', 'steal') "
            "UNION ALL SELECT 'trigger', tgname FROM pg_trigger WHERE tgname = 'evil' "
            "UNION ALL SELECT 'rule', rulename FROM pg_rules WHERE rulename = 'evil' "
            "UNION ALL SELECT 'policy', policyname FROM pg_policies WHERE policyname = 'evil' "
            "UNION ALL SELECT 'event trigger', evtname FROM pg_event_trigger WHERE evtname = 'evil'").fetchall()


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.id for a in ATTACKS])
def test_a_hostile_analyst_is_refused_or_learns_nothing(team, attack):
    conn = connect_as(team, team.alice, "org-a")
    try:
        if attack.refused:
            with pytest.raises(psycopg.Error) as caught:
                run_attack(conn, team, attack)
            assert caught.value.sqlstate == attack.refused, f"{caught.value.sqlstate}: {caught.value}"
            assert SECRET not in str(caught.value)
        else:
            rows = run_attack(conn, team, attack)
            assert attack.reveals(rows), rows
            assert SECRET not in repr(rows)
    finally:
        conn.rollback()
        conn.close()
    assert leftovers(team) == []


def test_there_are_enough_attacks():
    assert len(ATTACKS) >= 30 and len({a.id for a in ATTACKS}) == len(ATTACKS)


# --- issue 11, item 1: code planted by alice, run by carol ----------------------------------------

STEAL = f"""
CREATE FUNCTION {{own_schema}}.steal() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('esg.organization_id', 'org-b', true);
    INSERT INTO {{own_schema}}.loot SELECT organization_id, config FROM public.connectors;
    PERFORM set_config('esg.organization_id', 'org-a', true);
    RETURN NULL;
END $$"""

PLANTING = [  # the attack of issue 11, and the same aimed at every other place an expression runs
    "CREATE TABLE {own_schema}.loot (organization_id text, config text)",
    "GRANT ALL ON {own_schema}.loot TO PUBLIC",
    STEAL,
    "CREATE TRIGGER steal AFTER INSERT ON {own_raw} FOR EACH STATEMENT EXECUTE FUNCTION {own_schema}.steal()",
    f"ALTER TABLE {{own_raw}} ALTER COLUMN _esg_landed_at SET DEFAULT (now() AT TIME ZONE 'UTC') + "
    f"({PLANT} || '0 s')::interval",
    f"ALTER TABLE {{own_raw}} ADD CONSTRAINT evil CHECK ({PLANT} IS NOT NULL)",
    f"CREATE RULE evil AS ON INSERT TO {{own_raw}} DO ALSO SELECT {PLANT}",
    f"CREATE POLICY evil ON {{own_raw}} AS RESTRICTIVE USING ({PLANT} IS NOT NULL)",
]


def admin_rows(team: Team, sql: str) -> list[tuple]:
    with team.shared.admin() as conn:
        return conn.execute(sql).fetchall()


ORG_TABLES = ("connectors", "connector_sync_state", "connector_sync_logs", "connector_sync_chunks",
              "source_schema_cache", "mappings", "staging_rows", "kpi_values", "esg_ingestion_audit")


def org_b_rows(team: Team) -> dict[str, list[tuple]]:
    """Every row of org-b's, workspace tables and raw table (as the administrator)."""
    rows = {t: admin_rows(team, f"SELECT * FROM {t} WHERE organization_id = 'org-b' ORDER BY 1, 2")
            for t in ORG_TABLES}
    rows["raw"] = admin_rows(team, f"SELECT * FROM {team.names()['other_raw']} ORDER BY 1")
    return rows


def test_a_colleagues_sync_runs_no_code_of_alice(team):
    names = team.names()
    planted, other_errors = [], []
    for as_role in ("", AS_ORG_ROLE):  # as herself, then as her organization's role
        conn = connect_as(team, team.alice, "org-a")
        try:
            if as_role:
                conn.execute(as_role.format(**names))
            for sql in PLANTING:
                try:
                    with conn.transaction():
                        conn.execute(sql.format(**names))
                    planted.append((as_role or "alice", sql.split("(")[0].strip()))
                except psycopg.Error as exc:
                    if exc.sqlstate not in (DENIED, UNDEFINED_TABLE, UNDEFINED_FUNCTION):  # (made by a refused step)
                        other_errors.append(f"{exc.sqlstate}: {exc}")
            conn.commit()
        finally:
            conn.close()
    assert planted == [] and other_errors == []

    before = admin_rows(team, "SELECT organization_id, id, config, updated_at FROM connectors "
                              "WHERE organization_id = 'org-b' ORDER BY id")
    org_b_before = org_b_rows(team)
    with team.shared.admin() as conn:  # new rows at the source: carol's delta sync inserts them
        conn.execute("INSERT INTO src.energy SELECT g, 'S1', g, '2030-01-01'::timestamptz + g * interval '1 s' "
                     "FROM generate_series(1001, 1050) g")
    env = {**os.environ, "ESG_WORKBENCH_RETRY_DELAYS": "0.01"}
    carol = subprocess.run([sys.executable, "-m", "esg_workbench", "--workspace", team.shared.url(team.carol),
                            "--organization", "org-a", "sync", "erp", "--json"],
                           capture_output=True, text=True, timeout=180, env=env)
    assert carol.returncode == 0, carol.stderr + carol.stdout
    assert '"rows_written": 50' in carol.stdout

    assert admin_rows(team, "SELECT relname FROM pg_class WHERE relname = 'loot'") == []
    assert admin_rows(team, "SELECT organization_id, id, config, updated_at FROM connectors "
                            "WHERE organization_id = 'org-b' ORDER BY id") == before
    # what carol's sync wrote is org-a's only: nothing of org-b's changed, no row moved into org-b
    assert org_b_rows(team) == org_b_before
    new_b = admin_rows(team, "SELECT count(*) FROM connector_sync_logs l JOIN connectors c ON c.id = l.connector_id "
                             "WHERE c.organization_id = 'org-a' AND l.organization_id <> 'org-a'")
    assert new_b == [(0,)]
    raw_orgs = admin_rows(team, f"SELECT DISTINCT _esg_organization_id FROM {names['own_raw']}")
    assert raw_orgs == [("org-a",)]
    alice = connect_as(team, team.alice, "org-a")
    try:
        seen = alice.execute("SELECT string_agg(config, ' ') FROM connectors").fetchone()[0] or ""
        assert SECRET not in seen
    finally:
        alice.close()


def test_every_type_the_app_lands_passes_the_raw_table_functions_check():
    """esg_raw_create() takes only the types of RAW_COLUMN_TYPES: each the app makes of an
    Arrow type must be one of them (else a sync would fail on a shared workspace)."""
    import re

    import pyarrow as pa

    from esg_workbench.workspace.raw_table_security import RAW_COLUMN_TYPE_PATTERN
    from esg_workbench.workspace.raw_tables import _pg_type

    arrow_types = [pa.bool_(), pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(),
                   pa.uint64(), pa.float16(), pa.float32(), pa.float64(), pa.decimal128(38, 10), pa.decimal256(76, 0),
                   pa.decimal128(5, 2), pa.timestamp("us"), pa.timestamp("ns", tz="UTC"), pa.date32(), pa.date64(),
                   pa.time64("us"), pa.time32("s"), pa.binary(), pa.large_binary(), pa.binary(16), pa.duration("s"),
                   pa.string(), pa.large_string(), pa.dictionary(pa.int32(), pa.string()), pa.list_(pa.int32()),
                   pa.struct([("a", pa.int32())]), pa.null()]
    for arrow_type in arrow_types:
        assert re.fullmatch(RAW_COLUMN_TYPE_PATTERN, _pg_type(arrow_type)), (arrow_type, _pg_type(arrow_type))
    for planted in ("text DEFAULT now()", "integer CHECK (true)", "text GENERATED ALWAYS AS ('x') STORED",
                    "numeric(5,2) COLLATE \"C\"", "text[]", "public.mood", "integer, evil text"):
        assert not re.fullmatch(RAW_COLUMN_TYPE_PATTERN, planted), planted


def test_ids_tell_nothing_of_other_organizations(team):
    """Each organization draws ids from sequences of its own: alice's next id is her last
    plus the fixed stride, however many rows bob made in between."""
    from esg_workbench.workspace.postgres_security import ID_STRIDE

    alice, bob = connect_as(team, team.alice, "org-a"), connect_as(team, team.bob, "org-b")
    try:
        first = alice.execute("SELECT nextval('connector_sync_logs_id_seq')").fetchone()[0]
        bobs = [bob.execute("SELECT nextval('connector_sync_logs_id_seq')").fetchone()[0] for _ in range(5)]
        second = alice.execute("SELECT nextval('connector_sync_logs_id_seq')").fetchone()[0]
        assert second - first == ID_STRIDE and bobs[1] - bobs[0] == ID_STRIDE
        assert first % ID_STRIDE != bobs[0] % ID_STRIDE  # never the same id
        names = team.names()
        with pytest.raises(psycopg.Error) as caught:
            alice.execute(f"SELECT nextval('{names['other_schema']}.connector_sync_logs_id_seq')")
        assert caught.value.sqlstate == DENIED
        alice.rollback()
        with pytest.raises(psycopg.Error) as caught:  # the workspace-wide one is out of reach
            alice.execute("SELECT nextval('public.connector_sync_logs_id_seq_shared')")
        assert caught.value.sqlstate == DENIED
        alice.rollback()
        # rows the app writes (ids drawn by SQLAlchemy, and by the server's default) follow it
        with team.shared.admin() as admin:
            ids = {org: [r[0] for r in admin.execute("SELECT id FROM connector_sync_logs WHERE organization_id = %s",
                                                     (org,)).fetchall()] for org in ("org-a", "org-b")}
        assert ids["org-a"] and ids["org-b"]
        assert len({i % ID_STRIDE for i in ids["org-a"]}) == 1 and len({i % ID_STRIDE for i in ids["org-b"]}) == 1
        drawn = alice.execute("SELECT nextval('mappings_id_seq')").fetchone()[0]
        alice.execute("INSERT INTO mappings (name, version, definition, created_at) VALUES ('d', 1, '{}', now())")
        by_default = alice.execute("SELECT id, organization_id FROM mappings WHERE name = 'd'").fetchone()
        assert by_default == (drawn + ID_STRIDE, "org-a")
    finally:
        alice.rollback()
        alice.close()
        bob.close()
