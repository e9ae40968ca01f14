"""The real demo ends with a KPI table computed through the shipped sample mapping."""

from __future__ import annotations

import pytest

from esg_workbench import demo
from esg_workbench.mapping import aggregate as ag


def test_demo_ends_with_a_kpi_table(demo_ws):
    ws, summary = demo_ws
    assert summary["status"] == "success"
    kpis = summary["kpis"]
    assert kpis["mapping"] == "sample_erp" and kpis["staging_rows"] > 10_000
    text = demo.describe(summary)
    assert "energy MWh" in text and "scope1 tCO2e" in text and "headcount" in text and "water m3" in text
    sites = {r["site"] for r in kpis["table"]}
    assert sites == {"DE-MUC", "DE-BER", "NL-RTM", "SE-GOT", "ES-VLC", "(all sites)"}
    months = sorted({r["period"] for r in kpis["table"]})
    assert months[0] == "2023-01" and "2024-12" in months
    jan = next(r for r in kpis["table"] if r["period"] == "2023-01" and r["site"] == "(all sites)")
    assert jan["energy_total"] > 0 and jan["ghg_scope1"] > 0 and jan["ghg_scope2_location"] > 0 and jan["headcount"] > 0


def test_demo_flags_the_sample_imperfections(demo_ws):
    from esg_workbench.sample_data import SAMPLE_IMPERFECTIONS as flaws

    ws, _ = demo_ws
    missing = ag.find_value(ws, "energy_electricity", flaws["missing_month"]["month"], flaws["missing_month"]["site_code"])
    assert missing["value"] is None and "missing" in missing["quality"]
    assert "negative" in ag.find_value(ws, "energy_electricity", "2023-11", "DE-BER")["quality"]
    assert "outlier" in ag.find_value(ws, "water_withdrawal", "2024-07", "ES-VLC")["quality"]
    # and it stays flagged in the site's year and the organization's month and year
    for period, site in (("2024", "ES-VLC"), ("2024-07", None), ("2024", None)):
        assert "outlier" in ag.find_value(ws, "water_withdrawal", period, site)["quality"], (period, site)
    assert "negative" in ag.find_value(ws, "energy_electricity", "2023", None)["quality"]
    scope2 = ag.find_value(ws, "ghg_scope2_location", "2024", None)
    assert "partial" in scope2["quality"]  # the missing month reaches the year's total


def test_cli_kpi_report_formats(demo_ws, tmp_path):
    import json
    import subprocess
    import sys

    ws, _ = demo_ws
    url = str(ws.engine.url.database)
    ws.engine.dispose()
    run = lambda *a: subprocess.run([sys.executable, "-m", "esg_workbench", "--workspace", url, *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=120)
    csv_out = run("kpi", "report", "--period", "2024", "--format", "csv")
    assert csv_out.returncode == 0, csv_out.stderr
    assert csv_out.stdout.splitlines()[0].startswith("period,site,energy_total,ghg_scope1")
    assert csv_out.stdout.splitlines()[0].endswith(",audit_chain_head,flags")  # the report is a witness
    rows = json.loads(run("kpi", "report", "--period", "2024-Q1", "--format", "json").stdout)
    assert {r["site"] for r in rows} >= {"DE-MUC", "(all sites)"}
    table = run("kpi", "report", "--period", "2024")
    assert "(all sites)" in table.stdout
    shown = run("kpi", "show", "headcount", "--period", "2024", "--site", "DE-MUC")
    assert shown.returncode == 0 and "headcount#" in shown.stdout
    listed = run("mapping", "list")
    assert "sample_erp" in listed.stdout
    from esg_workbench.audit import chain

    anchor = str(chain.anchor(ws))  # (opens the file again: after the last command)
    ws.engine.dispose()
    anchored = [line for line in csv_out.stdout.splitlines()[1:] if line]
    assert anchored and all(f",{anchor}," in line for line in anchored)
    assert {r["audit_chain_head"] for r in rows} == {anchor}


def test_demo_sites_take_their_own_countries_factors(demo_ws):
    from esg_workbench.mapping import sites

    ws, _ = demo_ws
    assert {s["site"]: s["region"] for s in sites.locations(ws)} == {
        "DE-BER": "DE", "DE-MUC": "DE", "ES-VLC": "ES", "NL-RTM": "NL", "SE-GOT": "SE"}  # from the ERP's sites table
    # each site's grid, never the UK's 0.20707 kg/kWh: Germany 380.95, Spain 174.05 g/kWh (lifecycle, 2023)
    for site, factor in (("DE-MUC", 380.95 / 1000), ("ES-VLC", 174.05 / 1000)):
        mwh = ag.find_value(ws, "energy_electricity", "2023-06", site)["value"]
        scope2 = ag.find_value(ws, "ghg_scope2_location", "2023-06", site)
        assert scope2["value"] == pytest.approx(mwh * factor) and "lifecycle_factor" in scope2["quality"]
    # 2024 activity uses the 2023 factors, and says so
    assert "factor_vintage" in ag.find_value(ws, "ghg_scope2_location", "2024-06", "DE-MUC")["quality"]


def test_demo_market_based_scope2_uses_the_certificates(demo_ws):
    ws, _ = demo_ws
    # DE-BER's November 2023 had a -1,850 kWh correction; its GOs cover the year: 0, never negative
    nov = ag.find_value(ws, "ghg_scope2_market", "2023-11", "DE-BER")
    assert nov["value"] == 0.0 and "negative" in nov["quality"]
    # SE-GOT has a PPA for 2024 only: 2023 falls back to the location factor, flagged
    se_2023 = ag.find_value(ws, "ghg_scope2_market", "2023", "SE-GOT")
    assert se_2023["value"] == pytest.approx(ag.find_value(ws, "ghg_scope2_location", "2023", "SE-GOT")["value"])
    assert "market_uses_location_factor" in se_2023["quality"]
    # the PPA's 2,000 MWh are renewable energy of 2024; the supplier's general mix is not
    assert ag.find_value(ws, "energy_renewable", "2024", "SE-GOT")["value"] == pytest.approx(2000)
    assert ag.find_value(ws, "energy_renewable", "2023", "SE-GOT")["value"] is None  # no instrument in 2023
    assert ag.find_value(ws, "energy_renewable_supplier_mix", "2023", "SE-GOT")["value"] > 0


def test_demo_headcount_by_gender_and_country(demo_ws):
    from esg_workbench.mapping import report

    ws, _ = demo_ws
    value = lambda kpi, site=None: ag.find_value(ws, kpi, "2024", site)["value"]  # noqa: E731
    # the ERP's female and male columns add up to its employees, site by site
    for site in ("DE-MUC", "ES-VLC"):
        assert value("headcount_female", site) + value("headcount_male", site) == value("headcount", site)
    countries = {r["country"]: r for r in report.by_country(ws, "headcount", "2024")}
    assert set(countries) == {"DE", "ES", "NL", "SE"}
    assert countries["DE"]["value"] == value("headcount", "DE-MUC") + value("headcount", "DE-BER")
    assert sorted(countries["DE"]["sites"]) == ["DE-BER", "DE-MUC"]
