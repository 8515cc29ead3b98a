"""Round trips counted on the wire, not guessed from timings.

:class:`RoundTrips` is a loopback proxy in front of a PostgreSQL server that reads the protocol
the client sends: a round trip ends with a ``Sync`` message (extended protocol) or is one simple
``Query``, and a pipeline of several statements ends with one ``Sync``::

    with RoundTrips(url) as wire:
        engine = create_engine(wire.url)
        ...
    wire.count, wire.statements

It is how the toolkit's tests prove that the per-transaction context costs no round trip of its
own; an application's tests can hold their own request handlers to a round-trip budget the same
way. It listens on 127.0.0.1 only, disables TLS on the proxied connections (it must read them),
and is meant for tests and benchmarks.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
from types import TracebackType

from sqlalchemy import URL

_SSL_OR_GSS = {80877103, 80877104}


class RoundTrips:
    """Count round trips (``count``) and executed statements (``statements``) of every
    connection made to ``url`` (the proxy's address, to give ``create_engine``)."""

    def __init__(self, url: URL) -> None:
        self._target = url
        self.count = 0
        self.statements = 0  # Bind / simple Query messages: statements executed
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen()
        self._threads: list[threading.Thread] = []
        self._open: list[socket.socket] = []
        # sslmode=disable: the proxy reads the protocol, so it must stay in clear text
        self.url = (
            url.set(host="127.0.0.1", port=self._server.getsockname()[1])
            .difference_update_query(["host", "port"])
            .update_query_dict({"sslmode": "disable"})
        )

    def reset(self) -> None:
        """Start counting from zero."""
        with self._lock:
            self.count = self.statements = 0

    def _connect_upstream(self) -> socket.socket:
        def one(value: object) -> str | None:
            return value[0] if isinstance(value, tuple) else value  # type: ignore[return-value]

        host = one(self._target.query.get("host")) or self._target.host or "127.0.0.1"
        port = int(one(self._target.query.get("port")) or self._target.port or 5432)
        if host.startswith("/"):
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(os.path.join(host, f".s.PGSQL.{port}"))
        else:
            upstream = socket.create_connection((str(host), port))
        return upstream

    def __enter__(self) -> RoundTrips:
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.close()
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = self._connect_upstream()
            self._open += [client, upstream]
            for target, args in ((self._frontend, (client, upstream)), (self._pipe, (upstream, client))):
                thread = threading.Thread(target=target, args=args, daemon=True)
                thread.start()
                self._threads.append(thread)

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass

    def _frontend(self, client: socket.socket, upstream: socket.socket) -> None:
        buffer = b""
        started = False
        try:
            while data := client.recv(65536):
                # counted before it is forwarded: the reply, and the caller reading the count
                # after it, can only come later
                buffer += data
                while True:
                    if not started:
                        if len(buffer) < 8:
                            break
                        (length,) = struct.unpack("!I", buffer[:4])
                        if len(buffer) < length:
                            break
                        (code,) = struct.unpack("!I", buffer[4:8])
                        buffer = buffer[length:]
                        started = code not in _SSL_OR_GSS
                        continue
                    if len(buffer) < 5:
                        break
                    kind = buffer[:1]
                    (length,) = struct.unpack("!I", buffer[1:5])
                    if len(buffer) < 1 + length:
                        break
                    buffer = buffer[1 + length :]
                    with self._lock:
                        if kind in (b"S", b"Q"):
                            self.count += 1
                        if kind in (b"B", b"Q"):
                            self.statements += 1
                upstream.sendall(data)
        except OSError:
            pass
