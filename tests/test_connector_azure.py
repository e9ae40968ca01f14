"""Azure Blob Storage through the sync engine, against Azurite's blob service: connection
string, account key and SAS authentication, Azure's own error codes, broken blobs."""

from __future__ import annotations

import datetime as dt
import gzip
import time
import uuid

import pyarrow as pa
import pytest

from esg_workbench.connectors.registry import create_connector
from esg_workbench.core.errors import (
    AuthenticationFailed,
    ConfigError,
    DatabaseMissing,
    PermissionDenied,
    SourceUnreachable,
)
from esg_workbench.core.specs import ConnectorSpec, SyncStatus
from esg_workbench.sync import operations
from tests.conftest import free_port
from tests.emulators import AZURITE_ACCOUNT, AZURITE_KEY, azurite  # noqa: F401  (a fixture)
from tests.test_connector_files import (
    ENERGY,
    add,
    by_stream,
    csv_bytes,
    engine,
    failed_errors,
    jsonl_bytes,
    parquet_bytes,
    rows,
    sync,
    ws,  # noqa: F401  (a fixture)
)


@pytest.fixture
def container(azurite):  # noqa: F811
    name = f"esg-{uuid.uuid4().hex[:12]}"
    azurite.service().create_container(name)
    return name


def put(azurite, container: str, name: str, data: bytes) -> None:  # noqa: F811
    azurite.service().get_container_client(container).upload_blob(name, data, overwrite=True)


def next_second() -> None:
    """Blob modification times are whole seconds: a change must fall in a later one."""
    time.sleep(1.1 - time.time() % 1)


def sas_token(container: str, **permissions) -> str:
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    return generate_container_sas(AZURITE_ACCOUNT, container, account_key=AZURITE_KEY,
                                  permission=ContainerSasPermissions(**permissions),
                                  expiry=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1))


def test_blobs_land_once_and_changed_blobs_replace_their_rows(ws, azurite, container):  # noqa: F811
    put(azurite, container, "esg/energy/2024-01.csv", csv_bytes(ENERGY, [["S1", 1.5, "2024-01-01"], ["S2", 2, "2024-01-02"]]))
    put(azurite, container, "esg/energy/2024-02.csv.gz", gzip.compress(csv_bytes(ENERGY, [["S3", 3, "2024-02-01"]])))
    put(azurite, container, "esg/water/a.parquet", parquet_bytes(pa.table({"site": ["A", "B"], "m3": [1, 2]})))
    put(azurite, container, "esg/trips/x.jsonl.gz", gzip.compress(jsonl_bytes([{"who": "x", "km": 1}])))
    add(ws, "az", "azure_blob", {"container": container, "prefix": "esg/"}, secret=azurite.connection_string)
    message = operations.validate_connector(ws, "az", engine=engine(ws, azurite.connection_string))
    assert message == f"Connected. 4 files in 3 tables under {azurite.blob_endpoint}/{container}/esg/."
    found = operations.discover_connector(ws, "az", sample_rows=2, engine=engine(ws, azurite.connection_string))
    assert {t.stream.table: t.row_estimate for t in found.tables} == {"energy": 3, "trips": 1, "water": 2}

    full = sync(ws, "az", azurite.connection_string)
    assert full.status is SyncStatus.SUCCESS, full.error
    streams = by_stream(full)
    assert {k: (s.chunks_planned, s.rows_written) for k, s in streams.items()} == {
        "energy": (2, 3), "trips": (1, 1), "water": (1, 2)}
    energy = streams["energy"].raw_table
    assert rows(ws, energy, ["_esg_file", "site", "kwh"]) == [
        ("esg/energy/2024-01.csv", "S1", 1.5), ("esg/energy/2024-01.csv", "S2", 2.0), ("esg/energy/2024-02.csv.gz", "S3", 3.0)]
    assert sync(ws, "az", azurite.connection_string, load_type="delta").rows_written == 0

    next_second()
    put(azurite, container, "esg/energy/2024-01.csv", csv_bytes(ENERGY, [["S1", 9.5, "2024-01-01"]]))
    put(azurite, container, "esg/energy/2024-03.csv", csv_bytes(ENERGY, [["S4", 4, "2024-03-01"]]))
    delta = sync(ws, "az", azurite.connection_string, load_type="delta")
    assert delta.status is SyncStatus.SUCCESS, delta.error
    assert (by_stream(delta)["energy"].chunks_planned, delta.rows_written) == (2, 2)
    assert rows(ws, energy, ["site", "kwh"]) == [("S1", 9.5), ("S3", 3.0), ("S4", 4.0)]
    assert sync(ws, "az", azurite.connection_string, load_type="delta").rows_written == 0


def test_account_key_and_sas_authentication(ws, azurite, container):  # noqa: F811
    put(azurite, container, "meters/a.csv", csv_bytes(["site", "kwh"], [["S1", 1]]))
    add(ws, "by-key", "azure_blob", {"container": container, "account_url": azurite.blob_endpoint,
                                     "auth": "account_key"}, secret=AZURITE_KEY)
    assert sync(ws, "by-key", AZURITE_KEY).rows_written == 1
    token = sas_token(container, read=True, list=True)
    add(ws, "by-sas", "azure_blob", {"container": container, "account_url": azurite.blob_endpoint}, secret=token)
    assert sync(ws, "by-sas", token).rows_written == 1  # told from the secret: a SAS token


def test_validate_names_what_is_wrong_with_azures_codes(azurite, container):  # noqa: F811
    put(azurite, container, "esg/a.csv", b"x\n1\n")

    def check(expected, code, words, secret, **options):
        options = {k: v for k, v in {"container": container, "account_url": azurite.blob_endpoint,
                                     **options}.items() if v is not None}
        with pytest.raises(expected) as err:
            create_connector(ConnectorSpec("azure_blob", "az", options, password=secret)).validate()
        assert err.value.code == code, err.value.describe()
        assert words in err.value.message and err.value.hint
        assert secret not in err.value.describe()
        return err.value

    wrong_key = "A" * 86 + "=="
    # Azurite answers a wrong key with AuthorizationFailure where Azure says AuthenticationFailed
    check(AuthenticationFailed, "AuthorizationFailure", "refused the account key", wrong_key, auth="account_key")
    check(DatabaseMissing, "ContainerNotFound", "does not exist", azurite.connection_string, container="no-such")
    check(PermissionDenied, "AuthorizationPermissionMismatch", "denied", sas_token(container, read=True))
    check(DatabaseMissing, None, "missing or empty", azurite.connection_string, prefix="nothing-here")
    unreachable = check(SourceUnreachable, None, "cannot be reached", AZURITE_KEY, auth="account_key",
                        account_url=f"http://127.0.0.1:{free_port()}/{AZURITE_ACCOUNT}")
    assert unreachable.transient
    token = sas_token(container, read=True, list=True)
    sas_string = f"BlobEndpoint={azurite.blob_endpoint};SharedAccessSignature={token}"
    missing = check(DatabaseMissing, None, "missing or empty", sas_string, prefix="nothing-here", account_url=None)
    assert "sig=" not in missing.describe() and azurite.blob_endpoint in missing.message
    with pytest.raises(ConfigError, match="account_url"):
        create_connector(ConnectorSpec("azure_blob", "az", {"container": container}, password=AZURITE_KEY))
    with pytest.raises(ConfigError, match="container"):
        create_connector(ConnectorSpec("azure_blob", "az", {}, password=azurite.connection_string))
    good = create_connector(ConnectorSpec("azure_blob", "az", {"container": container, "prefix": "esg"},
                                          password=azurite.connection_string))
    assert good.validate().startswith("Connected. 1 files in 1 tables")


def test_broken_blobs_fail_alone_and_retry_lands_them(ws, azurite, container):  # noqa: F811
    good = parquet_bytes(pa.table({"site": ["P1", "P2"], "m3": [1.0, 2.0]}))
    put(azurite, container, "water/1.parquet", good)
    put(azurite, container, "water/2.parquet", good[:100])
    put(azurite, container, "water/3.parquet", parquet_bytes(pa.table({"site": ["P3"], "litres": [3.0]})))
    add(ws, "az", "azure_blob", {"container": container, "load_type": "delta"}, secret=azurite.connection_string)
    first = sync(ws, "az", azurite.connection_string)
    assert first.status is SyncStatus.PARTIAL_SUCCESS
    (stream,) = first.streams
    assert (stream.chunks_done, stream.chunks_failed, stream.rows_written) == (1, 2, 2)
    errors = "\n".join(failed_errors(ws, "az"))
    assert "water/2.parquet is not a readable Parquet file" in errors
    assert "water/3.parquet: its columns differ" in errors and "missing 'm3'" in errors
    put(azurite, container, "water/2.parquet", good)
    put(azurite, container, "water/3.parquet", parquet_bytes(pa.table({"site": ["P3"], "m3": [3.0]})))
    retried = sync(ws, "az", azurite.connection_string, retry_failed=True)
    assert retried.status is SyncStatus.SUCCESS, retried.error
    assert [r[0] for r in rows(ws, stream.raw_table, ["site"])] == ["P1", "P2", "P1", "P2", "P3"]
