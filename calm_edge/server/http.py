"""A small HTTP/1.1 server on asyncio streams, for a Unix socket (or loopback TCP).

Enough HTTP for OpenAI-style clients (httpx, curl, the openai package): keep-alive,
Content-Length bodies, `Expect: 100-continue`, chunked responses for server-sent events.
Request bodies with Transfer-Encoding are refused (411). Limits on head and body size are
enforced before reading; every malformed request gets a JSON error and the connection
closes. One task per connection; handlers run on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

log = logging.getLogger("calm_edge.http")

_MAX_HEADERS = 100


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    peer: Any = None  # (pid, uid, gid) from SO_PEERCRED on Unix sockets, when available
    # Set as soon as the client closes its end (EOF or connection lost): long work for it
    # should stop. Clients that half-close after sending (shutdown(SHUT_WR)) look gone too.
    peer_gone: asyncio.Event = field(default_factory=asyncio.Event)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    stream: AsyncIterator[bytes] | None = None  # sent chunked when set

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        return cls(status, body + b"\n", headers=dict(headers or {}))


Handler = Callable[[Request], Awaitable[Response]]


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


class HttpServer:
    """Serves `handler` on connections handed to `handle_connection`.

    Tracks in-flight requests so that `drain()` can wait for them. Owned by the loop.
    """

    def __init__(self, handler: Handler, *, max_header_bytes: int, max_body_bytes: int,
                 keepalive_timeout_s: float, body_timeout_s: float = 30.0) -> None:
        self._handler = handler
        self.max_header_bytes, self.max_body_bytes = max_header_bytes, max_body_bytes
        self.keepalive_timeout_s, self.body_timeout_s = keepalive_timeout_s, body_timeout_s
        self.in_flight = 0
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._connections: dict[asyncio.StreamWriter, bool] = {}  # writer -> busy

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
        peer = _peer_credentials(writer)
        gone = peer_gone if peer_gone is not None else asyncio.Event()
        self._connections[writer] = False
        try:
            while not self.draining:
                keep = await self._one_request(reader, writer, peer, gone)
                if not keep:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:  # a bug must not kill the server; log it and drop the connection
            log.exception("unhandled error on connection")
        finally:
            self._connections.pop(writer, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_head(self, reader: asyncio.StreamReader) -> bytes | None:
        try:
            return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"),
                                          self.keepalive_timeout_s)
        except asyncio.IncompleteReadError as e:
            if e.partial.strip():
                raise _BadRequest(400, "incomplete request head") from None
            return None
        except asyncio.LimitOverrunError:
            raise _BadRequest(431, f"request head larger than {self.max_header_bytes} bytes") \
                from None
        except (asyncio.TimeoutError, TimeoutError):
            return None

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           peer: Any, peer_gone: asyncio.Event) -> bool:
        """Serve one request; True to keep the connection open."""
        try:
            head = await self._read_head(reader)
            if head is None:
                return False
            self._connections[writer] = True
            self._begin()
        except _BadRequest as e:
            await self._send(writer, error_response(e.status, e.message), keep_alive=False)
            return False
        try:
            try:
                request, keep_alive = await self._parse(head, reader, writer, peer)
                request.peer_gone = peer_gone
            except _BadRequest as e:
                await self._send(writer, error_response(e.status, e.message), keep_alive=False)
                return False
            try:
                response = await self._handler(request)
            except Exception:
                log.exception("handler failed for %s %s", request.method, request.path)
                response = error_response(500, "internal error")
            keep_alive = keep_alive and not self.draining
            await self._send(writer, response, keep_alive, request)
            return keep_alive
        finally:
            self._connections[writer] = False
            self._end()

    async def _parse(self, head: bytes, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, peer: Any) -> tuple[Request, bool]:
        try:
            text = head.decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes everything
            raise _BadRequest(400, "undecodable request head") from None
        lines = text[:-4].split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(400, "malformed request line")
        method, target, version = parts
        if not method.isalpha() or not method.isupper():
            raise _BadRequest(400, "malformed method")
        if len(lines) - 1 > _MAX_HEADERS:
            raise _BadRequest(431, f"more than {_MAX_HEADERS} headers")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip() or line[0] in " \t":
                raise _BadRequest(400, "malformed header line")
            key = name.lower()
            if key in headers and key in ("content-length", "host", "transfer-encoding"):
                raise _BadRequest(400, f"duplicate {name} header")
            headers[key] = value.strip()
        path, _, query = target.partition("?")
        if not path.startswith("/"):
            raise _BadRequest(400, "request target must be an absolute path")
        conn = headers.get("connection", "").lower()
        keep_alive = (version == "HTTP/1.1" and "close" not in conn) or "keep-alive" in conn
        if "transfer-encoding" in headers:
            raise _BadRequest(411, "chunked request bodies are not supported; "
                              "send Content-Length")
        length_text = headers.get("content-length", "0")
        if not length_text.isdigit():
            raise _BadRequest(400, "invalid Content-Length")
        length = int(length_text)
        if length > self.max_body_bytes:
            raise _BadRequest(413, f"request body is {length} bytes; the limit is "
                              f"{self.max_body_bytes}")
        if length and headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        try:
            body = await asyncio.wait_for(reader.readexactly(length), self.body_timeout_s) \
                if length else b""
        except (asyncio.TimeoutError, TimeoutError):
            raise _BadRequest(408, "timed out reading the request body") from None
        return Request(method, path, query, headers, body, peer), keep_alive

    async def _send(self, writer: asyncio.StreamWriter, response: Response, keep_alive: bool,
                    request: Request | None = None) -> None:
        reason = _reason(response.status)
        head = [f"HTTP/1.1 {response.status} {reason}",
                f"Content-Type: {response.content_type}"]
        head += [f"{k}: {v}" for k, v in response.headers.items()]
        head.append("Connection: keep-alive" if keep_alive else "Connection: close")
        if response.stream is None:
            head.append(f"Content-Length: {len(response.body)}")
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body)
            await writer.drain()
            return
        head += ["Transfer-Encoding: chunked", "Cache-Control: no-cache"]
        stream = response.stream
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            await writer.drain()
            async for chunk in stream:
                if chunk:
                    writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except ConnectionError:
            if request is not None:
                request.peer_gone.set()
            raise ConnectionResetError("client went away during a stream") from None
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

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


def _peer_credentials(writer: asyncio.StreamWriter) -> Any:
    sock = writer.get_extra_info("socket")
    if sock is None or getattr(sock, "family", None) != socket.AF_UNIX:
        return None
    so_peercred = getattr(socket, "SO_PEERCRED", None)
    if so_peercred is None:  # pragma: no cover - non-Linux
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, so_peercred, struct.calcsize("3i"))
    except OSError:
        return None
    return struct.unpack("3i", raw)
