"""Completeness per site, month and input, and the estimation of gaps.

* An input is one source table's rows feeding a KPI at a site (electricity readings, gas
  readings, ...). An input that reports in at least three quarters of the months between
  its first and last month is a monthly series; each month of that span it lacks is a gap:
  the site's value of that month is flagged `gap`, even when another input (gas) has data
  for it. A sporadic input (fuel bought now and then) has no gaps.
* Estimation, by the method the analyst chooses for the organization (stored in
  `methodology_settings`, key `gap_estimate`; none by default). A gap of one input in a
  month that other inputs make (gas read, the electricity meter missing) gets that input
  estimated from the input's own months and added to the value (flag_input_gaps). A
  site-month value that is missing altogether gets an estimate from the site's own
  measured values of the same KPI:
  - `previous_year`: the same month of the previous year;
  - `neighbours`: the mean of the months before and after;
  - `per_headcount`: the site's KPI per employee (sum over the months with both measured)
    times the month's headcount.
  An estimated value is flagged `estimated` and `estimate:<method>`, names the values it
  was computed from (its parts), and the totals and roll-ups that include it carry the
  flags: it never looks measured. Stocks and ratios are not estimated.
"""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa

from esg_workbench.core.errors import ConfigError
from esg_workbench.mapping import periods

METHODS = ("previous_year", "neighbours", "per_headcount")
SETTING = "gap_estimate"
MONTHLY_SHARE = 0.75
MIN_SPAN = 3
HEADCOUNT_KPI = "headcount"


def set_estimate_method(workspace, method: str | None, *, actor: str | None = None) -> None:
    """Choose how the KPIs' gaps are estimated from the next recompute on (None: not at all)."""
    from esg_workbench.audit import chain
    from esg_workbench.workspace.database import utcnow
    from esg_workbench.workspace.schema import methodology_settings as table

    if method is not None and method not in METHODS:
        raise ConfigError(f"'{method}' is not a way to estimate gaps.", hint=f"Choose one of: {', '.join(METHODS)}.")
    org = workspace.organization_id
    with workspace.transaction() as conn:
        conn.execute(sa.delete(table).where(table.c.organization_id == org, table.c.key == SETTING))
        if method is not None:
            conn.execute(sa.insert(table).values(organization_id=org, key=SETTING, value=method, set_by=actor,
                                                 updated_at=utcnow()))
        chain.append(workspace, conn, "kpi.gap_estimate", actor=actor, metadata={"method": method})


def estimate_method(workspace, conn=None) -> str | None:
    from esg_workbench.workspace.schema import methodology_settings as table

    query = sa.select(table.c.value).where(table.c.organization_id == workspace.organization_id,
                                           table.c.key == SETTING)
    if conn is not None:
        return conn.execute(query).scalar()
    with workspace.read() as c:
        return c.execute(query).scalar()


def flag_input_gaps(sums: list[tuple], cells: dict, kpi, estimate: str | None = None) -> int:
    """Flag `gap` on the site-month values of `kpi` where a monthly input of the site has no
    rows. `sums`: (site, source table, month, sum of the rows in the KPI's unit) of the
    KPI's input rows (aggregate._cells_of). With `estimate` (a method of METHODS), a
    value that other inputs of the month make (gas read, electricity missing) gets the
    missing input estimated from that input's own months and added, flagged `estimated`
    and `estimate:<method>`. Returns the number of (site, month, input) gaps."""
    found: dict[tuple[str, str], dict[str, float | None]] = {}
    for site, table, period, total in sums:
        if periods.is_month(period):
            found.setdefault((site, table), {})[period] = total
    gaps = 0
    for (site, table), series in sorted(found.items()):
        months = set(series)
        span = _month_range(min(months), max(months))
        if len(span) < MIN_SPAN or len(months) < MONTHLY_SHARE * len(span):
            continue
        for month in span:
            if month in months:
                continue
            gaps += 1
            cell = cells.get((kpi.id, site, month))
            if cell is None:
                continue
            cell.flag("gap")
            if estimate in METHODS and kpi.rule == "sum" and cell.value is not None:
                _add_input_estimate(cell, cells, series, table, month, estimate)
    return gaps


@functools.lru_cache(maxsize=4096)
def _month_range(first: str, last: str) -> tuple[str, ...]:
    """periods.month_range, worked out once for the many sites and inputs that span the same months."""
    return tuple(periods.month_range(first, last))


def _add_input_estimate(cell, cells: dict, series: dict[str, float | None], table: str, month: str,
                        method: str) -> None:
    """The missing input's value of `month` by `method`, from its own measured months,
    added to the value the other inputs make. The estimate enters the value's input hash
    (the staging rows behind the value stay its lineage; the estimate is no row)."""
    import hashlib

    def known(m: str) -> float | None:
        return series.get(m)

    value = None
    if method == "previous_year":
        value = known(_shift(month, -12))
    elif method == "neighbours":
        before, after = known(_shift(month, -1)), known(_shift(month, 1))
        value = (before + after) / 2.0 if before is not None and after is not None else None
    else:  # per_headcount: the input's own intensity over months with both measured
        people = cells.get((HEADCOUNT_KPI, cell.site, month))
        pairs = [(v, cells.get((HEADCOUNT_KPI, cell.site, m))) for m, v in sorted(series.items()) if v is not None]
        pairs = [(v, h.value) for v, h in pairs if _measured(h) and h.value]
        if _measured(people) and pairs:
            value = sum(v for v, _ in pairs) / sum(h for _, h in pairs) * people.value
    if value is None:
        return
    cell.value += value
    cell.flag("estimated", f"estimate:{method}")
    cell.inputs = hashlib.sha256(f"{cell.inputs or ''}|estimate:{method}:{table}:{value!r}".encode()).hexdigest()


def _shift(month: str, by: int) -> str:
    year, number = int(month[:4]), int(month[5:7]) - 1 + by
    year += number // 12
    return f"{year:04d}-{number % 12 + 1:02d}"


def _measured(cell) -> bool:
    return cell is not None and cell.value is not None and "estimated" not in cell.quality


def estimate(cells: dict, kpi, method: str, mine: list | None = None) -> int:
    """Fill the missing site-month values of a `sum` KPI by `method`. Returns how many.
    `mine`: the KPI's values with a site, in the order of `cells` (found here when not given)."""
    if kpi.rule != "sum" or method not in METHODS:
        return 0
    if mine is None:
        mine = [c for c in cells.values() if c.kpi == kpi.id and c.site is not None]
    months = [c for c in mine if c.site is not None and c.period_type == "month"]
    # the measured months of each site, taken before any is estimated: an estimate is not
    # measured, and neither was the empty value it fills
    measured: dict[str, list] = {}
    for c in months:
        if _measured(c):
            measured.setdefault(c.site, []).append(c)
    done = 0
    targets = sorted((c for c in months if c.value is None), key=lambda c: (c.site, c.period))
    for cell in targets:
        parts = _sources(cells, kpi.id, cell.site, cell.period, method, measured.get(cell.site, []))
        if not parts:
            continue
        value, keys = parts
        cell.value = value
        cell.parts = keys
        cell.quality = [f for f in cell.quality if f != "missing"]
        cell.flag("estimated", f"estimate:{method}")
        done += 1
    return done


def _sources(cells: dict, kpi_id: str, site: str, month: str, method: str,
             measured: list) -> tuple[float, list] | None:
    """`measured`: the site's measured month values of the KPI, in the order of `cells`."""
    get = lambda k, m: cells.get((k, site, m))  # noqa: E731
    if method == "previous_year":
        before = get(kpi_id, _shift(month, -12))
        return (before.value, [before.key]) if _measured(before) else None
    if method == "neighbours":
        before, after = get(kpi_id, _shift(month, -1)), get(kpi_id, _shift(month, 1))
        if _measured(before) and _measured(after):
            return (before.value + after.value) / 2.0, [before.key, after.key]
        return None
    # per_headcount: the site's own intensity over the months where both are measured
    people = get(HEADCOUNT_KPI, month)
    if not _measured(people):
        return None
    pairs = [(c, get(HEADCOUNT_KPI, c.period)) for c in measured]
    pairs = [(c, h) for c, h in pairs if _measured(h) and h.value]
    if not pairs:
        return None
    pairs.sort(key=lambda p: p[0].period)
    intensity = sum(c.value for c, _ in pairs) / sum(h.value for _, h in pairs)
    keys: list[Any] = [people.key] + [k for c, h in pairs for k in (c.key, h.key)]
    return intensity * people.value, list(dict.fromkeys(keys))
