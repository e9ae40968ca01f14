"""The `incomplete_source` flag: KPI values fed by a source table whose sync left a key
range missing (a failed chunk, ignored or waiting for a retry; issue 16).

The ranges come from the workspace's chunk ledger (workspace/sync_records.py), not from
sync/: mapping sits beside sync, not above it. A range whose bounds are dates or
timestamps is a time window, and only the months it overlaps are flagged (the bounds are
the sync's cursor, usually the row's change or activity time); any other range (an id
range, rows with a NULL cursor) may hold rows of any month, so every value the table
feeds is flagged. Where a site's KPI fed by the table has no value in a month of a
window (all its rows were in the failed range), an empty value flagged `missing` and
`incomplete_source` is made, so that the quarter and year totals that include it are
`partial` and carry the flag too (flags are passed up). The flag goes
away with the next recompute after the chunk lands or a later sync replaces its plan.
"""

from __future__ import annotations

import datetime as dt

from esg_workbench.mapping import periods
from esg_workbench.mapping.sql import Dialect
from esg_workbench.workspace.database import Workspace
from esg_workbench.workspace.sync_records import IncompleteRange, incomplete_ranges

FLAG = "incomplete_source"
#: a window longer than this (a sentinel date as a bound) makes no empty values
MAX_FILLED_MONTHS = 120
#: (first month, last month) a time-window range overlaps, None at an open end
Window = tuple[str | None, str | None]


def _cursor(bound: tuple | None):
    return bound[0] if bound else None


def window(r: IncompleteRange) -> Window | None:
    """The months a range overlaps, or None when it is not a time window (the whole
    table counts as incomplete). The upper bound is exclusive: a range ending at
    midnight on the 1st does not reach into that month."""
    lower, upper = _cursor(r.lower), _cursor(r.upper)
    if r.null_cursor or (lower is None and upper is None):
        return None
    if any(v is not None and not isinstance(v, dt.date) for v in (lower, upper)):
        return None  # dt.datetime is a dt.date too
    last = None
    if upper is not None:
        midnight = not isinstance(upper, dt.datetime) or upper.time() == dt.time(0)
        first_of_month = dt.date(upper.year, upper.month, 1)
        last = periods.month_of(first_of_month - dt.timedelta(days=1) if upper.day == 1 and midnight else upper)
    return (periods.month_of(lower) if lower is not None else None, last)


def covers(w: Window | None, month: str) -> bool:
    return w is None or ((w[0] is None or w[0] <= month) and (w[1] is None or month <= w[1]))


def _months(w: Window | None) -> list[str]:
    """The months an empty value is made for: those of a closed window (at most
    MAX_FILLED_MONTHS of them), the known end's month of an open one, none for the whole
    table (its values exist or not: only they are flagged)."""
    if w is None:
        return []
    first, last = w
    if first is None or last is None:
        return [first or last]
    if first > last:
        return []
    months = periods.month_range(first, last)
    return months if len(months) <= MAX_FILLED_MONTHS else []


def flag_incomplete_sources(workspace: Workspace, conn, d: Dialect, inputs, cells: dict) -> int:
    """Flag the site-month values of base KPIs that rows of an incomplete (connector,
    source table) feed, in the months its ranges cover; returns how many were flagged.
    `inputs`: the base KPIs' staging rows (aggregate.KpiInputs, with the connector as
    `ci` and the source table as `st`)."""
    from esg_workbench.mapping.aggregate import Cell  # aggregate imports this module

    windows: dict[tuple[str, str], list[Window | None]] = {}
    for r in incomplete_ranges(workspace, conn):
        windows.setdefault((r.connector_id, r.stream), []).append(window(r))
    if not windows:
        return 0
    fed_by = " OR ".join(f"(i.ci = {d.literal(ci)} AND i.st = {d.literal(st)})" for ci, st in sorted(windows))
    by_kpi_site: dict[tuple, list] = {}
    for cell in cells.values():
        if cell.site is not None and cell.period_type == "month":
            by_kpi_site.setdefault((cell.kpi, cell.site), []).append(cell)
    flagged = 0
    rows_sql = inputs.sql("site, ci, st")
    fed = conn.exec_driver_sql(f"SELECT DISTINCT i.k, i.site, i.ci, i.st FROM ({rows_sql}) i WHERE {fed_by} "
                               f"ORDER BY i.k, i.site, i.ci, i.st").all() if rows_sql else []
    for k, site, ci, st in fed:
        kpi_id = inputs.kpi(k).id
        mine = by_kpi_site.setdefault((kpi_id, site), [])
        template = mine[0] if mine else None
        have = {c.period for c in mine}
        for month in sorted({m for w in windows[(ci, st)] for m in _months(w)} - have):
            if template is None:
                break
            # the range's rows never landed: an empty value says so (else the month
            # would not exist and its quarter and year would look complete)
            cell = Cell(kpi_id, site, month, "month", None, template.unit, template.rule)
            cell.flag("missing")
            cells[cell.key] = cell
            mine.append(cell)
        for cell in mine:
            if FLAG not in cell.quality and any(covers(w, cell.period) for w in windows[(ci, st)]):
                cell.flag(FLAG)
                flagged += 1
    return flagged
