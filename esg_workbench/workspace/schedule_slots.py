"""How many syncs may run at once: the limits of an organization and the slots that hold them.

Two limits, both optional: syncs at once in the workspace (on a shared PostgreSQL
workspace: of this organization), and syncs at once reading from one source host.
A running sync holds one *slot* of each scope that applies ('workspace', 'host:NAME').

On PostgreSQL a slot is a row of ``sync_slots`` that the sync keeps locked
(``SELECT ... FOR UPDATE SKIP LOCKED``) in a transaction of its own, on a connection of
its own, for as long as it runs. Every process on the workspace (the app, ``schedule
run-due`` from an OS scheduler, a second window) takes slots from the same rows, so they
all honour one limit; a process that dies loses its connection and with it the lock, so a
crashed sync never keeps a slot. The rows fall under the organization's row-level
security: another organization cannot see them, lock them or add rows in this
organization's name, so it cannot use up this one's slots (an advisory lock key, being
a number anyone may lock, could be). A PostgreSQL server whose
``idle_in_transaction_session_timeout`` is set ends such a transaction after that time:
the slot is then free again before the sync ends.

A DuckDB workspace belongs to one process, so its slots are counted in that process.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from esg_workbench.core.errors import ConfigError
from esg_workbench.workspace.database import Workspace, utcnow
from esg_workbench.workspace.schema import organization_settings as settings_table
from esg_workbench.workspace.schema import sync_slots as slots_table

WORKSPACE_SCOPE = "workspace"
LIMITS_KEY = "sync_limits"
#: the highest limit one may set (a slot is a row, and a held slot a connection)
MAX_LIMIT = 64

#: connector settings that name the source host, in the order they are looked for
HOST_SETTINGS = ("host", "server", "server_hostname", "hostname", "account", "account_url",
                 "endpoint_url", "service_url", "url", "base_url")


@dataclass(frozen=True)
class Limits:
    """None: no limit."""

    workspace: int | None = None
    per_host: int | None = None

    def describe(self) -> str:
        parts = [f"{self.workspace} sync{'s' if self.workspace != 1 else ''} at once in this workspace"
                 if self.workspace else "no limit of syncs at once in this workspace",
                 f"{self.per_host} per source host" if self.per_host else "no limit per source host"]
        return "; ".join(parts)


def _check_limit(value: Any, what: str) -> int | None:
    if value in (None, 0, ""):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise ConfigError(f"The limit of {what} must be a whole number from 1 to {MAX_LIMIT} (or 0 for none), "
                          f"not {value!r}.")
    return value


def get_limits(ws: Workspace, conn: sa.Connection | None = None) -> Limits:
    def read(c: sa.Connection) -> Limits:
        text = c.execute(sa.select(settings_table.c.value).where(
            settings_table.c.organization_id == ws.organization_id, settings_table.c.key == LIMITS_KEY)).scalar()
        data = json.loads(text) if text else {}
        return Limits(data.get("workspace"), data.get("per_host"))

    if conn is not None:
        return read(conn)
    with ws.read() as c:
        return read(c)


def check_limits(workspace: Any, per_host: Any) -> Limits:
    """Limits from what a user gave (None or 0: no limit); a bad value is refused."""
    return Limits(_check_limit(workspace, "syncs at once"), _check_limit(per_host, "syncs per source host"))


def write_limits(ws: Workspace, conn: sa.Connection, limits: Limits) -> None:
    """Store the organization's limits in the caller's transaction (scheduler.set_limits audits it)."""
    value = json.dumps({"workspace": limits.workspace, "per_host": limits.per_host})
    where = (settings_table.c.organization_id == ws.organization_id, settings_table.c.key == LIMITS_KEY)
    if conn.execute(sa.select(settings_table.c.key).where(*where)).first() is None:
        conn.execute(sa.insert(settings_table).values(organization_id=ws.organization_id, key=LIMITS_KEY,
                                                      value=value, updated_at=utcnow()))
    else:
        conn.execute(sa.update(settings_table).where(*where).values(value=value, updated_at=utcnow()))


def source_host(config: dict[str, Any]) -> str | None:
    """The host a connector reads from, lower-cased (a URL's host name), or None for a
    source without one (local files)."""
    for key in HOST_SETTINGS:
        value = config.get(key)
        if not isinstance(value, str) or not value.strip():
            continue
        value = value.strip()
        if "://" in value:
            value = urllib.parse.urlsplit(value).hostname or ""
        else:  # host, host:port or host/path
            value = value.split("/")[0].rsplit(":", 1)[0]
        if value:
            return value.lower()
    return None


def scopes_for(limits: Limits, host: str | None) -> list[tuple[str, int]]:
    """The (scope, limit) pairs a sync of a connector on `host` needs a slot of."""
    wanted = []
    if limits.workspace:
        wanted.append((WORKSPACE_SCOPE, limits.workspace))
    if limits.per_host and host:
        wanted.append((f"host:{host}"[:300], limits.per_host))
    return wanted


class Busy:
    """Why no slot was free: the first scope that was full."""

    def __init__(self, scope: str, limit: int):
        self.scope, self.limit = scope, limit

    def describe(self) -> str:
        if self.scope == WORKSPACE_SCOPE:
            return (f"waiting for a free slot: {self.limit} sync{'s are' if self.limit != 1 else ' is'} "
                    f"already running in this workspace (its limit)")
        host = self.scope.split(":", 1)[1]
        return (f"waiting for a free slot: {self.limit} sync{'s are' if self.limit != 1 else ' is'} "
                f"already reading from {host} (the limit per source host)")


class Held:
    """Slots taken for one sync; release() (or the process ending) frees them."""

    def __init__(self, release_fn, scopes: list[str]):
        self._release_fn = release_fn
        self.scopes = scopes
        self.taken_at = utcnow()

    def release(self) -> None:
        if self._release_fn is not None:
            fn, self._release_fn = self._release_fn, None
            fn()

    def __enter__(self) -> "Held":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# --- DuckDB: counted in this process -----------------------------------------------------

_local_guard = threading.Lock()
_local_taken: dict[tuple[str, str, str], int] = {}


def _take_local(ws: Workspace, wanted: list[tuple[str, int]]) -> Held | Busy:
    keys = [((ws.url, ws.organization_id, scope), limit) for scope, limit in wanted]
    with _local_guard:
        for (key, limit) in keys:
            if _local_taken.get(key, 0) >= limit:
                return Busy(key[2], limit)
        for key, _ in keys:
            _local_taken[key] = _local_taken.get(key, 0) + 1

    def release() -> None:
        with _local_guard:
            for key, _ in keys:
                _local_taken[key] = max(0, _local_taken.get(key, 0) - 1)

    return Held(release, [scope for scope, _ in wanted])


# --- PostgreSQL: rows locked in a transaction of their own ----------------------------------

def _ensure_rows(ws: Workspace, wanted: list[tuple[str, int]]) -> None:
    from sqlalchemy.dialects.postgresql import insert

    with ws.transaction() as conn:
        for scope, limit in wanted:
            have = set(conn.execute(sa.select(slots_table.c.slot).where(
                slots_table.c.organization_id == ws.organization_id, slots_table.c.scope == scope)).scalars())
            missing = [n for n in range(limit) if n not in have]
            if missing:
                conn.execute(insert(slots_table).values(
                    [{"organization_id": ws.organization_id, "scope": scope, "slot": n} for n in missing])
                    .on_conflict_do_nothing())


def _take_rows(ws: Workspace, wanted: list[tuple[str, int]]) -> Held | Busy:
    _ensure_rows(ws, wanted)
    conn = ws.engine.connect()
    try:
        conn.begin()
        for scope, limit in wanted:
            # SKIP LOCKED: a slot another sync holds is passed over at once, never waited for
            slot = conn.execute(
                sa.select(slots_table.c.slot)
                .where(slots_table.c.organization_id == ws.organization_id, slots_table.c.scope == scope,
                       slots_table.c.slot < limit)
                .order_by(slots_table.c.slot).limit(1)
                .with_for_update(skip_locked=True)).scalar()
            if slot is None:
                conn.rollback()
                conn.close()
                return Busy(scope, limit)
    except BaseException:
        conn.close()
        raise

    def release() -> None:
        try:
            conn.rollback()
        finally:
            conn.close()

    return Held(release, [scope for scope, _ in wanted])


def try_take(ws: Workspace, wanted: list[tuple[str, int]]) -> Held | Busy:
    """A slot of every (scope, limit) in `wanted`, or none at all (Busy says which scope
    was full). Never waits."""
    if not wanted:
        return Held(None, [])
    return _take_local(ws, wanted) if ws.is_duckdb else _take_rows(ws, wanted)


def take_for(ws: Workspace, config: dict[str, Any]) -> Held | Busy:
    """Slots for a sync of a connector with these settings, under the organization's limits."""
    return try_take(ws, scopes_for(get_limits(ws), source_host(config)))

