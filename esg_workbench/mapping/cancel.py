"""Cancelling an apply or a KPI recompute, and reporting its progress statement by statement.

Both run as one transaction of a few large SQL statements. `watching(conn, cancel, say)`
checks the cancel token before every statement, interrupts the statement under way when
the token is set (DuckDB's interrupt(), PostgreSQL's query cancel) and reports the staging
rows written so far. The caller's transaction then rolls back, so the previous staging
rows and KPI values stay as they were.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator

import sqlalchemy as sa

from esg_workbench.core.errors import Cancelled
from esg_workbench.core.specs import CancelToken


class MappingCancelled(Cancelled):
    hint = "Nothing was changed: the staging rows and KPI values are those of before. Apply again when ready."


@contextlib.contextmanager
def watching(conn: sa.Connection, cancel: CancelToken | None, say: Callable[[str], None],
             what: str) -> Iterator[None]:
    """Cancel checks and progress for the statements `conn` runs inside the block."""
    written = [0]

    def before(conn_, cursor, statement, parameters, context, executemany):
        if cancel is not None and cancel.cancelled:
            raise MappingCancelled(f"{what} was cancelled.")

    def after(conn_, cursor, statement, parameters, context, executemany):
        if statement.startswith("INSERT INTO staging_values"):  # one row per staging row
            written[0] += max(cursor.rowcount or 0, 0)
            say(f"{written[0]:,} staging rows written…")

    sa.event.listen(conn, "before_cursor_execute", before)
    sa.event.listen(conn, "after_cursor_execute", after)
    stop = threading.Event()
    watcher = None
    if cancel is not None:
        raw = conn.connection.driver_connection

        def interrupt() -> None:
            # a cancel during a long statement stops it at once, not at its end
            while not stop.is_set():
                if cancel.wait(0.1):
                    if not stop.is_set():
                        with contextlib.suppress(Exception):
                            (raw.interrupt if hasattr(raw, "interrupt") else raw.cancel)()
                    return

        watcher = threading.Thread(target=interrupt, name="mapping-cancel", daemon=True)
        watcher.start()
    try:
        yield
    except Exception as exc:
        if cancel is not None and cancel.cancelled and not isinstance(exc, MappingCancelled):
            raise MappingCancelled(f"{what} was cancelled.") from exc
        raise
    finally:
        stop.set()
        sa.event.remove(conn, "before_cursor_execute", before)
        sa.event.remove(conn, "after_cursor_execute", after)
        if watcher is not None:
            watcher.join()
