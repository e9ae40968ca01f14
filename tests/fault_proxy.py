"""A small TCP proxy for outage tests: forwards 127.0.0.1:<port> to a real server and
can cut every connection on demand.

    proxy = FaultProxy(("127.0.0.1", 5432))
    ... point a connector at port=proxy.port ...
    proxy.cut()      # reset every live connection; new ones are accepted and reset at once
    proxy.restore()  # forward again
    proxy.close()

    proxy.stall()    # every connection, live or new, goes silent: accepted, nothing forwarded
    proxy.unstall()  # forward again (what was held back is delivered)

While cut, the listening socket stays bound (so the port cannot be taken by someone
else) but every new connection is reset immediately: a client sees "server closed the
connection unexpectedly" or "connection reset", as when a server crashes.
Threads only; no asyncio, no dependencies.
"""

from __future__ import annotations

import socket
import struct
import threading


def _reset(sock: socket.socket) -> None:
    """Close abruptly (RST where the OS allows), waking any thread blocked in recv."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class FaultProxy:
    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 5432), host: str = "127.0.0.1"):
        self.target = target
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, 0))
        self._listener.listen(64)
        self._listener.settimeout(0.05)  # the accept loop polls so close() is prompt
        self.host = host
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._is_cut = False
        self._closed = threading.Event()
        #: counters for assertions: connections forwarded, connections refused while cut,
        #: live connections reset by cut()
        self._flowing = threading.Event()  # cleared while stalled
        self._flowing.set()
        self.forwarded = 0
        self.refused = 0
        self.reset_live = 0
        self._thread = threading.Thread(target=self._accept_loop, name=f"fault-proxy-{self.port}", daemon=True)
        self._thread.start()

    # --- control ------------------------------------------------------------------------

    @property
    def is_cut(self) -> bool:
        return self._is_cut

    def cut(self) -> None:
        """Reset every live connection and refuse new ones until restore()."""
        with self._lock:
            self._is_cut = True
            pairs = list(self._pairs)
            self._pairs.clear()
            self.reset_live += len(pairs)
        for client, upstream in pairs:
            _reset(client)
            _reset(upstream)

    @property
    def is_stalled(self) -> bool:
        return not self._flowing.is_set()

    def stall(self) -> None:
        """Hold back every byte in both directions, on live and new connections, as a
        hung server or a silently dropping firewall does; the sockets stay open."""
        self._flowing.clear()

    def unstall(self) -> None:
        self._flowing.set()

    def restore(self) -> None:
        with self._lock:
            self._is_cut = False

    def close(self) -> None:
        self._closed.set()
        self._flowing.set()  # let held pumps run into the cut
        self.cut()
        self._thread.join(timeout=2)
        try:
            self._listener.close()
        except OSError:
            pass

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- forwarding ---------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self._lock:
                refuse = self._is_cut or self._closed.is_set()
                if refuse:
                    self.refused += 1
            if refuse:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            pair = (client, upstream)
            with self._lock:
                if self._is_cut:  # cut() ran while we were connecting upstream
                    self.refused += 1
                    _reset(client)
                    _reset(upstream)
                    continue
                self._pairs.add(pair)
                self.forwarded += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst, pair), daemon=True,
                                 name=f"fault-proxy-{self.port}-pump").start()

    def _pump(self, src: socket.socket, dst: socket.socket, pair) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                while not self._flowing.wait(0.05):  # stalled: hold the data back
                    if self._closed.is_set():
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                live = pair in self._pairs
                self._pairs.discard(pair)
            if live:  # the other pump is blocked in recv: wake it by shutting both down
                for s in pair:
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    try:
                        s.close()
                    except OSError:
                        pass
