"""Which options a connector type takes, which it needs, and what a value must look like:
checked when a connector is added, so a typo is refused at once with the list of valid
keys instead of failing at the first sync.

The rules are tables (one line per key), read by `check_options`; the connectors keep
reading their options as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from esg_workbench.connectors.registry import FILE_TABLE_OPTIONS, TYPE_OPTIONS, connector_types
from esg_workbench.core.errors import ConfigError
from esg_workbench.core.specs import LOAD_OPTIONS, TABLE_SETTINGS, TIMEOUT_OPTIONS, LoadSettings

#: file sources: reading options that may also be set for one table, as "TABLE.option"
PER_TABLE_TYPES = ("files", "s3", "azure_blob")

#: keys a type reads that no setup form shows (tuning, aliases)
EXTRA_OPTIONS = {
    "mysql": ("schema",),
    "snowflake": ("login_timeout", "network_timeout"),
    "databricks": ("http_timeout", "retry_timeout"),
}

#: keys without which a connector of the type cannot reach its source
REQUIRED_OPTIONS = {
    "postgres": ("host", "database"),
    "mysql": ("host", "database"),
    "sqlite": ("path",),
    "duckdb": ("path",),
    "sqlserver": ("host", "database"),
    "snowflake": ("account", "username"),
    "databricks": ("host", "warehouse_id", "catalog"),
    "sap_odata": ("service_url",),
    "sap_hana": ("host",),
    "files": ("path",),
    "s3": ("bucket",),
    "azure_blob": ("container",),
    "delta_lake": ("uri",),
}

YES_NO = ("yes", "no", "true", "false", "1", "0", "on", "off")


@dataclass(frozen=True)
class WholeNumber:
    low: int
    high: int

    def problem(self, key: str, value: Any) -> str | None:
        text = str(value).strip()
        if not (text.isdigit() and self.low <= int(text) <= self.high):
            return f"{key} must be a whole number from {self.low:,} to {self.high:,}."
        return None


@dataclass(frozen=True)
class OneOf:
    words: tuple[str, ...]

    def problem(self, key: str, value: Any) -> str | None:
        if str(value).strip().lower() not in self.words:
            return f"{key} must be one of: {', '.join(self.words)}."
        return None


class Duration:
    def problem(self, key: str, value: Any) -> str | None:
        from esg_workbench.core.specs import parse_duration

        try:
            parse_duration(value)
        except ConfigError:
            return f"{key} must be a duration such as 90 (seconds), 15m, 2h or 1d."
        return None


#: the form of a value, for keys that have one (other keys are free text)
VALUE_RULES = {
    "port": WholeNumber(1, 65535),
    "chunk_size": WholeNumber(1, 100_000_000),
    "page_size": WholeNumber(1, 1_000_000),
    "header_row": WholeNumber(1, 1_000_000),
    "login_timeout": WholeNumber(1, 86_400),
    "network_timeout": WholeNumber(1, 86_400),
    "http_timeout": WholeNumber(1, 86_400),
    "retry_timeout": WholeNumber(1, 86_400),
    "encrypt": OneOf(YES_NO),
    "trust_server_certificate": OneOf(YES_NO),
    "validate_certificate": OneOf(YES_NO),
    "load_type": OneOf(("full", "delta")),
    "chunk_strategy": OneOf(("auto", "id", "time")),
    "window": OneOf(("day", "week", "month")),
    "lookback": Duration(),
}


def valid_keys(type_: str) -> tuple[str, ...]:
    """Every option key a connector of this type takes, location keys first."""
    return (*TYPE_OPTIONS.get(type_, ()), *EXTRA_OPTIONS.get(type_, ()), *LOAD_OPTIONS, *TIMEOUT_OPTIONS,
            TABLE_SETTINGS)


def _known(type_: str, key: str, known: tuple[str, ...]) -> bool:
    if key in known:
        return True
    table, dot, option = key.rpartition(".")
    return bool(dot and table) and type_ in PER_TABLE_TYPES and option in FILE_TABLE_OPTIONS


def describe_keys(type_: str, loading: bool = True) -> str:
    """'host*, port, ...; loading: load_type, ...' (* = required), for help and errors."""
    required = REQUIRED_OPTIONS.get(type_, ())
    text = ", ".join(k + ("*" if k in required else "") for k in TYPE_OPTIONS.get(type_, ())) or "(none)"
    if type_ in PER_TABLE_TYPES:
        text += f" (also per table as TABLE.option: {', '.join(FILE_TABLE_OPTIONS)})"
    if not loading:
        return text
    return f"{text}; loading: {', '.join(LOAD_OPTIONS)}; timeouts: {', '.join(TIMEOUT_OPTIONS)}"


def check_options(type_: str, options: dict[str, Any]) -> None:
    """Refuse an unknown type, an unknown key, a malformed value or a missing required
    key with ConfigError naming the valid keys. Messages name keys, never echo a value
    other than the type (a value may be a secret typed into the wrong field)."""
    if type_ not in connector_types():
        raise ConfigError(f"Unknown connector type '{type_}'. Known types: {', '.join(connector_types())}.",
                          hint="Write one of the known types after --type.")
    known = valid_keys(type_)
    unknown = [k for k in options if not _known(type_, k, known)]
    if unknown:
        raise ConfigError(f"{_keys_text(unknown)} not an option of a {type_} connector.",
                          hint=f"Options of {type_} (* = required): {describe_keys(type_)}.")
    for key, value in options.items():
        rule = VALUE_RULES.get(key)
        problem = rule.problem(key, value) if rule and value not in (None, "") else None
        if problem:
            raise ConfigError(problem, hint=f"Options of {type_} (* = required): {describe_keys(type_)}.")
    missing = [k for k in REQUIRED_OPTIONS.get(type_, ()) if options.get(k) in (None, "")]
    if missing:
        raise ConfigError(f"A {type_} connector needs {_keys_text(missing, verb=False)}.",
                          hint=f"Add --option {missing[0]}=...  Options of {type_} (* = required): "
                               f"{describe_keys(type_)}.")
    from esg_workbench.connectors.registry import OWN_CURSOR

    LoadSettings.from_options(options, own_cursor=type_ in OWN_CURSOR)


def _keys_text(keys: list[str], verb: bool = True) -> str:
    names = ", ".join(f"'{k}'" for k in keys)
    if not verb:
        return names
    return names + (" is" if len(keys) == 1 else " are")
