"""SAP OData services on localhost for the SAP connector tests, each on a free port,
started by a fixture and stopped after it:

* `cap`: the CAP service in tests/sap_cap (OData v4 at /odata/v4/esg, v2 through the
  adapter at /odata/v2/esg), in-memory SQLite seeded from db/data, basic auth
  (user esg-reader, password esg-test-pw), at most 500 rows a page. Its node_modules
  are installed by .ci/run (`npm ci`); without them (or without node) the tests skip,
  or fail under ESG_REQUIRE_SERVICES=1.
* `mock_sap`: the `mock-sap` package (SAP-shaped OData v2 services such as
  API_BUSINESS_PARTNER_SRV), clock pinned so changed rows get a known date.
* `FaultProxy`: an HTTP proxy in front of either that fails chosen requests, for "a
  page that fails" tests, and records every request it forwards.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import pytest

from tests.conftest import free_port, service_missing

CAP_DIR = Path(__file__).parent / "sap_cap"
CAP_USER, CAP_PASSWORD = "esg-reader", "esg-test-pw"
MOCK_SAP_CLOCK = "2026-01-15T10:00"
BP_SERVICE = "/sap/opu/odata/sap/API_BUSINESS_PARTNER_SRV"


@dataclass
class Service:
    base: str  # http://127.0.0.1:PORT
    process: subprocess.Popen
    log: Path

    def url(self, path: str) -> str:
        return self.base + path


def _wait_ready(url: str, process: subprocess.Popen, log: Path, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with status {process.returncode}:\n{log.read_text()[-3000:]}", pytrace=False)
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answers (401 without credentials counts)
        except OSError:
            time.sleep(0.1)
    _stop(process)
    pytest.fail(f"{what} did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}", pytrace=False)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def _start(command: list[str], cwd: Path | None, ready_path: str, port: int, what: str, log: Path) -> Service:
    out = open(log, "wb")
    process = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    out.close()
    base = f"http://127.0.0.1:{port}"
    _wait_ready(base + ready_path, process, log, what)
    return Service(base, process, log)


def start_cap(log_dir: Path) -> Service:
    cds_serve = CAP_DIR / "node_modules" / ".bin" / "cds-serve"
    if shutil.which("node") is None or not cds_serve.exists():
        service_missing("the CAP test service (node and tests/sap_cap/node_modules; .ci/run installs them)")
    port = free_port()
    return _start([str(cds_serve), "all", "--port", str(port), "--in-memory"], CAP_DIR,
                  "/odata/v4/esg/$metadata", port, "The CAP service", log_dir / f"cap-{port}.log")


@pytest.fixture
def cap(tmp_path):
    """A fresh CAP service (fresh in-memory data) for a test that changes data."""
    service = start_cap(tmp_path)
    try:
        yield service
    finally:
        _stop(service.process)


@pytest.fixture(scope="module")
def cap_readonly(tmp_path_factory):
    """One CAP service for the tests of a module that only read."""
    service = start_cap(tmp_path_factory.mktemp("cap"))
    try:
        yield service
    finally:
        _stop(service.process)


def start_mock_sap(tmp_path: Path, *extra: str) -> Service:
    exe = shutil.which("mock-sap") or str(Path(sys.executable).parent / "mock-sap")
    if not Path(exe).exists():
        service_missing("mock-sap (pip install mock-sap)")
    port = free_port()
    return _start([exe, "--host", "127.0.0.1", "--port", str(port), "--no-csrf", "-q", "--no-request-log",
                   "--clock", MOCK_SAP_CLOCK, *extra], None, "/_mock/health", port, "mock-sap",
                  tmp_path / f"mock-sap-{port}.log")


@pytest.fixture
def mock_sap(tmp_path):
    service = start_mock_sap(tmp_path)
    try:
        yield service
    finally:
        _stop(service.process)


@pytest.fixture
def mock_sap_with_auth(tmp_path):
    service = start_mock_sap(tmp_path, "--auth", "esg-reader:esg-test-pw")
    try:
        yield service
    finally:
        _stop(service.process)


# --- talking to the services directly (arranging data, reading the truth) ------------------


def http(method: str, url: str, body: bytes | None = None, *, auth: tuple[str, str] | None = None,
         headers: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# --- a proxy that fails chosen requests -------------------------------------------------------


class FaultProxy:
    """Forwards GET requests to `upstream`; a request for which `fail(path_and_query)`
    is true is answered with `status` (and `body`) instead. Records what it saw in
    `requests`."""

    def __init__(self, upstream: str, fail: Callable[[str], bool] = lambda _: False, status: int = 500,
                 body: bytes | None = None, content_type: str = "application/json"):
        self.upstream = upstream.rstrip("/")
        self.fail = fail
        self.status = status
        self.body = body
        self.content_type = content_type
        self.requests: list[str] = []
        self.failed: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                proxy.requests.append(self.path)
                if proxy.fail(self.path):
                    proxy.failed.append(self.path)
                    body = proxy.body or (b'{"error":{"code":"/IWBEP/CX_MGW_TECH_EXCEPTION",'
                                          b'"message":{"lang":"en","value":"Injected failure"}}}')
                    self.send_response(proxy.status)
                    self.send_header("Content-Type", proxy.content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                request = urllib.request.Request(proxy.upstream + self.path, headers={
                    k: v for k, v in self.headers.items() if k.lower() in ("authorization", "accept")})
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        status, body, kind = response.status, response.read(), response.headers.get("Content-Type")
                except urllib.error.HTTPError as exc:
                    status, body, kind = exc.code, exc.read(), exc.headers.get("Content-Type")
                self.send_response(status)
                self.send_header("Content-Type", kind or "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="sap-fault-proxy", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
