"""The methodology, proven on a small multi-country, multi-year dataset whose expected KPI
values are worked out by hand below from the shipped factor files (resources/factors/).

Sites: GB-LON (UK), DE-HAM (Germany), SE-STO (Sweden), US-SFO (California), XX-NOW (no
country), and rows whose site is unknown. Electricity, fuels (litres, an ambiguous
'gallon', m3 and Nm3 of gas), and contractual instruments (a guarantee of origin and a PPA).

Every expected number is arithmetic on the factors quoted here; the first test checks that
each quoted factor is the one in the shipped files, read with the csv module (not through
the code under test).
"""

from __future__ import annotations

import csv
import datetime as dt

import pyarrow as pa
import pytest
import sqlalchemy as sa

from esg_workbench.mapping import aggregate as ag
from esg_workbench.mapping import apply, gaps, sites, store
from esg_workbench.mapping.model import Edge, Mapping, TableMapping
from esg_workbench.mapping.resources import resources_dir
from esg_workbench.mapping.transforms import Unit, ValueMap
from esg_workbench.workspace import open_workspace
from tests.mapping.conftest import land

# --- the factors, as the shipped files state them (checked in the first test) ---------------
UK_ELECTRICITY = 0.20707  # DESNZ 2023, UK electricity / Electricity: UK, kg CO2e per kWh (valid 2023)
DE_GRID_2023 = 380.95 / 1000  # grid-intensity-countries-2023.csv, DEU 2023, g -> kg CO2e per kWh (lifecycle)
SE_GRID_2023 = 40.695 / 1000  # grid-intensity-countries-2023.csv, SWE 2023
CA_EGRID_2023 = 0.179064  # grid-intensity-us-states-egrid2023.csv, california, kg CO2e per kWh
DIESEL_L = 2.51206  # DESNZ 2023, Fuels / Diesel (average biofuel blend), kg CO2e per litre
DIESEL_L_CH4 = 0.00029  # the same, kg CO2e of CH4 per litre
DIESEL_KWH_GROSS = 0.23908  # the same, kg CO2e per kWh, Gross CV
DIESEL_L_BIOGENIC = 0.14  # DESNZ 2023, Outside of scopes / Diesel (average biofuel blend), kg CO2 per litre
GAS_M3 = 2.03839  # DESNZ 2023, Fuels / Natural gas, kg CO2e per cubic metre
GAS_M3_CH4 = 0.00307  # the same, kg CO2e of CH4 per cubic metre
GAS_KWH_GROSS = 0.18293  # DESNZ 2023, Fuels / Natural gas, kg CO2e per kWh, Gross CV
NM3_IN_M3 = 288.15 / 273.15  # a normal m3 (0 degC) in standard m3 (15 degC), the reference of DESNZ's m3

SUPPLIER_RATE = 0.3  # kg CO2e per kWh, DE-HAM's supplier in February 2023 (a source column)


def _desnz(level1: str, level3: str, uom: str, gas: str, column_text: str = "") -> float:
    with open(resources_dir() / "factors" / "desnz-2023-conversion-factors.csv", encoding="utf-8-sig") as fh:
        for r in csv.DictReader(fh):
            if (r["Level 1"], r["Level 3"], r["UOM"].strip(), r["emission_target_formula"], r["Column Text"]) == \
                    (level1, level3, uom, gas, column_text):
                return float(r["GHG Conversion Factor 2023"])
    raise AssertionError(f"no DESNZ factor {level1}/{level3}/{uom}/{gas}")


def test_the_quoted_factors_are_the_shipped_ones():
    assert _desnz("UK electricity", "Electricity: UK", "kilowatt hour", "CO2e") == UK_ELECTRICITY
    assert _desnz("Fuels", "Diesel (average biofuel blend)", "litre", "CO2e") == DIESEL_L
    assert _desnz("Fuels", "Diesel (average biofuel blend)", "litre", "CH4") == DIESEL_L_CH4
    assert _desnz("Fuels", "Diesel (average biofuel blend)", "kilowatt hour", "CO2e", "Gross CV") == DIESEL_KWH_GROSS
    assert _desnz("Outside of scopes", "Diesel (average biofuel blend)", "litre", "CO2") == DIESEL_L_BIOGENIC
    assert _desnz("Fuels", "Natural gas", "cubic metre", "CO2e") == GAS_M3
    assert _desnz("Fuels", "Natural gas", "cubic metre", "CH4") == GAS_M3_CH4
    assert _desnz("Fuels", "Natural gas", "kilowatt hour", "CO2e", "Gross CV") == GAS_KWH_GROSS
    with open(resources_dir() / "factors" / "grid-intensity-countries-2023.csv", encoding="utf-8") as fh:
        grid = {r["iso3"]: r for r in csv.DictReader(fh)}
    assert float(grid["DEU"]["carbon_intensity_gco2e_per_kwh"]) / 1000 == DE_GRID_2023 and grid["DEU"]["year"] == "2023"
    assert float(grid["SWE"]["carbon_intensity_gco2e_per_kwh"]) / 1000 == SE_GRID_2023 and grid["SWE"]["year"] == "2023"
    assert grid["DEU"]["basis"] == "lifecycle"
    with open(resources_dir() / "factors" / "grid-intensity-us-states-egrid2023.csv", encoding="utf-8") as fh:
        states = {r["region_code"]: r for r in csv.DictReader(fh)}
    assert float(states["CA"]["co2e_kg_per_kwh"]) == CA_EGRID_2023


# --- the dataset ------------------------------------------------------------------------------

D = dt.date
POWER = [  # id, site, day, kWh, supplier rate (kg/kWh), invoice
    (1, "GB-LON", D(2023, 1, 31), 10000.0, None, "INV-1"),
    (2, "GB-LON", D(2023, 3, 31), 3000.0, None, "INV-7"),
    (3, "GB-LON", D(2023, 3, 31), 3000.0, None, "INV-7"),  # the same invoice booked twice
    (4, "GB-LON", D(2023, 4, 30), None, None, "INV-9"),  # a reading without a quantity
    (5, "GB-LON", D(2024, 1, 31), 10000.0, None, "INV-12"),  # 2024: no 2023 factor covers it
    (6, "DE-HAM", D(2022, 12, 31), 1000.0, None, None),  # 2022: only a later vintage exists
    (7, "DE-HAM", D(2023, 1, 31), 20000.0, None, None),
    (8, "DE-HAM", D(2023, 2, 28), 10000.0, SUPPLIER_RATE, None),
    (9, "SE-STO", D(2023, 1, 31), 4000.0, None, None),
    (10, "SE-STO", D(2023, 2, 28), 6000.0, None, None),
    # no March reading for SE-STO: a gap in a monthly series
    (11, "SE-STO", D(2023, 4, 30), 8000.0, None, None),
    (12, "SE-STO", D(2023, 5, 31), 5000.0, None, None),
    (13, "SE-STO", D(2023, 5, 31), -7000.0, None, None),  # a supplier's correction
    (14, "US-SFO", D(2023, 5, 31), 1000.0, None, None),
    (15, "XX-NOW", D(2023, 1, 31), 500.0, None, None),  # a site without a country
    (16, None, D(2023, 1, 31), 100.0, None, None),  # a row whose site is unknown
]
FUEL = [  # id, site, day, fuel, quantity, unit
    (1, "GB-LON", D(2023, 1, 15), "diesel", 1000.0, "litres"),
    (2, "GB-LON", D(2023, 1, 20), "natural gas", 100.0, "m3"),
    (3, "GB-LON", D(2023, 2, 15), "diesel", 100.0, "gallon"),  # US or imperial? never guessed
    (4, "GB-LON", D(2023, 3, 20), "natural gas", 100.0, "Nm3"),
    (5, "DE-HAM", D(2023, 1, 20), "diesel", 500.0, "litres"),  # no German diesel factor
    (6, "SE-STO", D(2023, 3, 15), "natural gas", 1000.0, "kWh"),
]
CERTS = [  # id, site, type, MWh, start, end, tracking id
    (1, "DE-HAM", "GO", 15.0, D(2023, 1, 1), D(2023, 2, 28), "DE-HKNR-0001"),
    (2, "SE-STO", "PPA", 10.0, D(2023, 1, 1), D(2023, 1, 31), "SE-PPA-0001"),
]


def _land_all(ws) -> None:
    land(ws, "erp", "sites", pa.table({
        "id": [1, 2, 3, 4, 5], "site_code": ["GB-LON", "DE-HAM", "SE-STO", "US-SFO", "XX-NOW"],
        "country": ["GB", "Germany", "SWE", "US", None], "state": [None, None, None, "CA", None]}))
    land(ws, "erp", "power", pa.table({
        "id": [r[0] for r in POWER], "site_code": [r[1] for r in POWER], "day": [r[2] for r in POWER],
        "kwh": pa.array([r[3] for r in POWER], pa.float64()), "rate": pa.array([r[4] for r in POWER], pa.float64()),
        "invoice": [r[5] for r in POWER], "supplier": ["Hamburg Energie" if r[1] == "DE-HAM" else None for r in POWER]}))
    land(ws, "erp", "fuel", pa.table({
        "id": [r[0] for r in FUEL], "site_code": [r[1] for r in FUEL], "day": [r[2] for r in FUEL],
        "fuel": [r[3] for r in FUEL], "qty": [r[4] for r in FUEL], "unit": [r[5] for r in FUEL]}))
    land(ws, "erp", "certs", pa.table({
        "id": [r[0] for r in CERTS], "site_code": [r[1] for r in CERTS], "kind": [r[2] for r in CERTS],
        "mwh": [r[3] for r in CERTS], "start": [r[4] for r in CERTS], "end": [r[5] for r in CERTS],
        "tracking": [r[6] for r in CERTS], "evidence": [f"cancellation {r[6]}" for r in CERTS]}))


def _mapping(duplicates: str = "count_once") -> Mapping:
    return Mapping("method", "erp", [
        TableMapping("sites", "site", id="sites", edges=[
            Edge("site", "site_code"), Edge("country", "country"), Edge("subdivision", "state")]),
        TableMapping("power", "purchased_electricity", id="power", business_key=["invoice"], duplicates=duplicates,
                     edges=[Edge("activity_date", "day"), Edge("site", "site_code"),
                            Edge("energy", "kwh", [Unit("kWh", "MWh")]), Edge("market_factor", "rate"),
                            Edge("supplier", "supplier")]),
        TableMapping("fuel", "fuel_combustion", id="fuel", edges=[
            Edge("activity_date", "day"), Edge("site", "site_code"),
            Edge("fuel_type", "fuel", [ValueMap({"natural gas": "natural_gas"}, keep_unmapped=True)]),
            Edge("quantity", "qty"), Edge("quantity_unit", "unit")]),
        TableMapping("certs", "contractual_instrument", id="certs", edges=[
            Edge("activity_date", "start"), Edge("period_to", "end"), Edge("site", "site_code"),
            Edge("instrument_type", "kind", [ValueMap({"GO": "guarantee_of_origin", "PPA": "ppa"})]),
            Edge("covered_energy", "mwh", [Unit("MWh", "MWh")]), Edge("tracking_id", "tracking"),
            Edge("evidence", "evidence")]),
    ])


@pytest.fixture
def computed(ws):
    _land_all(ws)
    mapping = store.save_mapping(ws, _mapping(), author="test")
    apply.apply_mapping(ws, mapping)
    ag.aggregate(ws)
    return ws


def value(ws, kpi, period, site=None):
    found = ag.find_value(ws, kpi, period, site)
    assert found is not None, (kpi, period, site)
    return found["value"], found["quality"]


# --- location-based Scope 2: the site's region and the activity's date -------------------------

def test_location_based_scope2_by_region_and_date(computed):
    ws = computed
    assert [s["region"] for s in sites.locations(ws) if s["site"] != "(unassigned)"] == ["DE", "GB", "SE", "US-CA", None]
    v, q = value(ws, "ghg_scope2_location", "2023-01", "GB-LON")
    assert v == pytest.approx(10000 / 1000 * UK_ELECTRICITY)  # 10 MWh x 0.20707 t/MWh = 2.0707 t
    assert q == ["gwp:AR5"]  # a UK site in 2023: DESNZ's own factor, nothing to flag; its GWP set stated
    v, q = value(ws, "ghg_scope2_location", "2023-01", "DE-HAM")
    assert v == pytest.approx(20 * DE_GRID_2023)  # 20 MWh x 0.38095 t/MWh = 7.619 t, never the UK's 0.20707
    assert "lifecycle_factor" in q  # the lifecycle grid intensity is a proxy, and says so
    v, _ = value(ws, "ghg_scope2_location", "2023-05", "US-SFO")
    assert v == pytest.approx(1 * CA_EGRID_2023)  # the state's eGRID rate: 0.179064 t
    v, q = value(ws, "ghg_scope2_location", "2023-05", "SE-STO")
    assert v == pytest.approx((5 - 7) * SE_GRID_2023)  # (5 - 7) MWh x 0.040695 = -0.08139 t
    assert "negative" in q


def test_vintage_fallback_and_missing_factors(computed):
    ws = computed
    v, q = value(ws, "ghg_scope2_location", "2024-01", "GB-LON")
    assert v == pytest.approx(10 * UK_ELECTRICITY)  # no 2024 factor: the 2023 vintage, flagged
    assert "factor_vintage" in q
    v, q = value(ws, "ghg_scope2_location", "2022-12", "DE-HAM")
    assert v is None and "no_factor" in q  # only a later vintage (2023) exists: never used backwards
    v, q = value(ws, "ghg_scope2_location", "2023-01", "XX-NOW")
    assert v is None and {"site_without_country", "no_factor"} <= set(q)
    v, q = value(ws, "ghg_scope1", "2023-01", "DE-HAM")
    assert v is None and "no_factor" in q  # no German diesel factor, and no fallback region: no emission
    # the energy is still counted: 500 l x (2.51206 / 0.23908) kWh/l = 5253.64 kWh
    v, _ = value(ws, "energy_fuels", "2023-01", "DE-HAM")
    assert v == pytest.approx(500 * DIESEL_L / DIESEL_KWH_GROSS / 1000)


def test_fallback_region_is_explicit_and_flagged(ws):
    _land_all(ws)
    mapping = _mapping()
    mapping.factor_fallback_region = "GB"
    apply.apply_mapping(ws, store.save_mapping(ws, mapping, author="test"))
    ag.aggregate(ws)
    v, q = value(ws, "ghg_scope1", "2023-01", "DE-HAM")
    assert v == pytest.approx(500 * DIESEL_L / 1000)  # 500 l x 2.51206 kg/l = 1.25603 t, UK factor
    assert "factor_other_region" in q
    # never for grid electricity: the German grid's own factor (and 2022 stays without one)
    v, q = value(ws, "ghg_scope2_location", "2022-12", "DE-HAM")
    assert v is None and "no_factor" in q and "factor_other_region" not in q


# --- market-based Scope 2 after the GHG Protocol hierarchy ----------------------------------------

def test_market_based_scope2_with_instruments(computed):
    ws = computed
    # DE-HAM: a 15 MWh guarantee of origin for January and February, pro rata to consumption
    # (20 + 10 = 30 MWh): January 15 x 20/30 = 10 MWh covered, February 15 x 10/30 = 5 MWh
    v, q = value(ws, "ghg_scope2_market", "2023-01", "DE-HAM")
    # January has no supplier rate and no residual mix: the uncovered half at the location factor
    assert v == pytest.approx(20 * DE_GRID_2023 * (1 - 10 / 20))  # 7.619 x 0.5 = 3.8095 t
    assert "market_uses_location_factor" in q
    v, q = value(ws, "ghg_scope2_market", "2023-02", "DE-HAM")
    assert v == pytest.approx(10 * SUPPLIER_RATE * (1 - 5 / 10))  # 10 MWh x 0.3 t/MWh x 0.5 = 1.5 t
    assert "market_uses_location_factor" not in q  # the supplier's own rate
    # SE-STO: a 10 MWh PPA for January, which used 4 MWh: fully covered, the rest not carried over
    v, q = value(ws, "ghg_scope2_market", "2023-01", "SE-STO")
    assert v == 0.0 and "instrument_surplus" in q and "market_uses_location_factor" not in q
    # a correction never makes market-based emissions negative: (5 - 7) x 0.040695 -> 0
    v, q = value(ws, "ghg_scope2_market", "2023-05", "SE-STO")
    assert v == 0.0 and "clamped_at_zero" in q
    # UK without instruments: market = location, flagged
    v, q = value(ws, "ghg_scope2_market", "2023-01", "GB-LON")
    assert v == pytest.approx(10 * UK_ELECTRICITY) and "market_uses_location_factor" in q
    # renewable energy: only what instruments cover (10 + 5 MWh; 4 MWh of the PPA)
    assert value(ws, "energy_renewable", "2023-01", "DE-HAM")[0] == pytest.approx(10)
    assert value(ws, "energy_renewable", "2023-02", "DE-HAM")[0] == pytest.approx(5)
    assert value(ws, "energy_renewable", "2023-01", "SE-STO")[0] == pytest.approx(4)
    # share for DE-HAM in 2023: 15 MWh of (20 + 10 MWh electricity + 5.2536 MWh diesel)
    total = 20 + 10 + 500 * DIESEL_L / DIESEL_KWH_GROSS / 1000
    assert value(ws, "energy_renewable_share", "2023", "DE-HAM")[0] == pytest.approx(15 / total * 100)
    # the instruments are in the market-based value's lineage, down to their source keys
    found = ag.drill_down(ws, ag.find_value(ws, "ghg_scope2_market", "2023-01", "DE-HAM")["id"])
    assert ("certs", "1") in {(t, k) for _, t, k in found["source_keys"]}


def test_residual_mix_comes_before_the_location_factor(ws, tmp_path):
    from esg_workbench.mapping import factors

    _land_all(ws)
    path = tmp_path / "residual.csv"
    path.write_text("Scope,Level 1,Level 2,Level 3,Level 4,Column Text,UOM,GHG/Unit,GHG Conversion Factor 2023,region\n"
                    "Scope 2,Electricity grid,,Electricity: residual mix,,,kWh,kg CO2e,0.5,DE\n")
    factors.import_factor_set(ws, path, name="aib-residual", version="2023")
    mapping = _mapping()
    mapping.factor_set = "aib-residual"
    apply.apply_mapping(ws, store.save_mapping(ws, mapping, author="test"))
    ag.aggregate(ws)
    v, q = value(ws, "ghg_scope2_market", "2023-01", "DE-HAM")
    assert v == pytest.approx(20 * 0.5 * (1 - 10 / 20))  # the uncovered 10 MWh x 0.5 t/MWh residual mix = 5 t
    assert "market_uses_location_factor" not in q
    # location-based is untouched by it
    assert value(ws, "ghg_scope2_location", "2023-01", "DE-HAM")[0] == pytest.approx(20 * DE_GRID_2023)


def test_an_imported_supplier_rate_comes_before_the_residual_mix(ws, tmp_path):
    from esg_workbench.mapping import factors

    _land_all(ws)
    path = tmp_path / "rates.csv"
    path.write_text("Scope,Level 1,Level 2,Level 3,Level 4,Column Text,UOM,GHG/Unit,GHG Conversion Factor 2023,region\n"
                    "Scope 2,Electricity supplier,,Electricity: supplier,Hamburg Energie,,kWh,kg CO2e,0.1,DE\n"
                    "Scope 2,Electricity grid,,Electricity: residual mix,,,kWh,kg CO2e,0.5,DE\n")
    factors.import_factor_set(ws, path, name="market-2023", version="1")
    mapping = _mapping()
    mapping.factor_set = "market-2023"
    apply.apply_mapping(ws, store.save_mapping(ws, mapping, author="test"))
    ag.aggregate(ws)
    v, q = value(ws, "ghg_scope2_market", "2023-01", "DE-HAM")
    assert v == pytest.approx(20 * 0.1 * (1 - 10 / 20))  # the uncovered 10 MWh x 0.1 t/MWh of the supplier = 1 t
    assert "market_uses_location_factor" not in q
    # February's rate from the source column still wins over the imported one: 10 x 0.3 x 0.5
    assert value(ws, "ghg_scope2_market", "2023-02", "DE-HAM")[0] == pytest.approx(10 * SUPPLIER_RATE * (1 - 5 / 10))
    found = ag.drill_down(ws, ag.find_value(ws, "ghg_scope2_market", "2023-01", "DE-HAM")["id"])
    assert {r["factor_set"] for r in found["staging_rows"] if r["field"] == "ghg_co2e"} == {"market-2023@1"}
    # the mapping's own set has no fuels: energy content still comes from the shipped DESNZ factors
    v, _ = value(ws, "energy_fuels", "2023-01", "DE-HAM")
    assert v == pytest.approx(500 * DIESEL_L / DIESEL_KWH_GROSS / 1000)


# --- fuels: units, gases, biogenic CO2 -----------------------------------------------------------

def test_fuels_units_gases_and_biogenic_co2(computed):
    ws = computed
    v, _ = value(ws, "ghg_scope1", "2023-01", "GB-LON")
    # 1000 l x 2.51206 kg/l + 100 m3 x 2.03839 kg/m3 (the set's own per-m3 factor) = 2715.899 kg
    assert v == pytest.approx((1000 * DIESEL_L + 100 * GAS_M3) / 1000)
    v, _ = value(ws, "ghg_scope1_ch4", "2023-01", "GB-LON")
    assert v == pytest.approx((1000 * DIESEL_L_CH4 + 100 * GAS_M3_CH4) / 1000)  # 0.29 + 0.307 kg
    v, _ = value(ws, "ghg_biogenic_co2", "2023-01", "GB-LON")
    assert v == pytest.approx(1000 * DIESEL_L_BIOGENIC / 1000)  # 0.14 t, outside of Scope 1
    v, q = value(ws, "ghg_scope1", "2023-02", "GB-LON")
    assert v is None and "unit_ambiguous" in q  # 100 'gallon': never guessed
    assert "unit_ambiguous" in value(ws, "energy_fuels", "2023-02", "GB-LON")[1]
    v, _ = value(ws, "ghg_scope1", "2023-03", "GB-LON")
    assert v == pytest.approx(100 * NM3_IN_M3 * GAS_M3 / 1000)  # 100 Nm3 = 105.49 m3 x 2.03839 kg
    # gas in kWh, Gross CV: 1 MWh of energy
    assert value(ws, "energy_fuels", "2023-03", "SE-STO")[0] == pytest.approx(1.0)


# --- data quality --------------------------------------------------------------------------------

def test_duplicates_nulls_unknown_sites_and_lineage(computed):
    ws = computed
    v, q = value(ws, "energy_electricity", "2023-03", "GB-LON")
    assert v == pytest.approx(3.0) and "duplicate" in q  # INV-7 twice: counted once
    assert value(ws, "ghg_scope2_location", "2023-03", "GB-LON")[0] == pytest.approx(3 * UK_ELECTRICITY)
    v, q = value(ws, "energy_electricity", "2023-04", "GB-LON")
    assert v is None and "missing_value" in q  # a NULL quantity, on every KPI it feeds
    v, q = value(ws, "ghg_scope2_location", "2023-04", "GB-LON")
    assert v is None and "missing_value" in q and "unit_mismatch" not in q
    # the organization's January: 10 + 20 + 4 + 0.5 + 0.1 (unknown site) MWh, flagged
    v, q = value(ws, "energy_electricity", "2023-01")
    assert v == pytest.approx(10 + 20 + 4 + 0.5 + 0.1) and "unknown_site" in q
    assert "unknown_site" in value(ws, "energy_electricity", "2023-01", "(unassigned)")[1]
    # outliers and negatives stay flagged in roll-ups
    assert "negative" in value(ws, "ghg_scope2_location", "2023", "SE-STO")[1]
    assert "negative" in value(ws, "ghg_scope2_location", "2023")[1]
    # staging keeps the source value in its unit and the converted value in its unit
    with ws.read() as conn:
        row = conn.execute(sa.text(
            "SELECT value, unit, normalized_value, normalized_unit FROM staging_rows WHERE source_table = 'power' "
            "AND source_key = '1' AND field = 'energy'")).one()
    assert float(row.value) == 10000 and row.unit == "kWh" and row.normalized_value == 10 and row.normalized_unit == "MWh"


def test_duplicates_flagged_but_counted_when_the_mapping_says_so(ws):
    _land_all(ws)
    apply.apply_mapping(ws, store.save_mapping(ws, _mapping(duplicates="flag"), author="test"))
    ag.aggregate(ws)
    v, q = value(ws, "energy_electricity", "2023-03", "GB-LON")
    assert v == pytest.approx(6.0) and "duplicate" in q  # 3 + 3 MWh, both counted, flagged


def test_gaps_with_and_without_estimation(computed):
    ws = computed
    # SE-STO reports monthly but has no March reading: missing and a gap...
    v, q = value(ws, "energy_electricity", "2023-03", "SE-STO")
    assert v is None and {"missing", "gap"} <= set(q)
    # ...and the March total has gas only: present, but flagged as a gap too
    v, q = value(ws, "energy_total", "2023-03", "SE-STO")
    assert v == pytest.approx(1.0) and "gap" in q
    assert "partial" in value(ws, "energy_electricity", "2023", "SE-STO")[1]
    # the analyst chooses: the mean of the neighbours, (6 + 8) / 2 = 7 MWh, marked as estimated
    gaps.set_estimate_method(ws, "neighbours", actor="ana")
    ag.aggregate(ws)
    v, q = value(ws, "energy_electricity", "2023-03", "SE-STO")
    assert v == pytest.approx((6 + 8) / 2) and {"estimated", "estimate:neighbours"} <= set(q)
    v, q = value(ws, "energy_electricity", "2023", "SE-STO")
    assert v == pytest.approx(4 + 6 + 7 + 8 + (5 - 7)) and "estimated" in q  # 23 MWh, never looks measured
    # the March total had gas only: the missing electricity input is estimated the same way,
    # from the meter's own months, and added to the gas read: 1 MWh gas + (6 + 8) / 2 = 8 MWh
    v, q = value(ws, "energy_total", "2023-03", "SE-STO")
    assert v == pytest.approx(1.0 + (6 + 8) / 2) and {"gap", "estimated", "estimate:neighbours"} <= set(q)
    # the year's total: 4 + 6 + (1 + 7) + 8 + (5 - 7) MWh, marked as estimated
    v, q = value(ws, "energy_total", "2023", "SE-STO")
    assert v == pytest.approx(4 + 6 + 1 + 7 + 8 + (5 - 7)) and "estimated" in q
    # the previous year's month does not exist: nothing is made up
    gaps.set_estimate_method(ws, "previous_year")
    ag.aggregate(ws)
    v, q = value(ws, "energy_electricity", "2023-03", "SE-STO")
    assert v is None and "estimated" not in q
    v, q = value(ws, "energy_total", "2023-03", "SE-STO")
    assert v == pytest.approx(1.0) and "estimated" not in q and "gap" in q  # the gas read alone, flagged
    with pytest.raises(Exception, match="not a way to estimate"):
        gaps.set_estimate_method(ws, "guess")


def test_site_location_set_by_hand_wins_and_is_checked(computed):
    ws = computed
    from esg_workbench.core.errors import ConfigError

    with pytest.raises(ConfigError):
        sites.set_location(ws, "XX-NOW", "Atlantis")
    sites.set_location(ws, "XX-NOW", "SE", actor="ana")
    apply.apply_mapping(ws, store.load_mapping(ws, "method"))  # the mapped sites table has no country for it
    ag.aggregate(ws)
    v, q = value(ws, "ghg_scope2_location", "2023-01", "XX-NOW")
    assert v == pytest.approx(0.5 * SE_GRID_2023) and "site_without_country" not in q


# --- reproducible result hashes ---------------------------------------------------------------

def _hashes(ws) -> dict[tuple, str]:
    return {(r["kpi"], r["site"], r["period"]): r["result_hash"] for r in ag.kpi_rows(ws)}


def test_result_hashes_equal_across_workspaces_and_backends(computed, tmp_path, pg_database):
    from tests.conftest import PG_HOST, PG_PORT, PG_USER

    first = _hashes(computed)
    others = [open_workspace(str(tmp_path / "other.duckdb")),
              open_workspace(f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{pg_database}")]
    try:
        for other in others:
            _land_all(other)
            apply.apply_mapping(other, store.save_mapping(other, _mapping(), author="someone else"))
            ag.aggregate(other)
            assert _hashes(other) == first, other.engine.url.drivername
    finally:
        for other in others:
            other.close()


# --- the command line ---------------------------------------------------------------------------

def test_cli_sites_instruments_factor_import_and_gap_estimates(computed, tmp_path):
    import json
    import subprocess
    import sys

    url = str(computed.engine.url.database)
    computed.engine.dispose()

    def run(*args):
        return subprocess.run([sys.executable, "-m", "esg_workbench", "--workspace", url, *args],
                              capture_output=True, text=True, timeout=120)

    listed = json.loads(run("--json", "site", "list").stdout)
    assert {r["site"]: r["region"] for r in listed}["US-SFO"] == "US-CA"
    assert {r["site"]: r["origin"] for r in listed}["(unassigned)"] is None  # seen in data, no country
    bad = run("site", "set", "XX-NOW", "Atlantis")
    assert bad.returncode != 0 and "not an ISO 3166 country" in bad.stderr + bad.stdout
    good = run("site", "set", "XX-NOW", "fr")
    assert good.returncode == 0 and "XX-NOW is in FR" in good.stdout
    instruments = json.loads(run("--json", "instruments", "list").stdout)
    assert sorted((r["site"], r["type"], r["mwh"]) for r in instruments) == [
        ("DE-HAM", "guarantee_of_origin", 15.0), ("SE-STO", "ppa", 10.0)]
    # a national factor for France, with its region and validity given on the command line
    path = tmp_path / "fr.csv"
    path.write_text("Scope,Level 1,Level 2,Level 3,Level 4,Column Text,UOM,GHG/Unit,GHG Conversion Factor 2023\n"
                    "Scope 2,Electricity grid,,Electricity: grid average,France,,kWh,kg CO2e,0.052\n")
    imported = run("factors", "import", str(path), "--name", "fr-national", "--region", "FR", "--gwp", "AR5")
    assert imported.returncode == 0 and "for FR" in imported.stdout
    wrong = run("factors", "import", str(path), "--name", "x", "--region", "Narnia")
    assert wrong.returncode != 0 and "ISO 3166" in wrong.stderr + wrong.stdout
    estimated = run("kpi", "estimate-gaps", "neighbours")
    assert estimated.returncode == 0, estimated.stderr
    shown = run("kpi", "show", "energy_electricity", "--period", "2023-03", "--site", "SE-STO")
    assert "estimated" in shown.stdout and "estimate:neighbours" in shown.stdout
    # the drill-down shows the source value in its unit and the converted one in its unit
    shown = run("kpi", "show", "energy_electricity", "--period", "2023-01", "--site", "GB-LON")
    assert "kWh -> 10.0 MWh" in shown.stdout
    # and the factor behind an emission: its region, validity, basis and GWP set
    shown = run("kpi", "show", "ghg_scope2_location", "--period", "2023-01", "--site", "DE-HAM")
    assert "GRID-2023@1 country:DEU:2023: DE 2023-01-01..2023-12-31, lifecycle" in shown.stdout


def test_per_headcount_estimate_is_the_sites_own_intensity():
    from esg_workbench.mapping.aggregate import Cell
    from esg_workbench.mapping.catalog import load_catalog

    kpi = load_catalog().kpi("energy_electricity")
    cells = {}
    for kpi_id, month, v in [("energy_electricity", "2023-01", 10.0), ("energy_electricity", "2023-02", None),
                             ("energy_electricity", "2023-03", 20.0), ("headcount", "2023-01", 5.0),
                             ("headcount", "2023-02", 6.0), ("headcount", "2023-03", 5.0)]:
        cell = Cell(kpi_id, "A", month, "month", v, "MWh", "sum")
        if v is None:
            cell.flag("missing")
        cells[cell.key] = cell
    assert gaps.estimate(cells, kpi, "per_headcount") == 1
    feb = cells[("energy_electricity", "A", "2023-02")]
    # (10 + 20) MWh / (5 + 5) employees = 3 MWh per employee, x 6 employees in February
    assert feb.value == pytest.approx(3 * 6) and {"estimated", "estimate:per_headcount"} <= set(feb.quality)
    assert "missing" not in feb.quality and ("headcount", "A", "2023-02") in feb.parts
