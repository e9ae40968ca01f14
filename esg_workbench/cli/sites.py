"""`esg-workbench site`: where each site is (the region its emission factors are chosen by;
esg_workbench/mapping/sites.py). Contractual instruments: cli/instruments.py."""

from __future__ import annotations

from esg_workbench.cli.output import Output, command_group, table


def cmd_site_list(ws, args, out: Output) -> int:
    from esg_workbench.mapping import sites

    rows = sites.locations(ws)
    text = table([[r["site"], r["country"] or "-", r["subdivision"] or "", r["origin"] or "(no country: flagged)"]
                  for r in rows], ["site", "country", "subdivision", "set by"]) if rows else \
        "No sites yet. Map a table of sites (entity 'site') or set one: esg-workbench site set SITE COUNTRY"
    out.emit(rows, text)
    return 0


def cmd_site_set(ws, args, out: Output) -> int:
    from esg_workbench.mapping import sites

    found = sites.set_location(ws, args.site, args.country, args.subdivision, name=args.name, actor=args.actor)
    out.emit(found, f"{found['site']} is in {found['region']} (set by hand; a mapping will not change it). "
                    f"Apply the mappings again for its emissions to use it: esg-workbench mapping apply NAME")
    return 0


def cmd_site_clear(ws, args, out: Output) -> int:
    from esg_workbench.mapping import sites

    sites.clear_location(ws, args.site, actor=args.actor)
    out.emit({"site": args.site, "cleared": True}, f"{args.site}: the location set by hand is gone.")
    return 0


#: the commands add_commands adds (a command's parser is built with its group only)
COMMANDS = ("site",)


def add_commands(sub, common) -> None:
    site = command_group(sub, "site", "where each site is: the region its emission factors are chosen by", common)
    site("list", cmd_site_list, "every site, its country and who set it")
    p = site("set", cmd_site_set, "set a site's country by hand (wins over any mapping)")
    p.add_argument("site", help="the site's id, as in the mapped data")
    p.add_argument("country", help="ISO 3166 code or English name: DE, SE, US, Germany")
    p.add_argument("--subdivision", help="a subdivision or grid region, e.g. CA (a US state)")
    p.add_argument("--name", help="the site's name")
    p.add_argument("--actor", help="who sets it (recorded in the audit trail)")
    p = site("clear", cmd_site_clear, "forget a location set by hand")
    p.add_argument("site", help="the site's id, as in the mapped data")
    p.add_argument("--actor", help="who clears it (recorded in the audit trail)")

