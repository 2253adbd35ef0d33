"""Load, faults and hostile input: admission, deadlines, disconnects, access, fuzzing."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calm_edge.admission import Admission, Overloaded
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


def test_admission_orders_by_priority_and_refuses_when_full() -> None:
    async def main() -> list[str]:
        adm = Admission(active_limit=1, capacity=2)
        order: list[str] = []
        release = asyncio.Event()

        async def job(name: str, prio: int) -> None:
            async with adm.admit(prio):
                order.append(name)
                if name == "first":
                    await release.wait()

        first = asyncio.create_task(job("first", 0))
        await asyncio.sleep(0)
        low = asyncio.create_task(job("low", 0))
        high = asyncio.create_task(job("high", 5))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded) as ei:
            async with adm.admit(9):
                pass
        assert ei.value.retry_after_s >= 1 and adm.rejected == 1
        release.set()
        await asyncio.gather(first, low, high)
        assert adm.active == 0 and adm.waiting == 0
        return order

    assert asyncio.run(main()) == ["first", "high", "low"]


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


def _as_user(uid: int, fn: Callable[[], Any]) -> Any:
    """Run fn in a forked child with another uid; return what it returns (JSON-able)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no locks, no logging, only a socket and a pipe
        try:
            os.setgroups([])
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
