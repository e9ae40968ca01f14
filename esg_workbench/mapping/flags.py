"""What each data-quality flag on a KPI value means, in words an analyst reads (the app's
tooltips, the CLI, the README's Methodology section use the same text)."""

from __future__ import annotations

DESCRIPTIONS = {
    # completeness
    "missing": "no data for this site and month",
    "partial": "some months or sites are missing from this total",
    "gap": "an input that reports monthly (e.g. an electricity meter) has no data for a month here",
    "missing_value": "source rows without a quantity (NULL): left out",
    "unknown_site": "rows whose site could not be read (site '(unassigned)')",
    "site_without_country": "a site without a country: no emission factor could be chosen for it",
    "incomplete_source": "a source table feeding this value has rows that failed to sync (a failed chunk, ignored or "
                         "awaiting a retry) in its months, or in any month when the missing range is not a time window",
    "estimated": "estimated, not measured (see the estimate:<method> flag)",
    "estimate:previous_year": "estimated from the same month of the previous year",
    "estimate:neighbours": "estimated as the mean of the months before and after",
    "estimate:per_headcount": "estimated from the site's value per employee times the month's headcount",
    # units and values
    "unit_mismatch": "some rows had a unit that could not be converted (left out)",
    "unit_unknown": "some rows had a unit ESG Workbench does not know (left out)",
    "unit_ambiguous": "some rows had an ambiguous unit (gallon, ton): left out until the mapping says which",
    "not_a_number": "some rows had a value that is not a number (left out)",
    "negative": "negative input rows or a negative result",
    "outlier": "far from the site's usual months",
    "duplicate": "rows sharing a business key (counted once when the mapping says so)",
    "not_period_end": "a stock taken from an earlier month than the period's end",
    # emission factors
    "no_factor": "activity without an emission factor for its region and date: no emission counted",
    "factor_vintage": "no factor valid at the activity's date: the nearest earlier vintage was used",
    "factor_other_region": "the mapping's fallback region's factor was used (the site's region has none)",
    "lifecycle_factor": "a lifecycle grid intensity (a proxy; not a direct-emission factor)",
    "no_energy_content": "fuel without an energy content in the factor set: left out of energy",
    # market-based Scope 2
    "market_uses_location_factor": "market-based without instrument, supplier rate or residual mix: the location factor was used",
    "market_factor_negative": "a negative supplier rate was ignored",
    "instrument_surplus": "instruments hold more MWh than the site used in the month: the rest is not carried over",
    "clamped_at_zero": "corrections would have made the value negative: reported as 0",
    # gases (mapping/gases.py)
    "gwp_unknown": "the factors behind the value state no GWP set, or several: no gas mass is computed",
    "gwp:AR4": "CO2e by the 100-year GWPs of IPCC AR4 (CO2 1, CH4 25, N2O 298)",
    "gwp:AR5": "CO2e by the 100-year GWPs of IPCC AR5 (CO2 1, CH4 28, N2O 265)",
    "gwp:AR6": "CO2e by the 100-year GWPs of IPCC AR6 (CO2 1, CH4 27.0 non-fossil / 29.8 fossil, N2O 273)",
    "gwp:not stated": "GWP set not stated by the factors' source (e.g. the lifecycle grid intensities, or a "
                      "supplier's rate)",
}

#: tags that state how a value was computed rather than doubt it (the app does not tint
#: a value for them)
STATEMENT_PREFIXES = ("gwp:",)


def is_statement(flag: str) -> bool:
    return flag.startswith(STATEMENT_PREFIXES)


def doubts(flags) -> list[str]:
    """The flags that are data-quality doubts (not statements such as the GWP set)."""
    return [f for f in (flags or []) if not is_statement(f)]


def describe(flag: str) -> str:
    if flag.startswith("gwp:") and flag not in DESCRIPTIONS:
        return f"CO2e by the GWP set the factors name: {flag[4:]}"
    return DESCRIPTIONS.get(flag, flag)
