"""Amazon S3 through the sync engine, against moto's S3 server (with IAM authentication
on, so wrong keys and missing permissions are refused as by AWS)."""

from __future__ import annotations

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
from tests.emulators import moto_s3  # noqa: F401  (a fixture)
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
def bucket(moto_s3):  # noqa: F811
    name = f"esg-{uuid.uuid4().hex[:12]}"
    moto_s3.client().create_bucket(Bucket=name)
    return name


def put(moto_s3, bucket: str, key: str, data: bytes) -> None:  # noqa: F811
    moto_s3.client().put_object(Bucket=bucket, Key=key, Body=data)


def next_second() -> None:
    """S3 keeps modification times in whole seconds: a change must fall in a later one."""
    time.sleep(1.05 - time.time() % 1 + 0.05)


def spec(moto, default_bucket, secret=None, **options) -> ConnectorSpec:
    return ConnectorSpec("s3", "s3", {**moto.options(default_bucket), **options},
                         password=moto.admin_secret if secret is None else secret)


def test_objects_land_once_and_changed_objects_replace_their_rows(ws, moto_s3, bucket):  # noqa: F811
    put(moto_s3, bucket, "esg/energy/2024-01.csv", csv_bytes(ENERGY, [["S1", 10, "2024-01-01"], ["S2", 20, "2024-01-02"]]))
    put(moto_s3, bucket, "esg/energy/2024-02.csv.gz", gzip.compress(csv_bytes(ENERGY, [["S3", 30, "2024-02-01"]])))
    put(moto_s3, bucket, "esg/water/a.parquet", parquet_bytes(pa.table({"site": ["A"], "m3": [1.5]})))
    put(moto_s3, bucket, "esg/trips/x.jsonl", jsonl_bytes([{"who": "x", "km": 1.5}, {"who": "y", "km": 2}]))
    put(moto_s3, bucket, "esg/trips/y.jsonl.gz", gzip.compress(jsonl_bytes([{"who": "z", "km": 3}])))
    put(moto_s3, bucket, "esg/", b"")  # a folder marker
    put(moto_s3, bucket, "other/ignored.csv", b"a\n1\n")  # outside the prefix
    add(ws, "s3", "s3", moto_s3.options(bucket, prefix="esg"), secret=moto_s3.admin_secret)
    message = operations.validate_connector(ws, "s3", engine=engine(ws, moto_s3.admin_secret))
    assert message == f"Connected. 5 files in 3 tables under s3://{bucket}/esg/."

    full = sync(ws, "s3", moto_s3.admin_secret)
    assert full.status is SyncStatus.SUCCESS, full.error
    streams = by_stream(full)
    assert {k: (s.chunks_planned, s.rows_written) for k, s in streams.items()} == {
        "energy": (2, 3), "trips": (2, 3), "water": (1, 1)}
    energy = streams["energy"].raw_table
    landed = rows(ws, energy, ["_esg_file", "_esg_row", "site", "kwh", "_esg_etag"])
    assert [r[:4] for r in landed] == [("esg/energy/2024-01.csv", 1, "S1", 10), ("esg/energy/2024-01.csv", 2, "S2", 20),
                                       ("esg/energy/2024-02.csv.gz", 1, "S3", 30)]
    head = moto_s3.client().head_object(Bucket=bucket, Key="esg/energy/2024-01.csv")
    assert landed[0][4] == head["ETag"]
    assert rows(ws, streams["trips"].raw_table, ["who", "km"]) == [("x", 1.5), ("y", 2.0), ("z", 3.0)]

    nothing = sync(ws, "s3", moto_s3.admin_secret, load_type="delta")
    assert nothing.status is SyncStatus.SUCCESS and nothing.rows_written == 0
    assert all(s.chunks_planned == 0 for s in nothing.streams)

    next_second()
    put(moto_s3, bucket, "esg/energy/2024-01.csv", csv_bytes(ENERGY, [["S1", 11, "2024-01-01"]]))
    changed = sync(ws, "s3", moto_s3.admin_secret, load_type="delta")
    assert changed.status is SyncStatus.SUCCESS, changed.error
    assert (by_stream(changed)["energy"].chunks_planned, changed.rows_written) == (1, 1)
    assert rows(ws, energy, ["site", "kwh"]) == [("S1", 11), ("S3", 30)]

    next_second()
    put(moto_s3, bucket, "esg/energy/2024-03.csv", csv_bytes(ENERGY, [["S4", 40, "2024-03-01"]]))
    added = sync(ws, "s3", moto_s3.admin_secret, load_type="delta")
    assert (by_stream(added)["energy"].chunks_planned, added.rows_written) == (1, 1)
    assert rows(ws, energy, ["site"]) == [("S1",), ("S3",), ("S4",)]


def test_broken_objects_fail_alone_and_retry_lands_them(ws, moto_s3, bucket):  # noqa: F811
    good = parquet_bytes(pa.table({"site": ["P1", "P2"], "m3": [1.0, 2.0]}))
    put(moto_s3, bucket, "water/1.parquet", good)
    put(moto_s3, bucket, "water/2.parquet", good[:-40])  # truncated: no footer
    put(moto_s3, bucket, "energy/a.csv", csv_bytes(ENERGY, [["S1", 1, "2024-01-01"]]))
    put(moto_s3, bucket, "energy/b.csv", b"site,kwh,day\nS2,2,2024-01-02\nS3,3\n")
    put(moto_s3, bucket, "energy/c.csv", csv_bytes(["site", "kwh"], [["S4", 4]]))
    put(moto_s3, bucket, "logs/a.jsonl", b'{"a": 1}\n{"a": 2,}\n')
    add(ws, "s3", "s3", moto_s3.options(bucket, load_type="delta"), secret=moto_s3.admin_secret)
    first = sync(ws, "s3", moto_s3.admin_secret)
    assert first.status is SyncStatus.PARTIAL_SUCCESS
    streams = by_stream(first)
    assert (streams["water"].rows_written, streams["water"].chunks_failed) == (2, 1)
    assert (streams["energy"].rows_written, streams["energy"].chunks_failed) == (1, 2)
    # its only file is broken: nothing to infer its columns from, yet it is planned and its chunk fails
    assert (streams["logs"].chunks_planned, streams["logs"].chunks_failed) == (1, 1)
    errors = "\n".join(failed_errors(ws, "s3"))
    assert "water/2.parquet is not a readable Parquet file" in errors
    assert "energy/b.csv, line 3: malformed CSV row: expected 3 values, found 2" in errors
    assert "energy/c.csv: its columns differ" in errors
    assert "logs/a.jsonl, line 2: malformed JSON line" in errors

    put(moto_s3, bucket, "water/2.parquet", good)
    put(moto_s3, bucket, "energy/b.csv", csv_bytes(ENERGY, [["S2", 2, "2024-01-02"], ["S3", 3, "2024-01-03"]]))
    put(moto_s3, bucket, "energy/c.csv", csv_bytes(ENERGY, [["S4", 4, "2024-01-04"]]))
    put(moto_s3, bucket, "logs/a.jsonl", b'{"a": 1}\n{"a": 2}\n')
    retried = sync(ws, "s3", moto_s3.admin_secret, retry_failed=True)
    assert retried.status is SyncStatus.SUCCESS, retried.error
    assert rows(ws, streams["energy"].raw_table, ["site"]) == [("S1",), ("S2",), ("S3",), ("S4",)]
    assert len(rows(ws, streams["water"].raw_table, ["site"])) == 4
    assert rows(ws, streams["logs"].raw_table, ["a"]) == [(1,), (2,)]  # the columns came with the fixed file


def test_validate_names_what_is_wrong_with_s3s_codes(moto_s3, bucket):  # noqa: F811
    put(moto_s3, bucket, "esg/a.csv", b"x\n1\n")

    def check(expected, code, words, **kw):
        secret = kw.pop("secret", None)
        with pytest.raises(expected) as err:
            create_connector(spec(moto_s3, bucket, secret, **kw)).validate()
        assert err.value.code == code, err.value.describe()
        assert words in err.value.message and err.value.hint
        assert moto_s3.admin_secret not in err.value.describe() and moto_s3.noperm_secret not in err.value.describe()
        return err.value

    check(AuthenticationFailed, "InvalidAccessKeyId", "refused the access key", access_key_id="AKIAWRONGKEY0000000")
    check(AuthenticationFailed, "SignatureDoesNotMatch", "refused", secret="wrong-secret")
    check(PermissionDenied, "AccessDenied", "denied", access_key_id=moto_s3.noperm_key, secret=moto_s3.noperm_secret)
    check(DatabaseMissing, "NoSuchBucket", "does not exist", bucket="esg-no-such-bucket")
    check(DatabaseMissing, None, "missing or empty", prefix="nothing-here")
    unreachable = check(SourceUnreachable, None, "cannot be reached", endpoint_url=f"http://127.0.0.1:{free_port()}")
    assert unreachable.transient
    with pytest.raises(ConfigError, match="secret access key"):
        create_connector(ConnectorSpec("s3", "x", moto_s3.options(bucket)))
    assert create_connector(spec(moto_s3, bucket, prefix="esg")).validate() == (
        f"Connected. 1 files in 1 tables under s3://{bucket}/esg/.")


def test_hostile_keys(ws, moto_s3, bucket):  # noqa: F811
    put(moto_s3, bucket, "Énergie 'Q1' \"x\"/Zähler + 1; DROP TABLE x.csv", csv_bytes(["Site Name"], [["Zürich"]]))
    put(moto_s3, bucket, "Énergie 'Q1' \"x\"/50% & more.csv", csv_bytes(["Site Name"], [["O'Brien"]]))
    add(ws, "s3", "s3", moto_s3.options(bucket), secret=moto_s3.admin_secret)
    result = sync(ws, "s3", moto_s3.admin_secret)
    assert result.status is SyncStatus.SUCCESS, result.error
    (stream,) = result.streams
    assert stream.stream == "Énergie 'Q1' \"x\""
    assert rows(ws, stream.raw_table, ["_esg_file", "Site Name"]) == [
        ("Énergie 'Q1' \"x\"/50% & more.csv", "O'Brien"), ("Énergie 'Q1' \"x\"/Zähler + 1; DROP TABLE x.csv", "Zürich")]
    assert sync(ws, "s3", moto_s3.admin_secret, load_type="delta").rows_written == 0
