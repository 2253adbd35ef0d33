"""Load, faults and hostile input: admission, deadlines, disconnects, access, fuzzing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calm_edge.config import Settings
from calm_edge.testing.fakes import FakeFactory
from tests.conftest import run_daemon, uds_client

CHAT = {"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 200}


def raw_request(path: Path, data: bytes, timeout_s: float = 10.0) -> bytes:
    with socket.socket(socket.AF_UNIX) as sk:
        sk.settimeout(timeout_s)
        sk.connect(str(path))
        sk.sendall(data)
        out = b""
        while chunk := sk.recv(65536):
            out += chunk
        return out


def http(method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None,
         ) -> bytes:
    h = {"Host": "calm", **(headers or {}), "Connection": "close",
         "Content-Length": str(len(body))}
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
    return head.encode("latin-1") + b"\r\n" + body


def test_hardening_queue_full_is_429_with_retry_after(make_settings: Callable[..., Settings],
                                                      ) -> None:
    s = make_settings(server={"max_queue": 1})
    factory = FakeFactory(answer_tokens=20, token_delay_s=0.03)
    statuses: list[int] = []
    retry: list[str] = []
    lock = threading.Lock()
    with run_daemon(s, factory):
        def client() -> None:
            with uds_client(s) as c:
                r = c.post("/v1/chat/completions", json={**CHAT, "calm": {"cache": False}})
            with lock:
                statuses.append(r.status_code)
                if r.status_code == 429:
                    retry.append(r.headers["retry-after"])
                    assert r.json()["error"]["code"] == "overloaded"

        threads = [threading.Thread(target=client) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert statuses.count(200) >= 2 and statuses.count(429) >= 1, statuses
    assert set(statuses) <= {200, 429}
    assert all(int(r) >= 1 for r in retry)


def test_hardening_deadline_stops_generation_with_504(make_settings: Callable[..., Settings],
                                                       ) -> None:
    s = make_settings()
    factory = FakeFactory(answer_tokens=200, token_delay_s=0.01)
    with run_daemon(s, factory), uds_client(s) as c:
        r = c.post("/v1/chat/completions", json={**CHAT, "calm": {"slo_ms": 300}})
        assert r.status_code == 504 and r.json()["error"]["code"] == "deadline_exceeded"
        time.sleep(0.1)
        produced = factory.backends[0].produced
        assert produced and produced[-1] < 100  # stopped early, not run to the end
        with c.stream("POST", "/v1/chat/completions",
                      json={**CHAT, "stream": True, "calm": {"slo_ms": 300}}) as rs:
            lines = [ln for ln in rs.iter_lines() if ln.startswith("data: ")]
        assert "deadline_exceeded" in lines[-1]
        # The daemon is fine afterwards.
        assert c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 3}).status_code == 200


def test_hardening_client_disconnect_stops_generation(make_settings: Callable[..., Settings],
                                                      ) -> None:
    s = make_settings()
    factory = FakeFactory(answer_tokens=500, token_delay_s=0.01)
    body = json.dumps({**CHAT, "max_tokens": 500, "stream": True}).encode()
    with run_daemon(s, factory):
        with socket.socket(socket.AF_UNIX) as sk:
            sk.connect(str(s.socket_path))
            sk.sendall(http("POST", "/v1/chat/completions", body,
                            {"Content-Type": "application/json"}))
            got = b""
            while got.count(b"data: ") < 3:
                got += sk.recv(4096)
        deadline = time.monotonic() + 5
        while not factory.backends[0].produced and time.monotonic() < deadline:
            time.sleep(0.01)
        produced = factory.backends[0].produced
        assert produced and produced[0] < 60, produced  # not 500: it stopped
        # Non-streaming: the client gives up while the answer is being generated.
        plain = json.dumps({**CHAT, "max_tokens": 500, "calm": {"cache": False}}).encode()
        with socket.socket(socket.AF_UNIX) as sk:
            sk.connect(str(s.socket_path))
            sk.sendall(http("POST", "/v1/chat/completions", plain,
                            {"Content-Type": "application/json"}))
            time.sleep(0.2)
        deadline = time.monotonic() + 5
        while len(factory.backends[0].produced) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert factory.backends[0].produced[1] < 100, factory.backends[0].produced
        with uds_client(s) as c:
            st = c.get("/calm/status").json()
            assert st["models"][0]["in_use"] == 0


def test_hardening_backend_failure_mid_stream_marks_model_unhealthy(
        make_settings: Callable[..., Settings]) -> None:
    s = make_settings()
    factory = FakeFactory(answer_tokens=20, fail_after_tokens={"tiny-chat": 3})
    with run_daemon(s, factory), uds_client(s) as c:
        with c.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as r:
            lines = [ln for ln in r.iter_lines() if ln.startswith("data: ")]
        assert r.status_code == 200
        err = json.loads(lines[-1][6:])
        assert "tiny-chat exploded" in err["error"]["message"]
        time.sleep(0.2)
        st = c.get("/calm/status").json()
        chat = next(m for m in st["models"] if m["name"] == "tiny-chat")
        assert chat["state"] == "failed" and "retrying in" in chat["unavailable"]
        r2 = c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 3})
        assert r2.status_code == 503 and "retrying in" in r2.json()["error"]["message"]
        ok = c.post("/v1/completions", json={"model": "tiny-base", "prompt": "x",
                                             "max_tokens": 3})
        assert ok.status_code == 200  # the other model keeps serving


def _as_user(uid: int, fn: Callable[[], Any], groups: tuple[int, ...] = ()) -> Any:
    """Run fn in a forked child with another uid (and these supplementary groups); return
    what it returns (JSON-able)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no locks, no logging, only a socket and a pipe
        try:
            os.setgroups(list(groups))
            os.setgid(uid)
            os.setuid(uid)
            out = json.dumps(fn()).encode()
        except BaseException as e:  # report, never return into pytest
            out = json.dumps({"error": repr(e)}).encode()
        os.write(w, out)
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(data)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")
def test_hardening_peer_credentials_allow_list(make_settings: Callable[..., Settings],
                                               short_tmp: Path) -> None:
    short_tmp.chmod(0o755)  # let the other user reach the socket file
    nobody = 65534

    def status_of(target: str, body: bytes = b"") -> Callable[[], int]:
        def go() -> int:
            method = "POST" if body else "GET"
            resp = raw_request(s.socket_path, http(method, target, body,
                                                   {"Content-Type": "application/json"}))
            return int(resp.split(b" ", 2)[1])
        return go

    chat = json.dumps({**CHAT, "max_tokens": 2}).encode()
    s = make_settings(server={"socket_mode": "0666", "allow_users": ["root"]})
    with run_daemon(s, FakeFactory(answer_tokens=2)):
        assert _as_user(nobody, status_of("/v1/chat/completions", chat)) == 403
        assert _as_user(nobody, status_of("/health")) == 403
        assert int(raw_request(s.socket_path, http("GET", "/health")).split(b" ", 2)[1]) == 200
    s = make_settings(server={"socket_mode": "0666", "admin_groups": []})
    with run_daemon(s, FakeFactory(answer_tokens=2)):
        assert _as_user(nobody, status_of("/v1/chat/completions", chat)) == 200
        assert _as_user(nobody, status_of("/calm/models/tiny-chat/load", b"{}")) == 403
        assert _as_user(nobody, status_of("/calm/budget", b'{"ram_budget": "1G"}')) == 403
        with uds_client(s) as c:  # root is an admin
            assert c.post("/calm/models/tiny-chat/load").status_code == 200


# -- fuzzing the HTTP/JSON surface ------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10),
                                                                       children, max_size=4),
    max_leaves=12)
message = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant",
                                                          "tool", "", 5]),
                                 "content": json_values})
chat_body = st.fixed_dictionaries({}, optional={
    "model": st.sampled_from(["auto", "tiny-chat", "tiny-base", "nope", "", 3, None]),
    "messages": st.lists(message, max_size=3) | json_values,
    "max_tokens": st.integers(-5, 10) | json_values,
    "temperature": st.floats(-1, 3, allow_nan=False) | json_values,
    "stream": st.booleans() | json_values,
    "stop": json_values,
    "calm": st.fixed_dictionaries({}, optional={
        "mode": st.sampled_from(["fast", "eco", "bogus"]), "slo_ms": json_values,
        "domain": st.sampled_from(["code", "poetry"]), "priority": json_values,
        "cache": json_values}),
})
raw_bodies = st.one_of(chat_body.map(lambda b: json.dumps(b).encode()),
                       st.binary(max_size=300),
                       json_values.map(lambda v: json.dumps(v).encode()))
targets = st.sampled_from(["/v1/chat/completions", "/v1/completions", "/v1/models",
                           "/calm/feedback", "/calm/budget", "/calm/models/tiny-chat/pin",
                           "/health", "/nope", "/calm/models/..%2f/load"])
header_noise = st.dictionaries(
    st.sampled_from(["Content-Type", "X-Junk", "Accept", "User-Agent"]),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=20),
    max_size=3)


def test_hardening_fuzz_http_surface(make_settings: Callable[..., Settings]) -> None:
    s = make_settings(cache={"enabled": False})
    cases = [0]
    statuses: set[int] = set()

    @settings(max_examples=1500, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(method=st.sampled_from(["POST", "GET", "PUT"]), target=targets, body=raw_bodies,
           headers=header_noise)
    def case(method: str, target: str, body: bytes, headers: dict[str, str]) -> None:
        resp = raw_request(s.socket_path, http(method, target, body, headers), timeout_s=20)
        head, _, payload = resp.partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0]
        assert status_line.startswith(b"HTTP/1.1 "), resp[:200]
        status = int(status_line.split(b" ")[1])
        cases[0] += 1
        statuses.add(status)
        assert status < 500 or status == 503, resp[:500]
        if b"text/event-stream" in head:
            assert b"data:" in payload
        else:
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))
            assert len(payload) == length
            if b"application/json" in head:
                parsed = json.loads(payload)
                if status >= 400:
                    assert parsed["error"]["message"]

    with run_daemon(s, FakeFactory(answer_tokens=3)):
        case()
        with uds_client(s) as c:
            assert c.get("/health").status_code == 200
    assert cases[0] >= 1500
    assert {200, 400, 404}.issubset(statuses)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_hardening_tcp_only_loopback_and_never_admin(make_settings: Callable[..., Settings],
                                                     ) -> None:
    from calm_edge.daemon import DaemonError

    remote = make_settings(server={"tcp": f"0.0.0.0:{_free_port()}"})
    with pytest.raises(DaemonError, match="not a loopback address"), \
            run_daemon(remote, FakeFactory()):
        pass
    port = _free_port()
    s = make_settings(server={"tcp": f"127.0.0.1:{port}"})
    with run_daemon(s, FakeFactory(answer_tokens=2)):
        import httpx

        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            assert c.get("/health").status_code == 200
            r = c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 2})
            assert r.status_code == 200
            assert c.post("/calm/models/tiny-chat/load").status_code == 403


# -- issue 14: one slow reader must not stop the board -----------------------------------------

def _requests_table(settings: Settings) -> list[tuple[Any, ...]]:
    import sqlite3

    with contextlib.closing(sqlite3.connect(settings.state_dir / "knowledge.db")) as db:
        return list(db.execute("SELECT id, status, error FROM requests ORDER BY ts"))


def _stalled_stream(settings: Settings, body: dict[str, Any]) -> socket.socket:
    """A client that asks for a long stream and never reads (a tiny receive buffer)."""
    sk = socket.socket(socket.AF_UNIX)
    sk.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sk.connect(str(settings.socket_path))
    sk.sendall(http("POST", "/v1/chat/completions", json.dumps(body).encode(),
                    {"Content-Type": "application/json"}))
    return sk


LONG = {**CHAT, "max_tokens": 200_000, "stream": True, "calm": {"cache": False}}


def test_hardening_slow_reader_is_dropped_and_frees_the_board(
        make_settings: Callable[..., Settings]) -> None:
    write_timeout_s = 1.0
    s = make_settings(server={"write_timeout_s": write_timeout_s, "max_tokens_limit": 200_000})
    # ~2000 tokens/s (a fast real model is ~100): it would run for 100 s if not stopped.
    factory = FakeFactory(answer_tokens=200_000, token_delay_s=0.0005)  # max_parallel = 1
    with run_daemon(s, factory):
        stalled = _stalled_stream(s, LONG)
        time.sleep(0.3)  # its generation has the lane and fills every buffer on the way
        t0 = time.monotonic()
        with uds_client(s, timeout_s=20) as c:
            r = c.post("/v1/chat/completions",
                       json={**CHAT, "max_tokens": 8, "calm": {"cache": False}})
            elapsed = time.monotonic() - t0
            assert r.status_code == 200, r.text
            assert elapsed < write_timeout_s + 3.0, elapsed  # its own generation is ~ms
            st = c.get("/calm/status").json()
        assert all(m["in_use"] == 0 for m in st["models"])
        stalled.settimeout(5)
        with contextlib.suppress(ConnectionError):  # dropped: EOF (or a reset) after the
            while stalled.recv(1 << 20):             # bytes that were already buffered
                pass
        stalled.close()
        # The generation stopped: the backend was told to stop long before 200k tokens.
        deadline = time.monotonic() + 5
        while len(factory.backends[0].produced) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert factory.backends[0].produced[0] < 200_000
    rows = _requests_table(s)
    assert [(st_, err) for _, st_, err in rows if st_ != 200] == [
        (499, "abandoned: the client stopped reading the response")]


def test_hardening_a_reader_is_not_dropped_for_a_pause_in_the_stream(
        make_settings: Callable[..., Settings]) -> None:
    """Tokens come 0.6 s apart (a long prefill, a held cascade answer) with
    write_timeout_s 0.2; the client reads everything every 50 ms (so each chunk is still
    unread just after it is written, as on a busy CPU): it gets every token."""
    s = make_settings(server={"write_timeout_s": 0.2})
    factory = FakeFactory(answer_tokens=3, token_delay_s=0.6)
    with run_daemon(s, factory), socket.socket(socket.AF_UNIX) as sk:
        sk.connect(str(s.socket_path))
        sk.sendall(http("POST", "/v1/chat/completions", json.dumps(
            {**CHAT, "stream": True, "calm": {"cache": False}}).encode(),
            {"Content-Type": "application/json", "Connection": "close"}))
        sk.setblocking(False)
        out, deadline = b"", time.monotonic() + 20
        while time.monotonic() < deadline:
            time.sleep(0.05)
            try:
                chunk = sk.recv(1 << 20)
            except BlockingIOError:
                continue
            if not chunk:
                break
            out += chunk
    text = out.decode()
    assert text.startswith("HTTP/1.1 200"), text
    assert text.count("tiny-chat-") == 3 and "data: [DONE]" in text, text
    assert [st_ for _, st_, _ in _requests_table(s)] == [200]


def test_hardening_deadline_covers_time_blocked_in_writes(
        make_settings: Callable[..., Settings]) -> None:
    """The stalled stream's write_timeout_s is long; its deadline (3 s) comes after every
    buffer on the way filled, and its generation, parked on a write, must still end."""
    s = make_settings(server={"write_timeout_s": 60.0, "max_tokens_limit": 200_000})
    factory = FakeFactory(answer_tokens=200_000, token_delay_s=0.0001)  # fills them in ~1 s
    with run_daemon(s, factory):
        stalled = _stalled_stream(s, {**LONG, "calm": {"cache": False, "slo_ms": 3000}})
        time.sleep(0.3)
        t0 = time.monotonic()
        with uds_client(s, timeout_s=20) as c:
            r = c.post("/v1/chat/completions",
                       json={**CHAT, "max_tokens": 8, "calm": {"cache": False}})
        assert r.status_code == 200 and time.monotonic() - t0 < 3.0 + 3.0
        stalled.close()
    assert [st_ for _, st_, _ in _requests_table(s) if st_ != 200] == [504]


def _hold(settings: Settings, n: int) -> list[socket.socket]:
    """n keep-alive connections, each past one request (so the daemon counts it)."""
    held = []
    for _ in range(n):
        sk = socket.socket(socket.AF_UNIX)
        sk.settimeout(5)
        sk.connect(str(settings.socket_path))
        sk.sendall(b"GET /health HTTP/1.1\r\nHost: calm\r\n\r\n")
        assert sk.recv(65536).startswith(b"HTTP/1.1 200")
        held.append(sk)
    return held


def _try_connect(settings: Settings) -> bytes:
    """What a new connection gets for a /health request ('' if closed without a word)."""
    with socket.socket(socket.AF_UNIX) as sk:
        sk.settimeout(5)
        sk.connect(str(settings.socket_path))
        out = b""
        try:
            sk.sendall(http("GET", "/health"))
            while chunk := sk.recv(65536):
                out += chunk
        except ConnectionError:
            pass
        return out


def test_hardening_connection_caps_close_at_accept_and_log_once_per_uid(
        make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture) -> None:
    s = make_settings(server={"max_connections_per_uid": 2, "keepalive_timeout_s": 30})
    with run_daemon(s, FakeFactory(answer_tokens=2)):
        held = _hold(s, 2)
        t0 = time.monotonic()
        answers = [_try_connect(s) for _ in range(5)]
        assert time.monotonic() - t0 < 3
        assert all(b" 200 " not in a.split(b"\r\n")[0] for a in answers), answers
        assert any(b"too many connections" in a for a in answers) or not any(answers)
        lines = [r.getMessage() for r in caplog.records
                 if r.getMessage().startswith("refused a connection from uid 0")]
        assert len(lines) == 1 and "max_connections_per_uid" in lines[0], lines
        held.pop().close()
        time.sleep(0.2)
        assert _try_connect(s).startswith(b"HTTP/1.1 200")  # a place came free
        for sk in held:
            sk.close()
    s = make_settings(server={"max_connections": 1, "keepalive_timeout_s": 30})
    with run_daemon(s, FakeFactory(answer_tokens=2)):
        held = _hold(s, 1)
        assert b" 200 " not in _try_connect(s)[:20]
        held[0].close()


def _timed_request(path: Path, data: bytes) -> Callable[[], list[Any]]:
    """For _as_user: send `data`, read to EOF; [seconds, status line]."""
    def go() -> list[Any]:
        t0 = time.monotonic()
        resp = raw_request(path, data, timeout_s=10)
        return [time.monotonic() - t0, resp.split(b"\r\n", 1)[0].decode()]
    return go


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")
def test_hardening_refused_peers_are_answered_before_their_body(
        make_settings: Callable[..., Settings], short_tmp: Path) -> None:
    short_tmp.chmod(0o755)
    nobody = 65534
    big_head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: calm\r\nContent-Type: "
                b"application/json\r\nContent-Length: 1000000\r\n\r\n{")  # the rest never comes
    s = make_settings(server={"socket_mode": "0666", "allow_users": ["root"]})
    with run_daemon(s, FakeFactory(answer_tokens=2)):
        took, status = _as_user(nobody, _timed_request(s.socket_path, big_head))
        assert status == "HTTP/1.1 403 Forbidden" and took < 2
    admin_head = big_head.replace(b"/v1/chat/completions", b"/calm/budget")
    s = make_settings(server={"socket_mode": "0666"})
    with run_daemon(s, FakeFactory(answer_tokens=2)):
        took, status = _as_user(nobody, _timed_request(s.socket_path, admin_head))
        assert status == "HTTP/1.1 403 Forbidden" and took < 2


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to change a client's groups")
def test_hardening_groups_are_read_once_per_connection(make_settings: Callable[..., Settings],
                                                       short_tmp: Path) -> None:
    """A peer's groups are what they were when it connected: a process (or a reused pid)
    whose groups change later does not gain an admin group on its open connection."""
    short_tmp.chmod(0o755)
    uid, admin_gid = 54321, 54322
    s = make_settings(server={"socket_mode": "0666", "admin_groups": [str(admin_gid)],
                              "keepalive_timeout_s": 30})
    load = http("POST", "/calm/models/tiny-chat/load").replace(b"Connection: close",
                                                               b"Connection: keep-alive")

    def client() -> list[str]:
        os.setgroups([])
        os.setgid(uid)
        os.setresuid(uid, uid, 0)  # keep a way back to change the groups below
        out = []
        with socket.socket(socket.AF_UNIX) as sk:
            sk.settimeout(10)
            sk.connect(str(s.socket_path))
            for _ in range(2):
                sk.sendall(load)
                resp = sk.recv(65536)
                out.append(resp.split(b"\r\n", 1)[0].decode())
                os.seteuid(0)
                os.setgroups([admin_gid])  # /proc/<pid>/status now lists the admin group
                os.seteuid(uid)
        return out

    with run_daemon(s, FakeFactory(answer_tokens=2)):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                out = json.dumps(client()).encode()
            except BaseException as e:
                out = json.dumps({"error": repr(e)}).encode()
            os.write(w, out)
            os._exit(0)
        os.close(w)
        data = b""
        while chunk := os.read(r, 65536):
            data += chunk
        os.close(r)
        os.waitpid(pid, 0)
    assert json.loads(data) == ["HTTP/1.1 403 Forbidden"] * 2


def test_access_warns_when_a_user_namespace_hides_peers(
        make_settings: Callable[..., Settings], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "root"
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/uid_map").write_text("         0          0          1\n"
                                            "       995        995          1\n")
    (root / "proc/self/gid_map").write_text("         0          0 4294967295\n")
    s = make_settings(server={"allow_users": ["root"]})
    with run_daemon(s, FakeFactory(answer_tokens=2), sysfs_root=root):
        pass
    warned = [r.getMessage() for r in caplog.records if "may not work" in r.getMessage()]
    assert len(warned) == 1 and "maps 2 uids" in warned[0] and "65534" in warned[0]
    caplog.clear()
    (root / "proc/self/uid_map").write_text("         0          0 4294967295\n")
    with run_daemon(s, FakeFactory(answer_tokens=2), sysfs_root=root):
        pass
    assert not [r for r in caplog.records if "may not work" in r.getMessage()]


@pytest.mark.parametrize("server", [{"allow_users": ["no-such-user-x1", "no-such-user-x2"]},
                                    {"allow_groups": ["no-such-group-x3"]}])
def test_access_allow_list_naming_nobody_refuses_to_start(
        make_settings: Callable[..., Settings], server: dict[str, Any]) -> None:
    from calm_edge.daemon import DaemonError

    s = make_settings(server=server)
    names = next(iter(server.values()))
    with pytest.raises(DaemonError, match=", ".join(names)), \
            run_daemon(s, FakeFactory(answer_tokens=2)):
        pass


def test_access_allow_list_with_some_unknown_names_keeps_the_known_ones(
        make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture) -> None:
    s = make_settings(server={"allow_users": ["root", "no-such-user-x4"]})
    with run_daemon(s, FakeFactory(answer_tokens=2)), uds_client(s) as c:
        assert c.get("/health").status_code == 200
    assert any("no-such-user-x4" in r.getMessage() for r in caplog.records)


def test_hardening_tcp_refuses_browsers_and_non_json(make_settings: Callable[..., Settings],
                                                     ) -> None:
    import httpx

    port = _free_port()
    s = make_settings(server={"tcp": f"127.0.0.1:{port}"})
    with run_daemon(s, FakeFactory(answer_tokens=2)), \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
        chat = {**CHAT, "max_tokens": 2}
        assert c.post("/v1/chat/completions", json=chat).status_code == 200
        assert c.get("/health", headers={"Host": f"localhost:{port}"}).status_code == 200
        r = c.post("/v1/chat/completions", json=chat, headers={"Origin": "http://evil.test"})
        assert r.status_code == 403 and "Origin" in r.json()["error"]["message"]
        r = c.get("/health", headers={"Host": f"evil.test:{port}"})  # DNS rebinding
        assert r.status_code == 403 and "Host" in r.json()["error"]["message"]
        r = c.post("/v1/chat/completions", content=json.dumps(chat),
                   headers={"Content-Type": "text/plain"})
        assert r.status_code == 415
        r = c.post("/v1/chat/completions", content=json.dumps(chat),
                   headers={"Content-Type": "application/json; charset=utf-8"})
        assert r.status_code == 200
    with uds_client(s) as u, run_daemon(s, FakeFactory(answer_tokens=2)):  # Unix: no change
        r = u.post("/v1/chat/completions", content=json.dumps(chat),
                   headers={"Content-Type": "text/plain", "Origin": "http://x"})
        assert r.status_code == 200


def test_hardening_tcp_exposed_on_purpose_takes_address_hosts_only(
        make_settings: Callable[..., Settings]) -> None:
    import httpx

    port = _free_port()
    s = make_settings(server={"tcp": f"0.0.0.0:{port}", "tcp_allow_remote": True})
    with run_daemon(s, FakeFactory(answer_tokens=2)), \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
        assert c.get("/health", headers={"Host": f"192.0.2.7:{port}"}).status_code == 200
        assert c.get("/health", headers={"Host": f"[2001:db8::1]:{port}"}).status_code == 200
        assert c.get("/health", headers={"Host": f"evil.test:{port}"}).status_code == 403


def test_hardening_tcp_with_allow_lists_needs_explicit_consent(
        make_settings: Callable[..., Settings]) -> None:
    import httpx

    from calm_edge.daemon import DaemonError

    port = _free_port()
    s = make_settings(server={"tcp": f"127.0.0.1:{port}", "allow_users": ["root"]})
    with pytest.raises(DaemonError, match="tcp_allow_unauthenticated"), \
            run_daemon(s, FakeFactory(answer_tokens=2)):
        pass
    s = make_settings(server={"tcp": f"127.0.0.1:{port}", "allow_users": ["root"],
                              "tcp_allow_unauthenticated": True})
    with run_daemon(s, FakeFactory(answer_tokens=2)), \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
        assert c.get("/health").status_code == 200


@pytest.mark.parametrize("length", ["\u00b9\u00b2\u00b3", "1" * 4301, "9" * 13, "+5", "5 5",
                                    "0x10"])
def test_hardening_content_length_is_one_to_twelve_ascii_digits(
        make_settings: Callable[..., Settings], length: str) -> None:
    s = make_settings()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: calm\r\nContent-Length: {length}"
            "\r\nConnection: close\r\n\r\n").encode("latin-1")  # as the server decodes it
    with run_daemon(s, FakeFactory(answer_tokens=2)):
        resp = raw_request(s.socket_path, head)
    assert resp.startswith(b"HTTP/1.1 400 "), resp[:100]
    assert b"Content-Length" in resp


@pytest.mark.parametrize("header", [b"X-Junk: a\x00b", b"X-Junk: a\nb", b"X-Junk: a\rb",
                                    b"X-Ju\x00nk: ab"])
def test_hardening_control_characters_in_headers_are_refused(
        make_settings: Callable[..., Settings], header: bytes) -> None:
    s = make_settings()
    with run_daemon(s, FakeFactory(answer_tokens=2)):
        resp = raw_request(s.socket_path, b"GET /health HTTP/1.1\r\nHost: calm\r\n" + header
                           + b"\r\nConnection: close\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 400 "), resp[:100]


def test_http_tracebacks_are_logged_once_per_minute_per_kind(
        short_tmp: Path, caplog: pytest.LogCaptureFixture) -> None:
    from calm_edge.server.http import HttpServer, Request, Response

    now = [1000.0]

    async def broken(request: Request) -> Response:
        raise RuntimeError("a bug in a handler")

    async def main() -> list[bytes]:
        server = HttpServer(broken, max_header_bytes=16384, max_body_bytes=65536,
                            keepalive_timeout_s=5, clock=lambda: now[0])
        path = short_tmp / "t.sock"
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.listen(8)
        srv = await server.start(sock)
        loop = asyncio.get_running_loop()
        out = []
        for step in (0.0, 1.0, 1.0, 61.0):
            now[0] += step
            out.append(await loop.run_in_executor(None, raw_request, path,
                                                  http("GET", "/x")))
        srv.close()
        await srv.wait_closed()
        return out

    answers = asyncio.run(main())
    assert all(a.startswith(b"HTTP/1.1 500 ") for a in answers)
    traces = [r for r in caplog.records if r.exc_info and "handler failed" in r.getMessage()]
    assert len(traces) == 2  # the first, and the first a minute later (with a count)
    assert "2 more like it" in traces[1].getMessage()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")
def test_status_shows_other_users_decisions_to_admins_only(
        make_settings: Callable[..., Settings], short_tmp: Path) -> None:
    short_tmp.chmod(0o755)
    nobody = 65534
    s = make_settings(server={"socket_mode": "0666"})

    def ask_then_status() -> list[Any]:
        chat = json.dumps({**CHAT, "max_tokens": 2, "calm": {"cache": False}}).encode()
        mine = json.loads(raw_request(s.socket_path, http(
            "POST", "/v1/chat/completions", chat,
            {"Content-Type": "application/json"})).partition(b"\r\n\r\n")[2])["id"]
        st = json.loads(raw_request(s.socket_path, http("GET", "/calm/status"))
                        .partition(b"\r\n\r\n")[2])
        return [mine, [d["request_id"] for d in st["recent_decisions"]]]

    with run_daemon(s, FakeFactory(answer_tokens=2)), uds_client(s) as c:
        roots = c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 2,
                                                      "calm": {"cache": False}}).json()["id"]
        mine, seen = _as_user(nobody, ask_then_status)
        assert seen == [mine]  # not root's request
        everyone = [d["request_id"] for d in c.get("/calm/status").json()["recent_decisions"]]
        assert everyone == [mine, roots]  # root is an admin


# -- the fallback socket directory (/tmp/calm-edge-<uid>) cannot be squatted ------------------

def test_paths_private_dir_refuses_links_shared_and_foreign_dirs(tmp_path: Path) -> None:
    from calm_edge.paths import UnsafeDirectory, check_private_dir, make_private_dir

    mine = tmp_path / "mine"
    make_private_dir(mine)
    assert stat.S_IMODE(mine.lstat().st_mode) == 0o700
    make_private_dir(mine)  # exists: checked, left alone
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(UnsafeDirectory, match="writable by its group or others"):
        make_private_dir(shared)
    assert stat.S_IMODE(shared.lstat().st_mode) == 0o777  # never chmod-ed
    link = tmp_path / "link"
    link.symlink_to(mine)
    with pytest.raises(UnsafeDirectory, match="not a directory"):
        check_private_dir(link)
    if os.geteuid() == 0:
        os.chown(shared, 54320, -1)
        shared.chmod(0o700)
        with pytest.raises(UnsafeDirectory, match="belongs to uid 54320"):
            check_private_dir(shared)


@contextlib.contextmanager
def _fallback_dir(uid: int) -> Iterator[Path]:
    """/tmp/calm-edge-<uid>, absent at the start and removed at the end."""
    import shutil

    d = Path(f"/tmp/calm-edge-{uid}")

    def clear() -> None:
        if d.is_symlink() or d.is_file():
            d.unlink()
        elif d.exists():
            shutil.rmtree(d)

    clear()
    try:
        yield d
    finally:
        clear()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as two users")
def test_paths_squatted_fallback_socket_dir_refuses_to_serve(tmp_path: Path) -> None:
    from calm_edge import paths
    from calm_edge.daemon import DaemonError, bind_unix_socket

    uid = 54323

    def serve() -> str:  # runs in a child as uid: it imports nothing (/root may be closed)
        path = paths.server_socket_path("", {"HOME": "/nonexistent"})
        try:
            bind_unix_socket(path, 0o660, "").close()
        except DaemonError as e:
            return f"refused: {e}"
        st = path.parent.lstat()
        return f"bound {path} {stat.S_IMODE(st.st_mode):o} {st.st_uid}"

    with _fallback_dir(uid) as d:
        d.mkdir()
        d.chmod(0o777)  # made first by someone else (root here), open to all
        assert _as_user(uid, serve).startswith("refused: ")
        assert "belongs to uid 0" in _as_user(uid, serve)
        d.rmdir()
        target = tmp_path / "elsewhere"
        target.mkdir()
        os.chown(target, uid, uid)
        target.chmod(0o700)
        d.symlink_to(target)  # a link to a directory the user even owns
        assert "not a directory" in _as_user(uid, serve)
        assert not (target / "calm.sock").exists()
        d.unlink()
        assert _as_user(uid, serve) == f"bound {d}/calm.sock 700 {uid}"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as two users")
def test_client_refuses_a_squatted_fallback_socket_dir(short_tmp: Path) -> None:
    from calm_edge import paths
    from calm_edge.client import Client, ClientError

    uid = 54324
    short_tmp.chmod(0o755)
    no_service = short_tmp / "run" / "calm.sock"  # the system socket, faked: no service runs

    def ask() -> str:
        try:
            with Client(paths.client_socket_path(None, {}, system_socket=no_service),
                        timeout_s=3) as c:
                return f"answered {c.get('/health')}"
        except ClientError as e:
            return f"refused: {e}"

    with _fallback_dir(uid) as d:
        d.mkdir()
        d.chmod(0o777)
        with socket.socket(socket.AF_UNIX) as impostor:
            impostor.bind(str(d / "calm.sock"))
            (d / "calm.sock").chmod(0o777)
            impostor.listen(1)
            impostor.setblocking(False)
            out = _as_user(uid, ask)
            assert out.startswith("refused: ") and "belongs to uid 0" in out, out
            with pytest.raises(BlockingIOError):
                impostor.accept()  # the client never connected


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as two users")
def test_client_outside_the_service_group_is_told_to_join_it(short_tmp: Path) -> None:
    from calm_edge import paths
    from calm_edge.client import Client, ClientError

    uid = 54325
    short_tmp.chmod(0o755)
    run = short_tmp / "run"  # the service's runtime dir, faked: root and its group only
    run.mkdir(mode=0o750)
    service = run / "calm.sock"

    def ask() -> str:
        try:
            path = paths.client_socket_path(None, {}, system_socket=service)
        except OSError as e:
            return f"crashed: {e!r}"
        try:
            with Client(path, timeout_s=3) as c:
                return f"answered {c.get('/health')}"
        except ClientError as e:
            return f"{path}: {e}"

    with socket.socket(socket.AF_UNIX) as daemon:
        daemon.bind(str(service))
        service.chmod(0o660)
        daemon.listen(1)
        out = _as_user(uid, ask)
    assert out.startswith(f"{service}: cannot connect"), out
    assert "usermod -aG calm-edge" in out, out
