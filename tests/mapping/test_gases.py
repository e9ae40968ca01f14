"""Per-gas emissions, their masses and the GWP set stated on every emission value
(mapping/gases.py), on the methodology dataset of test_methodology.py. Expected values are
worked out by hand from DESNZ 2023 factors, checked against the shipped file first."""

from __future__ import annotations

import pytest

from esg_workbench.mapping import gases
from tests.mapping.test_methodology import _desnz, computed, value  # noqa: F401 (fixture)

# DESNZ 2023, kg CO2e (AR5) of the gas per unit
DIESEL_L = {"CO2": 2.47887, "CH4": 0.00029, "N2O": 0.0329}  # Fuels / Diesel (average biofuel blend) / litre
GAS_M3 = {"CO2": 2.03437, "CH4": 0.00307, "N2O": 0.00095}  # Fuels / Natural gas / cubic metre
UK_KWH = {"CO2": 0.20496, "CH4": 0.000896, "N2O": 0.0012183}  # UK electricity / Electricity: UK / kWh
AR5 = {"CO2": 1, "CH4": 28, "N2O": 265}  # IPCC AR5, 100-year (DESNZ 2023 states its CO2e in AR5)


def test_quoted_gas_factors_are_the_shipped_ones():
    for gas in ("CO2", "CH4", "N2O"):
        assert _desnz("Fuels", "Diesel (average biofuel blend)", "litre", gas) == DIESEL_L[gas]
        assert _desnz("Fuels", "Natural gas", "cubic metre", gas) == GAS_M3[gas]
        assert _desnz("UK electricity", "Electricity: UK", "kilowatt hour", gas) == UK_KWH[gas]
    assert gases.GWP["AR5"] == AR5


def test_per_gas_co2e_and_masses_with_the_gwp_set(computed):  # noqa: F811
    ws = computed
    # GB-LON, January 2023: 1,000 litres of diesel and 100 m3 of natural gas (Scope 1)
    for gas in ("CO2", "CH4", "N2O"):
        co2e = (1000 * DIESEL_L[gas] + 100 * GAS_M3[gas]) / 1000  # kg -> t CO2e of the gas
        v, q = value(ws, f"ghg_scope1_{gas.lower()}", "2023-01", "GB-LON")
        assert v == pytest.approx(co2e) and "gwp:AR5" in q
        mass, mq = value(ws, f"ghg_scope1_{gas.lower()}_mass", "2023-01", "GB-LON")
        assert mass == pytest.approx(co2e / AR5[gas]) and "gwp:AR5" in mq and "gwp_unknown" not in mq
    # e.g. CH4: (1000 x 0.00029 + 100 x 0.00307) kg = 0.597 kg = 0.000597 t CO2e = 0.0000213 t CH4
    assert value(ws, "ghg_scope1_ch4_mass", "2023-01", "GB-LON")[0] == pytest.approx(0.000597 / 28)
    # location-based Scope 2: 10,000 kWh of UK electricity in January 2023
    for gas in ("CO2", "CH4", "N2O"):
        co2e = 10000 * UK_KWH[gas] / 1000
        assert value(ws, f"ghg_scope2_location_{gas.lower()}", "2023-01", "GB-LON")[0] == pytest.approx(co2e)
        assert value(ws, f"ghg_scope2_location_{gas.lower()}_mass", "2023-01", "GB-LON")[0] == \
            pytest.approx(co2e / AR5[gas])
    # the gases add up to the CO2e total within DESNZ's rounding of each factor (5 digits)
    total = value(ws, "ghg_scope2_location", "2023-01", "GB-LON")[0]
    assert sum(10000 * f / 1000 for f in UK_KWH.values()) == pytest.approx(total, rel=1e-3)
    # the grid intensity of Germany (lifecycle, Ember via OWID) names no GWP set: stated so
    _, de = value(ws, "ghg_scope2_location", "2023-01", "DE-HAM")
    assert "gwp:not stated" in de
    # the organization's January total mixes both, and says so
    _, org = value(ws, "ghg_scope2_location", "2023-01")
    assert {"gwp:AR5", "gwp:not stated"} <= set(org)
    # a quarter's mass is the quarter's CO2e over the same GWP
    q1 = value(ws, "ghg_scope1_n2o", "2023-Q1", "GB-LON")[0]
    assert value(ws, "ghg_scope1_n2o_mass", "2023-Q1", "GB-LON")[0] == pytest.approx(q1 / 265)


def test_a_mass_is_never_computed_with_a_guessed_gwp():
    from esg_workbench.mapping.aggregate import Cell
    from esg_workbench.mapping.catalog import load_catalog

    kpi = load_catalog().kpi("ghg_scope1_ch4_mass")
    cells = {}
    for site, tags in (("A", ["gwp:AR5"]), ("B", ["gwp:not stated"]), ("C", ["gwp:AR5", "gwp:AR6"]),
                       ("D", ["gwp:AR6"])):
        cell = Cell("ghg_scope1_ch4", site, "2023-01", "month", 2.8, "tCO2e", "sum", quality=list(tags))
        cells[cell.key] = cell
    gases.derive_mass(cells, kpi)
    got = {s: cells[("ghg_scope1_ch4_mass", s, "2023-01")] for s in "ABCD"}
    assert got["A"].value == pytest.approx(2.8 / 28) and got["D"].value == pytest.approx(2.8 / 27.0)
    for s in "BC":  # no set stated, or two: empty and flagged
        assert got[s].value is None and "gwp_unknown" in got[s].quality


def test_cli_states_the_gwp_set(computed, tmp_path):  # noqa: F811
    import json
    import subprocess
    import sys

    url = str(computed.engine.url.database)
    computed.engine.dispose()

    def run(*args):
        return subprocess.run([sys.executable, "-m", "esg_workbench", "--workspace", url, *args],
                              capture_output=True, text=True, timeout=120)

    shown = run("kpi", "show", "ghg_scope1_ch4_mass", "--period", "2023-01", "--site", "GB-LON")
    assert shown.returncode == 0, shown.stderr
    assert "t CH4" in shown.stdout and "GWP set: AR5 (CO2e by the 100-year GWPs of IPCC AR5" in shown.stdout
    shown = run("kpi", "show", "ghg_scope2_location", "--period", "2023-01", "--site", "DE-HAM")
    assert "GWP not stated by the source (lifecycle basis)" in shown.stdout
    listed = {k["id"]: k for k in json.loads(run("--json", "kpi", "list").stdout)}
    assert listed["ghg_scope2_location_n2o_mass"]["of"] == "ghg_scope2_location_n2o"
    report = run("kpi", "report", "--period", "2023-01", "--kpi", "ghg_scope1_ch4_mass")
    assert "GWP set of the emissions: AR5" in report.stdout
    # the factor sets: DESNZ states AR5; the grid files state none, shown with their basis
    sets = {s["name"]: s["gwp"] for s in json.loads(run("--json", "factors", "list").stdout)}
    assert sets["DESNZ-2023"] == "GWP AR5"
    assert "GWP not stated by the source (lifecycle basis)" in sets["GRID-2023"]
    assert "GWP not stated by the source (combustion basis)" in sets["GRID-2023"]  # US EPA eGRID


def test_an_estimated_month_keeps_the_gwp_set_and_its_mass(computed):  # noqa: F811
    from esg_workbench.mapping import aggregate as ag
    from esg_workbench.mapping import gaps

    ws = computed
    v, q = value(ws, "ghg_scope2_location_ch4_mass", "2023-02", "GB-LON")
    assert v is None and "missing" in q  # GB-LON has no February 2023 reading
    gaps.set_estimate_method(ws, "neighbours")
    ag.aggregate(ws)
    # the mean of January (10 MWh) and March (3 MWh, INV-7 counted once) in t CO2e of CH4:
    # (10,000 + 3,000) / 2 kWh x 0.000896 kg/kWh = 5.824 kg = 0.005824 t; mass / 28
    co2e = (10000 + 3000) / 2 * UK_KWH["CH4"] / 1000
    v, q = value(ws, "ghg_scope2_location_ch4", "2023-02", "GB-LON")
    assert v == pytest.approx(co2e) and {"estimated", "estimate:neighbours", "gwp:AR5"} <= set(q)
    v, q = value(ws, "ghg_scope2_location_ch4_mass", "2023-02", "GB-LON")
    assert v == pytest.approx(co2e / 28) and "estimated" in q and "gwp_unknown" not in q
