"""A fault-injecting HTTP proxy on 127.0.0.1 in front of an S3 endpoint (moto), for the fault drills.

Requests are relayed byte for byte (SigV4 signatures stay valid: the client signs the ``Host`` it dials, and moto
does not check it) until a ``Faults`` plan says otherwise; then the proxy answers for the store:

- ``slowdown``: 503 with S3's ``SlowDown`` XML error body (what S3 sends when a prefix is throttled);
- ``reset``: the whole request is read, then the connection is reset (TCP RST), nothing reaches the store;
- ``full``: 507 with MinIO's ``XMinioStorageFull`` body (a full disk under an S3-compatible store).

A faulted request never reaches the store, so whatever the store holds was written by a request that got through.
The proxy counts what it did (``stats()``): requests relayed, faults by kind, and retries seen on the wire (a later
request of the same kind, method + path + query parameter names, as one that was faulted), and which faulted
requests never got through afterwards (``unrecovered``: a drill that expects everything retried wants none).
"""

from __future__ import annotations

import re
import socket
import socketserver
import struct
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Self
from urllib.parse import parse_qsl, urlsplit

__all__ = ["FaultProxy", "Faults"]

KINDS = ("slowdown", "reset", "full")
_ERRORS = {
    "slowdown": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
    "full": (507, "Insufficient Storage", "XMinioStorageFull",
             "Storage backend has reached its minimum free drive threshold. Please delete a few objects to proceed."),
}  # fmt: skip
_MAX_HEADER = 64 * 1024


@dataclass(frozen=True)
class Faults:
    """Which requests fail, and how.

    A request is *eligible* when its method is in ``methods``. Faults start at the first eligible request whose
    path matches ``trigger`` (a regex; None: at once), let ``skip`` eligible requests through, then fault the next
    ``count`` eligible ones (None: every one until the plan is cleared), cycling through ``kinds``.

    ``sticky``: ``count`` counts distinct requests (method, path, query parameter names) instead, and each of them
    fails every time it is tried again, while every other request gets through: "this one write keeps failing".
    """

    kinds: tuple[str, ...] = ("slowdown",)
    methods: frozenset[str] = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE"})
    trigger: str | None = None
    skip: int = 0
    count: int | None = None
    sticky: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(KINDS)
        if not self.kinds or unknown:
            raise ValueError(f"fault kinds must be a non-empty selection of {KINDS}, got {self.kinds!r}")


class _Plan:
    """A ``Faults`` plan being applied (under the proxy's lock)."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self.triggered = faults.trigger is None
        self.seen = 0  # eligible requests since the trigger
        self.injected = 0
        self.stuck: set[tuple] = set()  # sticky: the requests that keep failing

    def decide(self, method: str, path: str, kind: tuple) -> str | None:
        f = self.faults
        if method not in f.methods:
            return None
        if kind in self.stuck:
            return f.kinds[0]
        if not self.triggered:
            if not re.search(f.trigger, path):
                return None
            self.triggered = True
        self.seen += 1
        if self.seen <= f.skip or (f.count is not None and self.injected >= f.count):
            return None
        fault = f.kinds[self.injected % len(f.kinds)]
        self.injected += 1
        if f.sticky:
            self.stuck.add(kind)
        return fault


def _kind_of(method: str, target: str) -> tuple[str, str, tuple[str, ...]]:
    """A request's identity across retries: method, path and the names (not values) of its query parameters."""
    parts = urlsplit(target)
    return method, parts.path, tuple(sorted({k for k, _ in parse_qsl(parts.query, keep_blank_values=True)}))


def _error_response(kind: str, method: str, path: str) -> bytes:
    status, reason, code, message = _ERRORS[kind]
    body = b"" if method == "HEAD" else (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
        f"<Resource>{path}</Resource><RequestId>plada-fault-proxy</RequestId></Error>"
    ).encode()  # fmt: skip
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n"
            "x-amz-request-id: plada-fault-proxy\r\n\r\n")  # fmt: skip
    return head.encode() + body


class _Closed(Exception):
    """The peer closed the connection between requests."""


def _read_head(rfile) -> tuple[bytes, list[bytes]]:
    """Start line and header lines (raw, without CRLF) of one HTTP message."""
    start = rfile.readline(_MAX_HEADER)
    if not start:
        raise _Closed
    lines, size = [], len(start)
    while True:
        line = rfile.readline(_MAX_HEADER)
        size += len(line)
        if not line or size > _MAX_HEADER:
            raise ConnectionError("truncated or oversized HTTP header")
        if line in (b"\r\n", b"\n"):
            return start.rstrip(b"\r\n"), lines
        lines.append(line.rstrip(b"\r\n"))


def _header(lines: list[bytes], name: str) -> str | None:
    prefix = name.lower().encode() + b":"
    for line in lines:
        if line.lower().startswith(prefix):
            return line[len(prefix) :].strip().decode("latin-1")
    return None


def _read_body(rfile, lines: list[bytes], until_close: bool) -> bytes:
    """The raw body bytes (chunked framing kept, so the peer receives exactly what was sent)."""
    if (_header(lines, "Transfer-Encoding") or "").lower().endswith("chunked"):
        out = bytearray()
        while True:
            size_line = rfile.readline(_MAX_HEADER)
            out += size_line
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, up to the blank line
                    trailer = rfile.readline(_MAX_HEADER)
                    out += trailer
                    if trailer in (b"\r\n", b"\n", b""):
                        return bytes(out)
            out += rfile.read(size + 2)
    length = _header(lines, "Content-Length")
    if length is not None:
        return rfile.read(int(length))
    return rfile.read() if until_close else b""


class FaultProxy:
    """``FaultProxy(upstream)`` relays ``http://127.0.0.1:<port>`` to ``upstream`` (``http://host:port``).

    ``start()`` / ``stop()`` (or ``with``); ``inject(Faults(...))`` arms a plan, ``clear()`` disarms it; ``stats()``
    counts requests, faults, retries and unrecovered faults."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._lock = threading.Lock()
        self._plan: _Plan | None = None
        self._requests: Counter[str] = Counter()
        self._faults: Counter[str] = Counter()
        self._retries = 0
        self._pending: Counter[tuple] = Counter()  # faulted request kinds not yet relayed since
        self._server: socketserver.ThreadingTCPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("the proxy is not running: call start() first")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Self:
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._serve(self.request)

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
        server.daemon_threads = True
        server.allow_reuse_address = True
        server.server_bind()
        server.server_activate()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            for conn in list(self._connections):
                _close(conn)
        self._thread.join(timeout=10)
        self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def inject(self, faults: Faults) -> None:
        with self._lock:
            self._plan = _Plan(faults)

    def clear(self) -> None:
        with self._lock:
            self._plan = None

    def stats(self) -> dict:
        """``requests`` (by method), ``relayed``, ``faults`` (by kind), ``faults_injected``, ``retries_seen`` and
        ``unrecovered`` (faulted request kinds that no later request of the same kind got through for)."""
        with self._lock:
            return {
                "requests": dict(self._requests),
                "relayed": sum(self._requests.values()) - sum(self._faults.values()),
                "faults": dict(self._faults),
                "faults_injected": sum(self._faults.values()),
                "retries_seen": self._retries,
                "unrecovered": sum(1 for n in self._pending.values() if n),
            }

    # --- one client connection ------------------------------------------------------------------------------

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            self._connections.add(client)
        upstream: socket.socket | None = None
        rfile = client.makefile("rb")
        try:
            while True:
                try:
                    start, lines = _read_head(rfile)
                except _Closed:
                    return
                method, target = start.decode("latin-1").split(" ", 2)[:2]
                if (_header(lines, "Expect") or "").lower() == "100-continue":
                    client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                    lines = [line for line in lines if not line.lower().startswith(b"expect:")]
                body = _read_body(rfile, lines, until_close=False)
                kind = _kind_of(method, target)
                with self._lock:
                    self._requests[method] += 1
                    if self._pending[kind]:
                        self._retries += 1
                    fault = self._plan.decide(method, urlsplit(target).path, kind) if self._plan else None
                    if fault:
                        self._faults[fault] += 1
                        self._pending[kind] += 1
                    else:
                        self._pending.pop(kind, None)
                if fault == "reset":
                    _reset(client)
                    return
                if fault:
                    client.sendall(_error_response(fault, method, urlsplit(target).path))
                    continue
                if upstream is None:
                    upstream = socket.create_connection(self._upstream, timeout=120)
                    upfile = upstream.makefile("rb")
                upstream.sendall(start + b"\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body)
                status, rlines = _read_head(upfile)
                code = int(status.split(b" ", 2)[1])
                closing = (_header(rlines, "Connection") or "").lower() == "close"
                no_body = method == "HEAD" or code in (204, 304) or 100 <= code < 200
                rbody = b"" if no_body else _read_body(upfile, rlines, until_close=True)
                client.sendall(status + b"\r\n" + b"".join(line + b"\r\n" for line in rlines) + b"\r\n" + rbody)
                if closing or (
                    not no_body
                    and _header(rlines, "Content-Length") is None
                    and "chunked" not in (_header(rlines, "Transfer-Encoding") or "").lower()
                ):
                    return  # the response ran until the upstream closed: close the client side too
        except (OSError, ValueError, _Closed):
            return  # a client that went away mid-request, or an upstream that is down: drop the connection
        finally:
            if upstream is not None:
                _close(upstream)
            _close(client)
            with self._lock:
                self._connections.discard(client)


def _reset(sock: socket.socket) -> None:
    """Close with a TCP RST (SO_LINGER 0): the client sees ``connection reset by peer``."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    _close(sock)


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
