"""Where each site is: the region (ISO 3166 country, optionally a subdivision) its emission
factors are chosen by.

A site's location comes from applying a mapping of the `site` entity (a source table of
sites with a country column; origin 'mapping:<name>') or is set by an analyst in the app
or with `esg-workbench site set` (origin 'manual'). A manual location wins: a mapping
never overwrites it. Changing a location changes emissions only when the mappings are
applied again (their staging rows hold the factor they were computed with).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from esg_workbench.core.errors import ConfigError, NotFound
from esg_workbench.mapping import regions
from esg_workbench.workspace.schema import site_locations as table
from esg_workbench.workspace.schema import staging_rows

MANUAL = "manual"


def _now() -> dt.datetime:
    from esg_workbench.workspace.database import utcnow

    return utcnow()


def _checked(site: str, country: str | None, subdivision: str | None) -> tuple[str, str, str | None, str]:
    site = (site or "").strip()
    if not site:
        raise ConfigError("A site needs a code.", hint="Give the site code as the data names it, e.g. DE-BER.")
    code = regions.normalize(country)
    if code is None or "-" in code or not regions.is_country(code):
        raise ConfigError(f"'{country}' is not an ISO 3166 country code.",
                          hint="Write the country as two letters (DE, ES, NL, SE, US) or its English name.")
    sub = (subdivision or "").strip().upper() or None
    if sub is not None and not sub.replace("-", "").isalnum():
        raise ConfigError(f"'{subdivision}' is not a subdivision code.", hint="Write it like CA (a US state) or BY.")
    return site, code, sub, regions.join(code, sub)


def set_location(workspace, site: str, country: str, subdivision: str | None = None, *, name: str | None = None,
                 actor: str | None = None) -> dict[str, Any]:
    """Set a site's location by hand (it wins over any mapping), with an audit entry."""
    from esg_workbench.audit import chain

    site, code, sub, region = _checked(site, country, subdivision)
    org = workspace.organization_id
    with workspace.transaction() as conn:
        conn.execute(sa.delete(table).where(table.c.organization_id == org, table.c.site == site))
        conn.execute(sa.insert(table).values(organization_id=org, site=site, country=code, subdivision=sub,
                                             region=region, name=name, origin=MANUAL, set_by=actor,
                                             updated_at=_now()))
        chain.append(workspace, conn, "site.location", actor=actor, metadata={
            "site": site, "country": code, "subdivision": sub, "origin": MANUAL})
    return {"site": site, "country": code, "subdivision": sub, "region": region, "origin": MANUAL}


def clear_location(workspace, site: str, *, actor: str | None = None) -> None:
    """Forget a site's manual location (a mapping of sites may set it again)."""
    from esg_workbench.audit import chain

    org = workspace.organization_id
    with workspace.transaction() as conn:
        gone = conn.execute(sa.delete(table).where(table.c.organization_id == org, table.c.site == site,
                                                   table.c.origin == MANUAL)).rowcount
        if not gone:
            raise NotFound(f"Site '{site}' has no location set by hand.")
        chain.append(workspace, conn, "site.location.clear", actor=actor, metadata={"site": site})


def locations(workspace) -> list[dict[str, Any]]:
    """Every site the workspace knows: its location, and sites of staging rows without one."""
    org = workspace.organization_id
    with workspace.read() as conn:
        rows = [dict(r._mapping) for r in conn.execute(
            sa.select(table.c.site, table.c.country, table.c.subdivision, table.c.region, table.c.name,
                      table.c.origin, table.c.updated_at).where(table.c.organization_id == org).order_by(table.c.site))]
        known = {r["site"] for r in rows}
        seen = conn.execute(sa.select(staging_rows.c.site).distinct().where(
            staging_rows.c.organization_id == org, staging_rows.c.site.is_not(None))).scalars().all()
    for site in sorted(set(seen) - known):
        rows.append({"site": site, "country": None, "subdivision": None, "region": None, "name": None,
                     "origin": None, "updated_at": None})
    return sorted(rows, key=lambda r: r["site"])


def apply_registry(conn, workspace, compiler, mapping_name: str) -> dict[str, int]:
    """Apply a table mapping of the `site` entity: one location per site (the first row of
    each site code wins; manual locations are kept). Returns counts for the apply result:
    sites written, and rows whose country is missing or not an ISO 3166 code."""
    sql = _registry_select(compiler)
    found: dict[str, tuple] = {}
    counts = {"sites": 0, "no_country": 0, "country_unknown": 0}
    for site, country, subdivision, name in conn.exec_driver_sql(sql).all():
        site = (site or "").strip()
        if not site or site in found:
            continue
        found[site] = (country, subdivision, name)
    origin = f"mapping:{mapping_name}"
    org = workspace.organization_id
    manual = set(conn.execute(sa.select(table.c.site).where(
        table.c.organization_id == org, table.c.origin == MANUAL)).scalars().all())
    conn.execute(sa.delete(table).where(table.c.organization_id == org, table.c.origin == origin))
    now = _now()
    rows = []
    for site, (country, subdivision, name) in sorted(found.items()):
        if site in manual:
            continue
        code = regions.normalize(country)
        if code is None:
            counts["no_country"] += 1
        elif not regions.is_country(code):
            counts["country_unknown"] += 1
            code = None
        sub = (str(subdivision).strip().upper() or None) if subdivision is not None else None
        if code and "-" in code:  # a column holding 'US-CA'
            code, sub = code.split("-", 1)
        rows.append(dict(organization_id=org, site=site, country=code, subdivision=sub,
                         region=regions.join(code, sub) if code else None, name=name, origin=origin, set_by=None,
                         updated_at=now))
    if rows:
        # another mapping may have set a site already: the newest apply's location wins
        conn.execute(sa.delete(table).where(table.c.organization_id == org,
                                            table.c.site.in_([r["site"] for r in rows])))
        conn.execute(sa.insert(table), rows)
    counts["sites"] = len(rows)
    return counts


def _registry_select(c) -> str:
    """SELECT site, country, subdivision, name over the landed table of a `site` mapping."""
    d = c.dialect
    cols = []
    for role in ("site", "country", "subdivision"):
        field = next((f for f in c.entity.by_role(role) if c.table.edges_to(f.name)), None)
        found = c.field_sql(field.name) if field else None
        cols.append(f"trim({d.to_text(*found)})" if found else f"CAST(NULL AS {d.text})")
    name = c.field_sql("name") if c.entity.field("name") and c.table.edges_to("name") else None
    cols.append(d.to_text(*name) if name else f"CAST(NULL AS {d.text})")
    sql = (f"SELECT {', '.join(cols)} FROM {d.quote(c.source.raw_table)} src " + " ".join(c.joins))
    if c.table.filter:
        from esg_workbench.mapping.expressions import parse
        from esg_workbench.mapping.sql import BOOLEAN

        fsql, ftype = parse(c.table.filter).to_sql(d, c.columns)
        sql += f" WHERE COALESCE({d.cast(fsql, ftype, BOOLEAN)}, FALSE)"
    return sql + " ORDER BY 1"
