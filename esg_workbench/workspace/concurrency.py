"""Two analysts at once on one shared PostgreSQL workspace: who waits, what is retried.

Writers on a PostgreSQL workspace run in parallel (READ COMMITTED). Where two of them
would step on each other, a transaction-scoped advisory lock makes the second one wait
until the first has committed; every statement after the wait sees the first one's
rows, so nothing is lost and nothing lands twice:

* saving a mapping: one lock per organization and mapping name (versions 1, 2, 3 ...);
* applying a mapping: another lock per organization and mapping name (delete + insert
  of its staging rows), and the organization's KPI lock in *shared* mode;
* aggregating KPIs: the organization's KPI lock in *exclusive* mode, so a recompute
  sees no staging rows change under it, and two recomputes never both insert;
* the schema cache of a connector, an imported factor set, a connector's name.

Locks are always taken in that order (name locks, then the KPI lock, then the audit
chain's lock at the very end of a transaction), so they cannot deadlock each other.
On DuckDB one process owns the file and the workspace's write lock serializes every
write transaction, so all of this is a no-op there.

A conflict that is harmless to repeat (a deadlock or serialization failure PostgreSQL
resolved by rolling one transaction back) is retried by `retrying`; only when it keeps
happening does the user see `WorkspaceBusy`, which says so plainly.
"""

from __future__ import annotations

import hashlib
import random
import time
from typing import Callable, Iterable, TypeVar

import sqlalchemy as sa

from esg_workbench.core.errors import EsgError
from esg_workbench.workspace.database import Workspace

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


def lock_key(kind: str, *names: str) -> int:
    """A stable 60-bit advisory lock key for a kind of thing and its names."""
    text = "\x1f".join(("esg-workbench", kind, *names))
    return int(hashlib.sha1(text.encode()).hexdigest()[:15], 16)


def xact_lock(workspace: Workspace, conn: sa.Connection, kind: str, *names: str, shared: bool = False,
              waiting: Callable[[], None] | None = None) -> None:
    """Wait for, then hold until `conn` commits, the lock of (kind, organization, names).
    `waiting` is called first if someone else holds it (to tell the user why nothing
    moves). PostgreSQL only: DuckDB's writers are serialized already."""
    if workspace.is_duckdb:
        return
    mode = "_shared" if shared else ""
    key = {"k": lock_key(kind, workspace.organization_id, *names)}
    if waiting is not None:
        if conn.execute(sa.text(f"SELECT pg_try_advisory_xact_lock{mode}(:k)"), key).scalar():
            return
        waiting()
    conn.execute(sa.text(f"SELECT pg_advisory_xact_lock{mode}(:k)"), key)


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
