"""Shared fixtures: real servers on localhost, fresh databases per test, workspaces.

With ESG_REQUIRE_SERVICES=1 (as in .ci/run) a missing server fails the test instead
of skipping it.
"""

from __future__ import annotations

import os
import socket
import uuid

import pytest

PG_HOST = os.environ.get("ESG_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("ESG_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("ESG_TEST_PG_USER", "postgres")
MYSQL_HOST = os.environ.get("ESG_TEST_MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("ESG_TEST_MYSQL_PORT", "3306"))
MYSQL_USER = os.environ.get("ESG_TEST_MYSQL_USER", "root")

REQUIRE_SERVICES = os.environ.get("ESG_REQUIRE_SERVICES") == "1"


def service_missing(what: str) -> None:
    """Skip, or fail where services are required."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{what} is not available and ESG_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(f"{what} is not available")


@pytest.fixture
def keyring_ready():
    """A secure keyring to store secrets in (the tests run in scripts/test.sh's own session)."""
    from esg_workbench import credentials
    from esg_workbench.core.errors import KeyringUnavailable

    try:
        credentials.check_backend()
    except KeyringUnavailable as exc:
        service_missing(f"a secure keyring ({exc.message})")


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def pg_database():
    """A fresh, empty PostgreSQL database; dropped after the test. Yields its name."""
    if not port_open(PG_HOST, PG_PORT):
        service_missing(f"PostgreSQL on {PG_HOST}:{PG_PORT}")
    import psycopg

    name = f"esg_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def pg_conn(pg_database):
    """An autocommit psycopg connection to the fresh database, for arranging source data."""
    import psycopg

    with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=pg_database, autocommit=True) as conn:
        yield conn


@pytest.fixture
def pg_spec(pg_database):
    from esg_workbench.core.specs import ConnectorSpec

    return ConnectorSpec(
        type="postgres",
        name="pg",
        options={"host": PG_HOST, "port": PG_PORT, "database": pg_database, "username": PG_USER, "schema": "public"},
    )


@pytest.fixture
def mysql_database():
    """A fresh MariaDB/MySQL database; dropped after the test. Yields its name."""
    if not port_open(MYSQL_HOST, MYSQL_PORT):
        service_missing(f"MariaDB on {MYSQL_HOST}:{MYSQL_PORT}")
    import pymysql

    name = f"esg_test_{uuid.uuid4().hex[:10]}"
    admin = pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER, autocommit=True)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    try:
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


@pytest.fixture
def mysql_conn(mysql_database):
    import pymysql

    conn = pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER, database=mysql_database,
                           autocommit=True, charset="utf8mb4")
    yield conn
    conn.close()


@pytest.fixture
def mysql_spec(mysql_database):
    from esg_workbench.core.specs import ConnectorSpec

    return ConnectorSpec(
        type="mysql",
        name="my",
        options={"host": MYSQL_HOST, "port": MYSQL_PORT, "database": mysql_database, "username": MYSQL_USER},
    )


@pytest.fixture
def workspace_url(tmp_path):
    return f"duckdb:///{tmp_path / 'workspace.duckdb'}"
