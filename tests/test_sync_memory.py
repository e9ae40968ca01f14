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
