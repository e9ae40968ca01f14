"""Delta Lake tables read directly from object storage or a local folder (`deltalake`,
the delta-rs binding), without a Databricks warehouse.

Options: ``uri`` (``s3://bucket/prefix``, ``az://container/prefix`` or a local folder):
each immediate sub-folder holding a ``_delta_log`` is a table (named by the folder); a
``uri`` that is itself a Delta table is the one table. ``primary_key`` (comma-separated
column names) names the key: Delta declares none, and without one only full loads are
possible (a delta load must update rows in place).

* S3: ``region``, ``endpoint_url`` (S3-compatible stores, path-style; ``http://`` is
  allowed), ``access_key_id`` with the secret access key as the connector's secret;
  without access_key_id the AWS default credentials are used.
* Azure: ``account_name`` with the account key as the secret, or a connection string as
  the secret (its AccountName, AccountKey and BlobEndpoint are used; Azurite's too);
  ``account_url`` overrides the blob endpoint.

Discovery reads the Delta schema of the table's current version (Arrow types; partition
columns are ordinary columns) and the row count from the log's file statistics.

Chunking and exactly-once: the first use of a table in a connector pins its current
version (``DeltaTable(...).to_pyarrow_dataset()``); the planning queries (count, key
range, boundaries, time windows, cursor max) and every chunk read run on that snapshot
through an in-memory DuckDB over the pyarrow dataset (filters are pushed down to the
Parquet files; nothing is copied first). So the engine plans SQL-like keyset chunks and
time windows as for any database: full loads page by the key (one streamed chunk without
a key), delta loads page by (cursor, key) after the checkpoint and up to the cursor
maximum fixed at the start of the sync. A resumed sync (a new connector) opens the then
current version; its chunks are key ranges, so rows are still read once per range.
Rows whose Delta *deletion* removed them are not deleted in the workspace by a delta
load (as with any cursor source); a full load reflects them.

Errors carry the provider's code where the message has one (S3's NoSuchBucket,
InvalidAccessKeyId, SignatureDoesNotMatch, AccessDenied; Azure's ContainerNotFound,
AuthenticationFailed, ...). A folder without ``_delta_log`` is TableMissing.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator
from urllib.parse import urlparse

from esg_workbench.connectors.warehouse import RenderedSqlConnector, first_line, microsecond_timestamps
from esg_workbench.core.errors import (
    AuthenticationFailed,
    ConfigError,
    DatabaseMissing,
    EsgError,
    PermissionDenied,
    SourceError,
    SourceUnreachable,
    TableMissing,
    TransientSourceError,
)
from esg_workbench.core.specs import CancelToken, ColumnInfo, ConnectorSpec, StreamRef, TableInfo

if TYPE_CHECKING:
    import pyarrow as pa

BATCH_ROWS = 100_000

_AUTH_CODES = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidClientTokenId", "ExpiredToken",
               "InvalidToken", "AuthenticationFailed", "InvalidAuthenticationInfo", "NoAuthenticationInformation")
_DENIED_CODES = ("AccessDenied", "AuthorizationPermissionMismatch", "AuthorizationFailure", "Forbidden")
_MISSING_CODES = ("NoSuchBucket", "ContainerNotFound")
_TRANSIENT_CODES = ("SlowDown", "ServiceUnavailable", "InternalError", "ServerBusy", "RequestTimeout",
                    "OperationTimedOut")


def _family(t: "pa.DataType") -> str:
    import pyarrow as pa

    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_decimal(t):
        return "decimal"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", lambda _: False)(t):
        return "text"
    if pa.types.is_timestamp(t):
        return "timestamptz" if t.tz else "timestamp"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "binary"
    if pa.types.is_nested(t):
        return "json"
    return "other"


def _parse_connection_string(text: str) -> dict[str, str]:
    parts = {}
    for item in text.strip().split(";"):
        key, eq, value = item.partition("=")
        if eq:
            parts[key.strip()] = value.strip()
    return parts


class DeltaLakeConnector(RenderedSqlConnector):
    def __init__(self, spec: ConnectorSpec):
        super().__init__(spec)
        uri = str(spec.option("uri", "")).strip()
        if not uri:
            raise ConfigError("The Delta Lake connector needs a uri: s3://bucket/prefix, az://container/prefix "
                              "or a local folder.")
        parsed = urlparse(uri)
        scheme = parsed.scheme.lower()
        if scheme in ("s3", "s3a"):
            self.kind = "s3"
        elif scheme in ("az", "azure", "abfs", "abfss"):
            self.kind = "azure"
        elif scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt"):
            self.kind = "local"
        else:
            raise ConfigError(f"The uri scheme '{scheme}://' is not supported: use s3://, az:// or a local folder.")
        if self.kind == "local":
            self.root = Path(parsed.path if scheme == "file" else uri).expanduser()
            self.where = str(self.root)
        else:
            self.bucket = parsed.netloc.split("@", 1)[0]
            if not self.bucket:
                raise ConfigError(f"The uri '{uri}' names no {'bucket' if self.kind == 's3' else 'container'}.")
            prefix = parsed.path.lstrip("/")
            self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
            self.where = f"{'s3' if self.kind == 's3' else 'az'}://{self.bucket}/{self.prefix}"
            if self.kind == "azure" and "@" in parsed.netloc and not spec.option("account_name"):
                self._account_from_uri = parsed.netloc.split("@", 1)[1].split(".", 1)[0]
            else:
                self._account_from_uri = None
        self.fallback_key = [c.strip() for c in str(spec.option("primary_key", "")).split(",") if c.strip()]
        self._datasets: dict[str, Any] = {}  # table name -> pinned pyarrow dataset
        self._versions: dict[str, int] = {}
        self._paths: dict[str, str] | None = None  # table name -> table uri
        self._store = None
        self._lock = threading.Lock()

    # --- storage ------------------------------------------------------------------------------

    def storage_options(self) -> dict[str, str]:
        spec = self.spec
        if self.kind == "s3":
            opts = {"AWS_REGION": str(spec.option("region", "us-east-1"))}
            endpoint = spec.option("endpoint_url")
            if endpoint:
                opts["AWS_ENDPOINT_URL"] = str(endpoint)
                opts["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] = "false"
                if str(endpoint).startswith("http://"):
                    opts["AWS_ALLOW_HTTP"] = "true"
            if spec.option("access_key_id"):
                if not spec.password:
                    raise ConfigError("Key authentication needs access_key_id and the secret access key (the password).")
                opts["AWS_ACCESS_KEY_ID"] = str(spec.option("access_key_id"))
                opts["AWS_SECRET_ACCESS_KEY"] = spec.password
            return opts
        if self.kind == "azure":
            secret = (spec.password or "").strip()
            opts: dict[str, str] = {}
            endpoint = spec.option("account_url")
            if ";" in secret and "=" in secret:
                cs = _parse_connection_string(secret)
                if cs.get("AccountName"):
                    opts["azure_storage_account_name"] = cs["AccountName"]
                if cs.get("AccountKey"):
                    opts["azure_storage_account_key"] = cs["AccountKey"]
                if cs.get("SharedAccessSignature"):
                    opts["azure_storage_sas_key"] = cs["SharedAccessSignature"]
                endpoint = endpoint or cs.get("BlobEndpoint")
            else:
                if secret:
                    opts["azure_storage_account_key"] = secret
            account = spec.option("account_name") or self._account_from_uri
            if account:
                opts["azure_storage_account_name"] = str(account)
            if "azure_storage_account_name" not in opts:
                raise ConfigError("An Azure Delta uri needs account_name (or a connection string as the secret).")
            if endpoint:
                opts["azure_storage_endpoint"] = str(endpoint).rstrip("/")
                if str(endpoint).startswith("http://"):
                    opts["allow_http"] = "true"
            return opts
        return {}

    def _store_spec(self) -> ConnectorSpec:
        spec = self.spec
        if self.kind == "s3":
            options = {k: spec.option(k) for k in ("region", "endpoint_url", "access_key_id") if spec.option(k)}
            return ConnectorSpec("s3", spec.name, {**options, "bucket": self.bucket, "prefix": self.prefix},
                                 password=spec.password)
        secret = (spec.password or "").strip()
        if ";" in secret and "=" in secret:
            return ConnectorSpec("azure_blob", spec.name, {"container": self.bucket, "prefix": self.prefix,
                                                           "auth": "connection_string"}, password=secret)
        account = spec.option("account_name") or self._account_from_uri
        url = spec.option("account_url") or f"https://{account}.blob.core.windows.net"
        return ConnectorSpec("azure_blob", spec.name, {"container": self.bucket, "prefix": self.prefix,
                                                       "account_url": url,
                                                       "auth": "account_key" if secret else "anonymous"},
                             password=secret or None)

    @property
    def store(self):
        """The S3 or Azure Blob store of the file connectors: listing and its error codes."""
        if self._store is None:
            if self.kind == "s3":
                from esg_workbench.connectors.s3 import S3Store

                self._store = S3Store(self._store_spec())
            else:
                from esg_workbench.connectors.azure_blob import AzureBlobStore

                self._store = AzureBlobStore(self._store_spec())
        return self._store

    def _list_folders(self) -> list[str]:
        """Immediate sub-folders of the uri (relative names), and '' when the uri itself
        is a table."""
        if self.kind == "local":
            if not self.root.is_dir():
                raise DatabaseMissing(f"The folder {self.root} does not exist.",
                                      hint="Check the uri in the connector settings.")
            if (self.root / "_delta_log").is_dir():
                return [""]
            return sorted(p.name for p in self.root.iterdir() if (p / "_delta_log").is_dir())
        store = self.store
        with store.errors(f"Listing {self.where}"):
            if self.kind == "s3":
                client = store.client()
                top = client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix + "_delta_log/", MaxKeys=1)
                if top.get("KeyCount"):
                    return [""]
                names = []
                for page in client.get_paginator("list_objects_v2").paginate(
                        Bucket=self.bucket, Prefix=self.prefix, Delimiter="/"):
                    for p in page.get("CommonPrefixes", ()):
                        name = p["Prefix"][len(self.prefix):].rstrip("/")
                        found = client.list_objects_v2(Bucket=self.bucket, Prefix=p["Prefix"] + "_delta_log/",
                                                       MaxKeys=1)
                        if found.get("KeyCount"):
                            names.append(name)
                return sorted(names)
            container = store._container()
            if next(iter(container.list_blobs(name_starts_with=self.prefix + "_delta_log/",
                                              results_per_page=1)), None) is not None:
                return [""]
            names = []
            for item in container.walk_blobs(name_starts_with=self.prefix or None, delimiter="/"):
                if not item.name.endswith("/"):
                    continue
                found = container.list_blobs(name_starts_with=item.name + "_delta_log/", results_per_page=1)
                if next(iter(found), None) is not None:
                    names.append(item.name[len(self.prefix):].rstrip("/"))
            return sorted(names)

    def _table_paths(self) -> dict[str, str]:
        if self._paths is None:
            paths = {}
            for folder in self._list_folders():
                if self.kind == "local":
                    path = str(self.root / folder) if folder else str(self.root)
                    name = folder or self.root.name
                else:
                    path = f"{'s3' if self.kind == 's3' else 'az'}://{self.bucket}/{self.prefix}{folder}".rstrip("/")
                    name = folder or (self.prefix.rstrip("/").rsplit("/", 1)[-1] or self.bucket)
                paths[name] = path
            self._paths = paths
        return self._paths

    def _open(self, table: str):
        """The table's pinned dataset (its version at first use by this connector)."""
        with self._lock:
            if table not in self._datasets:
                path = self._table_paths().get(table)
                if path is None:
                    raise TableMissing(f"There is no Delta table '{table}' under {self.where} (a folder with "
                                       "a _delta_log).", hint="Run discovery again; the table may have been moved.")
                from deltalake import DeltaTable

                with self.errors(f"Opening the Delta table {path}"):
                    delta = DeltaTable(path, storage_options=self.storage_options() or None)
                    self._datasets[table] = (delta, delta.to_pyarrow_dataset())
                    self._versions[table] = delta.version()
            return self._datasets[table]

    def close(self) -> None:
        self._datasets.clear()
        if self._store is not None:
            self._store.close()
            self._store = None

    # --- rendering (DuckDB SQL over the pinned datasets) ------------------------------------------

    def quote(self, name: str) -> str:
        return '"' + str(name).replace('"', '""') + '"'

    def timestamp_literal(self, text: str, aware: bool) -> str:
        return f"{'TIMESTAMPTZ' if aware else 'TIMESTAMP'} '{text}'"

    def table_ref(self, stream: StreamRef) -> str:
        self._open(stream.table)
        return self.quote(stream.table)

    def window_start_sql(self, column_sql: str, window: str, family: str | None) -> str:
        return f"date_trunc('{window}', {column_sql})"

    def run_arrow(self, sql: str, what: str, cancel: CancelToken | None = None) -> "Iterator[pa.RecordBatch]":
        import duckdb

        with self.errors(what):
            con = duckdb.connect()
            try:
                with contextlib.suppress(Exception):
                    con.execute("SET TimeZone = 'UTC'")
                for name, (_, dataset) in list(self._datasets.items()):
                    con.register(name, dataset)
                reader = con.sql(sql).to_arrow_reader(BATCH_ROWS)
                for batch in reader:
                    if cancel is not None:
                        cancel.raise_if_cancelled()
                    if batch.num_rows:
                        yield microsecond_timestamps(batch)
            finally:
                con.close()

    # --- validate and discover -----------------------------------------------------------------

    def validate(self) -> str:
        if self.kind != "local":
            with self.store.errors(f"Opening {self.where}"):
                # a listing, not a HEAD: its error body carries the provider's code
                if self.kind == "s3":
                    self.store.client().list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
                else:
                    next(self.store._container().list_blobs(name_starts_with=self.prefix or None,
                                                            results_per_page=1).by_page(), None)
        tables = self._table_paths()
        if not tables:
            raise TableMissing(f"There is no Delta table under {self.where}: no folder there holds a _delta_log.",
                               hint="Point uri at the folder whose sub-folders are Delta tables (or at one table).")
        for name in tables:
            self._open(name)
        return f"Connected. {len(tables)} Delta table{'s' if len(tables) != 1 else ''} under {self.where}."

    def list_streams(self) -> list[StreamRef]:
        return [StreamRef(None, name) for name in self._table_paths()]

    def describe(self, streams: list[StreamRef] | None = None) -> list[TableInfo]:
        names = list(self._table_paths()) if streams is None else [s.table for s in streams]
        infos = []
        for name in names:
            if name not in self._table_paths():
                continue
            delta, dataset = self._open(name)
            schema = dataset.schema
            partitions = set(delta.metadata().partition_columns or [])
            columns_names = list(schema.names)
            pk = self.fallback_key if self.fallback_key and all(k in columns_names for k in self.fallback_key) else []
            cols = [ColumnInfo(name=f.name, type=str(f.type) + (" (partition)" if f.name in partitions else ""),
                               nullable=f.nullable and f.name not in pk, primary_key=f.name in pk,
                               family=_family(f.type)) for f in schema]
            info = TableInfo(stream=StreamRef(None, name), columns=cols, primary_key=pk,
                             row_estimate=self._row_estimate(delta))
            self._tables[info.stream] = info
            infos.append(info)
        return infos

    @staticmethod
    def _row_estimate(delta) -> int | None:
        try:
            import pyarrow as pa

            actions = pa.table(delta.get_add_actions(flatten=True))
            if "num_records" not in actions.column_names:
                return None
            return int(sum(v or 0 for v in actions.column("num_records").to_pylist()))
        except Exception:  # statistics are optional in Delta
            return None

    # --- errors --------------------------------------------------------------------------------

    def translate_error(self, exc: BaseException, what: str) -> EsgError:
        text = str(exc)
        for secret in (self.spec.password,):
            if secret:
                text = text.replace(secret, "***")
        low = text.lower()
        name = type(exc).__name__
        code = next((c for c in (*_AUTH_CODES, *_DENIED_CODES, *_MISSING_CODES, *_TRANSIENT_CODES)
                     if c in text), None)
        status = re.search(r"\b(?:status(?: code)?:?\s*|HTTP\s*)(\d{3})\b", text, re.I)
        status = int(status.group(1)) if status else None
        if code in _AUTH_CODES or status == 401:
            return AuthenticationFailed(f"{what}: the storage refused the credentials ({first_line(text)}).",
                                        code=code, hint="Check access_key_id and the secret, or the Azure key or "
                                                        "connection string (Edit connector, then Test connection).")
        if code in _DENIED_CODES or status == 403:
            return PermissionDenied(f"{what}: access is denied ({first_line(text)}).", code=code or "403",
                                    hint="These credentials need list and read permission on the location.")
        if code in _MISSING_CODES:
            return DatabaseMissing(f"{what}: the {'bucket' if self.kind == 's3' else 'container'} '{self.bucket}' "
                                   "does not exist.", code=code, hint="Check the uri in the connector settings.")
        if name == "TableNotFoundError" or "no files in log segment" in low or "not a delta table" in low \
                or ("table" in low and "not found" in low):
            return TableMissing(f"{what}: there is no Delta table there (no _delta_log).", code=name)
        if code in _TRANSIENT_CODES or (status or 0) >= 500 or isinstance(exc, (TimeoutError, ConnectionError)) \
                or "connection reset" in low or "timed out" in low:
            return TransientSourceError(f"{what}: the storage failed or the connection broke ({first_line(text)}).",
                                        code=code)
        if "connection refused" in low or "dns error" in low or "error sending request" in low:
            return SourceUnreachable(f"{what}: the storage cannot be reached ({first_line(text)}).",
                                     hint="Check endpoint_url / account_url and the network connection.")
        return SourceError(f"{what} failed: {name}: {first_line(text)}", code=code)
