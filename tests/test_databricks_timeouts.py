"""Databricks' timeout options against minilake behind a stalling proxy
(tests/fault_proxy.py): a read that stalls is abandoned after read_timeout and retried,
then its chunk fails cleanly (the run goes on, `partial_success`, and Retry failed
chunks lands it once the connection flows again); Cancel during a stalled read ends the
sync within 2 s; a host that accepts no connection ends validation after
connect_timeout; the options reach the SDK and the downloads."""

from __future__ import annotations

import socket
import threading
import time

import pytest

pytest.importorskip("databricks.sdk")

from esg_workbench.connectors.registry import create_connector  # noqa: E402
from esg_workbench.core import errors  # noqa: E402
from esg_workbench.core.specs import CancelToken, SyncStatus  # noqa: E402
from esg_workbench.sync.engine import SyncRequest  # noqa: E402
from tests.fault_proxy import FaultProxy  # noqa: E402
from tests.test_connector_databricks import (  # noqa: E402,F401  (fixtures)
    add, as_text, dbx, engine, lake, raw_rows, source_rows, spec, ws)
from tests.warehouse_emulators import minilake_server  # noqa: E402,F401

TIMEOUTS = {"connect_timeout": 2, "read_timeout": 1, "statement_timeout": 20, "retry_timeout": 3}


@pytest.fixture
def proxied(dbx, minilake_server):
    """(options through a stalling proxy, run(sql), the proxy)."""
    options, run = dbx
    host, port = minilake_server.url.removeprefix("http://").split(":")
    with FaultProxy((host, int(port))) as proxy:
        yield {**options, "host": f"http://127.0.0.1:{proxy.port}", **TIMEOUTS}, run, proxy


class StallsOnRead:
    """The real connector; the proxy stalls when a chunk after the first is read."""

    def __init__(self, inner, proxy):
        self.inner, self.proxy = inner, proxy

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def read(self, stream, scope, chunk, cancel=None):
        if chunk.lower is not None:
            self.proxy.stall()
        return self.inner.read(stream, scope, chunk, cancel)


def test_a_stalled_read_fails_its_chunk_cleanly_and_heals_on_retry(ws, proxied):
    options, run, proxy = proxied
    run("CREATE TABLE t (id BIGINT PRIMARY KEY, v VARCHAR)")
    run("INSERT INTO t SELECT i, 'v' || i FROM range(1, 41) r(i)")
    add(ws, options, primary_key="id", chunk_size=20)
    started = time.monotonic()
    result = engine(ws, connector_factory=lambda s: StallsOnRead(create_connector(s), proxy)).run(
        SyncRequest(connector="dbx"))
    took = time.monotonic() - started
    stream = result.streams[0]
    assert result.status is SyncStatus.PARTIAL_SUCCESS, result.error
    assert (stream.chunks_done, stream.chunks_failed, stream.rows_written) == (1, 1, 20)
    said = stream.first_chunk_error or ""
    print(f"stalled read: {took:.1f} s; {said}")
    # the watch (nothing for read_timeout) or the SDK's own request timeout (read_timeout), whichever is first
    assert "the source sent nothing for 1 s" in said or "the connection to Databricks was interrupted" in said, said
    assert took < 30, took  # 4 attempts of about read_timeout each, not the SDK's minute
    proxy.unstall()
    retried = engine(ws).run(SyncRequest(connector="dbx", retry_failed=True))
    assert retried.status is SyncStatus.SUCCESS, retried.error
    assert as_text(raw_rows(ws, stream.raw_table, ["id", "v"])) == as_text(source_rows(run, "t", ["id", "v"]))


def test_cancel_during_a_stalled_read_stops_within_two_seconds(ws, proxied):
    options, run, proxy = proxied
    run("CREATE TABLE t (id BIGINT PRIMARY KEY, v VARCHAR)")
    run("INSERT INTO t SELECT i, 'v' || i FROM range(1, 41) r(i)")
    add(ws, options, primary_key="id", chunk_size=20, read_timeout=60)  # the guard would wait a minute
    cancel = CancelToken()
    sync = engine(ws, cancel=cancel, connector_factory=lambda s: StallsOnRead(create_connector(s), proxy))
    done: dict = {}
    thread = threading.Thread(target=lambda: done.update(result=sync.run(SyncRequest(connector="dbx"))))
    thread.start()
    while not proxy.is_stalled:
        time.sleep(0.02)
        assert thread.is_alive(), done
    time.sleep(0.5)  # well into the stalled read
    asked = time.monotonic()
    cancel.cancel()
    thread.join(10)
    took = time.monotonic() - asked
    print(f"Cancel during a stalled read: the sync ended {took:.2f} s after it")
    assert not thread.is_alive() and took < 2, took
    assert done["result"].status is SyncStatus.CANCELLED
    assert done["result"].streams[0].rows_written == 20  # the first chunk landed and stays


def test_validate_ends_after_connect_timeout_on_a_host_that_accepts_nothing(dbx):
    options, _ = dbx
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)  # never accepted: once its queue is full, connections wait for a SYN-ACK
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(listener.getsockname())
            fillers.append(filler)
        time.sleep(0.2)
        port = listener.getsockname()[1]
        connector = create_connector(spec({**options, "host": f"http://127.0.0.1:{port}", **TIMEOUTS}))
        started = time.monotonic()
        with pytest.raises(errors.SourceUnreachable) as caught:
            connector.validate()
        took = time.monotonic() - started
        assert took < 5, took
        assert "did not answer within 2 s (the connector's connect_timeout)" in caught.value.describe()
    finally:
        for s in fillers:
            s.close()
        listener.close()


def test_the_options_reach_the_client_and_downloads(dbx):
    options, _ = dbx
    connector = create_connector(spec({**options, **TIMEOUTS}))
    assert connector.client.config.http_timeout_seconds == 1  # read_timeout: each request's wait
    assert (connector.timeouts.connect, connector.timeouts.statement) == (2, 20)
    from esg_workbench.connectors.databricks import _wait_timeout

    assert [_wait_timeout(s) for s in (1, 20, 900)] == ["5s", "20s", "30s"]  # the API takes 5 to 50 s
