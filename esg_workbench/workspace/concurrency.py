"""Two analysts at once on one shared PostgreSQL workspace: who waits, what is retried.

Writers on a PostgreSQL workspace run in parallel (READ COMMITTED). Where two of them
would step on each other, a row lock makes the second one wait until the first has
committed; every statement after the wait sees the first one's rows, so nothing is lost
and nothing lands twice:

* saving a mapping: one lock per organization and mapping name (versions 1, 2, 3 ...);
* applying a mapping: another lock per organization and mapping name (delete + insert
  of its staging rows), and the organization's KPI lock in *shared* mode;
* aggregating KPIs: the organization's KPI lock in *exclusive* mode, so a recompute
  sees no staging rows change under it, and two recomputes never both insert;
* the schema cache of a connector, an imported factor set, a connector's sync (held for
  the whole sync on a connection of its own, see `connector_sync_lock`).

The locks are rows of `workspace_locks`, one per organization and thing, locked with
SELECT ... FOR UPDATE (exclusive) or FOR SHARE (shared). Row-level security hides other
organizations' rows, so no session of another organization can take, or even see, a
lock that this organization's work waits for. (Advisory locks, which this module used
before, live in one key space per database: any session may take any key, and pg_locks
shows every key held, so one organization could stall another.)

Locks are always taken in that order (name locks, then the KPI lock, then the audit
chain's head at the very end of a transaction), so they cannot deadlock each other.
On DuckDB one process owns the file and the workspace's write lock serializes every
write transaction, so all of this is a no-op there.

A conflict that is harmless to repeat (a deadlock or serialization failure PostgreSQL
resolved by rolling one transaction back) is retried by `retrying`; only when it keeps
happening does the user see `WorkspaceBusy`, which says so plainly.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import time
from typing import Callable, Iterable, Iterator, TypeVar

import sqlalchemy as sa

from esg_workbench.core.errors import EsgError
from esg_workbench.workspace.database import Workspace
from esg_workbench.workspace.schema import workspace_locks as locks

T = TypeVar("T")

#: SQLSTATEs PostgreSQL uses when it rolled a transaction back to resolve a conflict
SERIALIZATION_FAILURE = "40001"
DEADLOCK_DETECTED = "40P01"
UNIQUE_VIOLATION = "23505"
RETRYABLE = frozenset({SERIALIZATION_FAILURE, DEADLOCK_DETECTED})


class WorkspaceBusy(EsgError):
    """Another analyst's work kept conflicting with this one, retries included."""

    transient = True
    hint = "Someone else is changing the same data right now. Try again in a moment."


class ChangedElsewhere(EsgError):
    """An edit based on a version someone else has replaced since it was loaded."""

    hint = "Reload (close the editor and open it again) to see the other change, then make yours again."


def lock_key(kind: str, *names: str) -> str:
    """The key of a lock row: a digest of the kind of thing and its names (names may be
    long; the organization is a column of its own)."""
    text = "\x1f".join(("esg-workbench", kind, *names))
    return hashlib.sha1(text.encode()).hexdigest()


def _lock_row(workspace: Workspace, key: str) -> sa.Select:
    return sa.select(locks.c.lock_key).where(locks.c.organization_id == workspace.organization_id,
                                             locks.c.lock_key == key)


def _create_lock_row(workspace: Workspace, key: str, kind: str, names: tuple[str, ...]) -> None:
    """The lock's row, in a transaction of its own: committed at once, so that nobody
    ever waits for the transaction that happened to create it."""
    from sqlalchemy.dialects.postgresql import insert

    with workspace.engine.begin() as conn:
        conn.execute(insert(locks).values(organization_id=workspace.organization_id, lock_key=key, kind=kind,
                                          label=" / ".join(names)[:200]).on_conflict_do_nothing())


def _try_row_lock(workspace: Workspace, conn: sa.Connection, kind: str, names: tuple[str, ...],
                  shared: bool) -> bool | None:
    """Take the lock if nobody holds it: True. False when someone does; None when the
    lock's row does not exist yet (nobody has ever taken it)."""
    key = lock_key(kind, *names)
    if conn.execute(_lock_row(workspace, key).with_for_update(read=shared, skip_locked=True)).first() is not None:
        return True
    return False if conn.execute(_lock_row(workspace, key)).first() is not None else None


def xact_lock(workspace: Workspace, conn: sa.Connection, kind: str, *names: str, shared: bool = False,
              waiting: Callable[[], None] | None = None) -> None:
    """Wait for, then hold until `conn` commits, the lock of (kind, organization, names).
    `waiting` is called first if someone else holds it (to tell the user why nothing
    moves). PostgreSQL only: DuckDB's writers are serialized already."""
    if workspace.is_duckdb:
        return
    held = _try_row_lock(workspace, conn, kind, names, shared)
    if held is None:
        _create_lock_row(workspace, lock_key(kind, *names), kind, names)
        held = _try_row_lock(workspace, conn, kind, names, shared)
    if held:
        return
    if waiting is not None:
        waiting()
    conn.execute(_lock_row(workspace, lock_key(kind, *names)).with_for_update(read=shared))


def try_xact_lock(workspace: Workspace, conn: sa.Connection, kind: str, *names: str) -> bool:
    """Take the lock until `conn` commits if nobody holds it (True), else False at once.
    A lock nobody ever took is free (and is not created)."""
    if workspace.is_duckdb:
        return True
    return _try_row_lock(workspace, conn, kind, names, shared=False) is not False


CONNECTOR_SYNC = "connector-sync"


@contextlib.contextmanager
def connector_sync_lock(workspace: Workspace, connector_id: str, *, attempts: int = 10,
                        wait: float = 0.1) -> Iterator[bool]:
    """Hold the connector's sync lock for the whole block (a sync spans many transactions:
    the lock lives in a transaction of its own, on a connection of its own, that does
    nothing else). Yields False, holding nothing, when another sync holds it. Another
    process opening the workspace holds it for a moment while it checks for dead runs
    (sync_records.mark_dead_runs): a few short tries tell that apart from a sync.
    PostgreSQL only; on DuckDB it yields True."""
    if workspace.is_duckdb:
        yield True
        return
    names = (connector_id,)
    _create_lock_row(workspace, lock_key(CONNECTOR_SYNC, *names), CONNECTOR_SYNC, names)
    with workspace.engine.connect() as conn:
        try:
            for attempt in range(attempts):
                # this transaction idles while the sync works: a server-wide idle timeout must not end it
                conn.execute(sa.text("SET LOCAL idle_in_transaction_session_timeout = 0"))
                if _try_row_lock(workspace, conn, CONNECTOR_SYNC, names, shared=False):
                    break
                conn.rollback()
                if attempt + 1 < attempts:
                    time.sleep(wait)
            else:
                yield False
                return
            yield True
        finally:
            conn.rollback()


def lock_mapping_save(workspace: Workspace, conn: sa.Connection, name: str) -> None:
    """Saves of one mapping, one at a time (each takes the next version number)."""
    xact_lock(workspace, conn, "mapping-save", name)


def lock_mapping_apply(workspace: Workspace, conn: sa.Connection, name: str,
                       say: Callable[[str], None] | None = None) -> None:
    """Applies of one mapping, one at a time (each replaces the mapping's staging rows).
    Not the save lock: saving a new version need not wait for a long apply."""
    xact_lock(workspace, conn, "mapping-apply", name, waiting=say and (lambda: say(
        f"Waiting for another apply of the mapping '{name}' (an analyst's or a sync's) to finish...")))


def lock_kpis(workspace: Workspace, conn: sa.Connection, *, shared: bool,
              say: Callable[[str], None] | None = None) -> None:
    """Exclusive: a KPI recompute. Shared: a writer of staging rows (an apply)."""
    what = "a KPI recompute" if shared else "a KPI recompute or a mapping apply under way"
    xact_lock(workspace, conn, "kpis", shared=shared,
              waiting=say and (lambda: say(f"Waiting for {what} (another analyst's or a sync's) to finish...")))


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error (SQLAlchemy-wrapped or raw psycopg), if any."""
    for candidate in (getattr(exc, "orig", None), exc):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if code:
            return str(code)
    return None


def retrying(action: Callable[[], T], *, what: str, codes: Iterable[str] = RETRYABLE, attempts: int = 6,
             first_wait: float = 0.05) -> T:
    """Run `action` (one whole transaction, safe to repeat); repeat it when PostgreSQL
    rolled it back to resolve a conflict with another writer. `what` names the work in
    the message shown if it still conflicts after `attempts` tries."""
    codes = frozenset(codes)
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except sa.exc.DBAPIError as exc:
            if sqlstate(exc) not in codes:
                raise
            if attempt == attempts:
                raise WorkspaceBusy(f"{what} kept conflicting with another analyst's work "
                                    f"({attempts} tries); nothing was changed.") from exc
            # jitter: two writers that collided should not collide again in lockstep
            time.sleep(first_wait * (2 ** (attempt - 1)) * (0.5 + random.random()))
    raise AssertionError("unreachable")
