"""Connector types by name. Modules are imported on first use to keep start-up fast."""

from __future__ import annotations

import importlib

from esg_workbench.core.errors import ConfigError
from esg_workbench.core.specs import ConnectorSpec

_TYPES = {
    "postgres": ("esg_workbench.connectors.postgres", "PostgresConnector"),
    "mysql": ("esg_workbench.connectors.mysql", "MySqlConnector"),
    "sqlite": ("esg_workbench.connectors.local_db", "SqliteConnector"),
    "duckdb": ("esg_workbench.connectors.local_db", "DuckDbConnector"),
}

#: options each type asks for, in the order a setup form shows them
TYPE_OPTIONS = {
    "postgres": ("host", "port", "database", "schema", "username"),
    "mysql": ("host", "port", "database", "username"),
    "sqlite": ("path",),
    "duckdb": ("path", "schema"),
}

NEEDS_PASSWORD = {"postgres", "mysql"}


def connector_types() -> list[str]:
    return list(_TYPES)


def create_connector(spec: ConnectorSpec):
    try:
        module_name, class_name = _TYPES[spec.type]
    except KeyError:
        raise ConfigError(
            f"Unknown connector type '{spec.type}'. Known types: {', '.join(_TYPES)}."
        ) from None
    return getattr(importlib.import_module(module_name), class_name)(spec)
