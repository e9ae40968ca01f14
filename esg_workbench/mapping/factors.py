"""Emission factor sets: the shipped UK DESNZ 2023 factors, the shipped national grid
intensities, and imported sets.

A factor set is a list of factors, one per activity, unit, gas (CO2e, CO2, CH4, N2O),
region and validity period, in kg CO2e per unit of activity. An activity is chosen by a
selector over the DESNZ hierarchy (`level1`..`level4`, `column_text`) and the unit of the
activity data picks the factor row of the same dimension (litres -> the per-litre factor,
m3 -> the per-m3 factor, kWh -> per kWh on the chosen calorific basis, kg -> per tonne).

Every factor carries its region (ISO 3166, see regions.py), validity, source, licence,
basis (combustion, lifecycle, gross or net CV) and GWP set. `FactorLibrary.resolve`
picks, for an activity of a site's region in a month, the factor of that region valid in
that month; else the nearest earlier vintage of the same region (flag `factor_vintage`);
else nothing (`no_factor`). Another region's factor is used only where the mapping names
a fallback region for activities that are not regional (never grid electricity or heat),
and then flagged `factor_other_region`.

Every emission result records the factor set, the factor's id and value; the factor's
region, validity, basis, GWP set, source and licence are found from (set, id) with
`FactorLibrary.factor`. Imported sets (CSV or XLSX with the same columns, or the DESNZ
flat-file layout) are stored in the workspace table `emission_factors` and recorded in
the audit chain.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import sqlalchemy as sa

from esg_workbench.core.errors import ConfigError, NotFound
from esg_workbench.mapping import regions, units
from esg_workbench.mapping.errors import IncompatibleUnit, UnknownUnit
from esg_workbench.mapping.resources import resources_dir

BUILTIN_NAME = "DESNZ-2023"
BUILTIN_VERSION = "1.1"
BUILTIN_FILE = "factors/desnz-2023-conversion-factors.csv"
ATTRIBUTION = ("Contains public sector information licensed under the Open Government Licence v3.0 "
               "(UK DESNZ GHG Conversion Factors 2023).")
GRID_NAME = "GRID-2023"
GRID_VERSION = "1"
GRID_COUNTRIES_FILE = "factors/grid-intensity-countries-2023.csv"
GRID_US_STATES_FILE = "factors/grid-intensity-us-states-egrid2023.csv"
GRID_ATTRIBUTION = "Electricity carbon intensity: Ember and Energy Institute via Our World in Data (CC BY 4.0)"
#: the activity the grid intensities are filed under (an imported national factor uses it too)
GRID_SELECTOR = {"level1": "Electricity grid", "level3": "Electricity: grid average"}
GASES = ("CO2e", "CO2", "CH4", "N2O")
#: DESNZ 2023 states its CO2e with the 100-year GWPs of the IPCC's Fifth Assessment Report
DESNZ_GWP = "AR5"
LIFECYCLE = "lifecycle"

#: DESNZ unit of measure -> pint unit text
UOM_UNITS = {
    "kilowatt hour": "kWh", "kwh": "kWh", "litre": "litre", "litres": "litre", "tonne": "tonne", "tonnes": "tonne",
    "cubic metre": "m**3", "cubic metres": "m**3", "kilometre": "km", "km": "km", "passenger.km": "km",
    "tonne.km": "tonne*km", "kilogram": "kg", "kg": "kg", "mile": "mile", "miles": "mile", "gigajoule": "GJ",
    "gj": "GJ", "million litres": "megalitre", "room per night": "dimensionless",
    "per fte working hour": "hour", "passenger.mile": "mile",
}


def gwp_text(gwp: str | None, basis: str | None) -> str:
    """The GWP set of a factor as the app and the CLI state it: the set its source names,
    or that the source names none (the shipped grid intensities), with the basis beside it
    so a lifecycle proxy is never read as a direct-emission factor."""
    named = (gwp or "").strip()
    if named and named.lower() != "not stated":
        return f"GWP {named}"
    return f"GWP not stated by the source ({basis or 'basis not stated'} basis)"


@dataclass(frozen=True)
class Factor:
    id: str
    scope: str
    level1: str
    level2: str
    level3: str
    level4: str
    column_text: str
    uom: str  # as the set writes it, e.g. "litre", "kilowatt hour"
    gas: str  # CO2e | CO2 | CH4 | N2O
    value: float  # kg CO2e per uom
    region: str = ""  # ISO 3166 ('GB', 'DE', 'US-CA'); '' when the file named none
    valid_from: str = ""  # 'YYYY-MM-DD' (inclusive); '' open
    valid_to: str = ""  # 'YYYY-MM-DD' (inclusive); '' open
    basis: str = ""  # 'Gross CV', 'Net CV', 'combustion', 'lifecycle', ...
    gwp: str = ""  # 'AR5', 'AR6', ... or 'not stated'
    source: str = ""
    licence: str = ""
    set_label: str = field(default="", compare=False)

    @property
    def unit(self) -> str:
        """The pint unit of the activity the factor applies to."""
        return UOM_UNITS.get(self.uom.strip().lower(), self.uom.strip())

    def per(self, activity_unit: str) -> float:
        """t CO2e per one `activity_unit` of activity."""
        return self.value * units.factor(activity_unit, self.unit) / 1000.0

    def covers(self, day: str) -> bool:
        return (not self.valid_from or self.valid_from <= day) and (not self.valid_to or day <= self.valid_to)

    def describe(self) -> str:
        path = " / ".join(x for x in (self.level1, self.level2, self.level3, self.level4, self.column_text) if x)
        where = f" [{self.region or 'no region'}, {self.valid_from or '…'}..{self.valid_to or '…'}, {self.basis or 'basis not stated'}, {gwp_text(self.gwp, self.basis)}]"
        return f"{path}: {self.value:g} kg CO2e{'' if self.gas == 'CO2e' else ' of ' + self.gas} per {self.uom.strip()}{where}"

    def details(self) -> dict[str, Any]:
        """What an auditor needs to know of the factor behind a number."""
        return {"factor_set": self.set_label, "factor_id": self.id, "activity": self.describe().split(": ")[0],
                "gas": self.gas, "value": self.value, "unit": f"kg CO2e per {self.uom.strip()}",
                "region": self.region, "valid_from": self.valid_from, "valid_to": self.valid_to, "basis": self.basis,
                "gwp": self.gwp, "gwp_text": gwp_text(self.gwp, self.basis), "source": self.source,
                "licence": self.licence}


@dataclass
class FactorSet:
    name: str
    version: str
    factors: list[Factor]
    source: str = ""
    sha256: str = ""
    attribution: str = ""
    _index: dict[str, list[Factor]] = field(default_factory=dict, repr=False)
    _ids: dict[str, Factor] = field(default_factory=dict, repr=False)
    warnings: list[str] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.factors = [f if f.set_label == self.label else _relabel(f, self.label) for f in self.factors]

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"

    def _by_level3(self, level3: str) -> list[Factor]:
        if not self._index:
            for f in self.factors:
                self._index.setdefault(_norm(f.level3), []).append(f)
        return self._index.get(_norm(level3), [])

    def by_id(self, factor_id: str) -> Factor | None:
        if not self._ids:
            self._ids = {f.id: f for f in self.factors}
        return self._ids.get(factor_id)

    def find(self, selector: dict[str, str], gas: str | None = None) -> list[Factor]:
        """Factors matching the selector (level1..level4, column_text, scope, uom, region)."""
        keys = {k: _norm(v) for k, v in selector.items() if v is not None and k != "basis"}
        pool = self._by_level3(selector["level3"]) if "level3" in selector else self.factors
        out = []
        for f in pool:
            if gas and f.gas != gas:
                continue
            if all(_norm(getattr(f, k)) == v for k, v in keys.items()):
                out.append(f)
        return out

    def candidates(self, selector: dict[str, str], activity_unit: str, gas: str = "CO2e") -> list[Factor]:
        """Every factor (all regions and vintages) for activity measured in `activity_unit`."""
        return [f for f in self.find(selector, gas) if _same_dimension(f.unit, activity_unit)]

    def lookup(self, selector: dict[str, str], activity_unit: str, gas: str = "CO2e") -> Factor | None:
        """The factor for activity measured in `activity_unit`, whatever its region or
        date: same dimension, and for energy units the calorific basis of the selector
        (default Gross CV). For physical properties (energy content), not for emissions
        of a site: those go through `FactorLibrary.resolve`."""
        found = _narrow(self.candidates(selector, activity_unit, gas), selector, activity_unit)
        return found[0] if found else None

    def energy_per_unit(self, selector: dict[str, str], activity_unit: str, basis: str = "Gross CV") -> tuple[float, Factor, Factor] | None:
        """kWh of energy per one `activity_unit` of fuel: CO2e per unit / CO2e per kWh.
        Returns (kWh per unit, the per-unit factor, the per-kWh factor) or None."""
        if units.unit_of_dimension(activity_unit, "energy"):
            return units.factor(activity_unit, "kWh"), None, None
        per_unit = self.lookup(selector, activity_unit)
        per_kwh = self.lookup({**selector, "basis": basis}, "kWh")
        if per_unit is None or per_kwh is None or not per_kwh.value:
            return None
        return per_unit.per(activity_unit) * 1000.0 / per_kwh.value, per_unit, per_kwh


def _relabel(f: Factor, label: str) -> Factor:
    from dataclasses import replace

    return replace(f, set_label=label)


def _narrow(candidates: list[Factor], selector: dict[str, str], activity_unit: str) -> list[Factor]:
    """The calorific basis of the selector (Gross CV by default), then the factor stated in
    the activity's own unit (per m3 for m3 of gas: not a back-derived calorific value)."""
    if len(candidates) > 1:
        basis = selector.get("basis", "Gross CV")
        narrowed = [f for f in candidates if _norm(f.column_text) == _norm(basis)]
        candidates = narrowed or candidates
    if len(candidates) > 1:
        same = [f for f in candidates if units.factor(activity_unit, f.unit) == 1.0]
        candidates = same or candidates
    return candidates


def _norm(text: Any) -> str:
    return re.sub(r"\s+", " ", str(text or "")).strip().lower()


def _same_dimension(a: str, b: str) -> bool:
    try:
        return units.parse(a).dimensionality == units.parse(b).dimensionality
    except UnknownUnit:
        return False


# --- choosing a factor by region and date ------------------------------------------------------

@dataclass(frozen=True)
class Resolution:
    """The factors (per gas) an activity takes, and the flags the choice raises."""
    factors: dict[str, Factor]
    flags: tuple[str, ...] = ()

    @property
    def co2e(self) -> Factor | None:
        return self.factors.get("CO2e")


def month_start(period: str | None) -> str | None:
    """'2024-03' -> '2024-03-01' (the day a factor must be valid on)."""
    if not period or not re.fullmatch(r"\d{4}-\d{2}", str(period)):
        return None
    return f"{period}-01"


def pick_vintage(found: list[Factor], day: str) -> tuple[list[Factor], str | None]:
    """The factors valid on `day` (the newest vintage among them), else those of the nearest
    earlier vintage, flagged `factor_vintage`; never a later vintage."""
    covering = [f for f in found if f.covers(day)]
    if covering:
        newest = max(f.valid_from for f in covering)
        return [f for f in covering if f.valid_from == newest], None
    earlier = [f for f in found if f.valid_to and f.valid_to < day]
    if not earlier:
        return [], None
    nearest = max(f.valid_to for f in earlier)
    return [f for f in earlier if f.valid_to == nearest], "factor_vintage"


@dataclass
class FactorLibrary:
    """The sets an apply searches, in order: the mapping's imported set (if any), then the
    shipped DESNZ 2023 factors, then the shipped grid intensities."""
    sets: list[FactorSet]

    @property
    def label(self) -> str:
        return self.sets[0].label

    def factor(self, set_label: str, factor_id: str) -> Factor | None:
        for fs in self.sets:
            if fs.label == set_label:
                return fs.by_id(factor_id)
        return None

    def _in_region(self, selectors: list[dict], activity_unit: str, gas: str, region: str,
                   day: str) -> tuple[Factor, dict, str | None] | None:
        """The first selector (most specific first) and set that have a factor of `region`."""
        for selector in selectors:
            for fs in self.sets:
                found = [f for f in fs.candidates(selector, activity_unit, gas) if f.region == region]
                if not found:
                    continue
                chosen, flag = pick_vintage(found, day)
                chosen = _narrow(chosen, selector, activity_unit)
                if chosen:
                    return chosen[0], selector, flag
                # the region has this activity, but only later vintages: no factor for the date
                return None
        return None

    def resolve(self, selectors: list[dict], activity_unit: str, region: str | None, period: str | None,
                gases: Iterable[str] = ("CO2e",), *, regional: bool = False,
                fallback_region: str | None = None) -> Resolution:
        """The factors of an activity of a site in `region` in the month `period`. The first
        of `gases` leads (CO2e; CO2 for DESNZ's biogenic 'Outside of scopes' factors): the
        other gases take the factors of its set, region and vintage."""
        gases = list(gases)
        lead = gases[0] if gases else "CO2e"
        day = month_start(period)
        flags: list[str] = []
        if day is None or not selectors:
            return Resolution({}, ("no_factor",))
        if not region:
            flags.append("site_without_country")
        found = None
        for candidate in regions.widening(region):
            found = self._in_region(selectors, activity_unit, lead, candidate, day)
            if found:
                region = candidate
                break
        if found is None and fallback_region and not regional:
            region = regions.normalize(fallback_region)
            found = self._in_region(selectors, activity_unit, lead, region, day)
            if found is not None:
                flags.append("factor_other_region")
        if found is None:
            return Resolution({}, tuple(flags + ["no_factor"]))
        co2e, selector, vintage = found
        if vintage:
            flags.append(vintage)
        if co2e.basis == LIFECYCLE:
            flags.append("lifecycle_factor")
        out = {lead: co2e}
        for gas in gases:
            if gas == lead:
                continue
            same = [f for f in self._set_of(co2e).candidates(selector, activity_unit, gas)
                    if f.region == co2e.region and f.valid_from == co2e.valid_from and f.valid_to == co2e.valid_to]
            same = _narrow(same, selector, activity_unit)
            if same:
                out[gas] = same[0]
        return Resolution(out, tuple(flags))

    def _set_of(self, f: Factor) -> FactorSet:
        return next(fs for fs in self.sets if fs.label == f.set_label)


# --- reading files ----------------------------------------------------------------------------

def _gas_of(row: dict[str, Any]) -> str:
    formula = str(row.get("emission_target_formula") or "").strip()
    if formula:
        return formula
    text = str(row.get("GHG/Unit") or "")
    m = re.search(r"of\s+(CO2|CH4|N2O)\b", text)
    return m.group(1) if m else "CO2e"


def _factor_column(header: Iterable[str]) -> str | None:
    for name in header:
        if name and re.match(r"^GHG Conversion Factor( \d{4})?$", str(name).strip()):
            return name
    return None


def _day(value: Any) -> str:
    """'2023-01-01T00:00:00', a datetime or a date -> '2023-01-01'; '' when empty."""
    if value in (None, ""):
        return ""
    if hasattr(value, "isoformat"):
        value = value.isoformat()
    text = str(value).strip()
    m = re.match(r"^(\d{4}-\d{2}-\d{2})", text)
    if not m:
        raise ConfigError(f"'{text}' is not a date (valid_from / valid_to are written YYYY-MM-DD).")
    return m.group(1)


def _basis_of(row: dict[str, Any], scope: str) -> str:
    """The basis a row states: its own `basis` column; else DESNZ's Column Text for the
    calorific value; else 'combustion' for DESNZ Scope 1 and 2 rows."""
    stated = str(row.get("basis") or "").strip()
    if stated:
        return stated
    text = str(row.get("Column Text") or "").strip()
    if text in ("Gross CV", "Net CV"):
        return text
    return "combustion" if scope in ("Scope1", "Scope2") else ""


def _rows_to_factors(rows: Iterable[dict[str, Any]], value_column: str, defaults: dict[str, str]) -> list[Factor]:
    out = []
    for number_in_file, r in enumerate(rows, start=1):
        value = r.get(value_column)
        if value in (None, ""):
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        scope = str(r.get("Scope") or "").replace(" ", "")
        region = regions.normalize(r.get("region") or defaults.get("region")) or ""
        out.append(Factor(
            id=str(r.get("id_original") or r.get("ID") or r.get("id") or f"row-{number_in_file}"),
            scope=scope, level1=str(r.get("Level 1") or "").strip(), level2=str(r.get("Level 2") or "").strip(),
            level3=str(r.get("Level 3") or "").strip(), level4=str(r.get("Level 4") or "").strip(),
            column_text=str(r.get("Column Text") or "").strip(), uom=str(r.get("UOM") or "").strip(),
            gas=_gas_of(r), value=number, region=region,
            valid_from=_day(r.get("valid_from") or defaults.get("valid_from")),
            valid_to=_day(r.get("valid_to") or defaults.get("valid_to")),
            basis=_basis_of(r, scope), gwp=str(r.get("gwp") or defaults.get("gwp") or "").strip(),
            source=str(r.get("source") or defaults.get("source") or "").strip(),
            licence=str(r.get("licence") or defaults.get("licence") or "").strip(),
        ))
    return out


def read_factor_file(path: Path | str, name: str | None = None, version: str | None = None, *,
                     region: str | None = None, valid_from: str | None = None, valid_to: str | None = None,
                     gwp: str | None = None, licence: str | None = None, source: str | None = None) -> FactorSet:
    """A factor set from a CSV or XLSX file with DESNZ columns, and optionally `region`,
    `valid_from`, `valid_to`, `basis`, `gwp`, `source`, `licence` columns (the keyword
    arguments fill them where a file has none; a 'GHG Conversion Factor YYYY' column gives
    the year YYYY as the default validity)."""
    path = Path(path)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        rows, value_column = _read_xlsx(data)
    elif path.suffix.lower() in (".csv", ".txt"):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ConfigError(f"{path.name} is not UTF-8 text.", hint="Save the CSV as UTF-8 and import it again.") from None
        reader = csv.DictReader(io.StringIO(text))
        value_column = _factor_column(reader.fieldnames or [])
        rows = list(reader)
    else:
        raise ConfigError(f"{path.name} is not a CSV or XLSX file.", hint="Import a .csv or .xlsx factor file.")
    if value_column is None:
        raise ConfigError(f"{path.name} has no 'GHG Conversion Factor' column.",
                          hint="Use the DESNZ columns: Scope, Level 1..4, Column Text, UOM, GHG/Unit, GHG Conversion Factor YYYY.")
    year = re.search(r"(\d{4})", value_column)
    defaults = {"region": region or "", "gwp": gwp or "", "licence": licence or "", "source": source or path.name,
                "valid_from": valid_from or (f"{year.group(1)}-01-01" if year else ""),
                "valid_to": valid_to or (f"{year.group(1)}-12-31" if year else "")}
    if defaults["region"] and not regions.is_country(regions.normalize(defaults["region"])):
        raise ConfigError(f"'{region}' is not an ISO 3166 country code (optionally with a subdivision, e.g. US-CA).")
    factors = _rows_to_factors(rows, value_column, defaults)
    if not factors:
        raise ConfigError(f"{path.name} holds no factors.")
    bad = sorted({f.region for f in factors if f.region and not regions.is_country(f.region)})
    if bad:
        raise ConfigError(f"{path.name} names regions that are not ISO 3166 countries: {', '.join(bad[:5])}.",
                          hint="Write the region as a country code (DE, FR), optionally with a subdivision (US-CA).")
    wrong = [f for f in factors if f.valid_from and f.valid_to and f.valid_to < f.valid_from]
    if wrong:
        raise ConfigError(f"{path.name}: factor {wrong[0].id} ends ({wrong[0].valid_to}) before it starts ({wrong[0].valid_from}).")
    return FactorSet(name or path.stem, version or (year.group(1) if year else "1"), factors, source=path.name,
                     sha256=digest)


def _read_xlsx(data: bytes) -> tuple[list[dict[str, Any]], str | None]:
    import openpyxl

    book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        for sheet in book.worksheets:
            header: list[str] | None = None
            rows: list[dict[str, Any]] = []
            for values in sheet.iter_rows(values_only=True):
                if header is None:
                    cells = [str(v).strip() if v is not None else "" for v in values]
                    if "Scope" in cells and "Level 1" in cells and _factor_column(cells):
                        header = cells
                    continue
                if all(v is None for v in values):
                    continue
                rows.append(dict(zip(header, values)))
            if header is not None:
                return rows, _factor_column(header)
    finally:
        book.close()
    return [], None


@functools.lru_cache(maxsize=1)
def builtin() -> FactorSet:
    """The shipped UK DESNZ 2023 factors (region GB, valid in 2023, GWP AR5)."""
    source = "UK DESNZ GHG Conversion Factors for Company Reporting 2023 (flat file v1.1)"
    fs = read_factor_file(resources_dir() / BUILTIN_FILE, BUILTIN_NAME, BUILTIN_VERSION, gwp=DESNZ_GWP,
                          licence="Open Government Licence v3.0", source=source)
    fs.attribution = ATTRIBUTION
    fs.source = source
    return fs


@functools.lru_cache(maxsize=1)
def grid_intensities() -> FactorSet:
    """The shipped national grid intensities (resources/factors/README.md): one CO2e factor
    per kWh of grid electricity and country (lifecycle basis, a proxy) or US state (eGRID
    total output emission rate), valid in its data year."""
    out = []
    with open(resources_dir() / GRID_COUNTRIES_FILE, newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            year = r["year"]
            out.append(Factor(
                id=f"country:{r['iso3']}:{year}", scope="Scope2", level1=GRID_SELECTOR["level1"], level2="",
                level3=GRID_SELECTOR["level3"], level4=r["country"], column_text="", uom="kilowatt hour", gas="CO2e",
                value=float(r["carbon_intensity_gco2e_per_kwh"]) / 1000.0, region=regions.normalize(r["iso3"]) or "",
                valid_from=f"{year}-01-01", valid_to=f"{year}-12-31", basis=r["basis"].strip() or LIFECYCLE,
                gwp="not stated", source=f"{r['source']} ({GRID_ATTRIBUTION})", licence="CC BY 4.0"))
    with open(resources_dir() / GRID_US_STATES_FILE, newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            year = r["year"]
            out.append(Factor(
                id=f"us-state:{r['region_code']}:{year}", scope="Scope2", level1=GRID_SELECTOR["level1"], level2="",
                level3=GRID_SELECTOR["level3"], level4=r["state"], column_text="", uom="kilowatt hour", gas="CO2e",
                value=float(r["co2e_kg_per_kwh"]), region=f"US-{r['region_code'].strip().upper()}",
                valid_from=f"{year}-01-01", valid_to=f"{year}-12-31", basis=f"combustion: {r['basis'].strip()}",
                gwp="not stated", source=r["source"], licence="public domain (US government work)"))
    fs = FactorSet(GRID_NAME, GRID_VERSION, out, source="Grid intensities 2023 (OWID/Ember; US EPA eGRID2023)")
    fs.attribution = GRID_ATTRIBUTION
    return fs


def shipped_library() -> FactorLibrary:
    return FactorLibrary([builtin(), grid_intensities()])


# --- imported sets in the workspace ------------------------------------------------------------

SHIPPED = {(BUILTIN_NAME, BUILTIN_VERSION), (GRID_NAME, GRID_VERSION)}


def import_factor_set(workspace, path: Path | str, *, name: str | None = None, version: str | None = None,
                      actor: str | None = None, region: str | None = None, valid_from: str | None = None,
                      valid_to: str | None = None, gwp: str | None = None, licence: str | None = None) -> FactorSet:
    """Store a factor file's factors in the workspace (replacing a set of the same name and
    version) with an audit entry. `region`, `valid_from`, `valid_to`, `gwp` and `licence`
    fill the rows whose file has no such column (a factor without a region applies to no
    site: `warnings` of the result say so)."""
    from esg_workbench.audit import chain
    from esg_workbench.workspace import concurrency
    from esg_workbench.workspace.database import utcnow
    from esg_workbench.workspace.schema import emission_factors as table

    fs = read_factor_file(path, name, version, region=region, valid_from=valid_from, valid_to=valid_to, gwp=gwp,
                          licence=licence)
    if (fs.name, fs.version) in SHIPPED:
        raise ConfigError(f"{fs.label} is shipped with the app; give the import another name or version.")
    without = sum(1 for f in fs.factors if not f.region)
    if without:
        fs.warnings.append(f"{without} factor(s) have no region and apply to no site: add a region column "
                           f"or import with --region CODE.")
    now = utcnow()
    with workspace.transaction() as conn:
        # two imports of one set at once: the second waits, then replaces the first's rows
        # (without the lock each would delete only the rows it saw, and both sets would stay)
        concurrency.xact_lock(workspace, conn, "factor-set", fs.name, fs.version)
        conn.execute(sa.delete(table).where(table.c.organization_id == workspace.organization_id,
                                            table.c.factor_set == fs.name, table.c.version == fs.version))
        conn.execute(sa.insert(table), [dict(
            organization_id=workspace.organization_id, factor_set=fs.name, version=fs.version, factor_id=f.id,
            scope=f.scope, level1=f.level1, level2=f.level2, level3=f.level3, level4=f.level4,
            column_text=f.column_text, uom=f.uom, gas=f.gas, value=f.value, region=f.region,
            valid_from=f.valid_from, valid_to=f.valid_to, basis=f.basis, gwp=f.gwp, licence=f.licence,
            source=f.source or fs.source, source_sha256=fs.sha256, imported_at=now) for f in fs.factors])
        chain.append(workspace, conn, "factors.import", input_hash=fs.sha256, actor=actor, metadata={
            "factor_set": fs.name, "version": fs.version, "factors": len(fs.factors), "file": fs.source,
            "regions": sorted({f.region for f in fs.factors})[:50]})
    return fs


def list_factor_sets(workspace) -> list[dict[str, Any]]:
    from esg_workbench.workspace.schema import emission_factors as table

    out = [{"name": s.name, "version": s.version, "factors": len(s.factors), "builtin": True,
            "gwp": gwp_summary([(f.gwp, f.basis) for f in s.factors])} for s in shipped_library().sets]
    with workspace.read() as conn:
        rows = conn.execute(sa.select(table.c.factor_set, table.c.version, sa.func.count())
                            .where(table.c.organization_id == workspace.organization_id)
                            .group_by(table.c.factor_set, table.c.version).order_by(table.c.factor_set, table.c.version))
        found = [{"name": r[0], "version": r[1], "factors": r[2], "builtin": False} for r in rows]
        for entry in found:
            pairs = conn.execute(sa.select(table.c.gwp, table.c.basis).distinct().where(
                table.c.organization_id == workspace.organization_id, table.c.factor_set == entry["name"],
                table.c.version == entry["version"])).all()
            entry["gwp"] = gwp_summary([(g, b) for g, b in pairs])
    return out + found


def gwp_summary(pairs: list[tuple[str | None, str | None]]) -> str:
    """The GWP sets of a factor set's factors in one phrase (gwp_text of each distinct one)."""
    texts: dict[str, None] = {}
    for gwp, basis in sorted(pairs, key=lambda p: (p[0] or "", p[1] or "")):
        named = (gwp or "").strip()
        if named and named.lower() != "not stated":
            texts[f"GWP {named}"] = None
        else:  # the bases, shortened ('combustion: total output ...' -> 'combustion')
            texts[gwp_text(None, (basis or "").split(":")[0] or None)] = None
    return "; ".join(texts) or "no factors"


def load_factor_set(workspace, name: str | None = None, version: str | None = None) -> FactorSet:
    """The named set (the newest version unless one is given); the shipped set by default."""
    if not name or (name == BUILTIN_NAME and version in (None, BUILTIN_VERSION)):
        return builtin()
    if name == GRID_NAME and version in (None, GRID_VERSION):
        return grid_intensities()
    from esg_workbench.workspace.schema import emission_factors as table

    with workspace.read() as conn:
        query = sa.select(table).where(table.c.organization_id == workspace.organization_id, table.c.factor_set == name)
        if version is None:
            newest = conn.execute(sa.select(sa.func.max(table.c.version)).where(
                table.c.organization_id == workspace.organization_id, table.c.factor_set == name)).scalar()
            if newest is None:
                raise NotFound(f"No factor set named '{name}' in this workspace.",
                               hint="Import it with: esg-workbench factors import FILE --name NAME")
            version = newest
        rows = conn.execute(query.where(table.c.version == version).order_by(table.c.id)).all()
    if not rows:
        raise NotFound(f"No factor set {name}@{version} in this workspace.")
    factors = [Factor(r.factor_id, r.scope, r.level1, r.level2, r.level3, r.level4, r.column_text, r.uom, r.gas,
                      r.value, r.region or "", r.valid_from or "", r.valid_to or "", r.basis or "", r.gwp or "",
                      r.source or "", r.licence or "") for r in rows]
    return FactorSet(name, version, factors, source=rows[0].source or "", sha256=rows[0].source_sha256 or "")


def load_library(workspace, name: str | None = None, version: str | None = None) -> FactorLibrary:
    """What a mapping's apply searches: its imported set first (if it names one), then the
    shipped sets."""
    chosen = load_factor_set(workspace, name, version)
    shipped = shipped_library().sets
    return FactorLibrary([chosen] + [s for s in shipped if s.label != chosen.label])


def factor_details(workspace, set_label: str | None, factor_id: str | None) -> dict[str, Any] | None:
    """Region, validity, basis, GWP set, source and licence of the factor a staging row
    records (set label 'NAME@VERSION' and id); None when the row has no factor or the set
    is gone. An energy row's id 'per-unit/per-kWh' names its per-unit factor."""
    if not set_label or not factor_id or "@" not in set_label:
        return None
    name, version = set_label.rsplit("@", 1)
    try:
        fs = load_factor_set(workspace, name, version)
    except NotFound:
        return None
    found = fs.by_id(factor_id) or fs.by_id(factor_id.split("/")[0])
    return found.details() if found else None


def selector_json(selector: dict[str, str]) -> str:
    return json.dumps(selector, sort_keys=True)


def check_unit(selector: dict[str, str], factor_set: FactorSet, activity_unit: str) -> Factor:
    f = factor_set.lookup(selector, activity_unit)
    if f is None:
        raise IncompatibleUnit(f"{factor_set.label} has no factor for {selector} per {activity_unit}.")
    return f
