"""Contractual instruments entered by hand (mapping/instruments.py, `esg-workbench
instrument`, schema v4): checked, audited, allocated by scope2.py exactly like mapped ones,
with the MWh allocated and unused per instrument. Dataset: test_methodology.py's; every
expected value is worked out by hand below from the DESNZ factor file."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import sqlalchemy as sa

from esg_workbench.core.errors import ConfigError
from esg_workbench.mapping import aggregate as ag
from esg_workbench.mapping import instruments
from tests.mapping.test_methodology import UK_ELECTRICITY, computed, value  # noqa: F401 (fixture)

REGO = dict(site="GB-LON", kind="guarantee_of_origin", mwh=20.0, start="2023-01-01", end="2023-03-31",
            tracking_id="UK-REGO-0001", evidence="Ofgem REGO cancellation 2023/17")


def test_an_entered_instrument_is_allocated_like_a_mapped_one(computed):  # noqa: F811
    ws = computed
    # before: GB-LON has no instrument; market-based January = the location factor, flagged
    v, q = value(ws, "ghg_scope2_market", "2023-01", "GB-LON")
    assert v == pytest.approx(10 * UK_ELECTRICITY) and "market_uses_location_factor" in q
    added = instruments.add(ws, **REGO, actor="auditor-test")
    assert added["instrument_type"] == "guarantee_of_origin" and added["kg_co2e_per_kwh"] == 0.0
    ag.aggregate(ws)
    # GB-LON's electricity in the REGO's period: January 10 MWh, February none, March 3 MWh
    # (invoice INV-7 booked twice, counted once: 3,000 kWh)
    assert value(ws, "energy_electricity", "2023-03", "GB-LON")[0] == pytest.approx(3.0)
    # pro rata: January 20 x 10/13 = 15.38 MWh, cut to the 10 MWh used; March 20 x 3/13 =
    # 4.62 MWh, cut to 3. Allocated 13 MWh, unused 20 - 13 = 7 MWh (not carried anywhere)
    v, q = value(ws, "ghg_scope2_market", "2023-01", "GB-LON")
    assert v == pytest.approx(0.0) and "instrument_surplus" in q and "market_uses_location_factor" not in q
    assert value(ws, "ghg_scope2_market", "2023-03", "GB-LON")[0] == pytest.approx(0.0)
    assert value(ws, "energy_renewable", "2023-01", "GB-LON")[0] == pytest.approx(10.0)
    assert value(ws, "energy_renewable", "2023-Q1", "GB-LON")[0] == pytest.approx(13.0)
    # the location-based value is untouched: 10 MWh x 0.20707 t/MWh
    assert value(ws, "ghg_scope2_location", "2023-01", "GB-LON")[0] == pytest.approx(10 * UK_ELECTRICITY)
    used = {r["tracking_id"]: r for r in instruments.usage(ws)}
    assert used["UK-REGO-0001"]["origin"] == "entered" and used["UK-REGO-0001"]["id"] == added["id"]
    assert used["UK-REGO-0001"]["allocated_mwh"] == pytest.approx(13.0)
    assert used["UK-REGO-0001"]["unused_mwh"] == pytest.approx(7.0)
    # the mapped ones: DE-HAM's GO, 15 MWh over January (20 MWh) and February (10 MWh):
    # 10 + 5 MWh, all used; SE-STO's PPA, 10 MWh in January when it used 4: 6 unused
    assert used["DE-HKNR-0001"]["origin"] == "mapped" and used["DE-HKNR-0001"]["unused_mwh"] == pytest.approx(0.0)
    assert used["SE-PPA-0001"]["allocated_mwh"] == pytest.approx(4.0)
    assert used["SE-PPA-0001"]["unused_mwh"] == pytest.approx(6.0)
    # a mapped instrument's certificates cannot be entered again (counted twice)
    with pytest.raises(ConfigError, match=r"already an instrument \(mapped from certs"):
        instruments.add(ws, **{**REGO, "tracking_id": "DE-HKNR-0001"})
    # its content enters the result hash: another MWh figure gives another hash
    before = ag.find_value(ws, "ghg_scope2_market", "2023-01", "GB-LON")["result_hash"]
    instruments.remove(ws, added["id"], actor="auditor-test")
    instruments.add(ws, **{**REGO, "mwh": 30.0})
    ag.aggregate(ws)
    assert ag.find_value(ws, "ghg_scope2_market", "2023-01", "GB-LON")["result_hash"] != before
    with ws.read() as conn:
        actions = [r[0] for r in conn.exec_driver_sql(
            "SELECT action FROM esg_ingestion_audit WHERE action LIKE 'instrument.%' ORDER BY id").all()]
    assert actions == ["instrument.add", "instrument.remove", "instrument.add"]


@pytest.mark.parametrize("change, says", [
    ({"kind": "green_certificate"}, "not a type of contractual instrument"),
    ({"mwh": 0}, "above 0"),
    ({"mwh": float("nan")}, "above 0"),
    ({"start": "2023-04-01"}, "before it starts"),
    ({"end": "2024-06-30"}, "longer than a year"),
    ({"start": "2023-02-30"}, "not a date"),
    ({"tracking_id": " "}, "tracking id"),
    ({"evidence": ""}, "evidence"),
    ({"kg_per_kwh": 0.1}, "renewable"),
])
def test_wrong_instruments_are_refused(change, says):
    values = {**REGO, **change}
    with pytest.raises(ConfigError, match=r"(?i)" + says):
        instruments.check(values["site"], values["kind"], values["mwh"], values["start"], values["end"],
                          values["tracking_id"], values["evidence"], values.get("kg_per_kwh", 0.0))


def test_cli_instrument_add_list_remove(computed):  # noqa: F811
    url = str(computed.engine.url.database)
    computed.engine.dispose()

    def run(*args):
        return subprocess.run([sys.executable, "-m", "esg_workbench", "--workspace", url, *args],
                              capture_output=True, text=True, timeout=120)

    base = ["instrument", "add", "--site", "GB-LON", "--type", "guarantee_of_origin", "--mwh", "20",
            "--from", "2023-01-01", "--to", "2023-03-31", "--tracking-id", "UK-REGO-0001",
            "--evidence", "Ofgem REGO cancellation 2023/17"]
    for wrong in (["--mwh", "-5"], ["--mwh", "lots"], ["--type", "coupon"], ["--from", "2023-13-01"],
                  ["--to", "2022-12-31"], ["--tracking-id", "SE-PPA-0001"], ["--kg-per-kwh", "-1"]):
        args = list(base) + ([] if wrong[0] in base else list(wrong))
        args[args.index(wrong[0]) + 1] = wrong[1]
        bad = run(*args)
        assert bad.returncode == 2, (wrong, bad.stdout, bad.stderr)
        assert "Traceback" not in bad.stderr
    added = run("--json", *base, "--actor", "ana")
    assert added.returncode == 0, added.stderr
    new_id = json.loads(added.stdout)["id"]
    assert run("kpi", "aggregate").returncode == 0
    listed = {r["tracking_id"]: r for r in json.loads(run("--json", "instrument", "list").stdout)}
    assert listed["UK-REGO-0001"]["allocated_mwh"] == pytest.approx(13.0)  # see the test above
    assert listed["UK-REGO-0001"]["unused_mwh"] == pytest.approx(7.0)
    shown = run("kpi", "show", "ghg_scope2_market", "--period", "2023-Q1", "--site", "GB-LON").stdout
    assert "instrument UK-REGO-0001 (entered by hand, guarantee_of_origin, GB-LON): 13.000 MWh allocated" in shown
    text = run("instrument", "list").stdout
    assert "UK-REGO-0001" in text and "not carried to other periods" in text
    assert json.loads(run("--json", "instruments", "list").stdout)  # the older spelling still lists
    assert run("instrument", "remove", "999999").returncode == 1
    gone = run("instrument", "remove", str(new_id), "--actor", "ana")
    assert gone.returncode == 0 and "UK-REGO-0001" in gone.stdout
    assert "UK-REGO-0001" not in run("instrument", "list").stdout


@pytest.mark.parametrize("kind", ["duckdb", "postgresql"])
def test_version_3_workspace_gets_the_instruments_table(kind, tmp_path, request):
    from esg_workbench.workspace import open_workspace, schema
    from esg_workbench.workspace.migrations import STEPS_3_TO_4, add_entered_instruments

    assert add_entered_instruments in STEPS_3_TO_4
    if kind == "duckdb":
        url = str(tmp_path / "v3.duckdb")
    else:
        from tests.conftest import PG_HOST, PG_PORT, PG_USER

        url = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{request.getfixturevalue('pg_database')}"
    ws = open_workspace(url)

    def columns():
        with ws.read() as conn:
            return conn.exec_driver_sql("SELECT * FROM entered_instruments LIMIT 0").keys()

    fresh = sorted(columns())
    with ws.transaction() as conn:  # what version 3 had
        conn.exec_driver_sql("DROP TABLE entered_instruments")
        conn.execute(sa.update(schema.workspace_meta).where(schema.workspace_meta.c.key == "schema_version")
                     .values(value="3"))
    ws.close()
    ws = open_workspace(url)
    try:
        with ws.read() as conn:
            assert ws.schema_version(conn) == schema.SCHEMA_VERSION  # (4: this table; 5 since)
        assert sorted(columns()) == fresh
        added = instruments.add(ws, **REGO)  # and it works there
        assert [r["tracking_id"] for r in instruments.usage(ws)] == [added["tracking_id"]]
    finally:
        ws.close()


def test_entered_instruments_stay_in_their_organization_on_a_shared_workspace():
    from esg_workbench.workspace import open_workspace, organizations
    from tests.pg_shared import shared_database

    with shared_database() as shared:
        alice, bob = shared.role("alice"), shared.role("bob")
        organizations.init_postgres(shared.url(alice), shared.admin_url, organization="org-a")
        organizations.add_organization(shared.admin_url, "org-b")
        organizations.add_user(shared.admin_url, bob, ["org-b"])
        ws_a, ws_b = open_workspace(shared.url(alice)), open_workspace(shared.url(bob))
        try:
            mine = instruments.add(ws_a, **REGO, actor=alice)
            assert [r["tracking_id"] for r in instruments.usage(ws_a)] == ["UK-REGO-0001"]
            assert instruments.usage(ws_b) == []  # row-level security: org-b sees none of org-a's
            with pytest.raises(Exception, match="no instrument"):
                instruments.remove(ws_b, mine["id"], actor=bob)
            # the tracking id is unique per organization: org-b's own certificates may share it
            theirs = instruments.add(ws_b, **{**REGO, "site": "NL-AMS"}, actor=bob)
            assert theirs["id"] != mine["id"]
            assert [r["site"] for r in instruments.usage(ws_a)] == ["GB-LON"]
            with ws_a.read() as conn:
                assert conn.exec_driver_sql("SELECT DISTINCT organization_id FROM entered_instruments").all() == \
                    [("org-a",)]
        finally:
            ws_a.close()
            ws_b.close()


def test_result_hashes_with_entered_instruments_are_equal_on_duckdb_and_postgresql(tmp_path, pg_database):
    from esg_workbench.mapping import apply, store
    from esg_workbench.workspace import open_workspace
    from tests.conftest import PG_HOST, PG_PORT, PG_USER
    from tests.mapping.test_methodology import _land_all, _mapping

    hashes = []
    for url in (str(tmp_path / "w.duckdb"), f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{pg_database}"):
        ws = open_workspace(url)
        try:
            if not ws.is_duckdb:  # other ids than DuckDB's: hashes must not depend on them
                instruments.remove(ws, instruments.add(ws, **{**REGO, "tracking_id": "X-0"})["id"])
            _land_all(ws)
            apply.apply_mapping(ws, store.save_mapping(ws, _mapping(), author="test"))
            instruments.add(ws, **REGO)
            ag.aggregate(ws)
            hashes.append({(r["kpi"], r["site"], r["period"]): r["result_hash"] for r in ag.kpi_rows(ws)})
        finally:
            ws.close()
    assert hashes[0] == hashes[1]
    assert hashes[0][("ghg_scope2_market", "GB-LON", "2023-01")]
