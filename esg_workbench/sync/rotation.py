"""Rotating a connector's secret: replace it in the keyring only after the source took it.

The new password is tried first: the connector is opened and validated with it, while
the keyring still holds the old one. Only when the source accepts it does it replace the
old one in the keyring; a refused one changes nothing and says so. Every change (and
every refusal) is audited with the connector and the time, never the secret. The time a
secret was set is kept in ``connector_secrets``; with a rotation period, Health warns
when a secret is older (sync/health.py).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from esg_workbench.audit import chain
from esg_workbench.core.errors import ConfigError, EsgError
from esg_workbench.sync.engine import PASSWORD_MARKER, SyncEngine
from esg_workbench.workspace import connectors_store, secret_records
from esg_workbench.workspace.database import Workspace, utcnow

MAX_ROTATION_DAYS = 3650


class PasswordRefused(EsgError):
    """The source did not accept the new secret; the old one is kept."""

    hint = "Check the new password with the source's administrator, then set it again. The old one still works."


@dataclass(frozen=True)
class SecretAge:
    connector_id: str
    connector: str
    has_secret: bool
    set_at: dt.datetime | None  # naive UTC; None: unknown (set before this was recorded) or no secret
    rotation_days: int | None

    def age_days(self, now: dt.datetime) -> float | None:
        return None if self.set_at is None else (now - self.set_at).total_seconds() / 86400

    def overdue(self, now: dt.datetime) -> bool:
        """A rotation period is set and the secret is older (or of unknown age)."""
        if not self.has_secret or not self.rotation_days:
            return False
        return self.set_at is None or now - self.set_at > dt.timedelta(days=self.rotation_days)


def check_password(ws: Workspace, name: str, password: str, *, options: dict | None = None,
                   engine: SyncEngine | None = None) -> connectors_store.ConnectorRecord:
    """Validate `password` against the source (with the connector's settings, or `options`
    when an editor is about to save new ones) without storing anything. A refusal is
    audited and raises PasswordRefused. Returns the connector's record."""
    if not isinstance(password, str) or not password:
        raise ConfigError("The new password is empty: nothing was changed.",
                          hint="Give the new password (esg-workbench connector set-password NAME --password-stdin).")
    with ws.read() as conn:
        record = connectors_store.get(ws, conn, name)
    config = {**(record.config if options is None else options), PASSWORD_MARKER: True}
    trial = connectors_store.ConnectorRecord(**{**record.__dict__, "config": config})
    tester = SyncEngine(ws, secret_for=lambda _id: password,
                        connector_factory=engine._connector_factory if engine is not None else None)
    connector = None
    try:
        connector = tester.open_connector(trial)
        connector.validate()
    except EsgError as exc:
        with ws.transaction() as conn:
            chain.append(ws, conn, "connector.password_refused", metadata={
                "connector_id": record.id, "name": record.name, "error": type(exc).__name__})
        raise PasswordRefused(f"'{record.name}' did not accept the new password, so the old one is kept: "
                              f"{exc.message}") from None
    finally:
        if connector is not None:
            connector.close()
    return record


def set_password(ws: Workspace, name: str, password: str, *, engine: SyncEngine | None = None) -> SecretAge:
    """Validate `password` against the source, then replace the connector's secret with it."""
    record = check_password(ws, name, password, engine=engine)
    from esg_workbench import credentials

    now = utcnow()
    with ws.transaction() as conn:
        if not record.config.get(PASSWORD_MARKER):
            connectors_store.update(ws, conn, record.id, config={**record.config, PASSWORD_MARKER: True})
        secret_records.record_set(ws, conn, record.id, now)
        chain.append(ws, conn, "connector.password_set", metadata={
            "connector_id": record.id, "name": record.name, "set_at": now.isoformat(), "validated": True})
        credentials.store_secret(record.id, password)  # last, before commit: no record of a change not made
        connectors_store.update(ws, conn, record.id, status="validated", status_message="New password accepted.")
    return _ages(ws, [record.id])[0]


def set_rotation_period(ws: Workspace, name: str, days: int | None) -> SecretAge:
    """Health warns when the connector's secret is older than `days` (None or 0: never)."""
    if days in (None, 0):
        days = None
    elif isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_ROTATION_DAYS:
        raise ConfigError(f"A rotation period must be a whole number of days from 1 to {MAX_ROTATION_DAYS} "
                          f"(or 0 for none), not {days!r}.")
    with ws.transaction() as conn:
        record = connectors_store.get(ws, conn, name)
        secret_records.set_rotation_days(ws, conn, record.id, days)
        chain.append(ws, conn, "connector.rotation_period", metadata={
            "connector_id": record.id, "name": record.name, "rotation_days": days})
    return _ages(ws, [record.id])[0]


def secret_ages(ws: Workspace) -> list[SecretAge]:
    """Every connector's secret age and rotation period, by connector name."""
    return _ages(ws, None)


def _ages(ws: Workspace, ids: list[str] | None) -> list[SecretAge]:
    with ws.read() as conn:
        records = connectors_store.list_all(ws, conn)
        stored = secret_records.all_records(ws, conn)
    result = []
    for r in records:
        if ids is not None and r.id not in ids:
            continue
        s = stored.get(r.id)
        result.append(SecretAge(r.id, r.name, bool(r.config.get(PASSWORD_MARKER)), s.set_at if s else None,
                                s.rotation_days if s else None))
    return result
