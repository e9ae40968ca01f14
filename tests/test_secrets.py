"""A password lives in the keyring only: never in the workspace, logs, audit or errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from esg_workbench.core.errors import AuthenticationFailed
from esg_workbench.sync import operations
from esg_workbench.workspace import open_workspace
from tests.conftest import PG_HOST, PG_PORT, service_missing

PASSWORD = "esg-test-pw"  # esg_pw_user's password (scripts/setup-test-servers.sh)


@pytest.fixture
def pw_user(pg_conn, pg_database):
    import psycopg

    try:
        psycopg.connect(host=PG_HOST, port=PG_PORT, user="esg_pw_user", password=PASSWORD, dbname=pg_database).close()
    except psycopg.OperationalError:
        service_missing("the esg_pw_user PostgreSQL role (run scripts/setup-test-servers.sh)")
    pg_conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' FROM generate_series(1, 10) g;"
                    "GRANT SELECT ON t TO esg_pw_user")
    return {"host": PG_HOST, "port": PG_PORT, "database": pg_database, "username": "esg_pw_user"}


def test_no_secret_in_workspace_logs_or_output(tmp_path, keyring_ready, pw_user):
    path = tmp_path / "w.duckdb"
    ws = open_workspace(str(path))
    record = operations.add_connector(ws, "secure", "postgres", pw_user, password=PASSWORD)
    assert "password" not in record.config
    assert operations.validate_connector(ws, "secure").startswith("Connected")
    ws.close()
    env = {**os.environ}
    runs = [subprocess.run([sys.executable, "-m", "esg_workbench", "--workspace", str(path), *args],
                           capture_output=True, text=True, env=env, timeout=120)
            for args in (["sync", "secure"], ["status", "secure", "--json"], ["logs", "--json"],
                         ["connector", "list", "--json"], ["connector", "discover", "secure", "--sample-rows", "3"])]
    assert [r.returncode for r in runs] == [0] * len(runs), [r.stderr for r in runs]
    for r in runs:
        assert PASSWORD not in r.stdout + r.stderr
    for file in tmp_path.iterdir():
        assert PASSWORD.encode() not in file.read_bytes(), file.name
    from esg_workbench import credentials

    assert credentials.load_secret(record.id) == PASSWORD
    ws = open_workspace(str(path))
    operations.remove_connector(ws, "secure")
    assert credentials.load_secret(record.id) is None


def test_wrong_password_is_named_without_echoing_it(tmp_path, keyring_ready, pw_user):
    ws = open_workspace(str(tmp_path / "w.duckdb"))
    operations.add_connector(ws, "wrong", "postgres", pw_user, password="not-the-password-123")
    with pytest.raises(AuthenticationFailed) as err:
        operations.validate_connector(ws, "wrong")
    assert "esg_pw_user" in err.value.message and "authentication failed" in err.value.message
    assert "not-the-password-123" not in err.value.describe()
    operations.remove_connector(ws, "wrong")
