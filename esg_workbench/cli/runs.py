"""Running syncs from a terminal, shared by `sync` and `schedule run-due`: progress lines,
Ctrl+C as a cancel, retry backoff and the exit code of a run."""

from __future__ import annotations

import contextlib
import os
import signal

from esg_workbench.cli.output import EXIT_CANCELLED, EXIT_FAILED, EXIT_PARTIAL, Output


def progress_printer(out: Output):
    def show(event) -> None:
        eta = event.eta_seconds
        out.info(f"  {event.stream}: chunks {event.chunks_done}/{event.chunks_planned}"
                 + (f" ({event.chunks_failed} failed)" if event.chunks_failed else "")
                 + f", rows {event.rows_written:,}, {event.rows_per_second:,.0f} rows/s"
                 + (f", ETA {eta:.0f} s" if eta else ""))
    return show


def sync_exit(result) -> int:
    return {"success": 0, "partial_success": EXIT_PARTIAL, "cancelled": EXIT_CANCELLED}.get(result.status.value, EXIT_FAILED)


@contextlib.contextmanager
def cancel_on_ctrl_c(out: Output, cancelling: str = "Cancelling after the current chunk..."):
    """A CancelToken that the first Ctrl+C sets (a sync stops after the current chunk, an
    apply at its running statement), saying `cancelling`; a second Ctrl+C stops at once."""
    from esg_workbench.core.specs import CancelToken

    cancel = CancelToken()

    def on_sigint(signum, frame):
        if cancel.cancelled:
            raise KeyboardInterrupt
        out.info(f"{cancelling} (Ctrl+C again to stop at once)")
        cancel.cancel()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield cancel
    finally:
        signal.signal(signal.SIGINT, previous)


def retry_delays() -> tuple[float, ...]:
    """Backoff between retries; ESG_WORKBENCH_RETRY_DELAYS="0.1,0.2,0.4" shortens it (tests)."""
    text = os.environ.get("ESG_WORKBENCH_RETRY_DELAYS")
    if not text:
        from esg_workbench.sync.engine import DEFAULT_RETRY_DELAYS

        return DEFAULT_RETRY_DELAYS
    return tuple(float(x) for x in text.split(","))
