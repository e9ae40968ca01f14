"""ConnectorX reads in a child process, so that a stalled source cannot freeze the app.

ConnectorX runs a query holding Python's GIL and has no read timeout: a MySQL server
(or a network path) that stops answering mid-query would stop every thread of the
process, Cancel and the sync's watchdog included. Here the query runs in a long-lived
child process and its batches come back as Arrow IPC over a pipe; the parent waits on
the pipe with the GIL released, and `abort()` kills the child, which ends the wait.

Protocol: the parent writes one JSON request per line to the child's stdin (the
connection URL with its password goes through the pipe, never the command line); the
child answers with frames: b"B" + 8-byte length + an Arrow IPC stream of one batch,
then b"D" (done) or b"E" + length + JSON {"panic": bool, "message": str}.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    import pyarrow as pa

_LENGTH = struct.Struct("<Q")


class WorkerError(RuntimeError):
    """An error ConnectorX raised in the child; `panic` for a Rust panic."""

    def __init__(self, message: str, panic: bool):
        super().__init__(message)
        self.panic = panic


class CxWorker:
    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def read(self, url: str, sql: str, setup: list[str], batch_size: int) -> "Iterator[pa.RecordBatch]":
        import pyarrow as pa

        proc = self._process()
        request = json.dumps({"url": url, "sql": sql, "setup": setup, "batch_size": batch_size})
        try:
            proc.stdin.write(request.encode() + b"\n")
            proc.stdin.flush()
        except OSError:
            self.abort()
            raise ConnectionError("the ConnectorX reader process ended") from None
        complete = False
        try:
            while True:
                kind = proc.stdout.read(1)
                if kind == b"D":
                    complete = True
                    return
                if kind not in (b"B", b"E"):  # EOF: the child died or was killed
                    raise ConnectionError("the ConnectorX reader process ended during the read")
                size = _LENGTH.unpack(_read_exact(proc.stdout, _LENGTH.size))[0]
                if kind == b"E":
                    complete = True
                    error = json.loads(_read_exact(proc.stdout, size))
                    raise WorkerError(error["message"], error["panic"])
                with pa.ipc.open_stream(_read_batch(proc.stdout, size)) as reader:
                    yield from reader
        finally:
            if not complete:  # abandoned mid-answer (cancel, error, stall): the pipe is out of step
                self.abort()

    def _process(self) -> subprocess.Popen:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = subprocess.Popen(_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
            return self._proc

    def abort(self) -> None:
        """Kill the child (from any thread): a read waiting on it ends at once."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    close = abort


def _command() -> list[str]:
    """The child's command line: this module, or in the frozen app its launcher's
    hidden --cx-worker switch (packaging/launcher.py)."""
    if getattr(sys, "frozen", False):
        return [sys.executable, "--cx-worker"]
    return [sys.executable, "-m", "esg_workbench.connectors.cx_worker"]


def _read_batch(stream, size: int) -> "pa.Buffer":
    """A batch's IPC bytes read straight into one buffer of Arrow's memory pool, which the
    batch's arrays then point into. Growing a bytearray from 64 KB pipe reads and copying
    it (as _read_exact does) made glibc's heap grow with every batch of a long streamed
    read (issue 12: memory that grew with the table, not the chunk); Arrow's allocator
    gives the memory back when the batch is gone."""
    import pyarrow as pa

    buffer = pa.allocate_buffer(size)
    view = memoryview(buffer).cast("B")
    done = 0
    while done < size:
        n = stream.readinto(view[done:])
        if not n:
            raise ConnectionError("the ConnectorX reader process ended during the read")
        done += n
    return buffer


def _read_exact(stream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        part = stream.read(size - len(data))
        if not part:
            raise ConnectionError("the ConnectorX reader process ended during the read")
        data += part
    return bytes(data)


def serve() -> None:  # the child
    import connectorx as cx
    import pyarrow as pa

    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        request = json.loads(line)
        try:
            reader = cx.read_sql(request["url"], request["sql"], return_type="arrow_stream",
                                 batch_size=request["batch_size"], pre_execution_query=request["setup"])
            for batch in reader:
                sink = pa.BufferOutputStream()
                with pa.ipc.new_stream(sink, batch.schema) as writer:
                    writer.write_batch(batch)
                data = sink.getvalue()
                out.write(b"B" + _LENGTH.pack(data.size))
                out.write(data)
            out.write(b"D")
        except BaseException as exc:  # a Rust panic is a BaseException
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            message = json.dumps({"message": str(exc), "panic": type(exc).__name__ == "PanicException"}).encode()
            out.write(b"E" + _LENGTH.pack(len(message)) + message)
        out.flush()


if __name__ == "__main__":
    serve()
