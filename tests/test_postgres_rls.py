"""A shared PostgreSQL workspace keeps organizations apart: two organizations, an analyst
role each, real syncs, mappings, KPIs and audit entries; org A's session tries to read,
count, change and delete org B's through the app's own code and through plain SQL on the
app's own connection, and is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from esg_workbench.audit import chain
from esg_workbench.core.errors import NotFound
from esg_workbench.demo import run_demo, sample_directory
from esg_workbench.sample_data import ensure_sample_erp
from esg_workbench.mapping import report
from esg_workbench.sync import operations
from esg_workbench.sync.engine import SyncEngine, SyncRequest
from esg_workbench.workspace import open_workspace, organizations
from esg_workbench.workspace.postgres_security import OrganizationChoiceNeeded
from tests.conftest import PG_HOST, PG_PORT, PG_USER
from tests.pg_shared import shared_database

STAGING_TABLES = ("staging_records", "staging_kinds", "staging_values")  # (staging_rows: their view)
ORG_TABLES = ("connectors", "source_schema_cache", "connector_sync_state", "connector_sync_logs",
              "connector_sync_chunks", "mappings", *STAGING_TABLES, "kpi_values", "kpi_lineage",
              "esg_ingestion_audit")
INSUFFICIENT_PRIVILEGE = "42501"  # also what a row-level security WITH CHECK violation raises


def make_source(shared, rows: int) -> None:
    with shared.admin() as conn:
        conn.execute(f"""
            CREATE SCHEMA IF NOT EXISTS src;
            CREATE TABLE src.energy (id int PRIMARY KEY, site text, kwh numeric(10,2), updated_at timestamptz NOT NULL);
            INSERT INTO src.energy SELECT g, 'S' || g % 3, g, '2024-01-01'::timestamptz + g * interval '1 hour'
            FROM generate_series(1, {rows}) g""")


def source_options(shared, **extra) -> dict:
    return {"host": PG_HOST, "port": PG_PORT, "database": shared.database, "username": PG_USER, "schema": "src",
            "cursor_field": "updated_at", "chunk_size": 100, **extra}


def sync(ws, name="erp", **kw):
    return SyncEngine(ws, retry_delays=(0.01, 0.02)).run(SyncRequest(connector=name, **kw))


@pytest.fixture(scope="module")
def two_orgs(tmp_path_factory):
    """org-a (analyst alice) and org-b (analyst bob), each with a PostgreSQL-source
    connector 'erp' synced and the sample ERP demo run (sync, mapping, KPIs); dave is in
    both organizations."""
    with shared_database() as shared:
        alice, bob, dave = shared.role("alice"), shared.role("bob"), shared.role("dave")
        organizations.init_postgres(shared.url(alice), shared.admin_url, organization="org-a", organization_name="Org A")
        organizations.add_organization(shared.admin_url, "org-b", "Org B")
        organizations.add_user(shared.admin_url, bob, ["org-b"])
        organizations.add_user(shared.admin_url, dave, ["org-a", "org-b"])
        make_source(shared, 500)
        ws_a, ws_b = open_workspace(shared.url(alice)), open_workspace(shared.url(bob))
        raw = {}

        def fill(ws, org):
            assert ws.organization_id == org
            operations.add_connector(ws, "erp", "postgres", source_options(shared))
            result = sync(ws)
            assert result.status.value == "success" and result.rows_written == 500
            raw[org] = result.streams[0].raw_table
            assert run_demo(ws)["status"] == "success"

        try:
            ensure_sample_erp(sample_directory(ws_a))  # made once, before both read it
            with ThreadPoolExecutor(2) as pool:  # the two organizations at once
                for done in [pool.submit(fill, ws_a, "org-a"), pool.submit(fill, ws_b, "org-b")]:
                    done.result()
            yield shared, ws_a, ws_b, raw
        finally:
            ws_a.close()
            ws_b.close()


def sqlstate(exc: BaseException) -> str | None:
    return getattr(getattr(exc, "orig", exc), "sqlstate", None)


def refused(ws, sql: str, params: dict | None = None) -> str:
    """Run `sql` on the workspace's own connection; return the SQLSTATE it was refused with."""
    with pytest.raises(sa.exc.DBAPIError) as caught:
        with ws.transaction() as conn:
            conn.execute(sa.text(sql), params or {})
    return sqlstate(caught.value)


def scalar(ws, sql: str, params: dict | None = None):
    with ws.read() as conn:
        return conn.execute(sa.text(sql), params or {}).scalar()


def counts_by_org(shared) -> dict[str, list]:
    """What is really in the tables (as the administrator, who bypasses the policies)."""
    with shared.admin() as conn:
        return {t: conn.execute(f"SELECT organization_id, count(*) FROM {t} GROUP BY 1 ORDER BY 1").fetchall()
                for t in ORG_TABLES}


def test_each_analyst_works_in_their_own_organization(two_orgs):
    shared, ws_a, ws_b, raw = two_orgs
    truth = counts_by_org(shared)
    for table in ORG_TABLES:  # both organizations really have rows in every table
        assert [org for org, n in truth[table] if n] == ["org-a", "org-b"], table
    for ws, org in ((ws_a, "org-a"), (ws_b, "org-b")):
        for table in ORG_TABLES:
            with ws.read() as conn:
                seen = conn.execute(sa.text(f"SELECT organization_id, count(*) FROM {table} GROUP BY 1")).all()
            assert [tuple(r) for r in seen] == [(org, n) for o, n in truth[table] if o == org], table
        assert chain.verify(ws).ok


def test_app_code_of_org_a_cannot_reach_org_b(two_orgs):
    shared, ws_a, ws_b, raw = two_orgs
    mine = {c.name: c.id for c in operations.list_connectors(ws_a)}
    theirs = {c.name: c.id for c in operations.list_connectors(ws_b)}
    assert set(mine) == set(theirs) == {"erp", "sample-erp"}
    assert not set(mine.values()) & set(theirs.values())
    b_id = theirs["erp"]
    with pytest.raises(NotFound):
        operations.get_connector(ws_a, b_id)
    with pytest.raises(NotFound):
        operations.update_connector(ws_a, b_id, {"chunk_size": 5})
    with pytest.raises(NotFound):
        operations.remove_connector(ws_a, b_id)
    with pytest.raises(NotFound):
        sync(ws_a, b_id)
    assert operations.get_connector(ws_b, b_id).config["chunk_size"] == 100  # untouched

    # KPIs, drill-down and audit: each sees its own
    a_report, b_report = report.report_rows(ws_a), report.report_rows(ws_b)
    assert a_report and b_report
    with ws_a.read() as conn:
        a_kpi_ids = set(conn.execute(sa.text("SELECT id FROM kpi_values")).scalars())
    with ws_b.read() as conn:
        b_kpi_ids = set(conn.execute(sa.text("SELECT id FROM kpi_values")).scalars())
    assert a_kpi_ids and b_kpi_ids and not a_kpi_ids & b_kpi_ids
    from esg_workbench.mapping import aggregate

    with pytest.raises(NotFound):
        aggregate.drill_down(ws_a, min(b_kpi_ids), limit=5)
    assert aggregate.drill_down(ws_b, min(b_kpi_ids), limit=5)["staging_row_count"] >= 0
    a_entries = chain.entries(ws_a, limit=10_000)
    assert a_entries and {e["organization_id"] for e in a_entries} == {"org-a"}
    assert chain.verify(ws_a).ok and chain.verify(ws_b).ok


def test_plain_sql_on_org_a_connection_is_refused_for_org_b(two_orgs):
    shared, ws_a, ws_b, raw = two_orgs
    before = counts_by_org(shared)
    for table in ORG_TABLES:
        assert scalar(ws_a, f"SELECT count(*) FROM {table} WHERE organization_id = 'org-b'") == 0
        assert scalar(ws_a, f"SELECT count(*) FROM {table} WHERE organization_id <> 'org-a'") == 0
        if table != "esg_ingestion_audit":
            with ws_a.transaction() as conn:  # B's rows do not exist for A: nothing to change
                assert conn.execute(sa.text(f"UPDATE {table} SET organization_id = organization_id "
                                            "WHERE organization_id = 'org-b'")).rowcount == 0
                assert conn.execute(sa.text(f"DELETE FROM {table} WHERE organization_id = 'org-b'")).rowcount == 0
            # moving one's own rows into B is refused
            assert refused(ws_a, f"UPDATE {table} SET organization_id = 'org-b'") == INSUFFICIENT_PRIVILEGE
    # writing rows of B is refused
    assert refused(ws_a, "INSERT INTO connectors (id, organization_id, type, name, config, load_type, status, "
                         "created_at, updated_at) VALUES ('x', 'org-b', 'postgres', 'evil', '{}', 'full', 'new', "
                         "now(), now())") == INSUFFICIENT_PRIVILEGE
    assert refused(ws_a, "INSERT INTO kpi_values (organization_id, period, period_type, kpi, value, computed_at) "
                         "VALUES ('org-b', '2024-01', 'month', 'energy_total', 1, now())") == INSUFFICIENT_PRIVILEGE
    assert refused(ws_a, "INSERT INTO staging_records (organization_id, connector_id, source_table, source_key, "
                         "arrived_at) VALUES ('org-b', 'x', 't', '1', now())") == INSUFFICIENT_PRIVILEGE
    assert refused(ws_a, "INSERT INTO staging_kinds (organization_id, field) VALUES ('org-b', 'f')") == \
        INSUFFICIENT_PRIVILEGE
    assert refused(ws_a, "INSERT INTO staging_values (organization_id, record_id, kind_id) VALUES ('org-b', 1, 1)") \
        == INSUFFICIENT_PRIVILEGE
    # the audit chain is append-only for analysts, whoever's it is
    assert refused(ws_a, "UPDATE esg_ingestion_audit SET action = 'x'") == INSUFFICIENT_PRIVILEGE
    assert refused(ws_a, "DELETE FROM esg_ingestion_audit") == INSUFFICIENT_PRIVILEGE
    # B's raw table: no privilege at all
    b_raw = f'"{ws_a.roles.raw_schema("org-b")}".{raw["org-b"]}'  # in B's schema, by its full name
    assert sqlstate(pytest.raises(sa.exc.DBAPIError, scalar, ws_a, f"SELECT 1 FROM {raw['org-b']}").value) == "42P01"
    for sql in (f"SELECT * FROM {b_raw}", f"SELECT count(*) FROM {b_raw}", f"UPDATE {b_raw} SET site = 'x'",
                f"DELETE FROM {b_raw}", f"INSERT INTO {b_raw} (id) VALUES (1)", f"TRUNCATE {b_raw}",
                f"DROP TABLE {b_raw}", f"ALTER TABLE {b_raw} ADD COLUMN evil int",
                f"ALTER TABLE {b_raw} DISABLE ROW LEVEL SECURITY"):
        assert refused(ws_a, sql) == INSUFFICIENT_PRIVILEGE, sql
    # pretending to be B: the setting alone does not make the session B's
    with ws_a.transaction() as conn:
        conn.execute(sa.text("SET LOCAL esg.organization_id = 'org-b'"))
        assert conn.execute(sa.text("SELECT esg_session_org()")).scalar() is None
        for table in ORG_TABLES:
            assert conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar() == 0, table
    with pytest.raises(sa.exc.DBAPIError) as caught:
        with ws_a.transaction() as conn:
            conn.execute(sa.text("SET LOCAL esg.organization_id = 'org-b'"))
            conn.execute(sa.text("INSERT INTO mappings (organization_id, name, version, definition, created_at) "
                                 "VALUES ('org-b', 'evil', 1, '{}', now())"))
    assert sqlstate(caught.value) == INSUFFICIENT_PRIVILEGE
    # no objects of one's own where other analysts' queries would find them (CVE-2018-1058)
    assert refused(ws_a, "CREATE TABLE public.evil (x int)") == INSUFFICIENT_PRIVILEGE
    assert refused(ws_a, "CREATE FUNCTION public.lower(varchar) RETURNS text LANGUAGE sql AS 'SELECT 1::text'") \
        == INSUFFICIENT_PRIVILEGE
    own_schema = f'"{ws_a.roles.raw_schema("org-a")}"'
    for sql in (f"CREATE FUNCTION {own_schema}.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
                f"CREATE VIEW {own_schema}.connectors AS SELECT 1 AS id",
                f"CREATE TYPE {own_schema}.mood AS ENUM ('ok')",
                f"CREATE TABLE {own_schema}.connectors (id text)",
                f"ALTER TABLE {raw['org-a']} ADD COLUMN evil int",
                f"DROP TABLE {raw['org-a']}"):
        assert refused(ws_a, sql) == INSUFFICIENT_PRIVILEGE, sql
    assert refused(ws_a, f"SET ROLE \"{shared.role('bob')}\"") == INSUFFICIENT_PRIVILEGE
    org_b_role = organizations.sec.Roles(ws_a.roles.prefix).organization("org-b")
    assert refused(ws_a, f'SET ROLE "{org_b_role}"') == INSUFFICIENT_PRIVILEGE
    assert counts_by_org(shared) == before  # nothing of anyone's changed
    with ws_a.read() as conn:  # and A's own session is still A's
        assert conn.execute(sa.text("SELECT esg_session_org()")).scalar() == "org-a"


def test_staging_rows_view_shows_each_analyst_their_own_rows_only(two_orgs):
    """staging_rows is a view of three tables (workspace/schema.py) that reads them as the
    caller: A sees A's staging rows through it, none of B's, even by joining A's own rows to
    B's records and kinds by id; it cannot be written; it is not A's to change."""
    shared, ws_a, ws_b, raw = two_orgs
    with shared.admin() as conn:  # (the administrator bypasses the policies)
        truth = dict(conn.execute("SELECT organization_id, count(*) FROM staging_rows GROUP BY 1").fetchall())
        b_record, b_kind = conn.execute("SELECT record_id, kind_id FROM staging_values "
                                        "WHERE organization_id = 'org-b' LIMIT 1").fetchone()
    assert truth["org-a"] and truth["org-b"]
    for ws, org in ((ws_a, "org-a"), (ws_b, "org-b")):
        with ws.read() as conn:
            assert conn.execute(sa.text("SELECT organization_id, count(*) FROM staging_rows GROUP BY 1")).all() == [
                (org, truth[org])]
    with ws_a.transaction() as conn:  # a value of A's pointing at B's record and kind shows nothing of B's
        conn.execute(sa.text("INSERT INTO staging_values (organization_id, record_id, kind_id, normalized_value) "
                             "VALUES ('org-a', :r, :k, 1)"), {"r": b_record, "k": b_kind})
        assert conn.execute(sa.text("SELECT count(*) FROM staging_rows")).scalar() == truth["org-a"]
        assert conn.execute(sa.text("SELECT count(*) FROM staging_records WHERE id = :r"), {"r": b_record}).scalar() == 0
        conn.execute(sa.text("DELETE FROM staging_values WHERE record_id = :r"), {"r": b_record})
    for sql in ("INSERT INTO staging_rows (organization_id, connector_id, source_table, source_key, field, arrived_at) "
                "VALUES ('org-b', 'x', 't', '1', 'f', now())",
                "UPDATE staging_rows SET quality = 'x'", "DELETE FROM staging_rows",
                "CREATE OR REPLACE VIEW staging_rows AS SELECT 1 AS id", "DROP VIEW staging_rows",
                "ALTER VIEW staging_rows SET (security_invoker = false)"):
        assert refused(ws_a, sql) is not None, sql
    with shared.admin() as conn:
        assert dict(conn.execute("SELECT organization_id, count(*) FROM staging_rows GROUP BY 1").fetchall()) == truth


def test_policies_compare_with_one_value_per_statement(two_orgs):
    """The session's organization is an InitPlan: computed once, not once per row."""
    shared, ws_a, ws_b, raw = two_orgs
    with ws_a.read() as conn:
        plan = "\n".join(conn.execute(sa.text(f"EXPLAIN SELECT count(*) FROM {raw['org-a']}")).scalars())
    assert "InitPlan" in plan and "esg_session_org" not in plan.split("InitPlan")[0], plan


def test_audit_entries_name_the_database_role_and_os_user(two_orgs):
    shared, ws_a, ws_b, raw = two_orgs
    alice, bob = shared.role("alice"), shared.role("bob")
    actors = {e["actor"] for e in chain.entries(ws_a, limit=10_000)}
    assert actors and all(a.startswith(f"{alice} (os: {chain.os_user()}") for a in actors), actors
    # an entry that names another role is refused, even with a correct hash
    with ws_a.read() as conn:
        last = conn.execute(sa.text("SELECT entry_hash FROM esg_ingestion_audit ORDER BY id DESC LIMIT 1")).scalar()
    assert refused(ws_a, "INSERT INTO esg_ingestion_audit (organization_id, actor, action, previous_hash, entry_hash, "
                         "metadata, at) VALUES ('org-a', :actor, 'forged', :prev, 'x', '{}', now())",
                   {"actor": f"{bob} (os: bob)", "prev": last}) == INSUFFICIENT_PRIVILEGE
    assert chain.verify(ws_a).ok


def test_a_second_analyst_of_the_organization_resyncs_and_follows_drift(two_orgs):
    shared, ws_a, ws_b, raw = two_orgs
    carol = shared.role("carol")
    organizations.add_user(shared.admin_url, carol, ["org-a"])
    ws_c = open_workspace(shared.url(carol))
    try:
        assert ws_c.organization_id == "org-a"
        full = sync(ws_c, load_type="full")  # lands into a shadow table, then drops alice's and renames
        assert full.status.value == "success" and full.streams[0].raw_table == raw["org-a"]
        with shared.admin() as conn:
            conn.execute("ALTER TABLE src.energy ADD COLUMN co2 numeric, ALTER COLUMN kwh TYPE numeric(12,3); "
                         "UPDATE src.energy SET co2 = 1, updated_at = '2030-01-01' WHERE id <= 10")
        operations.discover_connector(ws_c, "erp")
        delta = sync(ws_c, load_type="delta")
        assert delta.status.value == "success", delta.error
        with ws_c.read() as conn:
            rows = conn.execute(sa.text(f"SELECT count(*), count(co2) FROM {raw['org-a']}")).one()
        assert tuple(rows) == (500, 10)
        with ws_c.read() as conn:  # widened and retyped through the administrator's functions
            types = dict(conn.execute(sa.text("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                                              "WHERE attrelid = to_regclass(:t) AND attnum > 0"), {"t": raw["org-a"]}).all())
        assert types["kwh"] == "numeric(12,3)" and "co2" in types
        a_raw = f'"{ws_a.roles.raw_schema("org-a")}".{raw["org-a"]}'
        with shared.admin() as conn:
            owner = conn.execute("SELECT pg_get_userbyid(relowner), relrowsecurity, relforcerowsecurity "
                                 "FROM pg_class WHERE oid = %s::regclass", (a_raw,)).fetchone()
            leftovers = conn.execute("SELECT relnamespace::regnamespace::text, relname, relkind FROM pg_class "
                                     "WHERE relname LIKE '%%\\_\\_shadow\\_%%'").fetchall()
        assert owner == (PG_USER, True, True)  # the workspace's owner: analysts cannot alter it
        assert leftovers == []  # the shadow table was swapped in
        assert refused(ws_b, f"SELECT count(*) FROM {a_raw}") == INSUFFICIENT_PRIVILEGE
        with ws_a.read() as conn:  # alice still reads what carol landed
            assert conn.execute(sa.text(f"SELECT count(co2) FROM {raw['org-a']}")).scalar() == 10
        assert chain.verify(ws_c).ok
    finally:
        ws_c.close()


def test_an_analyst_of_several_organizations_chooses_one(two_orgs, monkeypatch):
    shared, ws_a, ws_b, raw = two_orgs
    dave = shared.role("dave")
    with pytest.raises(OrganizationChoiceNeeded) as caught:
        open_workspace(shared.url(dave))
    assert caught.value.organizations == ["org-a", "org-b"]
    assert "org-a, org-b" in caught.value.message
    assert [o.id for o in organizations.available_organizations(shared.url(dave))] == ["org-a", "org-b"]
    assert [o.name for o in organizations.available_organizations(shared.url(dave))] == ["Org A", "Org B"]
    ws = open_workspace(shared.url(dave), organization_id="org-b")
    try:
        assert {c.id for c in operations.list_connectors(ws)} == {c.id for c in operations.list_connectors(ws_b)}
    finally:
        ws.close()
    monkeypatch.setenv("ESG_WORKBENCH_ORGANIZATION", "org-a")
    ws = open_workspace(shared.url(dave))
    try:
        assert ws.organization_id == "org-a"
    finally:
        ws.close()
    with pytest.raises(NotFound) as not_member:
        open_workspace(shared.url(shared.role("bob")), organization_id="org-a")
    assert "not a member of organization 'org-a'" in not_member.value.message
    assert "org-b" in not_member.value.hint


def clis(*commands: tuple[str, ...]) -> list[tuple[int, str, str]]:
    """Run CLI commands as processes at the same time; (exit code, stdout, stderr) each."""
    env = {**os.environ, "ESG_WORKBENCH_RETRY_DELAYS": "0.01,0.02,0.04"}
    procs = [subprocess.Popen([sys.executable, "-m", "esg_workbench", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for args in commands]
    outputs = [p.communicate(timeout=180) for p in procs]
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs)]


def test_concurrent_syncs_from_two_processes_keep_each_chain(tmp_path):
    with shared_database() as shared:
        alice, bob = shared.role("alice"), shared.role("bob")
        organizations.init_postgres(shared.url(alice), shared.admin_url, organization="org-a")
        organizations.add_organization(shared.admin_url, "org-b")
        organizations.add_user(shared.admin_url, bob, ["org-b"])
        make_source(shared, 2000)
        for role in (alice, bob):
            ws = open_workspace(shared.url(role))
            operations.add_connector(ws, "erp", "postgres", source_options(shared))
            ws.close()
        syncs = clis(*[("--workspace", shared.url(role), "sync", "erp", "--json") for role in (alice, bob)])
        for code, out, err in syncs:
            assert code == 0, err
            assert json.loads(out)["rows_written"] == 2000
        verified = clis(*[("--workspace", shared.url(role), "audit", "verify", "--json") for role in (alice, bob)])
        for code, out, err in verified:
            assert code == 0, err + out
            result = json.loads(out)
            assert result["ok"] and result["entries"] >= 21  # connector.add + 20 chunks + ...
        with shared.admin() as conn:  # the two chains really interleaved in one table
            # (by time: each organization draws its ids from a sequence of its own)
            orgs = [r[0] for r in conn.execute("SELECT organization_id FROM esg_ingestion_audit ORDER BY at, id")]
            switches = sum(1 for x, y in zip(orgs, orgs[1:]) if x != y)
            by_org = dict(conn.execute("SELECT organization_id, count(*) FROM esg_ingestion_audit GROUP BY 1").fetchall())
        assert by_org == {"org-a": by_org["org-a"], "org-b": by_org["org-b"]} and min(by_org.values()) >= 21
        assert switches >= 2, "the two syncs ran one after the other"


def test_duckdb_needs_no_set_up_and_has_one_organization(workspace_url):
    ws = open_workspace(workspace_url)
    try:
        assert ws.organization_id == "default" and not ws.secured
        assert [o.id for o in organizations.my_organizations(ws)] == ["default"]
    finally:
        ws.close()
    from esg_workbench.core.errors import WorkspaceError

    with pytest.raises(WorkspaceError, match="one organization"):
        open_workspace(workspace_url, organization_id="acme")
