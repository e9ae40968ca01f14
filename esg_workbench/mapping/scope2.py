"""Market-based Scope 2 after the GHG Protocol's Scope 2 hierarchy: contractual
instruments allocated to consumption.

Apply (apply.py) gives every purchased-electricity row its market-based rate: the
supplier's own rate where the row carries one, else an imported rate of the row's supplier
(matched on its name), else the residual mix of the site's region where one is imported,
else the location factor (flagged `market_uses_location_factor`).
What instruments cover is settled here, when the KPIs are computed, because it depends on
all the consumption of a site over the instrument's period:

* An instrument (entity `contractual_instrument`: type, MWh covered, site, period,
  tracking id, evidence, emission factor, 0 for renewables) covers the site's purchased
  electricity in the months its period overlaps, pro rata to each month's consumption:
  month share = MWh covered x consumption of the month / consumption of all its months.
* Per site and month the covered energy is at most the consumption; what instruments hold
  beyond it is not carried elsewhere (flag `instrument_surplus`).
* Market-based emissions of the month = (emissions of the other Scope 2 rows, e.g. heat)
  + electricity emissions at the rows' rates x (1 - covered / consumption)
  + covered MWh x the instruments' factors; never below zero (a negative correction
  cannot turn a month's emissions negative; flag `clamped_at_zero`).
* Renewable energy (E1-5) counts covered MWh of renewable instruments (and self-generated
  renewable energy, mapped as such): never the supplier's general mix.

The instrument rows are linked to every value they change (kpi_lineage), and their
content enters the values' result hashes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from esg_workbench.mapping import periods

INSTRUMENT_ENTITY = "contractual_instrument"
CONSUMPTION_KPI = "energy_electricity"
MARKET_KPI = "ghg_scope2_market"
RENEWABLE_KPI = "energy_renewable"


@dataclass
class Instrument:
    key: tuple[str, str, str]  # mapping, source table, source key
    site: str | None = None
    start: str | None = None  # YYYY-MM-DD
    end: str | None = None
    mwh: float | None = None
    kg_per_kwh: float = 0.0
    kind: str | None = None
    row_ids: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    tracking_id: str | None = None
    evidence: str | None = None
    origin: str = "mapped"  # mapped | entered (by hand: mapping/instruments.py)
    entered_id: int | None = None

    def months(self) -> list[str]:
        """The reporting months the instrument's period overlaps."""
        if not self.start or not self.end or self.end < self.start:
            return []
        return periods.month_range(self.start[:7], self.end[:7])


def _day(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()[:10]
    text = str(value).strip()[:10]
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return None
    return text


def load_instruments(conn, d, workspace) -> list[Instrument]:
    """The instruments of the organization, from their staging rows."""
    from esg_workbench.mapping.aggregate import source_text  # one spelling of numbers on every backend

    org = d.literal(workspace.organization_id)
    rows = conn.exec_driver_sql(
        f"SELECT s.id, s.mapping_name, s.source_table, s.source_key, s.site, s.activity_date, s.attributes, "
        f"s.category, s.field, s.normalized_value, concat_ws('|', s.source_table, s.source_key, s.field, "
        f"{source_text(d, 's.value')}, coalesce(s.unit, ''), coalesce(s.category, ''), coalesce(s.attributes, '')) "
        f"FROM staging_rows s WHERE s.organization_id = {org} AND s.entity = {d.literal(INSTRUMENT_ENTITY)} "
        f"ORDER BY s.source_table, s.source_key, s.field, s.id").all()
    found: dict[tuple, Instrument] = {}
    for row_id, mapping, table, key, site, start, attributes, kind, name, value, text in rows:
        inst = found.setdefault((mapping, table, key), Instrument((mapping, table, key)))
        inst.row_ids.append(int(row_id))
        inst.texts.append(text)
        inst.site, inst.start, inst.kind = site, _day(start), kind
        try:
            attrs = json.loads(attributes) if attributes else {}
        except ValueError:
            attrs = {}
        inst.end = _day(attrs.get("period_to"))
        inst.tracking_id = attrs.get("tracking_id") or inst.tracking_id
        inst.evidence = attrs.get("evidence") or inst.evidence
        if name == "covered_energy":
            inst.mwh = value
        elif name == "emission_factor" and value is not None:
            inst.kg_per_kwh = float(value)
    from esg_workbench.mapping.instruments import entered

    return list(found.values()) + entered(conn, workspace)


def _market_electricity(conn, d, workspace) -> dict[tuple[str, str], tuple[float, int]]:
    """Per site and month: the market-based emissions of electricity rows at their rates
    (t CO2e), and how many market-based rows of other entities (heat) there are."""
    org = d.literal(workspace.organization_id)
    out = {}
    for site, period, elec, others in conn.exec_driver_sql(
            f"SELECT site, period, sum(CASE WHEN entity = 'purchased_electricity' THEN normalized_value END "
            f"ORDER BY normalized_value), count(*) FILTER (WHERE entity <> 'purchased_electricity') "
            f"FROM staging_rows WHERE organization_id = {org} AND field = 'ghg_co2e' AND scope = 'scope2' "
            f"AND method = 'market' GROUP BY site, period ORDER BY site, period").all():
        out[(site, period)] = (elec, others)
    return out


def allocate_instruments(conn, d, workspace, cells: dict, catalog) -> list[tuple[tuple, int]]:
    """Apply the instruments to the month-and-site values of market-based Scope 2 and
    renewable energy (cells from aggregate.py), and keep every market-based value at or
    above zero. Returns extra lineage: (cell key, staging row id) for every instrument row
    behind a changed value."""
    if catalog.kpi(MARKET_KPI) is None:
        return []
    lineage = _apply_instruments(conn, d, workspace, cells, catalog)
    for cell in cells.values():  # with or without instruments: never below zero
        if cell.kpi == MARKET_KPI and cell.value is not None and cell.value < 0:
            cell.value = 0.0
            cell.flag("clamped_at_zero")
    return lineage


@dataclass
class Allocation:
    """Instruments spread over a site's months: `parts[(site, month)]` is each instrument's
    MWh that month after the cut to the month's consumption; `used[key]` the MWh of an
    instrument allocated in all, `offered[(site, month)]` what the instruments held."""
    parts: dict[tuple[str, str], list[tuple[Instrument, float]]] = field(default_factory=dict)
    offered: dict[tuple[str, str], float] = field(default_factory=dict)
    used: dict[tuple, float] = field(default_factory=dict)


def allocate(instruments: list[Instrument], consumption: dict[tuple[str, str], float | None]) -> Allocation:
    """The allocation rule (module docstring), apart from any database: each instrument's MWh
    pro rata to the site's consumption in the months of its period; per month at most the
    consumption, every instrument of the month cut by the same ratio. What is left over is
    unused: never carried to other months or periods."""
    out = Allocation()
    offers: dict[tuple[str, str], list[tuple[Instrument, float]]] = {}
    for inst in instruments:
        out.used.setdefault(inst.key, 0.0)
        if not inst.site or inst.mwh is None:
            continue
        months = [m for m in inst.months() if (consumption.get((inst.site, m)) or 0) > 0]
        total = sum(consumption[(inst.site, m)] for m in months)
        if total <= 0 or inst.mwh <= 0:
            continue  # nothing to cover in its period: the instrument is not allocated
        for m in months:
            offers.setdefault((inst.site, m), []).append((inst, inst.mwh * consumption[(inst.site, m)] / total))
    for key, parts in offers.items():
        offered = sum(mwh for _, mwh in parts)
        scale = min(consumption[key], offered) / offered if offered else 0.0
        out.offered[key] = offered
        out.parts[key] = [(inst, mwh * scale) for inst, mwh in parts]
        for inst, mwh in out.parts[key]:
            out.used[inst.key] += mwh
    return out


def _apply_instruments(conn, d, workspace, cells: dict, catalog) -> list[tuple[tuple, int]]:
    from esg_workbench.mapping.aggregate import Cell

    instruments = [i for i in load_instruments(conn, d, workspace) if i.site and i.mwh is not None]
    if not instruments:
        return []
    renewable_kinds = {k for k, v in catalog.vocabulary("instrument").items() if v.get("renewable")}
    consumption = {(c.site, c.period): c.value for c in cells.values()
                   if c.kpi == CONSUMPTION_KPI and c.site is not None and c.period_type == "month"}
    allocation = allocate(instruments, consumption)
    rates = _market_electricity(conn, d, workspace)
    lineage: list[tuple[tuple, int]] = []
    for (site, month), parts in sorted(allocation.parts.items(), key=lambda kv: kv[0]):
        used = consumption[(site, month)]
        offered = allocation.offered[(site, month)]
        covered = min(used, offered)
        fraction = covered / used
        inst_t = sum(mwh * inst.kg_per_kwh for inst, mwh in parts)  # MWh x kg/kWh = t
        renewable = sum(mwh for inst, mwh in parts if inst.kind in renewable_kinds)
        row_ids = sorted({r for inst, _ in parts for r in inst.row_ids})
        texts = sorted(t for inst, _ in parts for t in inst.texts)
        market = cells.get((MARKET_KPI, site, month))
        if market is not None:
            elec, others = rates.get((site, month), (None, 0))
            other_t = (market.value or 0.0) - (elec or 0.0)
            if market.value is None and fraction < 1.0:
                value = None  # the uncovered part has no rate: stays unknown (flagged no_factor)
            else:
                value = other_t + (elec or 0.0) * (1.0 - fraction) + inst_t
            market.value = value
            if fraction >= 1.0 and not others:
                # every kWh is covered by instruments: no row's fallback rate is in the value
                market.quality = [f for f in market.quality if f not in
                                  ("market_uses_location_factor", "no_factor", "factor_vintage", "lifecycle_factor",
                                   "factor_other_region")]
            _extend(market, row_ids, texts)
            lineage += [(market.key, r) for r in row_ids]
        if offered > used:
            if market is not None:
                market.flag("instrument_surplus")
        if renewable > 0 and catalog.kpi(RENEWABLE_KPI) is not None:
            key = (RENEWABLE_KPI, site, month)
            cell = cells.get(key)
            if cell is None:
                kpi = catalog.kpi(RENEWABLE_KPI)
                cell = Cell(kpi.id, site, month, "month", 0.0, kpi.unit, kpi.rule)
                cells[key] = cell
            cell.value = (cell.value or 0.0) + renewable
            _extend(cell, row_ids, texts)
            lineage += [(key, r) for r in row_ids]
    return lineage


def _extend(cell, row_ids: list[int], texts: list[str]) -> None:
    """The instrument rows join the value's inputs: its row count and its input hash."""
    cell.input_rows += len(row_ids)
    cell.inputs = hashlib.sha256(("|".join([cell.inputs or ""] + texts)).encode()).hexdigest()
