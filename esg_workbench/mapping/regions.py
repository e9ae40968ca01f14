"""Regions of sites and factors: ISO 3166 country codes, optionally with a subdivision or
grid region ("US-CA", "GB-SCT").

A region is written as the ISO 3166-1 alpha-2 code of the country, upper case, followed
by "-" and the subdivision when there is one. Factor files name countries in many ways
(DESNZ writes "United Kingdom", the grid-intensity file ISO alpha-3 codes), so every
spelling goes through `normalize`, which reads the shipped ISO 3166 table
(resources/factors/iso3166-countries.csv). A text that names no country is kept as it
is (upper-cased), so it can still be matched exactly, and `is_country` tells.
"""

from __future__ import annotations

import csv
import functools
import re

from esg_workbench.mapping.resources import resources_dir

ISO_FILE = "factors/iso3166-countries.csv"
#: names factor sets use that the ISO table spells differently
_ALIASES = {
    "uk": "GB", "great britain": "GB", "england": "GB", "usa": "US", "united states": "US",
    "people's republic of china": "CN", "china": "CN", "korea": "KR", "south korea": "KR", "russia": "RU",
    "vietnam": "VN", "turkey": "TR", "hong kong": "HK", "czech republic": "CZ", "iran": "IR",
    "taiwan": "TW", "bolivia": "BO", "venezuela": "VE", "tanzania": "TZ", "syria": "SY", "laos": "LA",
    "moldova": "MD", "north korea": "KP",
}


@functools.lru_cache(maxsize=1)
def _table() -> tuple[dict[str, str], dict[str, str], set[str]]:
    by_alpha3, by_name, alpha2 = {}, {}, set()
    with open(resources_dir() / ISO_FILE, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            alpha2.add(row["alpha2"])
            by_alpha3[row["alpha3"]] = row["alpha2"]
            by_name[row["name"].lower()] = row["alpha2"]
    return by_alpha3, by_name, alpha2


def normalize(text: str | None) -> str | None:
    """'de', 'DEU', 'Germany' -> 'DE'; 'us-ca', 'US CA' -> 'US-CA'; '' or None -> None."""
    if text is None:
        return None
    value = re.sub(r"\s+", " ", str(text)).strip()
    if not value:
        return None
    by_alpha3, by_name, alpha2 = _table()
    low = value.lower()
    if low in _ALIASES:
        return _ALIASES[low]
    if low in by_name:
        return by_name[low]
    m = re.fullmatch(r"([A-Za-z]{2,3})(?:[- _]([A-Za-z0-9]{1,3}))?", value)
    if m:
        country = m.group(1).upper()
        country = by_alpha3.get(country, country)
        if country in alpha2:
            return country + (f"-{m.group(2).upper()}" if m.group(2) else "")
    return value.upper()


def is_country(region: str | None) -> bool:
    """Whether a normalized region starts with a known ISO 3166 country code."""
    return bool(region) and region.split("-")[0] in _table()[2]


def join(country: str | None, subdivision: str | None) -> str | None:
    """The region of a site: its country, and its subdivision when given ('US', 'CA' -> 'US-CA')."""
    code = normalize(country)
    if code is None:
        return None
    sub = re.sub(r"\s+", "", str(subdivision or "")).upper()
    if sub and "-" not in code:
        return f"{code}-{sub}"
    return code


def widening(region: str | None) -> list[str]:
    """The region and then its country: 'US-CA' -> ['US-CA', 'US']; never another country."""
    if not region:
        return []
    out = [region]
    if "-" in region:
        out.append(region.split("-")[0])
    return out
