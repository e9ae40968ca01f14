"""The ESG catalog: entities and fields an analyst maps onto, and the KPIs computed.

Loaded from `resources/catalog/esg_catalog.json` (versioned: the version is recorded on
every mapping and KPI value). Field roles say what a field becomes in a staging row:

* `date`, `period`, `site`            the record's when and where;
* `measure`                           one staging row per mapped measure (a number with a
                                      dimension and the unit it is normalized to);
* `unit`                              the unit of a measure, when it comes from a column;
* `category`, `subcategory`           the classification KPIs select on (fuel type,
                                      waste material, treatment route, instrument);
* `market_factor`                     a supplier-specific factor (market-based Scope 2);
* `attribute`                         kept for drill-down (supplier, meter, contractor);
* `country`, `subdivision`            where a site is (entity `site`, kind `site_registry`:
                                      applying it fills the workspace's site locations,
                                      not staging rows).

KPI rules: `sum` (a flow, summed over the period), `stock` (a point-in-time value: the
period's end), `ratio` (recomputed from the summed numerator and denominator, never an
average of ratios), `linear` (a signed sum of other KPIs).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esg_workbench.core.errors import ConfigError
from esg_workbench.mapping.resources import resources_dir

CATALOG_FILE = "catalog/esg_catalog.json"
RULES = ("sum", "stock", "ratio", "linear", "gas_mass")
ROLES = ("date", "period", "site", "measure", "unit", "category", "subcategory", "market_factor", "attribute", "country",
         "subdivision")
#: what applying an entity writes: staging rows, or the workspace's site locations
KINDS = ("records", "site_registry")
#: staging fields an entity derives (not mapped by hand)
EMISSION_FIELDS = {"CO2e": "ghg_co2e", "CO2": "ghg_co2", "CH4": "ghg_ch4", "N2O": "ghg_n2o"}


@dataclass(frozen=True)
class FieldDef:
    name: str
    label: str
    type: str  # number | text | date | boolean
    role: str
    required: bool = False
    dimension: str | None = None  # for measures: energy, volume, mass, length, time, count, ...
    dimensions: tuple[str, ...] = ()  # a measure that may come in several (fuel: volume, mass, energy)
    unit: str | None = None  # the unit a measure is normalized to
    units: dict[str, str] = field(default_factory=dict)  # per dimension, for multi-dimension measures
    unit_of: tuple[str, ...] = ()  # for unit fields: the measures they give the unit of
    vocabulary: str | None = None
    stock: bool = False
    synonyms: tuple[str, ...] = ()
    description: str = ""

    @property
    def allowed_dimensions(self) -> tuple[str, ...]:
        return self.dimensions or ((self.dimension,) if self.dimension else ())

    def unit_for_dimension(self, dimension: str) -> str | None:
        return self.units.get(dimension) or (self.unit if dimension in self.allowed_dimensions else None)

    def to_json(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class EntityDef:
    name: str
    label: str
    description: str
    fields: tuple[FieldDef, ...]
    category: dict[str, Any] = field(default_factory=dict)  # {"field": f} or {"constant": c}; + vocabulary
    subcategory: dict[str, Any] = field(default_factory=dict)
    emissions: tuple[dict[str, Any], ...] = ()
    derive: tuple[dict[str, Any], ...] = ()
    kind: str = "records"

    def field(self, name: str) -> FieldDef | None:
        return next((f for f in self.fields if f.name == name), None)

    def by_role(self, role: str) -> list[FieldDef]:
        return [f for f in self.fields if f.role == role]

    @property
    def measures(self) -> list[FieldDef]:
        return self.by_role("measure")

    @property
    def required_fields(self) -> list[FieldDef]:
        return [f for f in self.fields if f.required]

    def unit_field_for(self, measure: str) -> FieldDef | None:
        return next((f for f in self.by_role("unit") if measure in f.unit_of), None)

    def staging_fields(self) -> list[str]:
        """Every staging `field` value this entity can produce."""
        names = [f.name for f in self.measures] + [d["field"] for d in self.derive]
        for e in self.emissions:
            names += [EMISSION_FIELDS[g] for g in e.get("gases", ["CO2e"])]
        return list(dict.fromkeys(names))


@dataclass(frozen=True)
class KpiDef:
    id: str
    label: str
    unit: str
    rule: str
    topic: str = ""
    select: dict[str, Any] = field(default_factory=dict)
    numerator: str | None = None
    denominator: str | None = None
    multiplier: float = 1.0
    terms: dict[str, float] = field(default_factory=dict)
    standards: dict[str, str] = field(default_factory=dict)
    description: str = ""
    of: str | None = None  # gas_mass: the per-gas CO2e KPI it is the mass of (mapping/gases.py)
    gas: str | None = None  # gas_mass: CO2 | CH4 | N2O

    @property
    def is_base(self) -> bool:
        """Computed from staging rows (sum, stock), not from other KPIs."""
        return self.rule in ("sum", "stock")

    @property
    def parts(self) -> list[str]:
        if self.rule == "ratio":
            return [self.numerator, self.denominator]
        if self.rule == "linear":
            return list(self.terms)
        if self.rule == "gas_mass":
            return [self.of]
        return []

    def standard_ids(self) -> str:
        return "; ".join(f"{k} {v}" for k, v in self.standards.items())

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Catalog:
    version: str
    entities: dict[str, EntityDef]
    kpis: dict[str, KpiDef]
    vocabularies: dict[str, dict[str, dict[str, Any]]]
    description: str = ""
    sha256: str = ""

    def entity(self, name: str) -> EntityDef | None:
        return self.entities.get(name)

    def kpi(self, kpi_id: str) -> KpiDef | None:
        return self.kpis.get(kpi_id)

    def vocabulary(self, name: str | None) -> dict[str, dict[str, Any]]:
        return self.vocabularies.get(name or "", {})

    def kpis_in_order(self) -> list[KpiDef]:
        """Base KPIs first, then each derived one after its parts."""
        done: dict[str, KpiDef] = {}

        def visit(k: KpiDef, seen: tuple[str, ...] = ()):
            if k.id in done:
                return
            if k.id in seen:
                raise ConfigError(f"The KPI catalog has a cycle through {k.id}.")
            for p in k.parts:
                visit(self.kpis[p], seen + (k.id,))
            done[k.id] = k

        for k in sorted(self.kpis.values(), key=lambda k: not k.is_base):
            visit(k)
        return list(done.values())


def _field(data: dict[str, Any]) -> FieldDef:
    unit_of = data.get("unit_of") or ()
    return FieldDef(
        name=data["name"], label=data.get("label", data["name"]), type=data.get("type", "text"),
        role=data.get("role", "attribute"), required=bool(data.get("required")), dimension=data.get("dimension"),
        dimensions=tuple(data.get("dimensions", ())), unit=data.get("unit"), units=dict(data.get("units", {})),
        unit_of=(unit_of,) if isinstance(unit_of, str) else tuple(unit_of), vocabulary=data.get("vocabulary"),
        stock=bool(data.get("stock")), synonyms=tuple(data.get("synonyms", ())), description=data.get("description", ""),
    )


def parse_catalog(data: dict[str, Any], sha256: str = "") -> Catalog:
    entities = {}
    for e in data["entities"]:
        fields = tuple(_field(f) for f in e["fields"])
        for f in fields:
            if f.role not in ROLES:
                raise ConfigError(f"Catalog field {e['name']}.{f.name} has an unknown role '{f.role}'.")
        entities[e["name"]] = EntityDef(
            name=e["name"], label=e.get("label", e["name"]), description=e.get("description", ""), fields=fields,
            category=dict(e.get("category", {})), subcategory=dict(e.get("subcategory", {})),
            emissions=tuple(e.get("emissions", ())), derive=tuple(e.get("derive", ())), kind=e.get("kind", "records"))
        if entities[e["name"]].kind not in KINDS:
            raise ConfigError(f"Catalog entity {e['name']} has an unknown kind '{entities[e['name']].kind}'.")
    kpis = {}
    for k in data["kpis"]:
        if k["rule"] not in RULES:
            raise ConfigError(f"KPI {k['id']} has an unknown rule '{k['rule']}'.")
        kpis[k["id"]] = KpiDef(
            id=k["id"], label=k.get("label", k["id"]), unit=k["unit"], rule=k["rule"], topic=k.get("topic", ""),
            select=dict(k.get("select", {})), numerator=k.get("numerator"), denominator=k.get("denominator"),
            multiplier=float(k.get("multiplier", 1)), terms={a: float(b) for a, b in k.get("terms", {}).items()},
            standards=dict(k.get("standards", {})), description=k.get("description", ""),
            of=k.get("of"), gas=k.get("gas"))
    catalog = Catalog(str(data["version"]), entities, kpis, data.get("vocabularies", {}),
                      data.get("description", ""), sha256)
    for k in kpis.values():
        for p in k.parts:
            if p not in kpis:
                raise ConfigError(f"KPI {k.id} is computed from {p}, which the catalog does not define.")
        if k.rule == "gas_mass" and k.gas not in ("CO2", "CH4", "N2O"):
            raise ConfigError(f"KPI {k.id} is the mass of '{k.gas}': name a gas (CO2, CH4 or N2O).")
    catalog.kpis_in_order()
    return catalog


def load_catalog(path: Path | str | None = None) -> Catalog:
    """The catalog from `path`, or the shipped one (cached)."""
    if path is None:
        return _shipped()
    raw = Path(path).read_bytes()
    return parse_catalog(json.loads(raw), hashlib.sha256(raw).hexdigest())


@functools.lru_cache(maxsize=1)
def _shipped() -> Catalog:
    raw = (resources_dir() / CATALOG_FILE).read_bytes()
    return parse_catalog(json.loads(raw), hashlib.sha256(raw).hexdigest())
