"""A small, realistic sample ERP database for the demo and for tests.

`create_sample_erp(path)` writes a SQLite file holding two years (January 2023 to
December 2024) of ESG activity data of a fictional manufacturer with five sites in four
countries (each site with its ISO 3166 country code): energy meters and their readings,
fuel purchases, business travel, waste, water, headcount, and the energy attribute
certificates (guarantees of origin, a PPA) the company cancelled for three sites. The same seed always gives the same rows (a seeded
``random.Random``; no clock, no numpy).

Every table has an integer primary key ``id`` and an ``updated_at`` TIMESTAMP stored as
ISO text in UTC without offset, always with six fraction digits
('2024-03-05 02:15:07.123456'). Rows written by the ERP's nightly batch jobs
(meter readings, water bills, headcount) share one ``updated_at`` per job run, as real
ERP exports do, which exercises delta loads with tied cursor values.

The data has a few deliberate flaws for data-quality checks to find; they are listed
in `SAMPLE_IMPERFECTIONS`:

* site NL-RTM has no electricity reading for March 2024 (a missing month);
* meter DE-BER-E1 has an extra reading of -1,850 kWh for November 2023, a correction
  booked by the supplier (a negative value);
* site ES-VLC's water withdrawal for July 2024 is 25 times its usual value (an outlier:
  a leak, or a meter read in litres instead of m3).
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
import os
import random
import sqlite3
import threading
from pathlib import Path

SAMPLE_FILE_NAME = "sample_erp.sqlite"
#: the layout of the generated file (PRAGMA user_version): 2 added the energy attribute
#: certificates, which the shipped mapping reads; an older file is generated again
SAMPLE_VERSION = 2
FIRST_MONTH = dt.date(2023, 1, 1)
MONTHS = 24

#: the tables, in the order they are created (parents before children)
TABLES = (
    "sites",
    "meters",
    "electricity_readings",
    "gas_readings",
    "fuel_purchases",
    "business_travel",
    "waste",
    "water",
    "headcount",
    "energy_attribute_certificates",
)

#: the deliberate flaws, for data-quality checks and their tests
SAMPLE_IMPERFECTIONS = {
    "missing_month": {"table": "electricity_readings", "site_code": "NL-RTM", "month": "2024-03"},
    "negative_correction": {"table": "electricity_readings", "meter_serial": "DE-BER-E1",
                            "reading_date": "2023-11-30", "kwh": -1850.0},
    "outlier": {"table": "water", "site_code": "ES-VLC", "period_start": "2024-07-01", "factor": 25},
}

_SCHEMA = """
CREATE TABLE sites (
    id INTEGER PRIMARY KEY,
    site_code TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    country TEXT NOT NULL,
    region TEXT NOT NULL,
    floor_area_m2 REAL,
    opened_on DATE,
    updated_at TIMESTAMP NOT NULL
);
CREATE TABLE meters (
    id INTEGER PRIMARY KEY,
    site_id INTEGER NOT NULL REFERENCES sites (id),
    meter_type TEXT NOT NULL CHECK (meter_type IN ('electricity', 'gas', 'water')),
    serial TEXT NOT NULL UNIQUE,
    unit TEXT NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE TABLE electricity_readings (
    id INTEGER PRIMARY KEY,
    meter_id INTEGER NOT NULL REFERENCES meters (id),
    reading_date DATE NOT NULL,
    kwh NUMERIC(14, 3) NOT NULL,
    tariff TEXT,
    supplier TEXT,
    renewable_share REAL,
    updated_at TIMESTAMP NOT NULL
);
CREATE TABLE gas_readings (
    id INTEGER PRIMARY KEY,
    meter_id INTEGER NOT NULL REFERENCES meters (id),
    reading_date DATE NOT NULL,
    quantity NUMERIC(14, 3) NOT NULL,
    unit TEXT NOT NULL CHECK (unit IN ('kWh', 'm3')),
    updated_at TIMESTAMP NOT NULL
);
CREATE TABLE fuel_purchases (
    id INTEGER PRIMARY KEY,
    site_id INTEGER NOT NULL REFERENCES sites (id),
    purchase_date DATE NOT NULL,
    fuel_type TEXT NOT NULL CHECK (fuel_type IN ('diesel', 'petrol', 'LPG', 'heating oil')),
    quantity NUMERIC(12, 2) NOT NULL,
    unit TEXT NOT NULL CHECK (unit IN ('litres', 'kg')),
    supplier_code TEXT,
    cost_eur NUMERIC(12, 2),
    updated_at TIMESTAMP NOT NULL
);
CREATE TABLE business_travel (
    id INTEGER PRIMARY KEY,
    employee_id INTEGER NOT NULL,
    travel_date DATE NOT NULL,
    mode TEXT NOT NULL CHECK (mode IN ('flight', 'rail', 'car', 'hotel')),
    distance_km REAL,
    origin TEXT,
    destination TEXT NOT NULL,
    nights INTEGER,
    cabin_class TEXT,
    updated_at TIMESTAMP NOT NULL
);
CREATE TABLE waste (
    id INTEGER PRIMARY KEY,
    site_id INTEGER NOT NULL REFERENCES sites (id),
    collection_date DATE NOT NULL,
    waste_type TEXT NOT NULL,
    treatment TEXT NOT NULL CHECK (treatment IN ('recycling', 'landfill', 'incineration', 'composting')),
    mass_kg NUMERIC(12, 2) NOT NULL,
    contractor TEXT,
    updated_at TIMESTAMP NOT NULL
);
CREATE TABLE water (
    id INTEGER PRIMARY KEY,
    site_id INTEGER NOT NULL REFERENCES sites (id),
    period_start DATE NOT NULL,
    period_end DATE NOT NULL,
    withdrawal_m3 NUMERIC(12, 3) NOT NULL,
    discharge_m3 NUMERIC(12, 3),
    source TEXT NOT NULL CHECK (source IN ('municipal', 'groundwater', 'surface')),
    updated_at TIMESTAMP NOT NULL
);
CREATE TABLE headcount (
    id INTEGER PRIMARY KEY,
    site_id INTEGER NOT NULL REFERENCES sites (id),
    month DATE NOT NULL,
    employees INTEGER NOT NULL,
    fte NUMERIC(8, 2) NOT NULL,
    female INTEGER NOT NULL,
    male INTEGER NOT NULL,
    contractors INTEGER NOT NULL,
    lost_time_injuries INTEGER NOT NULL,
    hours_worked REAL NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (site_id, month)
);
CREATE TABLE energy_attribute_certificates (
    id INTEGER PRIMARY KEY,
    site_id INTEGER NOT NULL REFERENCES sites (id),
    certificate_type TEXT NOT NULL CHECK (certificate_type IN ('GO', 'PPA')),
    registry TEXT NOT NULL,
    tracking_id TEXT NOT NULL UNIQUE,
    mwh NUMERIC(12, 3) NOT NULL,
    period_start DATE NOT NULL,
    period_end DATE NOT NULL,
    cancelled_on DATE,
    evidence TEXT,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX electricity_readings_updated ON electricity_readings (updated_at, id);
CREATE INDEX business_travel_updated ON business_travel (updated_at, id);
"""

# site_code, name, country, region, floor area, opened, kind, city, electricity supplier,
# green tariff?, gas unit (None: no gas), water source, employees at the start
_SITES = (
    ("DE-MUC", "Munich Plant", "DE", "DACH", 18500.0, dt.date(1998, 4, 1), "plant", "Munich",
     "Stadtwerke München", False, "kWh", "municipal", 420),
    ("DE-BER", "Berlin Headquarters", "DE", "DACH", 6200.0, dt.date(2011, 9, 15), "office", "Berlin",
     "Vattenfall Europe", True, "kWh", "municipal", 260),
    ("NL-RTM", "Rotterdam Warehouse", "NL", "Benelux", 24000.0, dt.date(2016, 2, 1), "warehouse", "Rotterdam",
     "Eneco", True, "m3", "municipal", 95),
    ("SE-GOT", "Göteborg Plant", "SE", "Nordics", 15800.0, dt.date(2005, 6, 1), "plant", "Gothenburg",
     "Göteborg Energi", True, "m3", "surface", 310),
    ("ES-VLC", "Valencia Distribution Centre", "ES", "Iberia", 12500.0, dt.date(2019, 10, 1), "warehouse", "Valencia",
     "Iberdrola", False, None, "groundwater", 120),
)

_CITIES = {
    "Munich": (48.137, 11.575), "Berlin": (52.520, 13.405), "Rotterdam": (51.924, 4.478),
    "Gothenburg": (57.709, 11.975), "Valencia": (39.470, -0.376), "Frankfurt": (50.110, 8.682),
    "Hamburg": (53.551, 9.994), "Paris": (48.857, 2.352), "London": (51.507, -0.128),
    "Madrid": (40.417, -3.704), "Barcelona": (41.385, 2.173), "Stockholm": (59.329, 18.069),
    "Amsterdam": (52.370, 4.895), "Brussels": (50.850, 4.352), "Milan": (45.464, 9.190),
    "Vienna": (48.208, 16.373), "Zürich": (47.377, 8.541), "Copenhagen": (55.676, 12.568),
    "Warsaw": (52.230, 21.012), "New York": (40.713, -74.006), "Chicago": (41.878, -87.630),
    "São Paulo": (-23.551, -46.633), "Shanghai": (31.230, 121.474), "Singapore": (1.352, 103.820),
}

# energy attribute certificates cancelled for the green-tariff sites: (site, type, registry,
# tracking id, MWh, period start, period end, cancelled on, evidence). DE-BER's 2023 GOs and
# NL-RTM's 2023 GOs hold a little more than the sites used (a surplus); NL-RTM's 2024 GOs
# cover only January to June; SE-GOT has a PPA for 2024 only, so its 2023 market-based
# emissions fall back to the location factor.
_CERTIFICATES = (
    ("DE-BER", "GO", "UBA HKNR", "DE-HKNR-2023-000184", 620.0, "2023-01-01", "2023-12-31", "2024-03-28",
     "Vattenfall cancellation statement 2024-03-28"),
    ("DE-BER", "GO", "UBA HKNR", "DE-HKNR-2024-000211", 600.0, "2024-01-01", "2024-12-31", "2025-03-27",
     "Vattenfall cancellation statement 2025-03-27"),
    ("NL-RTM", "GO", "CertiQ", "NL-CERTIQ-2023-77120", 1000.0, "2023-01-01", "2023-12-31", "2024-03-15",
     "Eneco GO cancellation 2023"),
    ("NL-RTM", "GO", "CertiQ", "NL-CERTIQ-2024-80404", 450.0, "2024-01-01", "2024-06-30", "2024-09-12",
     "Eneco GO cancellation H1 2024"),
    ("SE-GOT", "PPA", "Cesar (Energimyndigheten)", "SE-PPA-2024-GE-0007", 2000.0, "2024-01-01", "2024-12-31",
     "2025-02-10", "PPA Göteborg Energi Vind AB, 2024 GOs cancelled 2025-02-10"),
)

# waste stream: (waste type, treatment, collections per month, typical kg per collection
# at a plant) and which site kinds produce it
_WASTE = (
    ("mixed municipal", "incineration", 4, 900.0, ("plant", "office", "warehouse")),
    ("paper and cardboard", "recycling", 2, 650.0, ("plant", "office", "warehouse")),
    ("plastics", "recycling", 2, 420.0, ("plant", "warehouse")),
    ("metal scrap", "recycling", 1, 2300.0, ("plant",)),
    ("wood pallets", "recycling", 1, 800.0, ("warehouse", "plant")),
    ("organic", "composting", 4, 160.0, ("office",)),
    ("hazardous", "incineration", 1, 140.0, ("plant",)),
    ("construction rubble", "landfill", 1, 1200.0, ("plant",)),
)
_CONTRACTORS = {"DE": ("Remondis", "ALBA Group"), "NL": ("Renewi",), "SE": ("Ragn-Sells", "Stena Recycling"),
                "ES": ("Urbaser", "FCC Medio Ambiente")}

# fuel: (type, unit, site kinds, purchases per month, typical quantity, price per unit)
_FUEL = (
    ("diesel", "litres", ("plant", "warehouse"), 2, 2400.0, (1.52, 1.86)),
    ("petrol", "litres", ("office", "plant"), 1, 900.0, (1.68, 1.98)),
    ("LPG", "kg", ("warehouse",), 1, 1100.0, (1.35, 1.72)),
    ("heating oil", "litres", ("plant",), 1, 3200.0, (0.98, 1.28)),
)


def _month(index: int) -> dt.date:
    year, month = divmod(FIRST_MONTH.month - 1 + index, 12)
    return dt.date(FIRST_MONTH.year + year, month + 1, 1)


def _month_end(first: dt.date) -> dt.date:
    return first.replace(day=calendar.monthrange(first.year, first.month)[1])


def _stamp(rng: random.Random, day: dt.date, *, lag_days: tuple[int, int] = (0, 3),
           hours: tuple[int, int] = (6, 19)) -> str:
    """An updated_at: some time a few days after `day`, always six fraction digits."""
    moment = dt.datetime(day.year, day.month, day.day) + dt.timedelta(
        days=rng.randint(*lag_days), hours=rng.randint(*hours), minutes=rng.randint(0, 59),
        seconds=rng.randint(0, 59), microseconds=rng.randint(1, 999_999))
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def _batch_stamp(rng: random.Random, month_end: dt.date) -> str:
    """The time of the ERP's nightly import after a month closes (shared by its rows)."""
    return _stamp(rng, month_end, lag_days=(2, 5), hours=(1, 3))


def _season(first: dt.date, winter_weight: float) -> float:
    """1 + winter_weight in January, 1 - winter_weight in July."""
    return 1.0 + winter_weight * math.cos((first.month - 1) / 12.0 * 2 * math.pi)


def _distance_km(a: str, b: str) -> float:
    (lat1, lon1), (lat2, lon2) = _CITIES[a], _CITIES[b]
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(h))


def _generate(rng: random.Random) -> dict[str, list[tuple]]:
    rows: dict[str, list[tuple]] = {name: [] for name in TABLES}
    months = [_month(i) for i in range(MONTHS)]
    setup = "2022-12-15 09:30:00.000001"

    # --- sites and meters --------------------------------------------------------------
    site_ids: dict[str, int] = {}
    for site_id, (code, name, country, region, area, opened, *_rest) in enumerate(_SITES, start=1):
        site_ids[code] = site_id
        rows["sites"].append((site_id, code, name, country, region, area, opened.isoformat(), setup))

    meters: list[tuple[int, str, str, tuple]] = []  # (meter id, type, serial, site tuple)
    for site in _SITES:
        code, kind, gas_unit = site[0], site[6], site[10]
        plan = [("electricity", "E1", "kWh")]
        if kind in ("plant", "warehouse"):
            plan.append(("electricity", "E2", "kWh"))
        if gas_unit:
            plan.append(("gas", "G1", gas_unit))
        plan.append(("water", "W1", "m3"))
        for meter_type, suffix, unit in plan:
            meter_id = len(meters) + 1
            serial = f"{code}-{suffix}"
            meters.append((meter_id, meter_type, serial, site))
            rows["meters"].append((meter_id, site_ids[code], meter_type, serial, unit, setup))

    # --- monthly meter readings (one import job per month) ---------------------------
    base_kwh = {"plant": 390_000.0, "office": 52_000.0, "warehouse": 84_000.0}
    base_gas = {"plant": 260_000.0, "office": 38_000.0, "warehouse": 45_000.0}
    flaw_missing = SAMPLE_IMPERFECTIONS["missing_month"]
    flaw_negative = SAMPLE_IMPERFECTIONS["negative_correction"]
    for index, first in enumerate(months):
        end = _month_end(first)
        stamp = _batch_stamp(rng, end)
        trend = 1.0 - 0.012 * index / 12  # efficiency measures: -1.2 % a year
        for meter_id, meter_type, serial, site in meters:
            code, kind, supplier, green = site[0], site[6], site[8], site[9]
            if meter_type == "electricity":
                if code == flaw_missing["site_code"] and first.strftime("%Y-%m") == flaw_missing["month"]:
                    continue
                share = 0.62 if serial.endswith("E1") else 0.38
                if kind == "office":
                    share = 1.0
                kwh = base_kwh[kind] * share * _season(first, 0.12) * trend * rng.uniform(0.95, 1.05)
                renewable = 1.0 if green else round(rng.uniform(0.38, 0.47), 3)
                tariff = "green" if green else "standard"
                rows["electricity_readings"].append(
                    (None, meter_id, end.isoformat(), round(kwh, 3), tariff, supplier, renewable, stamp))
                if serial == flaw_negative["meter_serial"] and end.isoformat() == flaw_negative["reading_date"]:
                    rows["electricity_readings"].append(
                        (None, meter_id, end.isoformat(), flaw_negative["kwh"], "correction", supplier, None,
                         _stamp(rng, end, lag_days=(9, 12))))
            elif meter_type == "gas":
                kwh = base_gas[kind] * _season(first, 0.65) * trend * rng.uniform(0.93, 1.07)
                unit = site[10]
                quantity = kwh if unit == "kWh" else kwh / 10.55  # about 10.55 kWh per m3
                rows["gas_readings"].append((None, meter_id, end.isoformat(), round(quantity, 3), unit, stamp))

    # --- water bills and headcount (monthly batches) -----------------------------------
    base_water = {"plant": 4_100.0, "office": 520.0, "warehouse": 610.0}
    flaw_outlier = SAMPLE_IMPERFECTIONS["outlier"]
    people = {site[0]: float(site[12]) for site in _SITES}
    female_share = {"DE-MUC": 0.27, "DE-BER": 0.49, "NL-RTM": 0.31, "SE-GOT": 0.36, "ES-VLC": 0.34}
    for index, first in enumerate(months):
        end = _month_end(first)
        water_stamp = _batch_stamp(rng, end)
        hr_stamp = _batch_stamp(rng, end)
        for site in _SITES:
            code, kind, source = site[0], site[6], site[11]
            summer = 1.0 + 0.18 * math.sin((first.month - 4) / 12.0 * 2 * math.pi)
            withdrawal = base_water[kind] * summer * rng.uniform(0.92, 1.08)
            if code == flaw_outlier["site_code"] and first.isoformat() == flaw_outlier["period_start"]:
                withdrawal *= flaw_outlier["factor"]
            discharge = withdrawal * rng.uniform(0.78, 0.93)
            rows["water"].append((None, site_ids[code], first.isoformat(), end.isoformat(),
                                  round(withdrawal, 3), round(discharge, 3), source, water_stamp))

            people[code] = max(20.0, people[code] * rng.uniform(0.985, 1.02))
            employees = int(round(people[code]))
            female = int(round(employees * female_share[code] * rng.uniform(0.97, 1.03)))
            fte = round(employees * rng.uniform(0.90, 0.95), 2)
            contractors = int(round(employees * (0.12 if kind == "plant" else 0.06) * rng.uniform(0.7, 1.3)))
            injuries = 0
            if kind in ("plant", "warehouse"):
                injuries = sum(1 for _ in range(3) if rng.random() < (0.16 if kind == "plant" else 0.08))
            hours = round(fte * rng.uniform(138.0, 152.0), 1)
            rows["headcount"].append((None, site_ids[code], first.isoformat(), employees, fte, female,
                                      employees - female, contractors, injuries, hours, hr_stamp))

    # --- fuel purchases -------------------------------------------------------------------
    suppliers = ("SUP-0042", "SUP-0117", "SUP-0230", "SUP-0311")
    fuel_rows = []
    for first in months:
        days = calendar.monthrange(first.year, first.month)[1]
        for site in _SITES:
            code, kind = site[0], site[6]
            for fuel_type, unit, kinds, per_month, typical, (low, high) in _FUEL:
                if kind not in kinds:
                    continue
                winter = _season(first, 0.5) if fuel_type == "heating oil" else 1.0
                size = {"plant": 1.0, "warehouse": 0.7, "office": 0.4}[kind]
                for _ in range(per_month):
                    day = first.replace(day=rng.randint(1, days))
                    quantity = round(typical * size * winter * rng.uniform(0.6, 1.4), 2)
                    price = rng.uniform(low, high)
                    fuel_rows.append((day, site_ids[code], fuel_type, quantity, unit,
                                      rng.choice(suppliers), round(quantity * price, 2), _stamp(rng, day)))
    fuel_rows.sort(key=lambda r: (r[0], r[1], r[2]))
    rows["fuel_purchases"] = [(None, r[1], r[0].isoformat(), *r[2:]) for r in fuel_rows]

    # --- waste collections -------------------------------------------------------------------
    waste_rows = []
    for first in months:
        days = calendar.monthrange(first.year, first.month)[1]
        for site in _SITES:
            code, kind, country = site[0], site[6], site[2]
            size = {"plant": 1.0, "warehouse": 0.55, "office": 0.3}[kind]
            for waste_type, treatment, per_month, typical, kinds in _WASTE:
                if kind not in kinds:
                    continue
                step = days / per_month
                for n in range(per_month):
                    day = first.replace(day=min(days, int(n * step) + rng.randint(1, max(1, int(step)))))
                    mass = round(typical * size * rng.uniform(0.7, 1.3), 2)
                    waste_rows.append((day, site_ids[code], waste_type, treatment, mass,
                                       rng.choice(_CONTRACTORS[country]), _stamp(rng, day, lag_days=(1, 6))))
    waste_rows.sort(key=lambda r: (r[0], r[1], r[2]))
    rows["waste"] = [(None, r[1], r[0].isoformat(), *r[2:]) for r in waste_rows]

    # --- business travel ------------------------------------------------------------------
    employees_by_site = {site[0]: list(range(1000 + i * 1000 + 1, 1000 + i * 1000 + 1 + site[12] // 4))
                         for i, site in enumerate(_SITES)}
    far = {"New York", "Chicago", "São Paulo", "Shanghai", "Singapore"}
    destinations = sorted(_CITIES)
    weights = [1 if city in far else 4 for city in destinations]
    travel_rows = []
    for first in months:
        days = calendar.monthrange(first.year, first.month)[1]
        quiet = first.month in (8, 12)
        for site in _SITES:
            code, home = site[0], site[7]
            trips = int(round(site[12] / 30 * (0.6 if quiet else 1.0) * rng.uniform(0.8, 1.2)))
            for _ in range(trips):
                employee = rng.choice(employees_by_site[code])
                day = first.replace(day=rng.randint(1, days))
                destination = home
                while destination == home:
                    destination = rng.choices(destinations, weights)[0]
                km = _distance_km(home, destination)
                if km < 350:
                    mode = rng.choice(("car", "car", "rail"))
                elif km < 900:
                    mode = rng.choice(("rail", "flight", "flight"))
                else:
                    mode = "flight"
                cabin = None
                if mode == "flight":
                    cabin = "business" if km > 4000 and rng.random() < 0.35 else (
                        "premium_economy" if rng.random() < 0.08 else "economy")
                    km *= 1.09  # routing uplift over the great circle
                elif mode == "car":
                    km *= 1.25
                elif mode == "rail":
                    km *= 1.15
                nights = rng.choice((0, 1, 1, 2, 2, 3, 4)) if km > 250 else 0
                # an outbound and a return leg
                back = day + dt.timedelta(days=max(1, nights))
                for leg_day, origin, to in ((day, home, destination), (back, destination, home)):
                    travel_rows.append((leg_day, employee, mode, round(km, 1), origin, to, None, cabin,
                                        _stamp(rng, leg_day, lag_days=(3, 20))))
                if nights:
                    travel_rows.append((day, employee, "hotel", None, None, destination, nights, None,
                                        _stamp(rng, day, lag_days=(3, 20))))
    travel_rows.sort(key=lambda r: (r[0], r[1], r[2], r[5]))
    rows["business_travel"] = [(None, r[1], r[0].isoformat(), *r[2:]) for r in travel_rows]

    # --- energy attribute certificates (fixed: they use no random numbers, so adding them
    # changed no other table's rows) ----------------------------------------------------------
    for number, (code, kind, registry, tracking, mwh, start, end, cancelled, evidence) in enumerate(_CERTIFICATES, 1):
        rows["energy_attribute_certificates"].append(
            (number, site_ids[code], kind, registry, tracking, mwh, start, end, cancelled, evidence,
             f"{cancelled} 10:15:00.000001"))
    return rows


def create_sample_erp(path: Path, *, seed: int = 7) -> dict[str, int]:
    """Write the sample ERP database to `path` (which must not exist yet).

    Returns the number of rows of every table. The file is written next to `path` and
    moved into place at the end, so an interrupted run leaves no half-written file.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists; the sample database is only written to a new file.")
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = _generate(random.Random(seed))
    # a temporary name in the same folder (sqlite3 creates it with the usual permissions)
    temporary = str(path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"))
    if os.path.exists(temporary):
        os.remove(temporary)
    try:
        conn = sqlite3.connect(temporary)
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {SAMPLE_VERSION}")
            with conn:
                for table in TABLES:
                    data = rows[table]
                    if not data:
                        continue
                    marks = ", ".join("?" * len(data[0]))
                    conn.executemany(f"INSERT INTO {table} VALUES ({marks})", data)
            problems = conn.execute("PRAGMA foreign_key_check").fetchall()
            if problems:
                raise RuntimeError(f"sample data breaks foreign keys: {problems[:3]}")
        finally:
            conn.close()
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return {table: len(rows[table]) for table in TABLES}


def sample_version(path: Path) -> int:
    """The layout version of a sample file (0: made before versions were recorded)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def ensure_sample_erp(directory: Path) -> Path:
    """The path of `sample_erp.sqlite` in `directory`, created there if missing, and made
    again (the same seeded rows, plus what the newer layout adds) when an older version of
    the app made it: the file is generated, never edited by anyone, so nothing is lost."""
    path = Path(directory) / SAMPLE_FILE_NAME
    if path.exists() and sample_version(path) < SAMPLE_VERSION:
        fresh = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.new")
        if fresh.exists():
            fresh.unlink()
        create_sample_erp(fresh)
        os.replace(fresh, path)
    if not path.exists():
        try:
            create_sample_erp(path)
        except FileExistsError:  # another process made it meanwhile
            pass
    return path
