"""The KPI table as the CLI and the demo print it (and as CSV or JSON).

Every row of a report carries the audit chain's head at the time of the report
(`audit_chain_head`, ENTRIES:HASH): an exported report is a witness of the chain, and
`esg-workbench audit verify --anchor ENTRIES:HASH` later checks that the chain still
continues it (see audit/chain.py)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from esg_workbench.mapping import flags
from esg_workbench.mapping.aggregate import kpi_rows
from esg_workbench.mapping.catalog import load_catalog

#: the columns of the headline table: KPI id, heading
HEADLINE = (
    ("energy_total", "energy MWh"),
    ("ghg_scope1", "scope1 tCO2e"),
    ("ghg_scope2_location", "scope2 loc tCO2e"),
    ("ghg_scope2_market", "scope2 mkt tCO2e"),
    ("water_withdrawal", "water m3"),
    ("waste_total", "waste t"),
    ("headcount", "headcount"),
)
ORG = "(all sites)"
#: the column (CSV) and key (JSON) of the audit chain's head in an exported report
ANCHOR_COLUMN = "audit_chain_head"


def audit_anchor(workspace) -> str:
    """The audit chain's head now, as ENTRIES:HASH (what `esg-workbench audit anchor` prints)."""
    from esg_workbench.audit import chain

    return str(chain.anchor(workspace))


def report_rows(workspace, *, period: str | None = None, kpis: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per site and period: the value of each KPI, plus its flags.

    Without `period`: every month, per site and for the organization. With one
    ('2024-03', '2024-Q1', '2024'): that period only."""
    kpis = kpis or [k for k, _ in HEADLINE]
    rows = kpi_rows(workspace, period=period, period_type=None if period else "month", kpis=kpis)
    head = audit_anchor(workspace)  # read after the KPIs: a head the chain reached once they were computed
    table: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        key = (r["period"], r["site"] or ORG)
        line = table.setdefault(key, {"period": r["period"], "site": r["site"] or ORG, "flags": {},
                                      ANCHOR_COLUMN: head})
        line[r["kpi"]] = r["value"]
        if r["quality"]:
            line["flags"][r["kpi"]] = r["quality"]
    return [table[k] for k in sorted(table, key=lambda k: (k[0], k[1] == ORG, k[1]))]


def _number(value: float | None, kpi: str) -> str:
    if value is None:
        return "–"
    if kpi == "headcount":
        return f"{value:,.0f}"
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:,.2f}"


def format_table(rows: list[dict[str, Any]], kpis: list[str] | None = None) -> str:
    headings = dict(HEADLINE)
    catalog = load_catalog()
    kpis = kpis or [k for k, _ in HEADLINE]
    header = ["period", "site"] + [headings.get(k) or f"{k} {catalog.kpi(k).unit}" for k in kpis]
    body, seen_flags = [], set()
    for r in rows:
        cells = [r["period"], r["site"]]
        for k in kpis:
            text = _number(r.get(k), k)
            if "estimated" in r["flags"].get(k, ()):
                text = "~" + text  # an estimate never looks like a measured value
            if flags.doubts(r["flags"].get(k)):
                text += "*"
            seen_flags.update(r["flags"].get(k, ()))
            cells.append(text)
        body.append(cells)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)] if body else [len(h) for h in header]
    align = lambda cells: "  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w)  # noqa: E731
                                    for i, (c, w) in enumerate(zip(cells, widths)))
    lines = [align(header), align(["-" * w for w in widths])] + [align(c) for c in body]
    gwp_sets = sorted(f[4:] for f in seen_flags if flags.is_statement(f))
    seen_flags = {f for f in seen_flags if not flags.is_statement(f)}
    if gwp_sets:
        lines.append("")
        lines.append("GWP set of the emissions: " + ", ".join(gwp_sets))
    if seen_flags:
        lines.append("")
        lines.append("* data-quality flags: " + ", ".join(sorted(seen_flags))
                     + " (see: esg-workbench kpi report --format json)" + ("; ~ estimated" if "estimated" in seen_flags else ""))
    return "\n".join(lines)


def format_csv(rows: list[dict[str, Any]], kpis: list[str] | None = None) -> str:
    kpis = kpis or [k for k, _ in HEADLINE]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["period", "site", *kpis, ANCHOR_COLUMN, "flags"])
    for r in rows:
        writer.writerow([r["period"], r["site"], *["" if r.get(k) is None else repr(round(r[k], 6)) for k in kpis],
                         r.get(ANCHOR_COLUMN, ""), json.dumps(r["flags"], sort_keys=True) if r["flags"] else ""])
    return buffer.getvalue()


def by_country(workspace, kpi: str, period: str) -> list[dict[str, Any]]:
    """A KPI of `period` per country of the sites (ESRS S1-6 asks headcount by country):
    the sum of the site values of each country (a site without a country under None),
    with the sites and the flags behind each sum. Ratios cannot be summed: refused."""
    from esg_workbench.core.errors import ConfigError
    from esg_workbench.mapping import sites

    definition = load_catalog().kpi(kpi)
    if definition is None:
        raise ConfigError(f"There is no KPI '{kpi}'.", hint="See the KPIs with: esg-workbench kpi report --format json")
    if definition.rule == "ratio":
        raise ConfigError(f"{kpi} is a ratio: it cannot be added up by country.")
    country = {s["site"]: s["country"] for s in sites.locations(workspace)}
    out: dict[str | None, dict[str, Any]] = {}
    for r in kpi_rows(workspace, period=period, kpis=[kpi]):
        if r["site"] is None:
            continue
        line = out.setdefault(country.get(r["site"]), {"country": country.get(r["site"]), "kpi": kpi, "period": period,
                                                       "value": None, "unit": r["unit"], "sites": [], "flags": []})
        line["sites"].append(r["site"])
        if r["value"] is not None:
            line["value"] = (line["value"] or 0.0) + r["value"]
        for f in r["quality"]:
            if f not in line["flags"]:
                line["flags"].append(f)
    return [out[k] for k in sorted(out, key=lambda c: (c is None, c or ""))]
