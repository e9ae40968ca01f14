"""Two analysts at once on one shared PostgreSQL workspace (issue 7).

Real PostgreSQL throughout. The fine-grained races (two saves of one mapping, two
recomputes, two applies, one connector name added twice, ...) run in threads of this
process behind a `threading.Barrier`, each thread on its own connection, so they start
together (on a superuser workspace: the races do not depend on row-level security).
The whole sessions run as real processes (tests/team_driver.py, which calls the CLI's
`main`) signed in as analyst roles of a workspace secured by organization (two in org-a,
one in org-b), with OS users of their own; they wait at a file barrier, so their syncs,
applies and aggregations overlap. A sequential re-run in the same workspace is the
reference for the KPIs.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from esg_workbench import demo
from esg_workbench.audit import chain
from esg_workbench.core.errors import ConfigError
from esg_workbench.mapping import aggregate, apply, factors, store
from esg_workbench.sample_data import TABLES, ensure_sample_erp
from esg_workbench.sync import operations
from esg_workbench.workspace import connectors_store, open_workspace, organizations
from esg_workbench.workspace.concurrency import ChangedElsewhere
from esg_workbench.workspace import concurrency
from tests.conftest import PG_HOST, PG_PORT, PG_USER, port_open, service_missing
from tests.pg_shared import SharedDatabase, shared_database

ROOT = Path(__file__).resolve().parent.parent
DRIVER = Path(__file__).resolve().parent / "team_driver.py"


def pg_url(database: str) -> str:
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


def admin() -> psycopg.Connection:
    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True)


@pytest.fixture(scope="module")
def template_db(tmp_path_factory):
    """A workspace database holding the demo (sample ERP synced, mapped, aggregated),
    used as the template each test copies (CREATE DATABASE ... TEMPLATE: a file copy)."""
    if not port_open(PG_HOST, PG_PORT):
        service_missing(f"PostgreSQL on {PG_HOST}:{PG_PORT}")
    name = f"esg_team_tpl_{uuid.uuid4().hex[:10]}"
    folder = tmp_path_factory.mktemp("team")
    with admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    original = demo.sample_directory
    demo.sample_directory = lambda workspace: folder
    try:
        ws = open_workspace(pg_url(name))
        try:
            assert demo.run_demo(ws)["status"] == "success"
        finally:
            ws.close()
        yield name
    finally:
        demo.sample_directory = original
        with admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def team_ws(template_db):
    name = f"esg_team_{uuid.uuid4().hex[:10]}"
    with admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    ws = open_workspace(pg_url(name))
    try:
        yield ws
    finally:
        ws.close()
        with admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def together(*actions, rounds: int = 1) -> list:
    """Run the actions in threads that start at one barrier; returns each one's result or
    the exception it raised (rounds times over, in order)."""
    outcomes = []
    for _ in range(rounds):
        barrier = threading.Barrier(len(actions))

        def run(action):
            barrier.wait()
            try:
                return action()
            except Exception as exc:  # reported to the test, which decides
                return exc

        with concurrent.futures.ThreadPoolExecutor(len(actions)) as pool:
            outcomes += list(pool.map(run, actions))
    return outcomes


def kpi_hashes(ws) -> dict[tuple, str]:
    rows = aggregate.kpi_rows(ws)
    found = {(r["kpi"], r["site"] or "", r["period"]): r["result_hash"] for r in rows}
    assert len(found) == len(rows), "a KPI value is stored twice"
    return found


def scalar(ws, sql: str, **params):
    with ws.read() as conn:
        return conn.execute(sa.text(sql), params).scalar()


# --- threads: the fine-grained cases --------------------------------------------------------

def test_two_saves_of_one_mapping_land_as_consecutive_versions(team_ws):
    mapping = store.load_mapping(team_ws, demo.SAMPLE_MAPPING)

    def saves(author: str):
        def run():
            for i in range(3):
                copy = mapping.copy()
                copy.description = f"edited by {author}, save {i}"
                store.save_mapping(team_ws, copy, author=author, comment=f"{author} {i}")
        return run

    outcomes = together(saves("ana"), saves("ben"))
    assert outcomes == [None, None]
    history = store.history(team_ws, demo.SAMPLE_MAPPING)
    assert sorted(h["version"] for h in history) == list(range(1, 8))
    assert {h["comment"] for h in history} >= {f"{a} {i}" for a in ("ana", "ben") for i in range(3)}
    assert store.load_mapping(team_ws, demo.SAMPLE_MAPPING).version == 7
    assert chain.verify(team_ws).ok


def test_two_recomputes_at_once_store_one_set_of_kpis(team_ws):
    expected = kpi_hashes(team_ws)
    links = scalar(team_ws, "SELECT count(*) FROM kpi_lineage")
    outcomes = together(lambda: aggregate.aggregate(team_ws), lambda: aggregate.aggregate(team_ws), rounds=2)
    assert all(isinstance(o, aggregate.AggregateResult) for o in outcomes), outcomes
    assert kpi_hashes(team_ws) == expected
    assert scalar(team_ws, "SELECT count(*) FROM kpi_lineage") == links
    assert scalar(team_ws, "SELECT count(DISTINCT run_id) FROM kpi_values") == 1
    assert chain.verify(team_ws).ok


def test_two_applies_of_one_mapping_and_a_recompute_at_once(team_ws):
    expected = kpi_hashes(team_ws)
    staging = scalar(team_ws, "SELECT count(*) FROM staging_rows")
    outcomes = together(lambda: apply.apply_mapping(team_ws, demo.SAMPLE_MAPPING),
                        lambda: apply.apply_mapping(team_ws, demo.SAMPLE_MAPPING),
                        lambda: aggregate.aggregate(team_ws), rounds=2)
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    assert scalar(team_ws, "SELECT count(*) FROM staging_rows") == staging
    assert scalar(team_ws, "SELECT count(*) FROM (SELECT DISTINCT source_table, source_key, field, scope, method "
                           "FROM staging_rows) d") == scalar(
        team_ws, "SELECT count(*) FROM (SELECT DISTINCT source_table, source_key, field, scope, method, id "
                 "FROM staging_rows) d")
    # whichever order they ran in, each recompute saw a whole apply's rows, never half of one
    assert kpi_hashes(team_ws) == expected
    assert chain.verify(team_ws).ok


def test_an_apply_leaves_the_rows_of_a_sync_still_landing_to_that_sync(team_ws):
    """A delta sync lands chunk by chunk; an analyst's apply in between must not map part
    of the run, or the run's own incremental apply at its end would skip the rest."""
    full = scalar(team_ws, "SELECT count(*) FROM staging_rows")
    with team_ws.read() as conn:
        connector_id = operations.get_connector(team_ws, demo.DEMO_CONNECTOR).id
        raw = conn.execute(sa.text("SELECT raw_table FROM connector_sync_state WHERE stream LIKE '%electricity_readings'")).scalar()
    quoted = team_ws.engine.dialect.identifier_preparer.quote(raw)
    with team_ws.transaction() as conn:  # a run under way has landed a chunk of 20 rows
        run = conn.execute(sa.text(
            "INSERT INTO connector_sync_logs (id, organization_id, connector_id, load_type, mode, status, started_at, "
            "items_read, items_written) VALUES (nextval('connector_sync_logs_id_seq'), 'default', :c, 'delta', 'sync', "
            "'running', now(), 20, 20) RETURNING id"), {"c": connector_id}).scalar()
        conn.execute(sa.text(f"UPDATE {quoted} SET _esg_sync_id = :r WHERE id IN "
                             f"(SELECT id FROM {quoted} ORDER BY id LIMIT 20)"), {"r": run})
    apply.apply_mapping(team_ws, demo.SAMPLE_MAPPING)
    without = scalar(team_ws, "SELECT count(*) FROM staging_rows")
    assert without < full
    assert scalar(team_ws, "SELECT count(*) FROM staging_rows WHERE sync_id = :r", r=run) == 0
    with team_ws.transaction() as conn:  # the run ends; its own incremental apply maps its rows
        conn.execute(sa.text("UPDATE connector_sync_logs SET status = 'success' WHERE id = :r"), {"r": run})
    apply.apply_mapping(team_ws, demo.SAMPLE_MAPPING, incremental=True)
    assert scalar(team_ws, "SELECT count(*) FROM staging_rows") == full
    assert scalar(team_ws, "SELECT count(*) FROM staging_rows WHERE sync_id = :r", r=run) > 0


def test_adding_one_connector_name_twice_at_once_says_it_exists(team_ws, tmp_path):
    options = {"path": str(tmp_path / "x.sqlite")}
    for round_ in range(3):
        name = f"plant-{round_}"
        outcomes = together(lambda: operations.add_connector(team_ws, name, "sqlite", options),
                            lambda: operations.add_connector(team_ws, name, "sqlite", options))
        errors = [o for o in outcomes if isinstance(o, Exception)]
        assert len(errors) == 1, outcomes
        assert isinstance(errors[0], ConfigError) and "already exists" in errors[0].message
        assert scalar(team_ws, "SELECT count(*) FROM connectors WHERE name = :n", n=name) == 1
    # renaming onto a taken name is the same plain error, not a database one
    with pytest.raises(ConfigError, match="already exists"):
        operations.update_connector(team_ws, "plant-0", options, new_name="plant-1")
    assert chain.verify(team_ws).ok


def test_editing_a_connector_someone_else_changed_is_refused_until_reloaded(team_ws, tmp_path):
    record = operations.add_connector(team_ws, "meters", "sqlite", {"path": str(tmp_path / "a.sqlite")})
    opened = operations.get_connector(team_ws, "meters")  # two editors open the same record
    # a status change (a sync ended, a connection test) is not an edit
    with team_ws.transaction() as conn:
        connectors_store.update(team_ws, conn, record.id, status="sync_success")
    assert operations.get_connector(team_ws, "meters").updated_at == opened.updated_at

    outcomes = together(
        lambda: operations.update_connector(team_ws, "meters", {"path": "/data/ana.sqlite"},
                                            expected_updated_at=opened.updated_at),
        lambda: operations.update_connector(team_ws, "meters", {"path": "/data/ben.sqlite"},
                                            expected_updated_at=opened.updated_at))
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert len(refused) == 1 and isinstance(refused[0], ChangedElsewhere), outcomes
    assert "changed by someone else" in refused[0].message and "Reload" in refused[0].hint
    saved = next(o for o in outcomes if not isinstance(o, Exception))
    assert operations.get_connector(team_ws, "meters").config == saved.config  # the refused one wrote nothing
    # reloaded, the second editor saves
    again = operations.update_connector(team_ws, "meters", {"path": "/data/ben.sqlite"},
                                        expected_updated_at=saved.updated_at)
    assert again.config["path"] == "/data/ben.sqlite"


def test_two_discoveries_of_one_connector_cache_each_table_once(team_ws):
    outcomes = together(lambda: operations.discover_connector(team_ws, demo.DEMO_CONNECTOR),
                        lambda: operations.discover_connector(team_ws, demo.DEMO_CONNECTOR), rounds=2)
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    assert scalar(team_ws, "SELECT count(*) FROM source_schema_cache") == len(TABLES)
    assert scalar(team_ws, "SELECT count(DISTINCT table_name) FROM source_schema_cache") == len(TABLES)


def test_two_imports_of_one_factor_set_keep_one_copy(team_ws, tmp_path):
    path = tmp_path / "factors.csv"
    path.write_text("Scope,Level 1,Level 2,Level 3,Level 4,Column Text,UOM,GHG/Unit,GHG Conversion Factor 2024\n"
                    "Scope 1,Fuels,Liquid fuels,Diesel (average biofuel blend),,,litres,kg CO2e,2.51\n"
                    "Scope 1,Fuels,Liquid fuels,Petrol (average biofuel blend),,,litres,kg CO2e,2.10\n", encoding="utf-8")
    outcomes = together(lambda: factors.import_factor_set(team_ws, path, name="site-set", version="1"),
                        lambda: factors.import_factor_set(team_ws, path, name="site-set", version="1"), rounds=2)
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    assert scalar(team_ws, "SELECT count(*) FROM emission_factors WHERE factor_set = 'site-set'") == 2


# --- processes: two analysts' whole sessions --------------------------------------------------

def load_sample_into_postgres(pg_conn, sample: Path, schema: str) -> dict[str, int]:
    """The sample ERP's tables, as they are, in a schema of the source database."""
    source = sqlite3.connect(sample)
    counts = {}
    pg_conn.execute(f'CREATE SCHEMA "{schema}"')
    pg_conn.execute(f'SET search_path TO "{schema}"')
    for table in TABLES:
        ddl = source.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()[0]
        pg_conn.execute(ddl)
        cursor = source.execute(f'SELECT * FROM "{table}"')
        columns = ", ".join(f'"{d[0]}"' for d in cursor.description)
        rows = cursor.fetchall()
        with pg_conn.cursor().copy(f'COPY "{table}" ({columns}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row(row)
        counts[table] = len(rows)
    pg_conn.execute("SET search_path TO public")
    source.close()
    return counts


def start_sessions(tmp_path: Path, sessions: dict[str, list[list[str]]]) -> dict[str, list[dict]]:
    """Start one driver process per analyst, open the barrier when all are ready, and
    return each one's step results."""
    barrier = tmp_path / f"go-{uuid.uuid4().hex[:6]}"
    procs = {}
    for user, steps in sessions.items():
        env = {**os.environ, "USER": user, "LOGNAME": user, "ESG_WORKBENCH_RETRY_DELAYS": "0.05,0.1,0.2",
               "PYTHONPATH": str(ROOT)}
        procs[user] = subprocess.Popen([sys.executable, str(DRIVER), str(barrier), json.dumps(steps)], cwd=ROOT,
                                       env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while len(list(tmp_path.glob(f"{barrier.name}.ready-*"))) < len(procs):
        assert time.monotonic() < deadline, "the drivers never got ready"
        assert all(p.poll() is None for p in procs.values()), {u: p.communicate() for u, p in procs.items()}
        time.sleep(0.01)
    barrier.touch()
    results = {}
    for user, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=240)
        assert proc.returncode == 0, stderr
        results[user] = json.loads(stdout.strip().splitlines()[-1])
    return results


def failed_steps(results: dict[str, list[dict]]) -> list:
    return [(user, r["step"], r["rc"], r["stdout"][-800:], r["stderr"][-800:])
            for user, steps in results.items() for r in steps if r["rc"] != 0]


def raw_counts(ws, connector: str) -> dict[str, tuple[int, int]]:
    """table -> (rows, distinct ids) landed for a connector."""
    record = operations.get_connector(ws, connector)
    prep = ws.engine.dialect.identifier_preparer
    out = {}
    with ws.read() as conn:
        for stream, raw in conn.execute(sa.text("SELECT stream, raw_table FROM connector_sync_state "
                                                "WHERE connector_id = :c"), {"c": record.id}).all():
            out[stream.split(".")[-1]] = tuple(conn.execute(sa.text(
                f"SELECT count(*), count(DISTINCT id) FROM {prep.quote(raw)}")).one())
    return out


#: the sample tables the sessions sync and map (business travel and gas left out for speed)
SYNCED = ("sites", "meters", "electricity_readings", "fuel_purchases", "waste", "water", "headcount")


@dataclass
class Team:
    """A shared workspace secured by organization: org-a with analysts ana and cleo, org-b
    with ben; each organization has a connector 'erp' to its own copy of the sample ERP
    (schemas erp_a and erp_b of a PostgreSQL source) and a saved mapping 'erp'."""

    shared: SharedDatabase
    roles: dict[str, str]  # OS user -> database role
    pg: psycopg.Connection  # the source, as the administrator

    def url(self, user: str) -> str:
        return self.shared.url(self.roles[user])

    def open(self, user: str):
        return open_workspace(self.url(user))


@pytest.fixture
def team(tmp_path):
    with shared_database() as shared:
        roles = {user: shared.role(user) for user in ("ana", "ben", "cleo")}
        organizations.init_postgres(shared.url(roles["ana"]), shared.admin_url, organization="org-a")
        organizations.add_organization(shared.admin_url, "org-b")
        organizations.add_user(shared.admin_url, roles["ben"], ["org-b"])
        organizations.add_user(shared.admin_url, roles["cleo"], ["org-a"])
        sample = ensure_sample_erp(tmp_path / "erp")
        with shared.admin() as pg:
            for user, schema in (("ana", "erp_a"), ("ben", "erp_b")):
                load_sample_into_postgres(pg, sample, schema)
                ws = open_workspace(shared.url(roles[user]))
                try:
                    operations.add_connector(ws, "erp", "postgres", {
                        "host": PG_HOST, "port": PG_PORT, "database": shared.database, "username": PG_USER,
                        "schema": schema, "load_type": "delta", "cursor_field": "updated_at",
                        "chunk_strategy": "id", "chunk_size": 500})
                    store.save_mapping(ws, store.read_mapping_file(mapping_file(tmp_path, "erp", "erp")))
                finally:
                    ws.close()
            yield Team(shared, roles, pg)


def mapping_file(tmp_path: Path, name: str, connector: str) -> Path:
    """The shipped sample mapping, for the synced tables, under another name and connector."""
    mapping = store.shipped_mapping(demo.SAMPLE_MAPPING)
    mapping.name, mapping.connector = name, connector
    mapping.tables = [t for t in mapping.tables if t.stream in SYNCED]
    path = tmp_path / f"{name}-{connector}.json"
    store.write_mapping_file(mapping, path)
    return path


def add_source_rows(pg_conn, schema: str, offset: int) -> None:
    """New readings and a changed one: what the next delta sync picks up."""
    pg_conn.execute(f"""
        INSERT INTO "{schema}".electricity_readings (id, meter_id, reading_date, kwh, tariff, supplier,
                                                     renewable_share, updated_at)
        SELECT id + {offset}, meter_id, reading_date, kwh + 1, tariff, supplier, renewable_share,
               '2030-01-01 00:00:00'::timestamp + (id || ' seconds')::interval
        FROM "{schema}".electricity_readings WHERE id < 40;
        UPDATE "{schema}".waste SET mass_kg = mass_kg * 2, updated_at = '2030-01-02 00:00:00' WHERE id % 50 = 0;
    """)


def source_counts(pg_conn, schema: str, tables=SYNCED) -> dict[str, tuple[int, int]]:
    return {t: (n, n) for t in tables for n in [pg_conn.execute(f'SELECT count(*) FROM "{schema}"."{t}"').fetchone()[0]]}


def test_two_analysts_sync_map_and_aggregate_at_once(team, tmp_path):
    """Two organizations and two analysts of one of them, at once: ana syncs org-a's ERP
    and applies its mapping while cleo (org-a too) edits a mapping, recomputes and
    re-applies, and ben does ana's work in org-b."""
    shared_mapping = mapping_file(tmp_path, "team_notes", "not-synced")  # ana and cleo both edit it
    tables = [arg for table in SYNCED for arg in ("--table", table)]

    def cli(user: str, *args: str) -> list[str]:
        return ["cli", "--workspace", team.url(user), *args]

    def save(user: str, n: int) -> list[str]:
        return ["save", team.url(user), str(shared_mapping), f"{user} {n}"]

    for round_ in range(2):  # a first landing, then delta syncs of new and changed rows
        if round_:
            for schema in ("erp_a", "erp_b"):
                add_source_rows(team.pg, schema, 100_000)
        results = start_sessions(tmp_path, {
            "ana": [save("ana", 1), cli("ana", "sync", "erp", "--json", *tables), save("ana", 2),
                    cli("ana", "mapping", "apply", "erp")],  # the apply aggregates the KPIs too
            "ben": [cli("ben", "sync", "erp", "--json", *tables), cli("ben", "mapping", "apply", "erp")],
            # cleo's apply needs landed rows: in the first round she recomputes what there is
            "cleo": [save("cleo", 1), cli("cleo", "kpi", "aggregate") if not round_ else cli("cleo", "mapping", "apply", "erp"),
                     save("cleo", 2)],
        })
        assert failed_steps(results) == []
        syncs = [json.loads(r["stdout"]) for steps in results.values() for r in steps if "sync" in r["step"]]
        for user, schema in (("ana", "erp_a"), ("ben", "erp_b")):  # every source row landed exactly once
            ws = team.open(user)
            try:
                assert raw_counts(ws, "erp") == source_counts(team.pg, schema)
            finally:
                ws.close()
        if round_:  # the delta syncs mapped their new rows as they landed
            assert all(s["mapped"] and "not applied" not in " ".join(s["mapped"]) for s in syncs), syncs

    ws_a, ws_b = team.open("cleo"), team.open("ben")
    try:
        # the mapping both analysts of org-a saved has all their versions, without a gap
        history = store.history(ws_a, "team_notes")
        assert sorted(h["version"] for h in history) == list(range(1, 9))
        assert sorted(h["comment"] for h in history) == sorted([f"{u} {i}" for u in ("ana", "cleo") for i in (1, 2)] * 2)
        assert store.history(ws_b, "team_notes") == []

        # what the sessions left is what one analyst doing it all in turn gets
        for ws in (ws_a, ws_b):
            concurrent = kpi_hashes(ws)
            staging = scalar(ws, "SELECT count(*) FROM staging_rows")
            apply.apply_mapping(ws, "erp")
            aggregate.aggregate(ws)
            assert scalar(ws, "SELECT count(*) FROM staging_rows") == staging
            assert kpi_hashes(ws) == concurrent and len(concurrent) > 100
    finally:
        ws_a.close()
        ws_b.close()

    # one audit chain per organization, each intact; every entry names the analyst's role
    for user in ("ana", "ben"):
        verify = subprocess.run([sys.executable, "-m", "esg_workbench.cli", "--workspace", team.url(user),
                                 "audit", "verify"], cwd=ROOT, capture_output=True, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert verify.returncode == 0 and "intact" in verify.stdout, verify.stdout + verify.stderr
    with team.shared.admin() as conn:
        actors = conn.execute("SELECT organization_id, action, actor FROM esg_ingestion_audit "
                              "WHERE action IN ('sync.start', 'mapping.save', 'mapping.apply')").fetchall()
    role = team.roles
    starts = sorted((org, actor) for org, action, actor in actors if action == "sync.start")
    assert starts == sorted([("org-a", f"{role['ana']} (os: ana)")] * 2 + [("org-b", f"{role['ben']} (os: ben)")] * 2)
    saves = {(org, actor) for org, action, actor in actors if action == "mapping.save"}
    assert {("org-a", f"{role['ana']} (os: ana)"), ("org-a", f"{role['cleo']} (os: cleo)")} <= saves
    assert ("org-a", f"{role['cleo']} (os: cleo)") in {(org, actor) for org, action, actor in actors
                                                         if action == "mapping.apply"}


def test_the_same_connector_synced_from_two_processes(team, tmp_path):
    cli = [sys.executable, "-m", "esg_workbench.cli", "--workspace", team.url("ana")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # while another process holds the connector's sync, a sync is refused plainly
    ws = team.open("ana")
    try:
        record = operations.get_connector(ws, "erp")
        with concurrency.connector_sync_lock(ws, record.id) as held:
            assert held
            busy = subprocess.run(cli + ["sync", "erp", "--table", "waste"], cwd=ROOT, capture_output=True,
                                  text=True, env=env)
        assert busy.returncode == 1
        assert "already syncing in another ESG Workbench process" in busy.stderr and "Traceback" not in busy.stderr
        assert raw_counts(ws, "erp") == {}

        # ana and cleo sync org-a's connector at once: one lands everything, the other lands
        # it too or is told it is busy; ben's sync of org-b's connector is never held up
        for round_ in range(2):
            if round_:
                add_source_rows(team.pg, "erp_a", 200_000)
                add_source_rows(team.pg, "erp_b", 200_000)
            results = start_sessions(tmp_path, {
                user: [["cli", "--workspace", team.url(user), "sync", "erp", "--table", "waste"]]
                for user in ("ana", "cleo", "ben")})
            same = [results["ana"][0], results["cleo"][0]]
            assert any(o["rc"] == 0 for o in same), json.dumps(same, indent=1)
            for o in same:
                assert o["rc"] == 0 or "already syncing" in o["stderr"], o
            assert results["ben"][0]["rc"] == 0, results["ben"]
            assert raw_counts(ws, "erp") == source_counts(team.pg, "erp_a", ["waste"])
        assert chain.verify(ws).ok
    finally:
        ws.close()


def test_a_transaction_rolled_back_by_a_conflict_is_run_again(team_ws):
    """`retrying` on a real serialization failure: two REPEATABLE READ transactions
    change one row; PostgreSQL rolls the later one back (40001), and its second run,
    on a fresh snapshot, lands."""
    from esg_workbench.workspace.concurrency import retrying

    with team_ws.transaction() as conn:
        conn.execute(sa.text("CREATE TABLE team_counter (id int PRIMARY KEY, n int NOT NULL)"))
        conn.execute(sa.text("INSERT INTO team_counter VALUES (1, 0)"))
    first_updated, attempts = threading.Event(), []

    def increment(hold: threading.Event | None = None):
        def run():
            attempts.append(1)
            with team_ws.engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
                with conn.begin():
                    conn.execute(sa.text("SELECT n FROM team_counter"))  # the snapshot is taken here
                    if hold is None:
                        first_updated.wait(10)  # the other transaction has changed the row
                    conn.execute(sa.text("UPDATE team_counter SET n = n + 1 WHERE id = 1"))
                    if hold is not None:
                        hold.set()
                        time.sleep(0.3)  # the second one now waits on the row, then fails at our commit
        return run

    outcomes = together(lambda: retrying(increment(first_updated), what="Counting"),
                        lambda: retrying(increment(), what="Counting"))
    assert outcomes == [None, None]
    assert len(attempts) == 3  # the second transaction ran twice
    assert scalar(team_ws, "SELECT n FROM team_counter") == 2


def test_an_apply_that_must_wait_says_for_what(team_ws):
    """While a recompute holds the organization's KPIs, an apply waits, and says so."""
    said: list[str] = []
    with team_ws.engine.connect() as other:  # another analyst's recompute under way
        concurrency.lock_kpis(team_ws, other, shared=False)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            applying = pool.submit(apply.apply_mapping, team_ws, demo.SAMPLE_MAPPING, progress=said.append)
            deadline = time.monotonic() + 20
            while not said and time.monotonic() < deadline:
                time.sleep(0.05)
            assert said == ["Waiting for a KPI recompute (another analyst's or a sync's) to finish..."]
            assert not applying.done()
            other.rollback()  # the recompute ends
            assert applying.result(timeout=60).staging_rows > 0
    assert said[1].startswith("Mapping ")
