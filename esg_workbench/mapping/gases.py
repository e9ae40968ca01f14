"""Per-gas emissions and the GWP set they are stated in, so a report can be re-based.

* Apply (apply.py, "emissions per gas") writes, for every activity whose factor set gives
  them, a staging row per gas: `ghg_co2`, `ghg_ch4`, `ghg_n2o` in t CO2e by the factor
  set's GWP set (DESNZ 2023: IPCC AR5, 100-year), besides the `ghg_co2e` total.
* Every emission KPI value states its GWP set as the tag `gwp:<set>` among its flags
  (`gwp:AR5`; `gwp:not stated` where a factor's source does not say, e.g. the lifecycle
  grid intensities). A tag states, it does not doubt: the app does not tint a value for
  it (flags.is_statement). Totals and roll-ups carry their parts' tags, so a total mixing
  sets shows both.
* A `gas_mass` KPI (e.g. `ghg_scope1_ch4_mass`, t CH4) is the mass of the gas: the per-gas
  CO2e value divided by the gas's GWP in the value's one GWP set (AR5: CO2 1, CH4 28,
  N2O 265). Where the set is not stated, or the value mixes sets, the mass is left empty
  and flagged `gwp_unknown`: a mass is never computed with a guessed GWP.
* Re-basing to AR6 is then mass x the AR6 GWP (README, Methodology).
"""

from __future__ import annotations

from typing import Any

from esg_workbench.mapping.catalog import EMISSION_FIELDS

#: 100-year global warming potentials by IPCC assessment report (AR4 WG1 Table 2.14, AR5
#: WG1 Table 8.7, AR6 WG1 Table 7.15; AR6 CH4 is the non-fossil value, fossil CH4 is 29.8)
GWP = {
    "AR4": {"CO2": 1.0, "CH4": 25.0, "N2O": 298.0},
    "AR5": {"CO2": 1.0, "CH4": 28.0, "N2O": 265.0},
    "AR6": {"CO2": 1.0, "CH4": 27.0, "N2O": 273.0},
}
NOT_STATED = "not stated"
TAG = "gwp:"
MASS_RULE = "gas_mass"
_GHG_FIELDS = set(EMISSION_FIELDS.values())


def tag(gwp_set: str | None) -> str:
    return TAG + (gwp_set.strip() if gwp_set and gwp_set.strip() else NOT_STATED)


def sets_of(quality: list[str]) -> list[str]:
    """The GWP sets a value's tags name."""
    return sorted(f[len(TAG):] for f in quality if f.startswith(TAG))


def states_gwp(kpi) -> bool:
    """Whether the values of `kpi` state their GWP sets: base KPIs of emissions."""
    fields = kpi.select.get("field")
    fields = fields if isinstance(fields, (list, tuple)) else [fields]
    return kpi.is_base and any(f in _GHG_FIELDS for f in fields)


class _GwpOf:
    """The GWP set of a factor a staging row names (set label, factor id), read once per set."""

    def __init__(self, workspace):
        self.workspace = workspace
        self.sets: dict[str, Any] = {}

    def __call__(self, set_label: str | None, factor_id: str | None) -> str:
        from esg_workbench.core.errors import NotFound
        from esg_workbench.mapping import factors

        if not set_label or not factor_id or "@" not in set_label:
            return NOT_STATED  # a supplier's own rate: the row states no GWP
        if set_label not in self.sets:
            name, version = set_label.rsplit("@", 1)
            try:
                self.sets[set_label] = factors.load_factor_set(self.workspace, name, version)
            except NotFound:
                self.sets[set_label] = None
        fs = self.sets[set_label]
        found = fs and (fs.by_id(factor_id) or fs.by_id(factor_id.split("/")[0]))
        return (found.gwp or NOT_STATED) if found else NOT_STATED


def tag_gwp_sets(workspace, kpis, factors: dict[tuple, list[tuple]], cells: dict) -> int:
    """Tag every site-month value of an emission KPI of `kpis` with the GWP sets of the
    factors of the staging rows behind it (before totals and roll-ups, which carry the tags
    up). `factors`: per value's key, the (factor set, factor id) pairs of its rows, in
    order (aggregate._cells_of). Returns how many values were tagged."""
    gwp_of = _GwpOf(workspace)
    tags: dict[tuple, str] = {}  # per (factor set, factor id): thousands of values share a few factors
    tagged = 0
    emission = [kpi for kpi in kpis if states_gwp(kpi)]
    ids = {kpi.id for kpi in emission}
    for key, pairs in factors.items():
        cell = cells.get(key) if key[0] in ids else None
        for pair in pairs if cell is not None else []:
            found = tags.get(pair)
            if found is None:
                found = tags[pair] = tag(gwp_of(*pair))
            before = len(cell.quality)
            cell.flag(found)
            tagged += len(cell.quality) > before
    # an estimated month (gaps.py) has no rows: it is stated in the sets of the values it
    # was estimated from (found in one pass over the values, not one per KPI)
    estimated: dict[str, list] = {}
    for c in cells.values():
        if c.kpi in ids and c.parts and "estimated" in c.quality:
            estimated.setdefault(c.kpi, []).append(c)
    for kpi in emission:
        for cell in estimated.get(kpi.id, []):
            for key in cell.parts:
                part = cells.get(key)
                for f in (part.quality if part is not None and part.kpi == kpi.id else []):
                    if f.startswith(TAG) and f not in cell.quality:
                        cell.flag(f)
                        tagged += 1
    return tagged


def derive_mass(cells: dict, kpi, keys_of: dict[str, dict] | None = None) -> None:
    """The `gas_mass` KPI's value for every value of its per-gas CO2e KPI (`of`): t of the
    gas = t CO2e / GWP of the gas in the value's one GWP set. `keys_of`: the keys of each
    KPI's values in the order of `cells` (aggregate._keys_by_kpi, which it updates)."""
    from esg_workbench.mapping.aggregate import Cell

    if keys_of is None:
        sources = [c for c in cells.values() if c.kpi == kpi.of]
    else:
        sources = [cells[key] for key in keys_of.get(kpi.of, ())]
    made = keys_of.setdefault(kpi.id, {}) if keys_of is not None else {}
    for source in sources:
        sets = sets_of(source.quality)
        cell = Cell(kpi.id, source.site, source.period, source.period_type, None, kpi.unit, kpi.rule,
                    parts=[source.key])
        known = [s for s in sets if s in GWP]
        if source.value is not None and len(sets) == 1 and known:
            cell.value = source.value / GWP[known[0]][kpi.gas]
        elif source.value is not None:
            cell.quality.append("gwp_unknown")  # no GWP stated, or several: a mass is never guessed
        # the source's flags, each once, after gwp_unknown (what cell.flag() for each does)
        cell.quality = list(dict.fromkeys([*cell.quality, *source.quality]))
        cells[cell.key] = cell
        made[cell.key] = None
