"""Two analysts at once on one shared PostgreSQL workspace (issue 7).

Real PostgreSQL throughout. The fine-grained races (two saves of one mapping, two
recomputes, two applies, one connector name added twice, ...) run in threads of this
process behind a `threading.Barrier`, each thread on its own connection, so they start
together. The whole-session scenario runs real processes (tests/team_driver.py, which
calls the CLI's `main`) that wait at a file barrier, so their syncs, applies and
aggregations overlap; a sequential re-run in the same workspace is the reference.
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
from esg_workbench.workspace import connectors_store, open_workspace
from esg_workbench.workspace.concurrency import ChangedElsewhere
from esg_workbench.workspace.database import connector_lock_key
from tests.conftest import PG_HOST, PG_PORT, PG_USER, port_open, service_missing

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


@pytest.fixture
def team_source(pg_conn, pg_database, tmp_path):
    """The sample ERP twice in one PostgreSQL source (schemas erp_a and erp_b), and an
    empty shared PostgreSQL workspace with a connector to each."""
    sample = ensure_sample_erp(tmp_path / "erp")
    counts = {schema: load_sample_into_postgres(pg_conn, sample, schema) for schema in ("erp_a", "erp_b")}
    name = f"esg_team_ws_{uuid.uuid4().hex[:10]}"
    with admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = pg_url(name)
    ws = open_workspace(url)
    try:
        for connector, schema in (("erp-a", "erp_a"), ("erp-b", "erp_b")):
            operations.add_connector(ws, connector, "postgres", {
                "host": PG_HOST, "port": PG_PORT, "database": pg_database, "username": PG_USER, "schema": schema,
                "load_type": "delta", "cursor_field": "updated_at", "chunk_strategy": "id", "chunk_size": 500})
        yield {"url": url, "ws": ws, "counts": counts, "pg": pg_conn}
    finally:
        ws.close()
        with admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


#: the sample tables the sessions sync and map (business travel and gas left out for speed)
SYNCED = ("sites", "meters", "electricity_readings", "fuel_purchases", "waste", "water", "headcount")


def mapping_file(tmp_path: Path, name: str, connector: str) -> Path:
    """The shipped sample mapping, for the synced tables, under another name and connector."""
    mapping = store.shipped_mapping(demo.SAMPLE_MAPPING)
    mapping.name, mapping.connector = name, connector
    mapping.tables = [t for t in mapping.tables if t.stream in SYNCED]
    path = tmp_path / f"{name}.json"
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


def test_two_analysts_sync_map_and_aggregate_at_once(team_source, tmp_path):
    url, ws, pg = team_source["url"], team_source["ws"], team_source["pg"]
    for connector in ("erp-a", "erp-b"):  # each analyst's own mapping, saved before the day starts
        store.save_mapping(ws, store.read_mapping_file(mapping_file(tmp_path, connector.replace("-", "_"), connector)),
                           author="setup")
    shared = mapping_file(tmp_path, "team_notes", "not-synced")  # both analysts edit this one

    def session(connector: str, user: str) -> list[list[str]]:
        cli = ["cli", "--workspace", url]
        tables = [arg for table in SYNCED for arg in ("--table", table)]
        return [["save", url, str(shared), f"{user} 1"],
                cli + ["sync", connector, "--json", *tables],
                ["save", url, str(shared), f"{user} 2"],
                cli + ["mapping", "apply", connector.replace("-", "_")]]  # and aggregates the KPIs

    for round_ in range(2):  # a first full landing, then delta syncs of new and changed rows
        if round_:
            for schema in ("erp_a", "erp_b"):
                add_source_rows(pg, schema, 100_000)
        results = start_sessions(tmp_path, {"ana": session("erp-a", "ana"), "ben": session("erp-b", "ben")})
        assert failed_steps(results) == []
        print({u: [(r["step"][-1] if r["step"][0] == "save" else " ".join(r["step"][3:]), r["seconds"]) for r in steps]
               for u, steps in results.items()})
        syncs = [json.loads(r["stdout"]) for steps in results.values() for r in steps if "sync" in r["step"]]

        # every source row landed exactly once
        for connector, schema in (("erp-a", "erp_a"), ("erp-b", "erp_b")):
            expected = {t: pg.execute(f'SELECT count(*) FROM "{schema}"."{t}"').fetchone()[0] for t in SYNCED}
            assert raw_counts(ws, connector) == {t: (n, n) for t, n in expected.items()}
        if round_:  # the delta syncs mapped their new rows as they landed
            assert all(s["mapped"] and "not applied" not in " ".join(s["mapped"]) for s in syncs), syncs

    # the saved mapping got every analyst's versions, numbered without a gap
    history = store.history(ws, "team_notes")
    assert sorted(h["version"] for h in history) == list(range(1, 9))
    assert sorted(h["comment"] for h in history) == sorted([f"{u} {i}" for u in ("ana", "ben") for i in (1, 2)] * 2)

    # what the two sessions left is what one analyst doing it all in turn would get
    concurrent = kpi_hashes(ws)
    staging = scalar(ws, "SELECT count(*) FROM staging_rows")
    for name in ("erp_a", "erp_b"):
        apply.apply_mapping(ws, name)
    aggregate.aggregate(ws)
    assert scalar(ws, "SELECT count(*) FROM staging_rows") == staging
    assert kpi_hashes(ws) == concurrent and len(concurrent) > 100

    # the audit chain is one chain, naming each analyst for what they did
    verify = subprocess.run([sys.executable, "-m", "esg_workbench.cli", "--workspace", url, "audit", "verify"],
                            cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert verify.returncode == 0 and "intact" in verify.stdout, verify.stdout + verify.stderr
    with ws.read() as conn:
        actors = dict(conn.execute(sa.text(
            "SELECT actor, count(*) FROM esg_ingestion_audit WHERE action = 'sync.start' GROUP BY actor")).all())
    assert sorted(actors.values()) == [2, 2] and all(any(f"os: {u}" in a for a in actors) for u in ("ana", "ben")), actors


def test_the_same_connector_synced_from_two_processes(team_source, tmp_path):
    url, ws, pg = team_source["url"], team_source["ws"], team_source["pg"]
    cli = [sys.executable, "-m", "esg_workbench.cli", "--workspace", url]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # while another process holds the connector's sync, a sync is refused plainly
    record = operations.get_connector(ws, "erp-a")
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=url.rsplit("/", 1)[1],
                         autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (connector_lock_key(record.id),))
        busy = subprocess.run(cli + ["sync", "erp-a", "--table", "waste"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert busy.returncode == 1
    assert "already syncing in another ESG Workbench process" in busy.stderr and "Traceback" not in busy.stderr
    assert raw_counts(ws, "erp-a") == {}

    # two at once: one lands everything, the other lands it too or is told it is busy
    for round_ in range(2):
        if round_:
            add_source_rows(pg, "erp_a", 200_000)
        results = start_sessions(tmp_path, {user: [["cli", "--workspace", url, "sync", "erp-a", "--table", "waste"]]
                                            for user in ("ana", "ben")})
        outcomes = [steps[0] for steps in results.values()]
        assert any(o["rc"] == 0 for o in outcomes), outcomes
        for o in outcomes:
            assert o["rc"] == 0 or "already syncing" in o["stderr"], o
        expected = pg.execute('SELECT count(*) FROM erp_a.waste').fetchone()[0]
        assert raw_counts(ws, "erp-a") == {"waste": (expected, expected)}
    assert chain.verify(ws).ok
