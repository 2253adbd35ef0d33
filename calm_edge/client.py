"""A minimal client for the daemon's Unix-socket API (stdlib only; used by the CLI)."""

from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from calm_edge.paths import UnsafeDirectory, check_private_dir, fallback_socket_dir


class ClientError(RuntimeError):
    """The daemon could not be reached or refused the request."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        if self._path.parent == fallback_socket_dir() and os.path.lexists(self._path.parent):
            # In /tmp, where anyone could have made it first: is it really ours?
            try:
                check_private_dir(self._path.parent)
            except UnsafeDirectory as e:
                raise ClientError(f"refusing to connect to {self._path}: {e}") from None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self._path))
        except FileNotFoundError:
            sock.close()
            raise ClientError(f"no daemon socket at {self._path}; start one with "
                              "`calm-edge serve` or pass --socket") from None
        except PermissionError as e:
            sock.close()
            raise ClientError(f"cannot connect to {self._path}: {e.strerror}: this user may "
                              "not use it (the service's socket is for root and the "
                              "calm-edge group: usermod -aG calm-edge $USER, then log in "
                              "again), or pass --socket") from None
        except OSError as e:
            sock.close()
            raise ClientError(f"cannot connect to {self._path}: {e.strerror} (is the daemon "
                              "running, and may this user use its socket?)") from None
        self.sock = sock


class Client:
    """Blocking client. `get`/`post` reuse one keep-alive connection (not thread-safe: one
    Client per thread); `stream` uses its own connection."""

    def __init__(self, socket_path: Path, timeout_s: float = 900.0) -> None:
        self.socket_path, self.timeout_s = socket_path, timeout_s
        self._idle: _UnixConnection | None = None

    def close(self) -> None:
        if self._idle is not None:
            self._idle.close()
            self._idle = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, body: Any = None, *, reuse: bool = False,
                 ) -> tuple[_UnixConnection, http.client.HTTPResponse]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn: _UnixConnection | None = None
        if reuse and self._idle is not None:
            conn, self._idle = self._idle, None
        fresh = conn is None
        if conn is None:
            conn = _UnixConnection(self.socket_path, self.timeout_s)
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
        except (http.client.HTTPException, OSError) as e:
            conn.close()
            if isinstance(e, ClientError):
                raise
            if not fresh:  # the daemon closed the idle connection: one retry on a new one
                return self._request(method, path, body)
            raise ClientError(f"request to the daemon failed: {e}") from None
        if resp.status >= 400:
            raw = resp.read()
            conn.close()
            try:
                msg = json.loads(raw)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                msg = raw.decode(errors="replace").strip() or resp.reason
            raise ClientError(f"{resp.status} {resp.reason}: {msg}", resp.status)
        return conn, resp

    def _finish(self, conn: _UnixConnection, resp: http.client.HTTPResponse) -> Any:
        try:
            data = resp.read()
        except (http.client.HTTPException, OSError) as e:
            conn.close()
            raise ClientError(f"reading the daemon's answer failed: {e}") from None
        if resp.will_close:
            conn.close()
        else:
            self.close()
            self._idle = conn
        return json.loads(data)

    def get(self, path: str) -> Any:
        conn, resp = self._request("GET", path, reuse=True)
        return self._finish(conn, resp)

    def post(self, path: str, body: Any) -> Any:
        conn, resp = self._request("POST", path, body, reuse=True)
        return self._finish(conn, resp)

    def stream(self, path: str, body: Any) -> Iterator[dict[str, Any]]:
        """POST with stream=true; yield each server-sent event's JSON object."""
        conn, resp = self._request("POST", path, body)
        try:
            for raw in resp:
                line = raw.decode("utf-8", errors="replace").strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                event = json.loads(data)
                if "error" in event:
                    raise ClientError(f"error during generation: {event['error'].get('message')}")
                yield event
        finally:
            conn.close()
