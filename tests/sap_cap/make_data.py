"""Writes the seed data of the CAP test service (db/data/*.csv), deterministically.

    python tests/sap_cap/make_data.py

EnergyReadings: 3,000 rows whose modifiedAt values come in tie groups of 7 rows (the
last group ends at the latest timestamp, ID 3000 alone there), notes with quotes,
commas and non-ASCII letters; Sites: text keys with quotes; WaterUse: a composite key.
"""

from __future__ import annotations

import csv
import datetime as dt
from decimal import Decimal
from pathlib import Path

HERE = Path(__file__).parent / "db" / "data"
START = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
SITES = ["BER-01", "HAM-02", "MUC-03", "O'HARE-04", "ZÜRICH-05", "LYON 06"]
READINGS = 3000


def stamp(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def main() -> None:
    HERE.mkdir(parents=True, exist_ok=True)
    with open(HERE / "esg-EnergyReadings.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=";")
        w.writerow(["ID", "site", "meter", "readingDate", "kWh", "renewable", "note", "modifiedAt"])
        for i in range(1, READINGS + 1):
            # tie groups: 7 rows share one modifiedAt (hours apart, with milliseconds)
            changed = START + dt.timedelta(hours=(i - 1) // 7, milliseconds=(i - 1) // 7 % 1000)
            if i == READINGS:
                changed += dt.timedelta(days=1)
            note = ["", "meter swap", "O'Brien's \"estimate\"", "Grün; Wärme, Kälte"][i % 4]
            w.writerow([
                i, SITES[i % len(SITES)], f"M{i % 37:03d}", (START + dt.timedelta(days=i % 400)).date().isoformat(),
                Decimal(i * 1125) / 1000 + Decimal("0.001") * (i % 3), "true" if i % 5 == 0 else "false",
                note, stamp(changed),
            ])
    with open(HERE / "esg-Sites.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=";")
        w.writerow(["code", "name", "country", "floorArea", "employees", "modifiedAt"])
        for i, code in enumerate(SITES):
            w.writerow([code, f"Site {code} ({'Zürich' if 'Z' in code else 'Nord'})", ["DE", "CH", "FR", "US"][i % 4],
                        f"{1000 + i * 250.5:.2f}", 10_000_000_000 + i, stamp(START + dt.timedelta(days=i))])
    with open(HERE / "esg-WaterUse.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=";")
        w.writerow(["site", "period", "cubicMeters", "modifiedAt"])
        for s, site in enumerate(SITES):
            for month in range(1, 13):
                w.writerow([site, f"2024-{month:02d}", f"{(s + 1) * 100 + month * 1.2345:.4f}",
                            stamp(START + dt.timedelta(days=month * 28, minutes=s))])


if __name__ == "__main__":
    main()
