"""`esg-workbench instrument add|list|remove`: contractual instruments of market-based
Scope 2 (guarantees of origin, RECs, PPAs), entered by hand or mapped, with what each
covered (esg_workbench/mapping/instruments.py)."""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import math

from esg_workbench.cli.output import Output, UsageError, table


def _mwh(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of MWh") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"MWh covered must be above 0, not {text}")
    return value


def _day(text: str) -> str:
    try:
        return dt.date.fromisoformat(text.strip()).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a date: write YYYY-MM-DD, e.g. 2024-01-31") from None


def _factor(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of kg CO2e per kWh") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"the emission factor must be 0 or more, not {text}")
    return value


def cmd_instrument_add(ws, args, out: Output) -> int:
    from esg_workbench.core.errors import ConfigError
    from esg_workbench.mapping import instruments

    try:
        added = instruments.add(ws, site=args.site, kind=args.type, mwh=args.mwh, start=args.start, end=args.end,
                                tracking_id=args.tracking_id, evidence=args.evidence, kg_per_kwh=args.kg_per_kwh,
                                actor=args.actor)
    except ConfigError as exc:  # a wrong value on the command line: exit 2, like argparse's own errors
        raise UsageError(str(exc), hint=exc.hint) from None
    out.emit(added, f"Instrument {added['id']} entered: {added['mwh']:g} MWh of {added['instrument_type']} for "
                    f"{added['site']}, {added['period_from']}..{added['period_to']} ({added['tracking_id']}). "
                    "It counts from the next recompute: esg-workbench kpi aggregate")
    return 0


def cmd_instrument_list(ws, args, out: Output) -> int:
    from esg_workbench.mapping import instruments

    rows = instruments.usage(ws)
    text = table([[r["id"] or "", r["site"], r["type"], f"{r['mwh']:g}", r["from"], r["to"],
                   f"{r['allocated_mwh']:.3f}", f"{r['unused_mwh']:.3f}", r["tracking_id"] or "", r["source"]]
                  for r in rows], ["id", "site", "type", "MWh", "from", "to", "allocated", "unused", "tracking id",
                                   "source"]) + \
        "\nUnused MWh are not carried to other periods or sites (allocated by the KPIs last computed)." if rows else \
        "No contractual instruments. Enter one (esg-workbench instrument add) or map a table of them."
    out.emit(rows, text)
    return 0


def cmd_instrument_remove(ws, args, out: Output) -> int:
    from esg_workbench.mapping import instruments

    gone = instruments.remove(ws, args.id, actor=args.actor)
    out.emit(gone, f"Instrument {args.id} ({gone['tracking_id']}) removed. "
                   "Recompute the KPIs for it to stop counting: esg-workbench kpi aggregate")
    return 0


class _Kinds:
    """The instrument types, the catalog's vocabulary, as argparse choices read only when
    `instrument add` checks or shows them: every command builds the whole parser, and
    loading the catalog there cost each of them (a sync too) 0.01-0.03 s. Read without
    mapping/instruments.py: parsing the command line must not import SQLAlchemy."""

    @functools.cached_property
    def _names(self) -> list[str]:
        from esg_workbench.mapping.catalog import load_catalog

        return [k for k in load_catalog().vocabulary("instrument") if k != "none"]

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self):
        return iter(self._names)


#: the commands add_commands adds (a command's parser is built with its group only)
COMMANDS = ("instrument", "instruments")


def add_commands(sub, common) -> None:
    ip = sub.add_parser("instrument", aliases=["instruments"],
                        help="contractual instruments (GOs, RECs, PPAs) of market-based Scope 2")
    isub = ip.add_subparsers(dest="instrument_command", metavar="ACTION", required=True)
    p = isub.add_parser("list", parents=[common],
                        help="every instrument, entered or mapped, with the MWh allocated and unused")
    p.set_defaults(func=cmd_instrument_list)
    p = isub.add_parser("add", parents=[common], help="enter an instrument by hand (audited)")
    p.add_argument("--site", required=True, help="the site whose electricity it covers, as in the mapped data")
    # a metavar, so that add_argument does not list the choices (which loads them) at once
    p.add_argument("--type", required=True, choices=_Kinds(), metavar="TYPE", help="the type of instrument: %(choices)s")
    p.add_argument("--mwh", required=True, type=_mwh, help="MWh of electricity covered (above 0)")
    p.add_argument("--from", dest="start", required=True, type=_day, metavar="YYYY-MM-DD",
                   help="first day of the period covered")
    p.add_argument("--to", dest="end", required=True, type=_day, metavar="YYYY-MM-DD",
                   help="last day of the period covered (at most a year after the first)")
    p.add_argument("--tracking-id", required=True, help="registry certificate numbers or contract id (unique)")
    p.add_argument("--evidence", required=True, help="evidence reference: cancellation statement, contract")
    p.add_argument("--kg-per-kwh", type=_factor, default=0.0,
                   help="emission factor of the instrument, kg CO2e per kWh (0, the default, for renewables)")
    p.add_argument("--actor", help="who enters it (recorded in the audit trail)")
    p.set_defaults(func=cmd_instrument_add)
    p = isub.add_parser("remove", parents=[common], help="remove an instrument entered by hand (audited)")
    p.add_argument("id", type=int, help="the instrument's id (see: esg-workbench instrument list)")
    p.add_argument("--actor", help="who removes it (recorded in the audit trail)")
    p.set_defaults(func=cmd_instrument_remove)
