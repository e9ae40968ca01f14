"""A real local HTTP server that receives webhook POSTs, for the alert tests.

    with WebhookReceiver(statuses=[500, 500, 200]) as hook:
        send_webhook(hook.url, alert, retry_delays=(0.01, 0.01, 0.01))
        hook.requests  # [(path, headers, parsed JSON body), ...] in arrival order

`statuses` are answered in turn; once used up, `default` is answered. With
`echo_path=True` a 404 answers as Express does by default ("Cannot POST /the/path"),
echoing the path, token and all. http.server in a thread; no dependencies.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookReceiver:
    def __init__(self, statuses: list[int] | None = None, default: int = 200, path: str = "/hook/T0KEN-abc123",
                 echo_path: bool = False):
        self.statuses = list(statuses or [])
        self.default = default
        self.path = path
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        self.received = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw
                with lock:
                    receiver.requests.append((self.path, dict(self.headers), body))
                    status = receiver.statuses.pop(0) if receiver.statuses else receiver.default
                answer = b'{"ok": true}' if status < 300 else b'{"error": "receiver says no"}'
                kind = "application/json"
                if status == 404 and echo_path:
                    answer = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Error</title>'
                              f'</head><body><pre>Cannot POST {self.path}</pre></body></html>').encode()
                    kind = "text/html; charset=utf-8"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                if 300 <= status < 400:
                    self.send_header("Location", f"http://127.0.0.1:{receiver.port}/elsewhere")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                if status < 300:
                    receiver.received.set()

            def log_message(self, *args) -> None:  # keep pytest's output clean
                pass

        lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}{self.path}?token=s3cr3t-query"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"webhook-{self.port}", daemon=True)
        self._thread.start()

    @property
    def bodies(self) -> list[Any]:
        return [body for _, _, body in self.requests]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "WebhookReceiver":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
