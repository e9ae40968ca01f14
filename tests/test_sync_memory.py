"""A sync process caps glibc's malloc arenas (workspace/database.py): the memory its
threads free is reused instead of piling up per thread. The saving itself (about 50 MB
of a 1M-row sync's peak) is measured in tests/benchmarks, not here."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from esg_workbench.workspace import database

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")


@glibc
def test_the_arenas_are_capped_on_glibc():
    # in a fresh process, so that the result is not left over from another test's call
    probe = ("import sys; from esg_workbench.workspace import database as d; "
             "sys.exit(0 if d.limit_malloc_arenas() else 3)")
    env_without = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    done = subprocess.run([sys.executable, "-c", probe], env=env_without, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr


def test_the_users_own_setting_wins(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert database.limit_malloc_arenas() is False


@glibc
def test_a_workspace_opens_and_works_with_the_cap(tmp_path, monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    ws = database.open_workspace(str(tmp_path / "w.duckdb"))
    try:
        with ws.read() as conn:
            assert database.schema.SCHEMA_VERSION == ws.schema_version(conn)
    finally:
        ws.close()


def _cached_table_mb(conn) -> float:
    raw = conn.connection.driver_connection
    return raw.execute("SELECT coalesce(sum(memory_usage_bytes), 0) / 2^20 FROM duckdb_memory() "
                       "WHERE tag = 'BASE_TABLE'").fetchone()[0]


def test_landed_blocks_leave_duckdbs_memory_and_the_limit_stays(tmp_path, monkeypatch):
    # DuckDB caches every block it writes up to its memory_limit: without the release a
    # sync's memory grew with the table (about 36 MB per million wide rows). The release
    # evicts down to raw_tables._EVICT_TO_MB, lowered here to what a small test table fills.
    import pyarrow as pa

    from esg_workbench.workspace import raw_tables

    monkeypatch.setattr(raw_tables, "_EVICT_TO_MB", 0.5)
    ws = database.open_workspace(str(tmp_path / "w.duckdb"))
    try:
        with ws.read() as conn:  # DuckDB's default: 80% of the machine's memory
            limit = conn.exec_driver_sql("SELECT current_setting('memory_limit')").scalar()
        n = 122_880  # a DuckDB row group: written to the file by the appending transaction
        cached = []  # DuckDB's table memory before each release (MB)
        for chunk in range(4):
            ids = range(chunk * n, (chunk + 1) * n)
            batch = pa.table({"id": pa.array(ids, pa.int64()),
                              "text": [f"{i * 2654435761 % 2**32:08x} Zähler geprüft ✓" for i in ids]})
            with ws.transaction() as conn:
                if chunk == 0:
                    raw_tables.create_table(ws, conn, "raw_t", batch.schema)
                raw_tables.append(ws, conn, "raw_t", batch, 1, chunk)
            with ws.read() as conn:
                cached.append(_cached_table_mb(conn))
            raw_tables.release_written_blocks(ws)
            with ws.read() as conn:
                assert _cached_table_mb(conn) < cached[-1] / 2, cached
                assert conn.exec_driver_sql("SELECT current_setting('memory_limit')").scalar() == limit
        assert cached[0] > 0.5 and cached[-1] < 2 * cached[0], cached  # it would hold all four chunks
        with ws.read() as conn:  # evicted blocks are read back from the file
            assert conn.exec_driver_sql("SELECT count(*), count(DISTINCT id), max(id) FROM raw_t").one() == (
                4 * n, 4 * n, 4 * n - 1)
        monkeypatch.setattr(raw_tables, "_EVICT_TO_MB", 0)
        with ws.transaction() as conn:
            conn.exec_driver_sql("SET memory_limit = '1GB'")
        raw_tables.release_written_blocks(ws)
        with ws.read() as conn:  # a limit someone set bounds the cache: left as it is
            assert conn.exec_driver_sql("SELECT current_setting('memory_limit')").scalar() == "953.6 MiB"
    finally:
        ws.close()


def test_the_release_waits_for_a_write_transaction_under_way(tmp_path):
    # Lowering DuckDB's limit while another thread's apply is in its transaction would evict
    # that transaction's uncommitted blocks (where DuckDB 2.0.1 was seen to corrupt strings):
    # the release waits until no write transaction is open. The writer below waits up to 2 s
    # for the release to finish first; it must not.
    import threading

    from esg_workbench.workspace import raw_tables

    ws = database.open_workspace(str(tmp_path / "w.duckdb"))
    order, released = [], threading.Event()

    def release() -> None:
        raw_tables.release_written_blocks(ws)
        order.append("released")
        released.set()

    try:
        with ws.transaction() as conn:
            conn.exec_driver_sql("CREATE TABLE t AS SELECT range AS i FROM range(10)")
            releasing = threading.Thread(target=release)
            releasing.start()
            released.wait(2)
            order.append("committed")
        releasing.join(30)
        assert order == ["committed", "released"]
    finally:
        ws.close()
