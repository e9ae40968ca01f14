"""Delta Lake tables (deltalake) through the sync engine: written by the tests into a local
folder, moto's S3 server (IAM authentication on) and Azurite."""

from __future__ import annotations

import datetime as dt
import uuid

import pyarrow as pa
import pytest

deltalake = pytest.importorskip("deltalake")

from esg_workbench.connectors.registry import create_connector  # noqa: E402
from esg_workbench.core.errors import AuthenticationFailed, DatabaseMissing, TableMissing  # noqa: E402
from esg_workbench.core.specs import ConnectorSpec, StreamRef, SyncStatus  # noqa: E402
from esg_workbench.sync import operations  # noqa: E402
from tests.emulators import REGION, azurite, moto_s3  # noqa: E402,F401  (fixtures)
from tests.test_connector_files import add, by_stream, sync, ws  # noqa: E402,F401  (a fixture)

UTC = dt.timezone.utc


def energy(ids: list[int], day0: int = 1) -> pa.Table:
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "site": pa.array([f"S{i}" for i in ids]),
        "kwh": pa.array([i * 1.5 for i in ids]),
        "updated_at": pa.array([dt.datetime(2024, 1 + (i % 3), day0 + i % 20, 12, tzinfo=UTC) for i in ids],
                               pa.timestamp("us", "UTC")),
        "region": pa.array(["north" if i % 2 else "south" for i in ids]),
    })


def landed(ws, raw_table: str, columns: list[str], order: str = "id") -> list[tuple]:
    quote = ws.engine.dialect.identifier_preparer.quote
    with ws.read() as conn:
        sql = f"SELECT {', '.join(quote(c) for c in columns)} FROM {quote(raw_table)} ORDER BY {quote(order)}"
        return [tuple(r) for r in conn.exec_driver_sql(sql).fetchall()]


def source_rows(table: pa.Table, columns: list[str]) -> list[tuple]:
    rows = list(zip(*[table.column(c).to_pylist() for c in columns]))
    return sorted(rows)


def full_then_delta(ws, name: str, write, secret: str | None, options: dict) -> None:
    """The shared scenario: a full load equals the source, an append lands only the new rows."""
    first = energy(list(range(1, 26)))
    write("energy", first, mode="overwrite", partition_by=["region"])
    write("plain", energy([100, 101, 102]), mode="overwrite")  # not partitioned
    add(ws, name, "delta_lake", {**options, "primary_key": "id", "cursor_field": "updated_at"}, secret=secret)
    from tests.test_connector_files import engine

    message = operations.validate_connector(ws, name, engine=engine(ws, secret))
    assert message.startswith("Connected. 2 Delta tables under"), message

    full = sync(ws, name, secret, chunk_size=10)
    assert full.status is SyncStatus.SUCCESS, full.error
    streams = by_stream(full)
    assert streams["energy"].rows_written == 25 and streams["energy"].chunks_planned == 3
    assert streams["plain"].rows_written == 3
    cols = ["id", "site", "kwh", "updated_at", "region"]
    got = landed(ws, streams["energy"].raw_table, cols)
    assert [r[:3] + r[4:] for r in got] == [r[:3] + r[4:] for r in source_rows(first, cols)]
    assert [r[3].astimezone(UTC) if r[3].tzinfo else r[3].replace(tzinfo=UTC) for r in got] == \
        [r[3] for r in source_rows(first, cols)]

    # a delta by the cursor column: the first one after the full load re-reads only the rows
    # at the latest cursor value (the full load's checkpoint is that value, inclusive)
    latest = max(first.column("updated_at").to_pylist())
    ties = sum(1 for v in first.column("updated_at").to_pylist() if v == latest)
    delta = sync(ws, name, secret, load_type="delta", tables=["energy"])
    assert delta.status is SyncStatus.SUCCESS, delta.error
    assert by_stream(delta)["energy"].rows_written == ties
    again = sync(ws, name, secret, load_type="delta", tables=["energy"])
    assert by_stream(again)["energy"].rows_written == 0  # an exact checkpoint now

    later = pa.table({**{c: energy([26, 27]).column(c) for c in ["id", "site", "kwh", "region"]},
                      "updated_at": pa.array([dt.datetime(2024, 6, 1, tzinfo=UTC)] * 2, pa.timestamp("us", "UTC"))})
    later = later.select(first.column_names)
    write("energy", later, mode="append", partition_by=["region"])
    delta = sync(ws, name, secret, load_type="delta", tables=["energy"])
    assert delta.status is SyncStatus.SUCCESS, delta.error
    assert by_stream(delta)["energy"].rows_written == 2
    ids = [r[0] for r in landed(ws, streams["energy"].raw_table, ["id"])]
    assert ids == list(range(1, 28))


# --- local folder --------------------------------------------------------------------------


def test_local_folder_full_and_delta(ws, tmp_path):  # noqa: F811
    root = tmp_path / "lake"

    def write(table, data, **kw):
        deltalake.write_deltalake(str(root / table), data, **kw)

    full_then_delta(ws, "lake", write, None, {"uri": str(root)})


def test_hostile_names_and_no_key_full_load(ws, tmp_path):  # noqa: F811
    root = tmp_path / "lake's \"dir\""
    data = pa.table({'we"ird col': [1, 2], "select": ["a'b", 'c"d'], "Ünï cödé": [1.0, None]})
    deltalake.write_deltalake(str(root / 'tab "one";drop'), data)
    add(ws, "h", "delta_lake", {"uri": str(root)})
    result = sync(ws, "h")
    assert result.status is SyncStatus.SUCCESS, result.error
    stream = by_stream(result)['tab "one";drop']
    assert stream.rows_written == 2
    assert landed(ws, stream.raw_table, ['we"ird col', "select", "Ünï cödé"], order='we"ird col') == \
        [(1, "a'b", 1.0), (2, 'c"d', None)]
    # a delta load without a key is refused with a clear message
    operations.update_connector(ws, "h", {"uri": str(root), "cursor_field": "select"})
    bad = sync(ws, "h", load_type="delta")
    assert bad.status is not SyncStatus.SUCCESS
    assert "primary key" in str(bad.error or [s.error for s in bad.streams])


def test_discovery_and_missing_table(tmp_path):
    root = tmp_path / "lake"
    deltalake.write_deltalake(str(root / "t"), energy([1, 2, 3]), partition_by=["region"])
    (root / "not_delta").mkdir()
    connector = create_connector(ConnectorSpec("delta_lake", "d", {"uri": str(root), "primary_key": "id"}))
    [info] = connector.describe()
    assert info.stream == StreamRef(None, "t") and info.primary_key == ["id"] and info.row_estimate == 3
    families = {c.name: c.family for c in info.columns}
    assert families == {"id": "integer", "site": "text", "kwh": "float", "updated_at": "timestamptz",
                        "region": "text"}
    assert [r["id"] for r in connector.sample(info.stream, 2)] and len(connector.sample(info.stream, 2)) == 2
    with pytest.raises(TableMissing):
        connector.cursor_max(StreamRef(None, "not_delta"), "id")
    with pytest.raises(TableMissing):
        create_connector(ConnectorSpec("delta_lake", "d", {"uri": str(root / "not_delta")})).validate()
    with pytest.raises(DatabaseMissing):
        create_connector(ConnectorSpec("delta_lake", "d", {"uri": str(tmp_path / "nowhere")})).validate()


# --- moto S3 --------------------------------------------------------------------------------


def _s3_storage(moto) -> dict:
    return {"AWS_ENDPOINT_URL": moto.endpoint, "AWS_ALLOW_HTTP": "true", "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
            "AWS_REGION": REGION, "AWS_ACCESS_KEY_ID": moto.admin_key, "AWS_SECRET_ACCESS_KEY": moto.admin_secret}


def test_s3_full_and_delta_and_errors(ws, moto_s3):  # noqa: F811
    bucket = f"delta-{uuid.uuid4().hex[:12]}"
    moto_s3.client().create_bucket(Bucket=bucket)
    storage = _s3_storage(moto_s3)

    def write(table, data, **kw):
        deltalake.write_deltalake(f"s3://{bucket}/lake/{table}", data, storage_options=storage, **kw)

    options = {"uri": f"s3://{bucket}/lake", "endpoint_url": moto_s3.endpoint, "region": REGION,
               "access_key_id": moto_s3.admin_key}
    full_then_delta(ws, "s3lake", write, moto_s3.admin_secret, options)

    def validate(secret, **extra):
        return create_connector(ConnectorSpec("delta_lake", "x", {**options, **extra}, password=secret)).validate()

    with pytest.raises(AuthenticationFailed) as wrong:
        validate("not-the-secret")
    assert wrong.value.code == "SignatureDoesNotMatch"
    with pytest.raises(DatabaseMissing) as missing:
        validate(moto_s3.admin_secret, uri="s3://no-such-bucket-here/lake")
    assert missing.value.code == "NoSuchBucket"
    with pytest.raises(TableMissing):
        validate(moto_s3.admin_secret, uri=f"s3://{bucket}/nothing-here")
    # a table path without a _delta_log, read directly
    connector = create_connector(ConnectorSpec("delta_lake", "x", options, password=moto_s3.admin_secret))
    connector._paths = {"ghost": f"s3://{bucket}/lake/ghost"}
    with pytest.raises(TableMissing):
        connector.describe()
    # a user without permissions is told so, with S3's code
    with pytest.raises(Exception) as denied:
        create_connector(ConnectorSpec("delta_lake", "x", {**options, "access_key_id": moto_s3.noperm_key},
                                       password=moto_s3.noperm_secret)).validate()
    assert type(denied.value).__name__ == "PermissionDenied" and denied.value.code == "AccessDenied"


# --- Azurite ------------------------------------------------------------------------------------


def test_azure_full_and_delta(ws, azurite):  # noqa: F811
    container = f"delta-{uuid.uuid4().hex[:12]}"
    azurite.service().create_container(container)
    from tests.emulators import AZURITE_ACCOUNT, AZURITE_KEY

    storage = {"azure_storage_account_name": AZURITE_ACCOUNT, "azure_storage_account_key": AZURITE_KEY,
               "azure_storage_endpoint": azurite.blob_endpoint, "allow_http": "true"}

    def write(table, data, **kw):
        deltalake.write_deltalake(f"az://{container}/lake/{table}", data, storage_options=storage, **kw)

    full_then_delta(ws, "azlake", write, azurite.connection_string, {"uri": f"az://{container}/lake"})

    # the account key as the secret, with account_name and account_url
    connector = create_connector(ConnectorSpec(
        "delta_lake", "k", {"uri": f"az://{container}/lake", "account_name": AZURITE_ACCOUNT,
                            "account_url": azurite.blob_endpoint}, password=AZURITE_KEY))
    assert connector.validate() == f"Connected. 2 Delta tables under az://{container}/lake/."
    wrong_key = "A" * 86 + "=="
    with pytest.raises(AuthenticationFailed) as refused:
        create_connector(ConnectorSpec(
            "delta_lake", "k", {"uri": f"az://{container}/lake", "account_name": AZURITE_ACCOUNT,
                                "account_url": azurite.blob_endpoint}, password=wrong_key)).validate()
    assert refused.value.code
    with pytest.raises(DatabaseMissing) as missing:
        create_connector(ConnectorSpec("delta_lake", "k", {"uri": "az://no-such-container/lake"},
                                       password=azurite.connection_string)).validate()
    assert missing.value.code == "ContainerNotFound"
