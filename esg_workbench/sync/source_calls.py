"""Calls into a source that can never hang a sync.

A stalled connection (accepted, then silent) blocks a driver inside C code that no
Python signal can interrupt. So every call into the source runs on a daemon thread of
its own and the sync waits for it: it gives up when the user cancels (within
POLL_SECONDS) or when the source has sent nothing for the read timeout. A call given up
on is abandoned with its connector, which closes when (if ever) its thread returns; the
next call gets a fresh connector. Being daemon threads, abandoned calls never keep the
process from exiting.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import queue
import threading
import time
from typing import Any, Callable, Iterator

from esg_workbench.core.errors import Cancelled, TransientSourceError
from esg_workbench.core.specs import CancelToken, ChunkRange, ReadScope, StreamRef

POLL_SECONDS = 0.1


class SourceCall:
    """`fn(touch)` on a daemon thread; `touch()` says the source is still sending."""

    def __init__(self, fn: Callable[[Callable[[], None]], Any], name: str, on_abandoned_end: Callable[[], None]):
        self._fn = fn
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._abandoned = False
        self._on_abandoned_end = on_abandoned_end
        self.last_activity = time.monotonic()
        self.result: Any = None
        self.error: BaseException | None = None
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def _run(self) -> None:
        try:
            self.result = self._fn(self.touch)
        except BaseException as exc:  # handed to the waiting thread
            self.error = exc
        finally:
            with self._lock:
                self._done.set()
                abandoned = self._abandoned
            if abandoned:
                self._on_abandoned_end()

    def wait(self, cancel: CancelToken, idle_timeout: float, what: str) -> Any:
        while not self._done.wait(POLL_SECONDS):
            if cancel.cancelled:
                self._abandon()
                raise Cancelled("The sync was cancelled.")
            idle = time.monotonic() - self.last_activity
            if idle > idle_timeout:
                self._abandon()
                raise TransientSourceError(
                    f"{what}: the source sent nothing for {idle:.0f} s, so the connection was abandoned.",
                    hint="The connection stalled (a network device or the server stopped answering). "
                         "A read is retried on a new connection. If the source is just slow, raise the "
                         "connector's read_timeout (reads) or statement_timeout (discovery and planning).")
        if self.error is not None:
            raise self.error
        return self.result

    @property
    def abandoned(self) -> bool:
        with self._lock:
            return self._abandoned

    def _abandon(self) -> None:
        with self._lock:
            if self._done.is_set():
                return
            self._abandoned = True


class GuardedConnector:
    """A connector whose every call runs as a SourceCall. After a call was abandoned the
    connector it ran on is left to its thread and a fresh one serves the next calls."""

    def __init__(self, open_connector: Callable[[], Any], cancel: CancelToken, read_timeout: float,
                 query_timeout: float | None = None):
        """`read_timeout`: the longest a read may go without a batch; `query_timeout`:
        the longest any other call (discovery, a planning aggregate, which answers only
        when done) may take; by default the read timeout."""
        self._open = open_connector
        self._cancel = cancel
        self.read_timeout = read_timeout
        self.query_timeout = query_timeout or read_timeout
        self._lock = threading.Lock()
        self._inner = open_connector()

    @property
    def inner(self) -> Any:
        with self._lock:
            if self._inner is None:
                self._inner = self._open()
            return self._inner

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)  # AttributeError as the connector would raise it
        if not callable(attribute):
            return attribute

        def call(*args, **kwargs):
            return self._call(lambda connector, touch: getattr(connector, name)(*args, **kwargs),
                              f"{type(self.inner).__name__}.{name}", self.query_timeout)
        return call

    def read_all(self, stream, scope, chunk) -> list:
        """A chunk's record batches; the read timeout counts from the last batch received."""
        def read(connector, touch):
            batches = []
            for batch in connector.read(stream, scope, chunk, self._cancel):
                batches.append(batch)
                touch()
            return batches
        return self._call(read, f"Reading {stream.qualified} {chunk.describe()}", self.read_timeout)

    def read_into(self, stream, scope, chunk, sink: queue.Queue, stop: threading.Event) -> None:
        """A chunk's record batches put into `sink` as they arrive, then `None` (the end):
        the reader of a table too big for memory. The read timeout counts from the last
        batch received or taken; `stop` (the taker gave up) ends the read."""
        def put(item, touch) -> None:
            while True:  # wait for room: the taker writes batch by batch
                if stop.is_set():
                    raise Cancelled("The streamed read was stopped.")
                try:
                    sink.put(item, timeout=0.5)
                    return
                except queue.Full:
                    touch()  # the workspace is busy, the source is not stalled

        def read(connector, touch):
            for batch in connector.read(stream, scope, chunk, self._cancel):
                touch()
                put(batch, touch)
            put(None, touch)
        self._call(read, f"Reading {stream.qualified} {chunk.describe()}", self.read_timeout)

    def _call(self, fn: Callable[[Any, Callable[[], None]], Any], what: str, timeout: float) -> Any:
        self._cancel.raise_if_cancelled()
        connector = self.inner
        # an abandoned call's connector is closed by its own thread when the call returns:
        # closing it from here could pull a connection from under a driver still using it
        call = SourceCall(lambda touch: fn(connector, touch), f"esg-source-{what[:40]}",
                          on_abandoned_end=lambda: _close(connector))
        try:
            return call.wait(self._cancel, timeout, what)
        except BaseException:
            if call.abandoned:  # a fresh connector for the next call
                with self._lock:
                    if self._inner is connector:
                        self._inner = None
                abort = getattr(connector, "abort", None)
                if abort is not None:  # a connector that can end a read from outside does
                    abort()
            raise

    def close(self) -> None:
        with self._lock:
            connector, self._inner = self._inner, None
        if connector is not None:
            _close(connector)


def _close(connector: Any) -> None:
    try:
        connector.close()
    except Exception:  # closing a broken connection: closing is all we want
        pass


@contextlib.contextmanager
def streamed_batches(connector: Any, stream: StreamRef, scope: ReadScope, chunk_range: ChunkRange,
                     cancel: CancelToken, *, what: str) -> Iterator[Iterator[Any]]:
    """The record batches of `connector.read_into` as they arrive, read on a thread of its
    own with at most two batches queued between reader and consumer, so memory holds only
    what the consumer keeps. The read's error is raised where the batches are taken; a
    cancel is noticed while waiting for a batch; leaving the block early (an error, a
    cancel) tells the reader to give up and waits for it."""
    sink: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="esg-stream") as reader:
        done = reader.submit(connector.read_into, stream, scope, chunk_range, sink, stop)

        def batches() -> Iterator[Any]:
            while True:
                try:
                    batch = sink.get(timeout=0.2)
                except queue.Empty:
                    if done.done():
                        done.result()  # the read's error, if it failed
                        raise RuntimeError(f"{what} ended without its last batch")
                    cancel.raise_if_cancelled()
                    continue
                if batch is None:
                    done.result()
                    return
                yield batch

        try:
            yield batches()
        finally:
            stop.set()  # the reader, if still reading, gives up
