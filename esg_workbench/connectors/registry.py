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
    "sqlserver": ("esg_workbench.connectors.sqlserver", "SqlServerConnector"),
    "snowflake": ("esg_workbench.connectors.snowflake", "SnowflakeConnector"),
    "databricks": ("esg_workbench.connectors.databricks", "DatabricksConnector"),
    "sap_odata": ("esg_workbench.connectors.sap_odata", "ODataConnector"),
    "sap_hana": ("esg_workbench.connectors.sap_hana", "HanaConnector"),
    "files": ("esg_workbench.connectors.local_files", "LocalFilesConnector"),
    "s3": ("esg_workbench.connectors.s3", "S3Connector"),
    "azure_blob": ("esg_workbench.connectors.azure_blob", "AzureBlobConnector"),
    "delta_lake": ("esg_workbench.connectors.delta_lake", "DeltaLakeConnector"),
}

_FILE_OPTIONS = ("pattern", "sheet", "header_row", "delimiter", "encoding", "column_types", "decimal", "thousands",
                 "date_format", "skip_footer")
#: of those, the ones that may also be set for one table, as "TABLE.option"
FILE_TABLE_OPTIONS = tuple(o for o in _FILE_OPTIONS if o != "pattern")

#: options each type asks for, in the order a setup form shows them
TYPE_OPTIONS = {
    "postgres": ("host", "port", "database", "schema", "username"),
    "mysql": ("host", "port", "database", "username"),
    "sqlite": ("path",),
    "duckdb": ("path", "schema"),
    "sqlserver": ("host", "port", "database", "schema", "username", "encrypt", "trust_server_certificate"),
    # password auth, or key-pair auth: private_key_path (the key's passphrase is the secret)
    "snowflake": ("account", "username", "warehouse", "role", "database", "schema", "private_key_path"),
    # the secret is a personal access token; primary_key names key columns for tables
    # that declare none (Databricks constraints are informational and often absent)
    "databricks": ("host", "warehouse_id", "catalog", "schema", "primary_key"),
    # one OData service (v2 or v4): its entity sets are the tables; basic auth with
    # username and the password, or none; client is the SAP client (sap-client);
    # verify_tls=no (or a CA bundle path) for self-signed certificates
    "sap_odata": ("service_url", "username", "client", "verify_tls", "page_size"),
    # SAP HANA SQL through hdbcli; port 443 for HANA Cloud, 3<nn>15 on premise;
    # database names a tenant of a multi-tenant system
    "sap_hana": ("host", "port", "database", "schema", "username", "encrypt", "validate_certificate"),
    # file sources (connectors/files.py): each subfolder is a table, a file is a chunk;
    # the reading options after the location are the same for all three
    "files": ("path", *_FILE_OPTIONS),
    # the secret is the secret access key of access_key_id; without access_key_id the AWS
    # default credentials (environment, profile, instance role) are used; auth=anonymous
    # reads public buckets
    "s3": ("bucket", "prefix", "region", "endpoint_url", "access_key_id", "auth", *_FILE_OPTIONS),
    # the secret is a connection string, a SAS token or the account key (auth says which;
    # by default it is told from the secret itself); account_url for SAS and account key
    "azure_blob": ("container", "prefix", "account_url", "auth", *_FILE_OPTIONS),
    # Delta tables (deltalake): uri is s3://bucket/prefix, az://container/prefix or a local
    # folder, each sub-folder with a _delta_log a table; the secret is the S3 secret access
    # key of access_key_id, or the Azure account key or connection string; primary_key
    # names key columns (Delta declares none; without one only full loads)
    "delta_lake": ("uri", "primary_key", "region", "endpoint_url", "access_key_id", "account_name", "account_url"),
}

#: types whose tables bring their own cursor (a file's modification time): delta loads
#: need no cursor_field
OWN_CURSOR = {"files", "s3", "azure_blob"}

NEEDS_PASSWORD = {"postgres", "mysql", "sqlserver", "snowflake", "databricks", "sap_odata", "sap_hana", "s3", "azure_blob", "delta_lake"}


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
