"""Emission factor sets: the shipped UK DESNZ 2023 factors and imported sets.

A factor set is a list of factors, one per activity, unit and gas (CO2e, CO2, CH4, N2O),
in kg CO2e per unit of activity. An activity is chosen by a selector over the DESNZ
hierarchy (`level1`..`level4`, `column_text`) and the unit of the activity data picks the
factor row of the same dimension (litres -> the per-litre factor, kWh -> per kWh on the
chosen calorific basis, kg -> per tonne, ...).

Every emission result records the factor set, its version, the factor's id and value.
Imported sets (CSV or XLSX with the same columns, or the DESNZ flat-file layout) are
stored in the workspace table `emission_factors` and recorded in the audit chain.
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
from esg_workbench.mapping import units
from esg_workbench.mapping.errors import IncompatibleUnit, UnknownUnit
from esg_workbench.mapping.resources import resources_dir

BUILTIN_NAME = "DESNZ-2023"
BUILTIN_VERSION = "1.1"
BUILTIN_FILE = "factors/desnz-2023-conversion-factors.csv"
ATTRIBUTION = ("Contains public sector information licensed under the Open Government Licence v3.0 "
               "(UK DESNZ GHG Conversion Factors 2023).")
GASES = ("CO2e", "CO2", "CH4", "N2O")

#: DESNZ unit of measure -> pint unit text
UOM_UNITS = {
    "kilowatt hour": "kWh", "kwh": "kWh", "litre": "litre", "litres": "litre", "tonne": "tonne", "tonnes": "tonne",
    "cubic metre": "m**3", "cubic metres": "m**3", "kilometre": "km", "km": "km", "passenger.km": "km",
    "tonne.km": "tonne*km", "kilogram": "kg", "kg": "kg", "mile": "mile", "miles": "mile", "gigajoule": "GJ",
    "gj": "GJ", "million litres": "megalitre", "room per night": "dimensionless",
    "per fte working hour": "hour", "passenger.mile": "mile",
}


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
    region: str = ""
    valid_from: str = ""
    valid_to: str = ""

    @property
    def unit(self) -> str:
        """The pint unit of the activity the factor applies to."""
        return UOM_UNITS.get(self.uom.strip().lower(), self.uom.strip())

    def per(self, activity_unit: str) -> float:
        """t CO2e per one `activity_unit` of activity."""
        return self.value * units.factor(activity_unit, self.unit) / 1000.0

    def describe(self) -> str:
        path = " / ".join(x for x in (self.level1, self.level2, self.level3, self.level4, self.column_text) if x)
        return f"{path}: {self.value:g} kg CO2e{'' if self.gas == 'CO2e' else ' of ' + self.gas} per {self.uom.strip()}"


@dataclass
class FactorSet:
    name: str
    version: str
    factors: list[Factor]
    source: str = ""
    sha256: str = ""
    attribution: str = ""
    _index: dict[str, list[Factor]] = field(default_factory=dict, repr=False)

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"

    def _by_level3(self, level3: str) -> list[Factor]:
        if not self._index:
            for f in self.factors:
                self._index.setdefault(_norm(f.level3), []).append(f)
        return self._index.get(_norm(level3), [])

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

    def lookup(self, selector: dict[str, str], activity_unit: str, gas: str = "CO2e") -> Factor | None:
        """The factor for activity measured in `activity_unit`: same dimension, and for
        energy units the calorific basis of the selector (default Gross CV)."""
        candidates = [f for f in self.find(selector, gas) if _same_dimension(f.unit, activity_unit)]
        if len(candidates) > 1:
            basis = selector.get("basis", "Gross CV")
            narrowed = [f for f in candidates if _norm(f.column_text) == _norm(basis)]
            candidates = narrowed or candidates
        if len(candidates) > 1:  # prefer the factor stated in the activity's own unit
            same = [f for f in candidates if units.factor(activity_unit, f.unit) == 1.0]
            candidates = same or candidates
        return candidates[0] if candidates else None

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


def _norm(text: Any) -> str:
    return re.sub(r"\s+", " ", str(text or "")).strip().lower()


def _same_dimension(a: str, b: str) -> bool:
    try:
        return units.parse(a).dimensionality == units.parse(b).dimensionality
    except UnknownUnit:
        return False


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


def _rows_to_factors(rows: Iterable[dict[str, Any]], value_column: str) -> list[Factor]:
    out = []
    for r in rows:
        value = r.get(value_column)
        if value in (None, ""):
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        scope = str(r.get("Scope") or "").replace(" ", "")
        out.append(Factor(
            id=str(r.get("id_original") or r.get("ID") or r.get("id") or ""),
            scope=scope, level1=str(r.get("Level 1") or "").strip(), level2=str(r.get("Level 2") or "").strip(),
            level3=str(r.get("Level 3") or "").strip(), level4=str(r.get("Level 4") or "").strip(),
            column_text=str(r.get("Column Text") or "").strip(), uom=str(r.get("UOM") or "").strip(),
            gas=_gas_of(r), value=number, region=str(r.get("region") or "United Kingdom").strip(),
            valid_from=str(r.get("valid_from") or ""), valid_to=str(r.get("valid_to") or ""),
        ))
    return out


def read_factor_file(path: Path | str, name: str | None = None, version: str | None = None) -> FactorSet:
    """A factor set from a CSV or XLSX file with DESNZ columns."""
    path = Path(path)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        rows, value_column = _read_xlsx(data)
    elif path.suffix.lower() in (".csv", ".txt"):
        text = data.decode("utf-8-sig")
        reader = csv.DictReader(io.StringIO(text))
        value_column = _factor_column(reader.fieldnames or [])
        rows = list(reader)
    else:
        raise ConfigError(f"{path.name} is not a CSV or XLSX file.", hint="Import a .csv or .xlsx factor file.")
    if value_column is None:
        raise ConfigError(f"{path.name} has no 'GHG Conversion Factor' column.",
                          hint="Use the DESNZ columns: Scope, Level 1..4, Column Text, UOM, GHG/Unit, GHG Conversion Factor YYYY.")
    factors = _rows_to_factors(rows, value_column)
    if not factors:
        raise ConfigError(f"{path.name} holds no factors.")
    year = re.search(r"(\d{4})", value_column)
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
    """The shipped UK DESNZ 2023 factors."""
    fs = read_factor_file(resources_dir() / BUILTIN_FILE, BUILTIN_NAME, BUILTIN_VERSION)
    fs.attribution = ATTRIBUTION
    fs.source = "UK DESNZ GHG Conversion Factors for Company Reporting 2023 (flat file v1.1)"
    return fs


# --- imported sets in the workspace ------------------------------------------------------------

def import_factor_set(workspace, path: Path | str, *, name: str | None = None, version: str | None = None,
                      actor: str | None = None) -> FactorSet:
    """Store a factor file's factors in the workspace (replacing a set of the same name and
    version) with an audit entry."""
    from esg_workbench.audit import chain
    from esg_workbench.workspace import concurrency
    from esg_workbench.workspace.database import utcnow
    from esg_workbench.workspace.schema import emission_factors as table

    fs = read_factor_file(path, name, version)
    if fs.name == BUILTIN_NAME and fs.version == BUILTIN_VERSION:
        raise ConfigError(f"{BUILTIN_NAME}@{BUILTIN_VERSION} is shipped with the app; give the import another name or version.")
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
            valid_from=f.valid_from, valid_to=f.valid_to, source=fs.source, source_sha256=fs.sha256,
            imported_at=now) for f in fs.factors])
        chain.append(workspace, conn, "factors.import", input_hash=fs.sha256, actor=actor, metadata={
            "factor_set": fs.name, "version": fs.version, "factors": len(fs.factors), "file": fs.source})
    return fs


def list_factor_sets(workspace) -> list[dict[str, Any]]:
    from esg_workbench.workspace.schema import emission_factors as table

    out = [{"name": BUILTIN_NAME, "version": BUILTIN_VERSION, "factors": len(builtin().factors), "builtin": True}]
    with workspace.read() as conn:
        rows = conn.execute(sa.select(table.c.factor_set, table.c.version, sa.func.count())
                            .where(table.c.organization_id == workspace.organization_id)
                            .group_by(table.c.factor_set, table.c.version).order_by(table.c.factor_set, table.c.version))
        out += [{"name": r[0], "version": r[1], "factors": r[2], "builtin": False} for r in rows]
    return out


def load_factor_set(workspace, name: str | None = None, version: str | None = None) -> FactorSet:
    """The named set (the newest version unless one is given); the shipped set by default."""
    if not name or (name == BUILTIN_NAME and version in (None, BUILTIN_VERSION)):
        return builtin()
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
                      r.value, r.region, r.valid_from, r.valid_to) for r in rows]
    return FactorSet(name, version, factors, source=rows[0].source or "", sha256=rows[0].source_sha256 or "")


def selector_json(selector: dict[str, str]) -> str:
    return json.dumps(selector, sort_keys=True)


def check_unit(selector: dict[str, str], factor_set: FactorSet, activity_unit: str) -> Factor:
    f = factor_set.lookup(selector, activity_unit)
    if f is None:
        raise IncompatibleUnit(f"{factor_set.label} has no factor for {selector} per {activity_unit}.")
    return f
