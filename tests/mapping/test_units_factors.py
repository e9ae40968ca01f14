"""Unit conversions and DESNZ factor lookups against known values."""

from __future__ import annotations

import pytest

from esg_workbench.mapping import factors, units
from esg_workbench.mapping.catalog import load_catalog
from esg_workbench.mapping.errors import IncompatibleUnit, UnknownUnit
from esg_workbench.mapping.transforms import FuelEnergy


def test_unit_conversions_known_values():
    assert units.convert(1500, "kWh", "MWh") == pytest.approx(1.5)
    assert units.convert(2500, "m3", "ML") == pytest.approx(2.5)
    assert units.convert(1, "ML", "m³") == pytest.approx(1000)
    assert units.convert(1850, "kg", "t") == pytest.approx(1.85)
    assert units.convert(1, "GJ", "kWh") == pytest.approx(277.7778, rel=1e-6)
    assert units.convert(1000, "litres", "m3") == pytest.approx(1)
    assert units.convert(10, "miles", "km") == pytest.approx(16.09344)
    assert units.convert(1, "kgCO2e/kWh", "tCO2e/MWh") == pytest.approx(1)
    assert units.factor("kWh", "MWh") == 0.001  # exact, not 0.0009999999999999998
    assert units.dimension("Ml") == "volume" and units.factor("ml", "litre") == 0.001  # case matters for M/m


def test_unit_errors_are_typed():
    with pytest.raises(IncompatibleUnit):
        units.factor("kg", "kWh")
    with pytest.raises(IncompatibleUnit):
        units.factor("tCO2e", "t")  # emissions are not plain mass
    with pytest.raises(UnknownUnit):
        units.parse("bananas")


def test_desnz_factors_match_the_table():
    fs = factors.builtin()
    assert fs.label == "DESNZ-2023@1.1" and len(fs.factors) > 6400
    electricity = fs.lookup({"level1": "UK electricity", "level3": "Electricity: UK"}, "kWh")
    assert electricity.value == 0.20707 and electricity.scope == "Scope2"
    diesel = fs.lookup({"level1": "Fuels", "level3": "Diesel (average biofuel blend)"}, "litre")
    assert diesel.value == 2.51206 and diesel.uom == "litre"
    gas = fs.lookup({"level1": "Fuels", "level3": "Natural gas"}, "kWh")
    assert gas.value == 0.18293 and gas.column_text == "Gross CV"
    net = fs.lookup({"level1": "Fuels", "level3": "Natural gas", "basis": "Net CV"}, "kWh")
    assert net.value == 0.20267
    # per gas, and per activity unit in t CO2e
    assert fs.lookup({"level1": "Fuels", "level3": "Diesel (average biofuel blend)"}, "litre", "CH4").gas == "CH4"
    assert electricity.per("MWh") == pytest.approx(0.20707)  # t CO2e per MWh
    assert diesel.per("m3") == pytest.approx(2.51206)  # 1000 l x 2.51206 kg = 2.51206 t


def test_litres_of_diesel_to_kwh_to_mwh():
    fs = factors.builtin()
    kwh_per_litre, per_litre, per_kwh = fs.energy_per_unit(
        {"level1": "Fuels", "level3": "Diesel (average biofuel blend)"}, "litre")
    assert kwh_per_litre == pytest.approx(2.51206 / 0.23908)  # 10.507 kWh per litre, gross CV
    assert per_litre.value == 2.51206 and per_kwh.value == 0.23908
    t = FuelEnergy(fuel="diesel", from_unit="litre")
    assert t.kwh_per_unit(load_catalog(), fs) * 1000 / 1000 == pytest.approx(10.5072, rel=1e-4)
    assert units.convert(1000 * kwh_per_litre, "kWh", "MWh") == pytest.approx(10.5072, rel=1e-4)


def test_every_catalog_vocabulary_entry_finds_a_factor():
    catalog, fs = load_catalog(), factors.builtin()
    probe = {"energy_carrier": "kWh", "fuel_type": None, "travel_mode": "km", "waste_material": "t"}
    for vocab, unit in probe.items():
        for key, entry in catalog.vocabulary(vocab).items():
            selectors = entry["factor"] if isinstance(entry["factor"], list) else [entry["factor"]]
            selector = selectors[0]  # the first alternative is DESNZ's own
            if unit is None:
                assert fs.find(selector), key
            else:
                routes = [{"column_text": r} for r in ("Combustion", "Landfill", "Closed-loop")] if vocab == "waste_material" else [{}]
                assert any(fs.lookup({**selector, **r}, unit) for r in routes), key


def test_import_factor_set_csv_and_xlsx(ws, tmp_path):
    import openpyxl

    csv_path = tmp_path / "my-factors.csv"
    csv_path.write_text("Scope,Level 1,Level 2,Level 3,Level 4,Column Text,UOM,GHG/Unit,GHG Conversion Factor 2024\n"
                        "Scope 2,UK electricity,Electricity generated,Electricity: UK,,,kWh,kg CO2e,0.2\n")
    fs = factors.import_factor_set(ws, csv_path, name="supplier", version="2024")
    assert fs.label == "supplier@2024"
    # no region column and no --region: imported, but said to apply to no site
    assert fs.factors[0].region == "" and "no region" in fs.warnings[0]
    # the year of the factor column is the default validity
    assert (fs.factors[0].valid_from, fs.factors[0].valid_to) == ("2024-01-01", "2024-12-31")
    loaded = factors.load_factor_set(ws, "supplier")
    assert loaded.lookup({"level1": "UK electricity", "level3": "Electricity: UK"}, "MWh").per("MWh") == pytest.approx(0.2)
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["Factors by Category"])
    sheet.append(["ID", "Scope", "Level 1", "Level 2", "Level 3", "Level 4", "Column Text", "UOM", "GHG/Unit",
                  "GHG Conversion Factor 2025"])
    sheet.append(["x1", "Scope 1", "Fuels", "Liquid fuels", "Diesel (average biofuel blend)", None, None, "litres",
                  "kg CO2e", 2.5])
    sheet.append(["x2", "Scope 1", "Fuels", "Liquid fuels", "Diesel (average biofuel blend)", None, None, "litres",
                  "kg CO2e of CH4 per unit", 0.001])
    book.save(tmp_path / "flat.xlsx")
    fs2 = factors.import_factor_set(ws, tmp_path / "flat.xlsx", name="flat")
    assert fs2.version == "2025" and [f.gas for f in fs2.factors] == ["CO2e", "CH4"]
    assert {s["name"] for s in factors.list_factor_sets(ws)} == {"DESNZ-2023", "GRID-2023", "supplier", "flat"}


def test_factor_imports_with_regions_and_validity_and_bad_files(ws, tmp_path):
    from esg_workbench.core.errors import ConfigError

    header = "Scope,Level 1,Level 2,Level 3,Level 4,Column Text,UOM,GHG/Unit,GHG Conversion Factor 2024,region,valid_from,valid_to,gwp,basis\n"
    good = tmp_path / "national.csv"
    good.write_text(header + "Scope 2,Electricity grid,,Electricity: grid average,,,kWh,kg CO2e,0.35,DEU,,,,\n"
                    + "Scope 2,Electricity grid,,Electricity: grid average,,,kWh,kg CO2e,0.36,US-CA,2024-04-01,2025-03-31,AR6,combustion\n")
    fs = factors.import_factor_set(ws, good, name="national")
    de, ca = fs.factors
    assert (de.region, de.valid_from, de.valid_to) == ("DE", "2024-01-01", "2024-12-31")  # the column's year
    assert (ca.region, ca.valid_from, ca.valid_to, ca.gwp, ca.basis) == ("US-CA", "2024-04-01", "2025-03-31", "AR6", "combustion")
    loaded = factors.load_factor_set(ws, "national")
    assert [(f.region, f.gwp) for f in loaded.factors] == [("DE", ""), ("US-CA", "AR6")]  # kept in the workspace
    for name, row, message in (
            ("reversed.csv", "Scope 2,E,,E,,,kWh,kg CO2e,0.3,DE,2024-12-31,2024-01-01,,", "ends"),
            ("not-a-date.csv", "Scope 2,E,,E,,,kWh,kg CO2e,0.3,DE,last year,,,", "not a date"),
            ("nowhere.csv", "Scope 2,E,,E,,,kWh,kg CO2e,0.3,Narnia,,,,", "not ISO 3166")):
        path = tmp_path / name
        path.write_text(header + row + "\n")
        with pytest.raises(ConfigError, match=message):
            factors.import_factor_set(ws, path, name=name)
    latin = tmp_path / "latin1.csv"
    latin.write_bytes((header + "Scope 2,E,,Énergie,,,kWh,kg CO2e,0.3,FR,,,,\n").encode("latin-1"))
    with pytest.raises(ConfigError, match="UTF-8"):
        factors.import_factor_set(ws, latin, name="latin")
    assert {s["name"] for s in factors.list_factor_sets(ws)} == {"DESNZ-2023", "GRID-2023", "national"}  # none half-imported


def test_erp_spellings_and_ambiguous_units():
    from esg_workbench.mapping.errors import AmbiguousUnit
    from esg_workbench.mapping.model import Edge, Mapping, TableMapping, validate
    from esg_workbench.mapping.transforms import Unit

    assert units.factor("kwhr", "kWh") == 1 and units.factor("m^3", "m3") == 1 and units.factor("cu m", "m3") == 1
    assert units.factor("Nm3", "m3") == pytest.approx(288.15 / 273.15)  # 0 degC normal m3 in 15 degC standard m3
    assert units.factor("US gal", "litre") == pytest.approx(3.785411784)
    assert units.factor("imperial gallon", "litre") == pytest.approx(4.54609)
    assert units.factor("short ton", "t") == pytest.approx(0.90718474)
    assert units.factor("MMBtu", "kWh") == pytest.approx(293.0711, rel=1e-6)
    for text, choices in (("gallon", ("US gallon", "imperial gallon")), ("Tons", ("short ton", "long ton", "tonne"))):
        with pytest.raises(AmbiguousUnit) as caught:
            units.parse(text)
        assert caught.value.choices == choices
    # on the canvas: a conversion from 'gallon' is an error that names the choices
    mapping = Mapping("x", "erp", [TableMapping("fuel", "fuel_combustion", id="t", edges=[
        Edge("activity_date", "day"), Edge("site", "site"), Edge("fuel_type", "fuel"),
        Edge("quantity", "qty", [Unit("gallon", "litre")])])])
    problems = validate(mapping, load_catalog(), {"fuel": {"day": "date", "site": "text", "fuel": "text", "qty": "number"}},
                        {"fuel": ["id"]})
    assert [(p.kind, p.choices) for p in problems] == [("AmbiguousUnit", ("US gallon", "imperial gallon"))]
