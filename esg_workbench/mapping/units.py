"""Units through pint: parsing what source systems write, conversion factors, dimensions.

Only multiplicative units are used (no temperatures), so a conversion is one factor and
compiles to a multiplication in SQL. Emissions get a dimension of their own ([co2e]):
kg CO2e and t CO2e convert to each other, never to plain mass.
"""

from __future__ import annotations

import functools
import re

import pint

from esg_workbench.mapping.errors import AmbiguousUnit, IncompatibleUnit, UnknownUnit

_DEFINITIONS = """
gram_co2e = [co2e] = gCO2e
kilogram_co2e = 1000 * gram_co2e = kgCO2e
tonne_co2e = 1000000 * gram_co2e = tCO2e
person = [] = persons = headcount
passenger = [] = passengers
normal_cubic_metre = 288.15 / 273.15 * m ** 3 = Nm3
million_btu = 1e6 * Btu = MMBtu
"""

#: what source systems write (lower-cased, spaces squeezed) -> a pint expression
ALIASES = {
    "kwh": "kWh", "kw h": "kWh", "kilowatt hour": "kWh", "kilowatt hours": "kWh", "kilowatt-hour": "kWh",
    "mwh": "MWh", "megawatt hour": "MWh", "megawatt hours": "MWh", "gwh": "GWh", "wh": "Wh",
    "gj": "GJ", "mj": "MJ", "tj": "TJ", "therm": "therm", "therms": "therm",
    "l": "litre", "lt": "litre", "ltr": "litre", "ltrs": "litre", "litre": "litre", "litres": "litre",
    "liter": "litre", "liters": "litre",
    "m3": "m**3", "m³": "m**3", "cbm": "m**3", "cubic metre": "m**3", "cubic metres": "m**3",
    "cubic meter": "m**3", "cubic meters": "m**3",
    "megalitre": "megalitre", "megalitres": "megalitre", "megaliter": "megalitre", "megaliters": "megalitre",
    "million litres": "megalitre",
    "kg": "kg", "kilogram": "kg", "kilograms": "kg", "kgs": "kg",
    "t": "tonne", "tonne": "tonne", "tonnes": "tonne", "metric ton": "tonne", "metric tons": "tonne",
    "g": "g",
    "km": "km", "kilometre": "km", "kilometres": "km", "kilometer": "km", "kilometers": "km",
    "mile": "mile", "miles": "mile", "mi": "mile",
    "passenger.km": "km", "passenger km": "km", "pkm": "km", "p.km": "km",
    "h": "hour", "hr": "hour", "hrs": "hour", "hour": "hour", "hours": "hour",
    "kgco2e": "kgCO2e", "kg co2e": "kgCO2e", "tco2e": "tCO2e", "t co2e": "tCO2e", "gco2e": "gCO2e",
    "kg co2e/kwh": "kgCO2e/kWh", "kgco2e/kwh": "kgCO2e/kWh",
    "headcount": "person", "persons": "person", "person": "person", "employees": "person", "fte": "person",
    "count": "dimensionless", "1": "dimensionless", "": "dimensionless", "number": "dimensionless",
    "%": "percent", "percent": "percent",
    # spellings ERP systems use
    "kwhr": "kWh", "kw-h": "kWh", "kw.h": "kWh", "kwh.": "kWh", "mwhr": "MWh", "mw h": "MWh", "mw-h": "MWh",
    "m^3": "m**3", "m**3": "m**3", "cu m": "m**3", "cu. m": "m**3", "cu.m": "m**3", "cu.m.": "m**3",
    "kubikmeter": "m**3", "sm3": "m**3", "scm": "m**3",
    "nm3": "normal_cubic_metre", "nm³": "normal_cubic_metre", "n m3": "normal_cubic_metre", "nmc": "normal_cubic_metre",
    "ltr.": "litre", "lit": "litre", "lts": "litre",
    "tonne (metric)": "tonne", "metric tonne": "tonne", "metric tonnes": "tonne", "te": "tonne",
    "kilo": "kg", "kilos": "kg", "kg.": "kg",
    "us gallon": "gallon", "us gallons": "gallon", "us gal": "gallon", "usgal": "gallon", "gal (us)": "gallon",
    "imperial gallon": "imperial_gallon", "imperial gallons": "imperial_gallon", "imp gal": "imperial_gallon",
    "uk gallon": "imperial_gallon", "uk gal": "imperial_gallon", "gal (uk)": "imperial_gallon",
    "short ton": "short_ton", "short tons": "short_ton", "us ton": "short_ton", "long ton": "long_ton",
    "long tons": "long_ton", "uk ton": "long_ton",
    "mmbtu": "million_btu", "btu": "Btu", "therm (us)": "US_therm",
}
#: unit texts that name several units: never guessed; the canvas asks which one is meant
AMBIGUOUS = {
    "gallon": ("US gallon", "imperial gallon"), "gallons": ("US gallon", "imperial gallon"),
    "gal": ("US gallon", "imperial gallon"), "gals": ("US gallon", "imperial gallon"),
    "ton": ("short ton", "long ton", "tonne"), "tons": ("short ton", "long ton", "tonne"),
    "mt": ("tonne", "megatonne"),
}
#: case matters for these (ML is a megalitre, ml a millilitre; Ml is the UK water industry's megalitre)
CASE_SENSITIVE = {"ML": "megalitre", "Ml": "megalitre", "ml": "millilitre", "mL": "millilitre"}

#: dimension names used in the catalog
DIMENSIONS = {
    "energy": "[length] ** 2 * [mass] / [time] ** 2",
    "volume": "[length] ** 3",
    "mass": "[mass]",
    "length": "[length]",
    "time": "[time]",
    "count": "",
    "emissions": "[co2e]",
    "emission_intensity": "[co2e] * [time] ** 2 / [length] ** 2 / [mass]",
}


@functools.lru_cache(maxsize=1)
def registry() -> pint.UnitRegistry:
    ureg = pint.UnitRegistry(autoconvert_offset_to_baseunit=False)
    for line in _DEFINITIONS.strip().splitlines():
        ureg.define(line)
    ureg.define("megalitre = 1e6 * litre")
    return ureg


def canonical_text(unit: str | None) -> str:
    """The pint expression for a unit as a source writes it."""
    text = "" if unit is None else str(unit).strip()
    if text in CASE_SENSITIVE:
        return CASE_SENSITIVE[text]
    key = re.sub(r"\s+", " ", text.lower())
    return ALIASES.get(key, text)


def ambiguity(unit: str | None) -> tuple[str, ...]:
    """The units an ambiguous unit text may mean (empty when it is not ambiguous)."""
    return AMBIGUOUS.get(re.sub(r"\s+", " ", str(unit or "").strip().lower()), ())


@functools.lru_cache(maxsize=4096)
def parse(unit: str | None) -> pint.Unit:
    """A pint unit; UnknownUnit when the text names none, AmbiguousUnit when it names
    several ('gallon', 'ton')."""
    choices = ambiguity(unit)
    if choices:
        raise AmbiguousUnit(f"'{unit}' may mean {' or '.join(choices)}: say which.", choices=choices)
    text = canonical_text(unit)
    try:
        quantity = registry().parse_expression(text) if text else registry().dimensionless
        if isinstance(quantity, pint.Unit):
            return quantity
        if quantity.magnitude != 1:
            raise UnknownUnit(f"'{unit}' is a quantity, not a unit.")
        return quantity.units
    except UnknownUnit:
        raise
    except Exception:
        raise UnknownUnit(f"'{unit}' is not a unit ESG Workbench knows.") from None


def dimension(unit: str | None) -> str:
    """energy, volume, mass, length, time, count, emissions, ... or the pint dimensionality."""
    dims = parse(unit).dimensionality
    for name, spelled in DIMENSIONS.items():
        if dims == _dimensionality(spelled):
            return name
    return str(dims)


@functools.lru_cache(maxsize=64)
def _dimensionality(spelled: str):
    ureg = registry()
    return ureg.get_dimensionality(spelled) if spelled else ureg.dimensionless.dimensionality


def unit_of_dimension(unit: str | None, name: str) -> bool:
    """Whether `unit` measures the catalog dimension `name` (energy, volume, ...)."""
    try:
        return parse(unit).dimensionality == _dimensionality(DIMENSIONS[name])
    except (UnknownUnit, KeyError):
        return False


def is_known(unit: str | None) -> bool:
    try:
        parse(unit)
        return True
    except UnknownUnit:
        return False


@functools.lru_cache(maxsize=4096)
def factor(from_unit: str | None, to_unit: str | None) -> float:
    """The number x so that value[from_unit] * x = value[to_unit]."""
    source, target = parse(from_unit), parse(to_unit)
    if source.dimensionality != target.dimensionality:
        raise IncompatibleUnit(
            f"{from_unit or 'a count'} ({dimension(from_unit)}) cannot be converted to {to_unit or 'a count'} ({dimension(to_unit)}).")
    value = float(registry().Quantity(1.0, source).to(target).magnitude)
    return float(f"{value:.15g}")  # 0.001, not 0.0009999999999999998


def convert(value: float, from_unit: str | None, to_unit: str | None) -> float:
    return value * factor(from_unit, to_unit)


def compatible(unit_a: str | None, unit_b: str | None) -> bool:
    try:
        return parse(unit_a).dimensionality == parse(unit_b).dimensionality
    except UnknownUnit:
        return False
