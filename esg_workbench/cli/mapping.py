"""`esg-workbench mapping|kpi|factors`: mappings (landed data -> ESG records), emission
factor sets and the KPIs with their lineage (esg_workbench/mapping)."""

from __future__ import annotations

import argparse
import json
import sys

from esg_workbench.cli.output import EXIT_CANCELLED, Output, json_default, plain, table

#: decimals a KPI value is shown with, by unit (the JSON output keeps every digit)
UNIT_DECIMALS = {"MWh": 1, "tCO2e": 2, "t": 2, "t CO2": 2, "t CH4": 6, "t N2O": 6, "ML": 2, "%": 1, "h": 0,
                 "count": 0, "persons": 0,
                 "per 1,000,000 h": 2}


def _rounded(value, unit: str | None) -> str:
    if value is None:
        return "no value"
    return f"{float(value):,.{UNIT_DECIMALS.get(unit or '', 3)}f}"


def period(text: str) -> str:
    """argparse type of --period: a period label, or exit 2 saying how to write one."""
    from esg_workbench.mapping.periods import parse_period

    try:
        parse_period(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a period: write a month (2024-03), a quarter (2024-Q1), a year (2024) "
            "or a fiscal year (FY2024, FY2024-Q2)") from None
    return text.strip()


def cmd_mapping_list(ws, args, out: Output) -> int:
    from esg_workbench.mapping import store

    rows = store.list_mappings(ws)
    out.emit(rows, table([[r["name"], r["version"], r["author"], f"{r['created_at']:%Y-%m-%d %H:%M}", r["connector"],
                            len(r["tables"])] for r in rows], ["name", "version", "author", "saved", "connector", "tables"])
             if rows else "No mappings yet. Apply the shipped sample with: esg-workbench mapping apply sample_erp")
    return 0


def _mapping_for(ws, name: str, version: int | None = None):
    """A saved mapping; a shipped one (resources/mappings) is saved as version 1 on first use."""
    from esg_workbench.core.errors import NotFound
    from esg_workbench.mapping import store

    try:
        return store.load_mapping(ws, name, version)
    except NotFound:
        if version:
            raise
        try:
            shipped = store.shipped_mapping(name)
        except NotFound:
            raise NotFound(f"There is no mapping named '{name}' in this workspace.",
                           hint="List mappings with: esg-workbench mapping list") from None
        return store.save_mapping(ws, shipped, comment="shipped mapping")


def cmd_mapping_show(ws, args, out: Output) -> int:
    from esg_workbench.mapping import apply, store

    mapping = _mapping_for(ws, args.name, args.version)
    problems = apply.validate_in_workspace(ws, mapping)
    data = {**mapping.to_json(), "version": mapping.version, "author": mapping.author,
            "saved_at": mapping.created_at, "history": store.history(ws, mapping.name),
            "problems": [p.to_json() for p in problems]}
    lines = [f"{mapping.name} v{mapping.version} (connector {mapping.connector}), saved by {mapping.author} "
             f"at {mapping.created_at:%Y-%m-%d %H:%M}"]
    for t in mapping.tables:
        lines.append(f"  {t.stream} → {t.entity}" + (f"  [where {t.filter}]" if t.filter else ""))
        for e in t.edges:
            steps = " | ".join(x.describe() for x in e.transforms)
            lines.append(f"      {e.source or '(constant)':<22} → {e.target:<20} {steps}")
    lines.append("Problems:" if problems else "No problems.")
    lines += [f"  {p.severity}: {p.message}" for p in problems]
    out.emit(data, "\n".join(lines))
    return 0


def cmd_mapping_apply(ws, args, out: Output) -> int:
    from esg_workbench.mapping import aggregate, apply

    from esg_workbench.cli.runs import cancel_on_ctrl_c
    from esg_workbench.mapping.cancel import MappingCancelled

    mapping = _mapping_for(ws, args.name, args.version)
    # Ctrl+C stops the apply (or the recompute after it) and rolls its transaction back:
    # the staging rows and KPI values stay those of before
    with cancel_on_ctrl_c(out, "Cancelling the apply: the step under way is rolled back...") as cancel:
        try:
            result = apply.apply_mapping(ws, mapping, incremental=args.incremental, progress=out.info, cancel=cancel)
        except MappingCancelled:
            out.info("Cancelled: nothing was changed (the staging rows and KPI values are those of before).")
            return EXIT_CANCELLED
        agg = None
        if not args.no_aggregate:
            try:
                agg = aggregate.aggregate(ws, cancel=cancel)
            except MappingCancelled:
                out.info(f"Cancelled while recomputing the KPIs: '{result.mapping}' v{result.version} is applied, "
                         "the KPI values are those of before. Recompute them with: esg-workbench kpi aggregate")
                return EXIT_CANCELLED
    data = {"mapping": result.mapping, "version": result.version, "seconds": round(result.seconds, 3),
            "source_rows": result.source_rows, "staging_rows": result.staging_rows,
            "tables": [t.__dict__ for t in result.tables]}
    lines = [f"Applied '{result.mapping}' v{result.version}: {result.source_rows:,} landed rows -> "
             f"{result.staging_rows:,} staging rows in {result.seconds:.1f} s."]
    lines += [f"  {t.stream} → {t.entity}: {t.source_rows:,} rows -> {t.staging_rows:,}"
              + (f"  flags: {plain(t.quality)}" if t.quality else "") for t in result.tables]
    if agg is not None:
        data["kpis"] = {"values": agg.values, "lineage_rows": agg.lineage_rows, "flags": agg.flags}
        lines.append(f"Aggregated {agg.values:,} KPI values in {agg.seconds:.1f} s. See: esg-workbench kpi report")
    out.emit(data, "\n".join(lines))
    return 0


def cmd_mapping_export(ws, args, out: Output) -> int:
    from esg_workbench.mapping import exchange

    _mapping_for(ws, args.name, args.version)  # a shipped mapping is saved first, as for show/apply
    path = exchange.export_mapping(ws, args.name, args.file, args.version)
    out.emit({"mapping": args.name, "file": str(path)}, f"Exported '{args.name}' to {path}.")
    return 0


def cmd_mapping_import(ws, args, out: Output) -> int:
    from esg_workbench.mapping import exchange

    saved = exchange.import_mapping(ws, args.file, name=args.name)
    out.emit({"mapping": saved.name, "version": saved.version},
             f"Imported '{saved.name}' as version {saved.version}. Apply it with: esg-workbench mapping apply {saved.name}")
    return 0


def cmd_kpi_aggregate(ws, args, out: Output) -> int:
    from esg_workbench.mapping import aggregate

    agg = aggregate.aggregate(ws, fiscal_start=args.fiscal_year_start)
    out.emit(agg.__dict__, f"Aggregated {agg.values:,} KPI values ({agg.lineage_rows:,} lineage links) "
                           f"in {agg.seconds:.1f} s. Flags: {plain(agg.flags)}")
    return 0


def cmd_kpi_estimate_gaps(ws, args, out: Output) -> int:
    from esg_workbench.mapping import aggregate, gaps

    method = None if args.method == "none" else args.method
    gaps.set_estimate_method(ws, method, actor=args.actor)
    agg = aggregate.aggregate(ws)
    out.emit({"method": method, "values": agg.values, "flags": agg.flags},
             f"Gaps are {'estimated by ' + method if method else 'not estimated'}; {agg.values:,} KPI values recomputed "
             f"({agg.flags.get('estimated', 0)} carry estimates).")
    return 0


def cmd_kpi_by_country(ws, args, out: Output) -> int:
    from esg_workbench.mapping import report

    rows = report.by_country(ws, args.kpi, args.period)
    out.emit(rows, table([[r["country"] or "(no country)", r["value"], r["unit"], ", ".join(r["sites"]),
                           ", ".join(r["flags"])] for r in rows], ["country", args.kpi, "unit", "sites", "flags"])
             if rows else f"No values of {args.kpi} for {args.period}.")
    return 0


def cmd_kpi_report(ws, args, out: Output) -> int:
    from esg_workbench.mapping import report

    kpis = args.kpi or None
    rows = report.report_rows(ws, period=args.period, kpis=kpis)
    fmt = "json" if args.json else args.format
    if fmt == "json":
        print(json.dumps(rows, default=json_default, indent=2, ensure_ascii=False))
    elif fmt == "csv":
        sys.stdout.write(report.format_csv(rows, kpis))
    else:
        print(report.format_table(rows, kpis) if rows else
              "No KPI values. Apply a mapping first: esg-workbench mapping apply NAME")
    return 0


def cmd_kpi_show(ws, args, out: Output) -> int:
    from esg_workbench.core.errors import NotFound
    from esg_workbench.mapping import aggregate

    value = aggregate.find_value(ws, args.kpi, args.period, args.site)
    if value is None:
        raise NotFound(f"No value of {args.kpi} for {args.period} at {args.site or 'the organization'}.",
                       hint="See what exists with: esg-workbench kpi report")
    found = aggregate.drill_down(ws, value["id"], limit=args.limit)
    from esg_workbench.mapping import flags, gases

    doubts = flags.doubts(value["quality"])
    gwp = gases.sets_of(value["quality"])
    lines = [f"{args.kpi} {args.period} {args.site or '(all sites)'}: {_rounded(value['value'], value['unit'])} {value['unit']} "
             f"({value['rule']}; flags: {', '.join(doubts) or 'none'}; hash {value['result_hash'][:16]})"]
    if gwp:
        lines.append("GWP set: " + "; ".join(f"{g} ({flags.describe(gases.tag(g))})" for g in gwp))
    lines.append(f"computed from {len(found['parts'])} value(s) and {found['staging_row_count']:,} staging rows:")
    found["gwp_sets"] = gwp
    if args.kpi in ("ghg_scope2_market", "energy_renewable"):  # what the contractual instruments covered
        from esg_workbench.mapping import instruments

        found["instruments"] = instruments.allocated_to(ws, args.site, args.period) or []
        lines += [f"  instrument {i['tracking_id']} ({'entered by hand' if i['origin'] == 'entered' else 'mapped'}, "
                  f"{i['type']}, {i['site']}): {i['allocated_mwh']:,.3f} MWh allocated" for i in found["instruments"]]
    from esg_workbench.mapping.factors import factor_details

    described: dict[tuple, dict | None] = {}
    for r in found["staging_rows"][:args.limit]:
        key = (r["factor_set"], r["factor_id"])
        if key not in described:
            described[key] = factor_details(ws, *key)
        factor = described[key]
        where = (f": {factor['region'] or 'no region'} {factor['valid_from']}..{factor['valid_to']}, "
                 f"{factor['basis'] or 'basis not stated'}, {factor['gwp_text']}") if factor else ""
        lines.append(f"  {r['source_table']}#{r['source_key']} {r['period']} {r['site']} {r['field']} "
                     f"{plain(r['value'])} {r['unit'] or ''} -> {_rounded(r['normalized_value'], r['normalized_unit'])} "
                     f"{r['normalized_unit']}"
                     + (f" (factor {r['factor_set'] or ''} {r['factor_id']}{where})" if r["factor_id"] else "")
                     + (f" [{r['quality']}]" if r["quality"] else ""))
        r["factor"] = factor
    out.emit(found, "\n".join(lines))
    return 0


def cmd_kpi_list(ws, args, out: Output) -> int:
    from esg_workbench.mapping.catalog import load_catalog

    kpis = load_catalog().kpis_in_order()
    out.emit([{"id": k.id, "label": k.label, "unit": k.unit, "rule": k.rule, "topic": k.topic,
               "standards": k.standards, **({"of": k.of, "gas": k.gas} if k.rule == "gas_mass" else {})}
              for k in kpis],
             table([[k.id, k.label, k.unit, k.standards.get("ESRS", ""), k.standards.get("GRI", "")] for k in kpis],
                   ["kpi", "label", "unit", "ESRS", "GRI"]))
    return 0


def cmd_factors_import(ws, args, out: Output) -> int:
    from esg_workbench.mapping import factors

    fs = factors.import_factor_set(ws, args.file, name=args.name, version=args.version, region=args.region,
                                   valid_from=args.valid_from, valid_to=args.valid_to, gwp=args.gwp,
                                   licence=args.licence)
    regions = sorted({f.region for f in fs.factors if f.region})
    out.emit({"name": fs.name, "version": fs.version, "factors": len(fs.factors), "sha256": fs.sha256,
              "regions": regions, "warnings": fs.warnings},
             "\n".join([f"Imported {len(fs.factors):,} factors as {fs.label} for {', '.join(regions[:10]) or 'no region'}. "
                        f"Use it in a mapping with \"factor_set\": \"{fs.name}\"."] + fs.warnings))
    return 0


def cmd_factors_list(ws, args, out: Output) -> int:
    from esg_workbench.mapping import factors

    sets = factors.list_factor_sets(ws)
    out.emit(sets, table([[s["name"], s["version"], s["factors"], "shipped" if s["builtin"] else "imported", s["gwp"]]
                           for s in sets], ["name", "version", "factors", "origin", "GWP set"]))
    return 0


#: the commands add_commands adds (a command's parser is built with its group only)
COMMANDS = ("mapping", "kpi", "factors")


def add_commands(sub, common) -> None:
    mp = sub.add_parser("mapping", help="list, show and apply mappings (landed data -> ESG records)")
    msub = mp.add_subparsers(dest="mapping_command", metavar="ACTION", required=True)
    p = msub.add_parser("list", parents=[common], help="saved mappings (newest versions)")
    p.set_defaults(func=cmd_mapping_list)
    p = msub.add_parser("show", parents=[common], help="a mapping's tables, edges, versions and problems")
    p.add_argument("name", help="a saved or shipped mapping (see: esg-workbench mapping list)")
    p.add_argument("--version", type=int, help="a saved version (default: the newest)")
    p.set_defaults(func=cmd_mapping_show)
    p = msub.add_parser("apply", parents=[common], help="map landed rows into staging rows and aggregate KPIs")
    p.add_argument("name", help="a saved mapping, or a shipped one such as sample_erp")
    p.add_argument("--version", type=int, help="a saved version (default: the newest)")
    p.add_argument("--incremental", action="store_true", help="only rows landed since the last apply")
    p.add_argument("--no-aggregate", action="store_true", help="do not recompute the KPIs afterwards")
    p.set_defaults(func=cmd_mapping_apply)

    p = msub.add_parser("export", parents=[common], help="write a saved mapping to a JSON file (to share or version it)")
    p.add_argument("name", help="the mapping")
    p.add_argument("file", help="the file to write, e.g. sample_erp.esgmap.json")
    p.add_argument("--version", type=int, help="a saved version (default: the newest)")
    p.set_defaults(func=cmd_mapping_export)
    p = msub.add_parser("import", parents=[common], help="save a mapping file as the next version of its mapping")
    p.add_argument("file", help="a file written by mapping export (or the app's Export…)")
    p.add_argument("--name", help="save it under this name instead of the one in the file")
    p.set_defaults(func=cmd_mapping_import)

    kp = sub.add_parser("kpi", help="aggregate, report and trace KPIs")
    ksub = kp.add_subparsers(dest="kpi_command", metavar="ACTION", required=True)
    p = ksub.add_parser("list", parents=[common], help="the KPIs of the catalog with their ESRS and GRI references")
    p.set_defaults(func=cmd_kpi_list)
    p = ksub.add_parser("aggregate", parents=[common], help="recompute every KPI from the staging rows")
    p.add_argument("--fiscal-year-start", type=int, default=1, choices=range(1, 13), metavar="MONTH",
                   help="the month (1-12) the fiscal year starts in (default 1: calendar years)")
    p.set_defaults(func=cmd_kpi_aggregate)
    p = ksub.add_parser("estimate-gaps", parents=[common],
                        help="choose how missing site-months are estimated (marked as estimates), and recompute")
    p.add_argument("method", choices=["previous_year", "neighbours", "per_headcount", "none"],
                   help="previous_year: the same month a year before; neighbours: the mean of the months before and "
                        "after; per_headcount: the site's value per employee times the month's headcount; none: no estimates")
    p.add_argument("--actor", help="who chooses it (recorded in the audit trail)")
    p.set_defaults(func=cmd_kpi_estimate_gaps)
    p = ksub.add_parser("by-country", parents=[common], help="a KPI of one period per country of the sites")
    p.add_argument("kpi", help="a KPI id (see: esg-workbench kpi list); not a ratio")
    p.add_argument("--period", required=True, help="the period: 2024-03, 2024-Q1 or 2024")
    p.set_defaults(func=cmd_kpi_by_country)
    p = ksub.add_parser("report", parents=[common], help="KPIs by site and month (or one period)")
    p.add_argument("--period", type=period, help="2024-03, 2024-Q1 or 2024 (default: every month)")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table", help="output format (default table)")
    p.add_argument("--kpi", action="append", help="a KPI id (repeatable; default: the headline KPIs)")
    p.set_defaults(func=cmd_kpi_report)
    p = ksub.add_parser("show", parents=[common], help="one KPI value and the staging rows and source keys behind it")
    p.add_argument("kpi", help="a KPI id (see: esg-workbench kpi list)")
    p.add_argument("--period", required=True, type=period, help="2024-03, 2024-Q1 or 2024")
    p.add_argument("--site", help="default: the whole organization")
    p.add_argument("--limit", type=int, default=20, help="staging rows to list (default 20)")
    p.set_defaults(func=cmd_kpi_show)

    fp = sub.add_parser("factors", help="emission factor sets")
    fsub = fp.add_subparsers(dest="factors_command", metavar="ACTION", required=True)
    p = fsub.add_parser("import", parents=[common], help="import a factor set (CSV or XLSX, DESNZ columns)")
    p.add_argument("file", help="a .csv or .xlsx file")
    p.add_argument("--name", help="the factor set's name (default: from the file)")
    p.add_argument("--version", help="its version label (default: from the file)")
    p.add_argument("--region", help="ISO 3166 region of rows without a region column (DE, FR, US-CA)")
    p.add_argument("--valid-from", help="YYYY-MM-DD for rows without valid_from (default: Jan 1 of the factor column's year)")
    p.add_argument("--valid-to", help="YYYY-MM-DD for rows without valid_to")
    p.add_argument("--gwp", help="GWP set of rows without a gwp column (AR5, AR6)")
    p.add_argument("--licence", help="the licence of the factors")
    p.set_defaults(func=cmd_factors_import)
    p = fsub.add_parser("list", parents=[common], help="the shipped and imported factor sets")
    p.set_defaults(func=cmd_factors_list)
