"""Credential rotation (issue 16) against a real MariaDB account whose password the test
changes, with the real keyring of scripts/test.sh: a new password is validated before
it replaces the old one, a wrong one keeps the old, every change is audited without the
secret, and Health warns when a secret is older than its rotation period."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pymysql
import pytest
import sqlalchemy as sa

from esg_workbench import credentials
from esg_workbench.audit import chain
from esg_workbench.core.errors import ConfigError
from esg_workbench.sync import operations, rotation
from esg_workbench.sync.health import connector_health
from esg_workbench.workspace import open_workspace
from esg_workbench.workspace.schema import connector_secrets
from tests.conftest import MYSQL_HOST, MYSQL_PORT, MYSQL_USER

OLD, NEW, WRONG = "old-Pass-7f3a", "new-Pass-91bc", "wrong-Pass-000"


@pytest.fixture
def account(mysql_database):
    """A MariaDB user of its own (password OLD) with rights on the test database."""
    user = f"esg_rot_{uuid.uuid4().hex[:8]}"
    admin = pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER, autocommit=True)
    with admin.cursor() as cur:
        cur.execute("CREATE USER %s@'127.0.0.1' IDENTIFIED BY %s", (user, OLD))
        cur.execute("CREATE USER %s@'localhost' IDENTIFIED BY %s", (user, OLD))
        for host in ("127.0.0.1", "localhost"):
            cur.execute(f"GRANT ALL ON `{mysql_database}`.* TO %s@%s", (user, host))
        cur.execute(f"CREATE TABLE `{mysql_database}`.t (id INT PRIMARY KEY)")

    def change_password(password: str) -> None:
        with admin.cursor() as cur:
            for host in ("127.0.0.1", "localhost"):
                cur.execute("ALTER USER %s@%s IDENTIFIED BY %s", (user, host, password))

    try:
        yield user, change_password
    finally:
        with admin.cursor() as cur:
            for host in ("127.0.0.1", "localhost"):
                cur.execute("DROP USER IF EXISTS %s@%s", (user, host))
        admin.close()


@pytest.fixture
def ws(tmp_path):
    workspace = open_workspace(str(tmp_path / "ws.duckdb"))
    yield workspace
    workspace.close()


def test_rotation_validates_first_and_a_wrong_password_keeps_the_old(ws, account, mysql_database, keyring_ready):
    user, change_password = account
    record = operations.add_connector(ws, "erp", "mysql", {
        "host": MYSQL_HOST, "port": MYSQL_PORT, "database": mysql_database, "username": user}, password=OLD)
    [added] = rotation.secret_ages(ws)
    assert added.has_secret and added.set_at is not None

    change_password(NEW)  # the source's administrator rotated it
    with pytest.raises(rotation.PasswordRefused) as refused:
        rotation.set_password(ws, "erp", WRONG)
    assert "old one is kept" in refused.value.message and WRONG not in refused.value.describe()
    assert credentials.load_secret(record.id) == OLD  # untouched
    assert rotation.secret_ages(ws)[0].set_at == added.set_at

    age = rotation.set_password(ws, "erp", NEW)
    assert credentials.load_secret(record.id) == NEW
    assert age.set_at > added.set_at
    assert operations.validate_connector(ws, "erp").startswith("Connected")

    actions = [e for e in chain.entries(ws) if e["action"].startswith("connector.password")]
    assert [e["action"] for e in actions] == ["connector.password_set", "connector.password_refused"]
    for entry in chain.entries(ws):
        for secret in (OLD, NEW, WRONG):
            assert secret not in json.dumps(entry, default=str)
    assert chain.verify(ws).ok
    with pytest.raises(ConfigError, match="empty"):
        rotation.set_password(ws, "erp", "")
    operations.remove_connector(ws, "erp")
    with ws.read() as conn:  # its record goes with it
        assert conn.execute(sa.select(connector_secrets)).all() == []


def test_rotation_period_makes_health_warn_when_the_secret_is_older(ws, account, mysql_database, keyring_ready,
                                                                    tmp_path):
    user, _ = account
    record = operations.add_connector(ws, "erp", "mysql", {
        "host": MYSQL_HOST, "port": MYSQL_PORT, "database": mysql_database, "username": user}, password=OLD)
    operations.add_connector(ws, "files", "files", {"path": str(tmp_path)})
    [erp, files] = connector_health(ws)
    assert erp.has_secret and not erp.secret_overdue and erp.secret_text.startswith("set ")
    assert files.secret_text == "no secret"
    for bad in (-1, 4000, "30", 2.5):
        with pytest.raises(ConfigError):
            rotation.set_rotation_period(ws, "erp", bad)
    assert rotation.set_rotation_period(ws, "erp", 30).rotation_days == 30
    in_31_days = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) + dt.timedelta(days=31)
    [late, _] = connector_health(ws, now=in_31_days)
    assert late.secret_overdue and late.needs_attention and late.secret_text.endswith("rotate every 30 d: overdue")
    assert late.to_json()["secret"]["overdue"] is True
    [in_time, _] = connector_health(ws, now=in_31_days - dt.timedelta(days=2))
    assert not in_time.secret_overdue
    with ws.transaction() as conn:  # a secret set before this was recorded: of unknown age
        conn.execute(sa.update(connector_secrets).where(connector_secrets.c.connector_id == record.id)
                     .values(set_at=None))
    [unknown, _] = connector_health(ws)
    assert unknown.secret_overdue and "unknown time" in unknown.secret_text
    rotation.set_rotation_period(ws, "erp", 0)
    assert not connector_health(ws)[0].secret_overdue
    assert [e["action"] for e in chain.entries(ws)][:2] == ["connector.rotation_period"] * 2
