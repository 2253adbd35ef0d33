"""A small HTTP/1.1 server on asyncio streams, for a Unix socket (or loopback TCP).

The protocol itself is h11's (the state machine under httpx and uvicorn): request parsing,
keep-alive, `Expect: 100-continue`, chunked responses for server-sent events. On top, our
own limits, stricter than HTTP needs: Content-Length of 1-12 ASCII digits, no CR/LF/NUL in
a header, no duplicate framing headers, no request body with Transfer-Encoding (411); the
head and body sizes are bounded before reading. Every malformed request gets a JSON error
and the connection closes. One task per connection; handlers run on the event loop.

What a peer can hold is bounded: open connections overall and per peer uid (over the cap a
connection is closed at accept), the head and body read times, and every write: a client
that takes nothing of a response for `write_timeout_s` (or past the response's deadline)
is dropped, and its stream is closed, which stops the generation behind it. A `Gate`
refuses peers at accept and requests after their head, before their body is read.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import json
import logging
import re
import socket
import struct
import sys
import termios
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, NoReturn, Protocol

import h11

from calm_edge.server.access import Peer, read_peer

log = logging.getLogger("calm_edge.http")

_MAX_HEADERS = 100
_CONTENT_LENGTH = re.compile(r"[0-9]{1,12}")  # ASCII digits only; int() takes more
_HEAD_CONTROLS = ("\r", "\n", "\x00")  # left in a line after splitting on CRLF: refused
_DEADLINE_GRACE_S = 0.5  # what a write may still wait once the response's deadline passed
_QUIET_S = 60.0  # one traceback per kind, one refusal line per uid, per this many seconds


def _address(peername: Any) -> str | None:
    """The IP address of a TCP peer from its socket address tuple."""
    if isinstance(peername, tuple) and peername and isinstance(peername[0], str):
        return peername[0]
    return None


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    peer: Peer | None = None  # Unix-socket credentials read at accept; None over TCP
    tcp: bool = False
    remote: str | None = None  # the peer's IP address over TCP (quotas by address)
    # Set as soon as the client closes its end (EOF or connection lost): long work for it
    # should stop. Clients that half-close after sending (shutdown(SHUT_WR)) look gone too.
    peer_gone: asyncio.Event = field(default_factory=asyncio.Event)
    # Why the server dropped the client, when it did: "stalled" (it took nothing of the
    # response for write_timeout_s) or "deadline" (the response's deadline passed while a
    # write waited). Set before peer_gone, so the handler can record it.
    dropped: str | None = None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    stream: AsyncIterator[bytes] | None = None  # sent chunked when set
    deadline_s: float | None = None  # time.monotonic(): no write waits past it

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        return cls(status, body + b"\n", headers=dict(headers or {}))


Handler = Callable[[Request], Awaitable[Response]]


class Gate(Protocol):
    """Refuses early, before a peer costs anything. Both run on the loop and must not block."""

    def connection(self, peer: Peer | None, tcp: bool) -> Response | None:
        """At accept: a refusal to send before closing, or None to serve the connection."""

    def head(self, request: Request) -> Response | None:
        """After the head, before the body is read (request.body is empty): a refusal, or
        None to read the body and call the handler."""


def error_response(status: int, message: str, *, type_: str | None = None,
                   code: str | None = None, param: str | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    """An OpenAI-style error body: {"error": {"message", "type", "param", "code"}}."""
    if type_ is None:
        type_ = "invalid_request_error" if status < 500 else "server_error"
    return Response.json(status, {"error": {"message": message, "type": type_,
                                            "param": param, "code": code}}, headers)


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message


class _Refused(Exception):
    def __init__(self, response: Response, keep_alive: bool) -> None:
        self.response, self.keep_alive = response, keep_alive


def _unread_bytes(writer: asyncio.StreamWriter) -> int | None:
    """Bytes handed to the kernel that the peer has not taken yet (SIOCOUTQ: for a Unix
    socket, what sits unread in the peer's queue), or None where that cannot be read."""
    sock = writer.get_extra_info("socket")
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except (OSError, ValueError, AttributeError):
        return None
    return int(struct.unpack("i", raw)[0])


class _Delivery:
    """How much of a response the client has taken, and since when it has taken nothing
    while bytes waited for it (what write_timeout_s is measured against, so the kernel's
    and the transport's buffer sizes do not add to it)."""

    def __init__(self, now_s: float) -> None:
        self.written = 0
        self._taken = 0
        self._idle_since_s = now_s

    def idle_s(self, writer: asyncio.StreamWriter, now_s: float) -> float:
        """Seconds the client has taken nothing with bytes waiting; 0 if it took some."""
        queued = writer.transport.get_write_buffer_size() + (_unread_bytes(writer) or 0)
        taken = self.written - queued
        if queued == 0 or taken > self._taken:
            self._taken, self._idle_since_s = taken, now_s
        return now_s - self._idle_since_s


class _Quiet:
    """Lets one message per key through every `_QUIET_S`; counts what it held back.
    Bounded: the least recently seen keys are forgotten first."""

    def __init__(self, clock: Callable[[], float], max_keys: int = 1024) -> None:
        self._clock, self._max_keys = clock, max_keys
        self._seen: collections.OrderedDict[object, tuple[float, int]] = \
            collections.OrderedDict()

    def allow(self, key: object) -> int | None:
        """None to stay quiet, else how many messages for `key` were held back before."""
        now = self._clock()
        last, held = self._seen.pop(key, (float("-inf"), 0))
        if now - last < _QUIET_S:
            self._seen[key] = (last, held + 1)
            return None
        self._seen[key] = (now, 0)
        while len(self._seen) > self._max_keys:
            self._seen.popitem(last=False)
        return held


class HttpServer:
    """Serves `handler` on connections handed to `handle_connection`.

    Tracks in-flight requests so that `drain()` can wait for them. Owned by the loop.
    """

    def __init__(self, handler: Handler, *, max_header_bytes: int, max_body_bytes: int,
                 keepalive_timeout_s: float, body_timeout_s: float = 30.0,
                 write_timeout_s: float = 5.0, max_connections: int = 256,
                 max_connections_per_uid: int = 128, gate: Gate | None = None,
                 peer_reader: Callable[[socket.socket], Peer | None] = read_peer,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`peer_reader` reads a Unix peer's credentials at accept; `clock` paces the
        rate-limited log lines."""
        self._handler, self._gate, self._read_peer = handler, gate, peer_reader
        self.max_header_bytes, self.max_body_bytes = max_header_bytes, max_body_bytes
        self.keepalive_timeout_s, self.body_timeout_s = keepalive_timeout_s, body_timeout_s
        self.write_timeout_s = write_timeout_s
        self.max_connections, self.max_connections_per_uid = (max_connections,
                                                              max_connections_per_uid)
        self.in_flight = 0
        self.draining = False
        self.refused_connections = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._connections: dict[asyncio.StreamWriter, bool] = {}  # writer -> busy
        self._per_uid: collections.Counter[int | None] = collections.Counter()  # None: TCP
        self._quiet_refusals = _Quiet(clock)
        self._quiet_traces = _Quiet(clock)

    async def start(self, sock: Any) -> asyncio.Server:
        """Serve on a listening socket (Unix, or TCP). Each connection's protocol reports
        the peer going away at once, so generation for it can stop within a token."""
        loop = asyncio.get_running_loop()

        def factory() -> _Protocol:
            reader = asyncio.StreamReader(limit=self.max_header_bytes)
            return _Protocol(reader, self)

        if sock.family == socket.AF_UNIX:
            return await loop.create_unix_server(factory, sock=sock)
        return await loop.create_server(factory, sock=sock)

    async def handle_connection(self, reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter,
                                peer_gone: asyncio.Event | None = None) -> None:
        sock = writer.get_extra_info("socket")
        tcp = getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6)
        peer = self._read_peer(sock) if sock is not None and not tcp else None
        remote = _address(writer.get_extra_info("peername")) if tcp else None
        key = None if peer is None else peer.uid
        over = self._over_cap(key)
        if over is not None:  # closed at once: whatever it sent is dropped unread
            self._log_refusal(key, over)
            with contextlib.suppress(Exception):
                writer.write(_encode_head(over, keep_alive=False) + over.body)
            writer.close()
            return
        gone = peer_gone if peer_gone is not None else asyncio.Event()
        self._connections[writer] = False
        self._per_uid[key] += 1
        try:
            refusal = self._gate.connection(peer, tcp) if self._gate is not None else None
            if refusal is not None:
                self._log_refusal(key, refusal)
                await self._refuse(reader, writer, refusal)
                return
            conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_header_bytes)
            while not self.draining:
                keep = await self._one_request(conn, reader, writer, peer, tcp, gone,
                                               remote)
                if not keep:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:  # a bug must not kill the server; log it and drop the connection
            self._trace("connection", "unhandled error on connection")
        finally:
            self._connections.pop(writer, None)
            self._per_uid[key] -= 1
            if self._per_uid[key] <= 0:
                del self._per_uid[key]
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _over_cap(self, key: int | None) -> Response | None:
        if len(self._connections) >= self.max_connections:
            why = f"the daemon has {len(self._connections)} connections open (max_connections)"
        elif self._per_uid[key] >= self.max_connections_per_uid:
            who = "TCP peers have" if key is None else f"uid {key} has"
            why = f"{who} {self._per_uid[key]} connections open (max_connections_per_uid)"
        else:
            return None
        return error_response(503, f"too many connections: {why}", code="too_many_connections",
                              headers={"Retry-After": "1"})

    def _log_refusal(self, key: int | None, response: Response) -> None:
        """One line per uid per minute, however many connections it tries."""
        self.refused_connections += 1
        held = self._quiet_refusals.allow(key)
        if held is not None:
            who = "a TCP peer" if key is None else f"uid {key}"
            more = f" ({held} more refused since the last line)" if held else ""
            log.warning("refused a connection from %s: %s%s", who,
                        response.body.decode(errors="replace").strip(), more)

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      response: Response) -> None:
        """Answer, end our side, and read (and drop) at most 64 KiB for at most 1 s before
        closing, so that the client reads the answer rather than a reset. The connection
        still counts against the caps meanwhile."""
        writer.write(_encode_head(response, keep_alive=False) + response.body)
        if writer.can_write_eof():
            writer.write_eof()

        async def discard(left: int) -> None:
            while left > 0 and (data := await reader.read(left)):
                left -= len(data)

        with contextlib.suppress(asyncio.TimeoutError, TimeoutError, ConnectionError):
            await asyncio.wait_for(discard(64 << 10), 1.0)

    def _trace(self, kind: str, message: str, *args: object) -> None:
        """log.exception, at most once per minute per kind (kind + exception type): a
        request that always fails must not write a traceback per request."""
        exc = sys.exc_info()[1]
        held = self._quiet_traces.allow((kind, type(exc).__name__))
        if held is not None:
            more = f" ({held} more like it since, not logged)" if held else ""
            log.exception(message + more, *args)

    async def _next_event(self, conn: h11.Connection, reader: asyncio.StreamReader,
                          timeout_s: float) -> Any:
        """The next h11 event, reading as needed; None when the peer closes or is idle for
        `timeout_s` before a request began. Raises _BadRequest for what h11 refuses."""
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as e:
                status = e.error_status_hint if e.error_status_hint != 400 else 400
                if status == 431:
                    raise _BadRequest(431, f"request head larger than "
                                      f"{self.max_header_bytes} bytes") from None
                raise _BadRequest(status, f"malformed request: {e}") from None
            except ValueError:  # h11's int() of an absurd Content-Length
                raise _BadRequest(400, "invalid Content-Length (1 to 12 ASCII digits)") \
                    from None
            if event is not h11.NEED_DATA:
                return event
            try:
                data = await asyncio.wait_for(reader.read(65536), timeout_s)
            except (asyncio.TimeoutError, TimeoutError):
                if conn.their_state is h11.IDLE:
                    return None  # an idle keep-alive connection
                raise _BadRequest(408, "timed out reading the request") from None
            if not data and conn.their_state is h11.IDLE:
                return None
            conn.receive_data(data)

    async def _one_request(self, conn: h11.Connection, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter, peer: Peer | None, tcp: bool,
                           peer_gone: asyncio.Event, remote: str | None = None) -> bool:
        """Serve one request; True to keep the connection open."""
        try:
            event = await self._next_event(conn, reader, self.keepalive_timeout_s)
            if event is None or isinstance(event, h11.ConnectionClosed):
                return False
            self._connections[writer] = True
            self._begin()
        except _BadRequest as e:
            await self._send_raw(writer, error_response(e.status, e.message))
            return False
        try:
            try:
                request = self._request(event, peer, tcp)
                request.peer_gone, request.remote = peer_gone, remote
                refusal = self._gate.head(request) if self._gate is not None else None
                if refusal is not None:  # before a byte of the body is read or waited for
                    if request.headers.get("content-length", "0") == "0":
                        await self._read_body(conn, reader, writer, request)  # nothing to wait
                    keep = conn.their_state is h11.DONE and not self.draining
                    await self._send(conn, writer, refusal, keep)
                    return keep and self._next_cycle(conn)
                request.body = await self._read_body(conn, reader, writer, request)
            except _BadRequest as e:
                await self._send_raw(writer, error_response(e.status, e.message))
                return False
            try:
                response = await self._handler(request)
            except Exception:
                self._trace("handler", "handler failed for %s %s", request.method,
                            request.path)
                response = error_response(500, "internal error")
            keep = not self.draining
            await self._send(conn, writer, response, keep, request)
            return keep and self._next_cycle(conn)
        finally:
            self._connections[writer] = False
            self._end()

    @staticmethod
    def _next_cycle(conn: h11.Connection) -> bool:
        """Ready the connection for the next request, if both sides may go on."""
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            return True
        return False

    def _request(self, event: Any, peer: Peer | None, tcp: bool) -> Request:
        """Our Request from h11's, with our stricter checks of the head."""
        if not isinstance(event, h11.Request):
            raise _BadRequest(400, "expected a request")
        if len(event.headers) > _MAX_HEADERS:
            raise _BadRequest(431, f"more than {_MAX_HEADERS} headers")
        headers: dict[str, str] = {}
        for raw_name, raw_value in event.headers:
            name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
            if any(c in value for c in _HEAD_CONTROLS):
                raise _BadRequest(400, "a bare CR, LF or a NUL in the request head")
            if name in headers and name in ("content-length", "host", "transfer-encoding"):
                raise _BadRequest(400, f"duplicate {name} header")
            headers[name] = value
        if "transfer-encoding" in headers:
            raise _BadRequest(411, "chunked request bodies are not supported; "
                              "send Content-Length")
        length_text = headers.get("content-length", "0")
        if not _CONTENT_LENGTH.fullmatch(length_text):
            raise _BadRequest(400, "invalid Content-Length (1 to 12 ASCII digits)")
        if int(length_text) > self.max_body_bytes:
            raise _BadRequest(413, f"request body is {int(length_text)} bytes; the limit is "
                              f"{self.max_body_bytes}")
        target = event.target.decode("latin-1")
        path, _, query = target.partition("?")
        if not path.startswith("/"):
            raise _BadRequest(400, "request target must be an absolute path")
        method = event.method.decode("latin-1")
        return Request(method, path, query, headers, b"", peer, tcp)

    async def _read_body(self, conn: h11.Connection, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter, request: Request) -> bytes:
        """The body (Content-Length was checked), within body_timeout_s."""
        if conn.they_are_waiting_for_100_continue:
            go_on = conn.send(h11.InformationalResponse(status_code=100, headers=[]))
            await self._write(writer, go_on, _Delivery(time.monotonic()), None, None)
        parts: list[bytes] = []
        deadline = time.monotonic() + self.body_timeout_s
        while True:
            try:
                event = await self._next_event(conn, reader, max(deadline - time.monotonic(),
                                                                 0.0))
            except _BadRequest as e:
                if e.status == 408:
                    raise _BadRequest(408, "timed out reading the request body") from None
                raise
            if isinstance(event, h11.Data):
                parts.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(parts)
            else:
                raise _BadRequest(400, "incomplete request body")

    async def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter,
                    response: Response, keep_alive: bool, request: Request | None = None,
                    ) -> None:
        """Write the response through h11; every write waits at most write_timeout_s (and
        not past response.deadline_s) for the client to take it, else the connection is
        dropped."""
        delivery, deadline_s = _Delivery(time.monotonic()), response.deadline_s
        headers = _headers(response, keep_alive)
        head = conn.send(h11.Response(status_code=response.status, headers=headers,
                                      reason=_reason(response.status).encode()))
        if response.stream is None:
            data = head + (conn.send(h11.Data(data=response.body)) if response.body else b"")
            await self._write(writer, data + conn.send(h11.EndOfMessage()), delivery,
                              deadline_s, request)
            return
        stream = response.stream
        try:
            await self._write(writer, head, delivery, deadline_s, request)
            async for chunk in stream:
                if chunk:
                    await self._write(writer, conn.send(h11.Data(data=chunk)), delivery,
                                      deadline_s, request)
            await self._write(writer, conn.send(h11.EndOfMessage()), delivery, deadline_s,
                              request)
        except ConnectionError:
            if request is not None:
                request.peer_gone.set()
            raise ConnectionResetError("client went away during a stream") from None
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _send_raw(self, writer: asyncio.StreamWriter, response: Response) -> None:
        """An error answer to a request h11 could not take (the connection then closes)."""
        await self._write(writer, _encode_head(response, keep_alive=False) + response.body,
                          _Delivery(time.monotonic()), None, None)

    async def _write(self, writer: asyncio.StreamWriter, data: bytes, delivery: _Delivery,
                     deadline_s: float | None, request: Request | None) -> None:
        """Write, then wait while the transport's buffer is full. A client that has taken
        nothing for write_timeout_s while bytes waited for it, or past the deadline (plus
        a grace for the last words), is dropped: the connection is aborted (what is queued
        is discarded: the client is not reading it), `request.dropped` says why, and
        ConnectionResetError is raised."""
        # Nothing waiting before this write restarts the idle clock, however long ago the
        # last write was (a held cascade answer, a long prefill): the unread figure of a
        # Unix socket counts buffer memory, not bytes, so after a write `taken` alone
        # cannot tell that the client took everything before it.
        delivery.idle_s(writer, time.monotonic())
        writer.write(data)
        delivery.written += len(data)
        while True:
            now = time.monotonic()
            allowed_s = self.write_timeout_s - delivery.idle_s(writer, now)
            why = "stalled"
            if deadline_s is not None and deadline_s + _DEADLINE_GRACE_S - now < allowed_s:
                allowed_s, why = deadline_s + _DEADLINE_GRACE_S - now, "deadline"
            if allowed_s <= 0:
                self._drop(writer, request, why)
            if writer.transport.get_write_buffer_size() == 0:
                return  # nothing of ours is waiting: drain() would not wait
            try:
                await asyncio.wait_for(writer.drain(), allowed_s)
                return
            except (asyncio.TimeoutError, TimeoutError):
                continue  # look again: the client may have taken some meanwhile

    @staticmethod
    def _drop(writer: asyncio.StreamWriter, request: Request | None, why: str) -> NoReturn:
        if request is not None:
            request.dropped = why
            request.peer_gone.set()
        writer.transport.abort()
        raise ConnectionResetError(f"client dropped: {why}")

    def _begin(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def _end(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def drain(self, timeout_s: float) -> bool:
        """Stop taking new requests on open connections; wait for in-flight ones.

        Idle keep-alive connections are closed at once. True if all finished in time.
        """
        self.draining = True
        for writer, busy in list(self._connections.items()):
            if not busy:
                writer.close()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except (asyncio.TimeoutError, TimeoutError):
            return False

    def close_all(self) -> None:
        for writer in list(self._connections):
            writer.close()


class _Protocol(asyncio.StreamReaderProtocol):
    """StreamReaderProtocol that also signals the peer's EOF or disconnect at once."""

    def __init__(self, reader: asyncio.StreamReader, server: HttpServer) -> None:
        self.peer_gone = asyncio.Event()
        super().__init__(reader, lambda r, w: server.handle_connection(r, w, self.peer_gone))

    def eof_received(self) -> bool:
        self.peer_gone.set()
        return bool(super().eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        self.peer_gone.set()
        super().connection_lost(exc)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _headers(response: Response, keep_alive: bool) -> list[tuple[str, str]]:
    """Response headers for h11 (it adds the framing: Content-Length or chunked)."""
    out = [("Content-Type", response.content_type)]
    out += list(response.headers.items())
    out.append(("Connection", "keep-alive" if keep_alive else "close"))
    if response.stream is None:
        out.append(("Content-Length", str(len(response.body))))
    else:
        out.append(("Cache-Control", "no-cache"))
    return out


def _encode_head(response: Response, keep_alive: bool) -> bytes:
    head = [f"HTTP/1.1 {response.status} {_reason(response.status)}",
            f"Content-Type: {response.content_type}"]
    head += [f"{k}: {v}" for k, v in response.headers.items()]
    head.append("Connection: keep-alive" if keep_alive else "Connection: close")
    if response.stream is None:
        head.append(f"Content-Length: {len(response.body)}")
    else:
        head += ["Transfer-Encoding: chunked", "Cache-Control: no-cache"]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
