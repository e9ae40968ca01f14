"""`esg-workbench mapping|kpi|factors`: mappings (landed data -> ESG records), emission
factor sets and the KPIs with their lineage (esg_workbench/mapping)."""

from __future__ import annotations

import json
import sys

from esg_workbench.cli.output import Output, json_default, table


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

    mapping = _mapping_for(ws, args.name, args.version)
    result = apply.apply_mapping(ws, mapping, incremental=args.incremental, progress=out.info)
    data = {"mapping": result.mapping, "version": result.version, "seconds": round(result.seconds, 3),
            "source_rows": result.source_rows, "staging_rows": result.staging_rows,
            "tables": [t.__dict__ for t in result.tables]}
    lines = [f"Applied '{result.mapping}' v{result.version}: {result.source_rows:,} landed rows -> "
             f"{result.staging_rows:,} staging rows in {result.seconds:.1f} s."]
    lines += [f"  {t.stream} → {t.entity}: {t.source_rows:,} rows -> {t.staging_rows:,}"
              + (f"  flags: {t.quality}" if t.quality else "") for t in result.tables]
    if not args.no_aggregate:
        agg = aggregate.aggregate(ws)
        data["kpis"] = {"values": agg.values, "lineage_rows": agg.lineage_rows, "flags": agg.flags}
        lines.append(f"Aggregated {agg.values:,} KPI values in {agg.seconds:.1f} s. See: esg-workbench kpi report")
    out.emit(data, "\n".join(lines))
    return 0


def cmd_kpi_aggregate(ws, args, out: Output) -> int:
    from esg_workbench.mapping import aggregate

    agg = aggregate.aggregate(ws, fiscal_start=args.fiscal_year_start)
    out.emit(agg.__dict__, f"Aggregated {agg.values:,} KPI values ({agg.lineage_rows:,} lineage links) "
                           f"in {agg.seconds:.1f} s. Flags: {agg.flags or 'none'}")
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
    lines = [f"{args.kpi} {args.period} {args.site or '(all sites)'}: {value['value']} {value['unit']} "
             f"({value['rule']}; flags: {', '.join(value['quality']) or 'none'}; hash {value['result_hash'][:16]})",
             f"computed from {len(found['parts'])} value(s) and {found['staging_row_count']:,} staging rows:"]
    for r in found["staging_rows"][:args.limit]:
        lines.append(f"  {r['source_table']}#{r['source_key']} {r['period']} {r['site']} {r['field']} "
                     f"{r['value']} {r['unit'] or ''} -> {r['normalized_value']} {r['normalized_unit']}"
                     + (f" (factor {r['factor_id']})" if r["factor_id"] else ""))
    out.emit(found, "\n".join(lines))
    return 0


def cmd_factors_import(ws, args, out: Output) -> int:
    from esg_workbench.mapping import factors

    fs = factors.import_factor_set(ws, args.file, name=args.name, version=args.version)
    out.emit({"name": fs.name, "version": fs.version, "factors": len(fs.factors), "sha256": fs.sha256},
             f"Imported {len(fs.factors):,} factors as {fs.label}. Use it in a mapping with \"factor_set\": \"{fs.name}\".")
    return 0


def cmd_factors_list(ws, args, out: Output) -> int:
    from esg_workbench.mapping import factors

    sets = factors.list_factor_sets(ws)
    out.emit(sets, table([[s["name"], s["version"], s["factors"], "shipped" if s["builtin"] else "imported"]
                           for s in sets], ["name", "version", "factors", "origin"]))
    return 0


def add_commands(sub, common) -> None:
    mp = sub.add_parser("mapping", help="list, show and apply mappings (landed data -> ESG records)")
    msub = mp.add_subparsers(dest="mapping_command", metavar="ACTION", required=True)
    p = msub.add_parser("list", parents=[common], help="saved mappings (newest versions)")
    p.set_defaults(func=cmd_mapping_list)
    p = msub.add_parser("show", parents=[common], help="a mapping's tables, edges, versions and problems")
    p.add_argument("name")
    p.add_argument("--version", type=int)
    p.set_defaults(func=cmd_mapping_show)
    p = msub.add_parser("apply", parents=[common], help="map landed rows into staging rows and aggregate KPIs")
    p.add_argument("name", help="a saved mapping, or a shipped one such as sample_erp")
    p.add_argument("--version", type=int)
    p.add_argument("--incremental", action="store_true", help="only rows landed since the last apply")
    p.add_argument("--no-aggregate", action="store_true", help="do not recompute the KPIs afterwards")
    p.set_defaults(func=cmd_mapping_apply)

    kp = sub.add_parser("kpi", help="aggregate, report and trace KPIs")
    ksub = kp.add_subparsers(dest="kpi_command", metavar="ACTION", required=True)
    p = ksub.add_parser("aggregate", parents=[common], help="recompute every KPI from the staging rows")
    p.add_argument("--fiscal-year-start", type=int, default=1, metavar="MONTH")
    p.set_defaults(func=cmd_kpi_aggregate)
    p = ksub.add_parser("report", parents=[common], help="KPIs by site and month (or one period)")
    p.add_argument("--period", help="2024-03, 2024-Q1 or 2024 (default: every month)")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--kpi", action="append", help="a KPI id (repeatable; default: the headline KPIs)")
    p.set_defaults(func=cmd_kpi_report)
    p = ksub.add_parser("show", parents=[common], help="one KPI value and the staging rows and source keys behind it")
    p.add_argument("kpi")
    p.add_argument("--period", required=True)
    p.add_argument("--site", help="default: the whole organization")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_kpi_show)

    fp = sub.add_parser("factors", help="emission factor sets")
    fsub = fp.add_subparsers(dest="factors_command", metavar="ACTION", required=True)
    p = fsub.add_parser("import", parents=[common], help="import a factor set (CSV or XLSX, DESNZ columns)")
    p.add_argument("file")
    p.add_argument("--name")
    p.add_argument("--version")
    p.set_defaults(func=cmd_factors_import)
    p = fsub.add_parser("list", parents=[common], help="the shipped and imported factor sets")
    p.set_defaults(func=cmd_factors_list)
