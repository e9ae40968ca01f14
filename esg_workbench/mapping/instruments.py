"""Contractual instruments entered by hand (guarantees of origin, RECs, PPAs), and what
each instrument, entered or mapped, covered.

An analyst often has a cancellation statement or a PPA contract, not a table to map: it
is entered here (table `entered_instruments`, schema v4) with the same facts a mapped one
carries (type, MWh covered, period, site, tracking id, evidence, emission factor) and is
allocated by scope2.py exactly like a mapped one from the next recompute of the KPIs.

Checks, so that a typing error cannot lower market-based emissions: the type is one of
the catalog's vocabulary `instrument`; MWh covered is a finite number above 0; the period
is two ISO dates, the end not before the start and at most 366 days apart (GHG Protocol
Scope 2 quality criteria: an instrument's vintage should be close to the consumption it
covers); a tracking id and an evidence reference are required, and a tracking id is
entered once per organization (and never one a mapped instrument already carries): the
same certificates counted twice would double the covered MWh. Every add and removal is
in the audit trail.

`usage()` reports per instrument the MWh allocated and unused, by the allocation rule of
scope2.allocate on the site-month electricity of the stored KPIs. Unused MWh are not
carried to other periods or sites.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import sqlalchemy as sa

from esg_workbench.core.errors import ConfigError, NotFound

ORIGIN_ENTERED = "entered"
ENTERED_MAPPING = "(entered by hand)"
MAX_DAYS = 366


def _table():
    from esg_workbench.workspace.schema import entered_instruments

    return entered_instruments


def kinds(catalog=None) -> dict[str, dict[str, Any]]:
    """The instrument types an analyst may enter (the catalog's vocabulary, without 'none')."""
    from esg_workbench.mapping.catalog import load_catalog

    vocabulary = (catalog or load_catalog()).vocabulary("instrument")
    return {k: v for k, v in vocabulary.items() if k != "none"}


def _date(text: Any, what: str) -> str:
    if isinstance(text, dt.date):
        return text.isoformat()[:10]
    try:
        return dt.date.fromisoformat(str(text).strip()).isoformat()
    except ValueError:
        raise ConfigError(f"The {what} '{text}' is not a date.", hint="Write it as YYYY-MM-DD, e.g. 2024-01-31.") from None


def check(site: Any, kind: Any, mwh: Any, start: Any, end: Any, tracking_id: Any, evidence: Any,
          kg_per_kwh: Any = 0.0) -> dict[str, Any]:
    """The instrument's values, checked and normalized; ConfigError names the first wrong one."""
    site = str(site or "").strip()
    if not site:
        raise ConfigError("An instrument needs the site whose electricity it covers.")
    kind = str(kind or "").strip().lower()
    allowed = kinds()
    if kind not in allowed:
        raise ConfigError(f"'{kind}' is not a type of contractual instrument.",
                          hint=f"Choose one of: {', '.join(allowed)}.")
    try:
        mwh = float(mwh)
    except (TypeError, ValueError):
        raise ConfigError(f"MWh covered must be a number, not '{mwh}'.") from None
    if not math.isfinite(mwh) or mwh <= 0:
        raise ConfigError(f"MWh covered must be above 0 (got {mwh:g}).")
    start, end = _date(start, "start of the period"), _date(end, "end of the period")
    if end < start:
        raise ConfigError(f"The period ends ({end}) before it starts ({start}).")
    if (dt.date.fromisoformat(end) - dt.date.fromisoformat(start)).days >= MAX_DAYS:
        raise ConfigError(f"The period {start}..{end} is longer than a year.",
                          hint="Enter one instrument per year of vintage: GHG Protocol Scope 2 quality criteria "
                               "want instruments close to the consumption period they cover.")
    tracking_id = str(tracking_id or "").strip()
    if not tracking_id:
        raise ConfigError("An instrument needs its tracking id (the registry's certificate numbers or the contract id).")
    evidence = str(evidence or "").strip()
    if not evidence:
        raise ConfigError("An instrument needs an evidence reference (cancellation statement, contract).")
    try:
        kg = float(kg_per_kwh if kg_per_kwh not in (None, "") else 0.0)
    except (TypeError, ValueError):
        raise ConfigError(f"The emission factor must be a number, not '{kg_per_kwh}'.") from None
    if not math.isfinite(kg) or kg < 0:
        raise ConfigError(f"The emission factor must be 0 or more kg CO2e per kWh (got {kg:g}).")
    if allowed[kind].get("renewable") and kg != 0:
        raise ConfigError(f"A {kind} is renewable: its emission factor is 0, not {kg:g}.")
    return {"site": site, "instrument_type": kind, "mwh": mwh, "period_from": start, "period_to": end,
            "tracking_id": tracking_id, "evidence": evidence, "kg_co2e_per_kwh": kg}


def add(workspace, *, site: str, kind: str, mwh: float, start: Any, end: Any, tracking_id: str, evidence: str,
        kg_per_kwh: float = 0.0, actor: str | None = None) -> dict[str, Any]:
    """Enter an instrument (audited). It counts from the next recompute of the KPIs."""
    from esg_workbench.audit import chain
    from esg_workbench.mapping import scope2
    from esg_workbench.mapping.sql import dialect_of
    from esg_workbench.workspace.database import utcnow

    values = check(site, kind, mwh, start, end, tracking_id, evidence, kg_per_kwh)
    table = _table()
    org = workspace.organization_id
    with workspace.transaction() as conn:
        taken = [i for i in scope2.load_instruments(conn, dialect_of(workspace), workspace)
                 if i.tracking_id == values["tracking_id"]]
        if taken:
            where = "entered by hand" if taken[0].origin == ORIGIN_ENTERED else f"mapped from {taken[0].key[1]}"
            raise ConfigError(f"Tracking id '{values['tracking_id']}' is already an instrument ({where}).",
                              hint="The same certificates counted twice would double the covered MWh.")
        new_id = conn.execute(sa.insert(table).values(organization_id=org, entered_by=actor, entered_at=utcnow(),
                                                      **values)).inserted_primary_key[0]
        chain.append(workspace, conn, "instrument.add", actor=actor, metadata={"id": new_id, **values})
    return {"id": new_id, **values}


def remove(workspace, instrument_id: int, *, actor: str | None = None) -> dict[str, Any]:
    """Remove an instrument entered by hand (audited); mapped ones go with their source rows."""
    from esg_workbench.audit import chain

    table = _table()
    org = workspace.organization_id
    with workspace.transaction() as conn:
        row = conn.execute(sa.select(table).where(table.c.organization_id == org, table.c.id == int(instrument_id))).first()
        if row is None:
            raise NotFound(f"There is no instrument {instrument_id} entered by hand.",
                           hint="See them with: esg-workbench instrument list")
        conn.execute(sa.delete(table).where(table.c.organization_id == org, table.c.id == int(instrument_id)))
        gone = {k: v for k, v in row._mapping.items() if k not in ("organization_id", "entered_at")}
        chain.append(workspace, conn, "instrument.remove", actor=actor, metadata=gone)
    return gone


def entered(conn, workspace) -> list:
    """The instruments entered by hand, as scope2.Instrument (allocated like mapped ones).
    Their key and the text that enters the result hashes are their content (tracking id,
    values), never the row id, so two workspaces given the same entries hash alike."""
    from esg_workbench.mapping.scope2 import Instrument

    table = _table()
    rows = conn.execute(sa.select(table).where(table.c.organization_id == workspace.organization_id)
                        .order_by(table.c.tracking_id)).all()
    out = []
    for r in rows:
        inst = Instrument((ENTERED_MAPPING, "entered_instruments", r.tracking_id), site=r.site, start=r.period_from,
                          end=r.period_to, mwh=float(r.mwh), kg_per_kwh=float(r.kg_co2e_per_kwh),
                          kind=r.instrument_type, tracking_id=r.tracking_id, evidence=r.evidence,
                          origin=ORIGIN_ENTERED, entered_id=int(r.id))
        inst.texts = ["|".join(["entered", r.tracking_id, r.site, r.instrument_type, repr(float(r.mwh)),
                                r.period_from, r.period_to, repr(float(r.kg_co2e_per_kwh)), r.evidence])]
        out.append(inst)
    return out


def _allocation(workspace):
    """The instruments and their allocation on the stored KPIs' site-month electricity."""
    from esg_workbench.mapping import scope2
    from esg_workbench.mapping.sql import dialect_of
    from esg_workbench.workspace.schema import kpi_values as kv

    with workspace.read() as conn:
        instruments = scope2.load_instruments(conn, dialect_of(workspace), workspace)
        consumption = {(site, period): value for site, period, value in conn.execute(
            sa.select(kv.c.site, kv.c.period, kv.c.value).where(
                kv.c.organization_id == workspace.organization_id, kv.c.kpi == scope2.CONSUMPTION_KPI,
                kv.c.period_type == "month", kv.c.site.is_not(None)))}
    return instruments, scope2.allocate(instruments, consumption)


def allocated_to(workspace, site: str | None, period: str) -> list[dict[str, Any]] | None:
    """The instruments behind a market-based or renewable value: per instrument the MWh
    allocated to `site` (None: every site) in the months of `period` (a month, a calendar
    quarter or year). None for a fiscal period (its months depend on the fiscal start)."""
    from esg_workbench.mapping import periods

    if period.upper().startswith("FY"):
        return None
    months = set(periods.parse_period(period).months())
    instruments, allocation = _allocation(workspace)
    totals: dict[tuple, float] = {}
    for (s, month), parts in sorted(allocation.parts.items()):
        if month in months and (site is None or s == site):
            for inst, mwh in parts:
                totals[inst.key] = totals.get(inst.key, 0.0) + mwh
    return [{"tracking_id": i.tracking_id, "origin": i.origin, "site": i.site, "type": i.kind,
             "allocated_mwh": totals[i.key], "kg_co2e_per_kwh": i.kg_per_kwh, "evidence": i.evidence}
            for i in instruments if totals.get(i.key)]


def usage(workspace) -> list[dict[str, Any]]:
    """Every instrument (mapped and entered) with the MWh allocated to its site's
    electricity and the MWh left unused, by the stored KPIs' site-month consumption."""
    instruments, allocation = _allocation(workspace)
    out = []
    for i in instruments:
        allocated = allocation.used.get(i.key, 0.0)
        out.append({
            "id": i.entered_id, "origin": i.origin, "site": i.site, "type": i.kind, "mwh": i.mwh,
            "from": i.start, "to": i.end, "tracking_id": i.tracking_id, "evidence": i.evidence,
            "kg_co2e_per_kwh": i.kg_per_kwh, "allocated_mwh": allocated,
            "unused_mwh": max((i.mwh or 0.0) - allocated, 0.0),
            "source": "entered by hand" if i.origin == ORIGIN_ENTERED else f"{i.key[1]}#{i.key[2]}"})
    return out
