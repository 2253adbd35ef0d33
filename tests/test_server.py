"""End-to-end over a real Unix socket: the daemon with llama.cpp on tiny GGUF models."""

from __future__ import annotations

import json
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from calm_edge.config import Settings
from calm_edge.testing.fakes import FakeFactory
from tests.conftest import model_entry, run_daemon, uds_client


def sse_events(resp: httpx.Response) -> list[Any]:
    events = []
    for line in resp.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_server_chat_plain(make_settings: Callable[..., Settings]) -> None:
    s = make_settings()
    with run_daemon(s), uds_client(s) as c:
        r = c.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 8, "temperature": 0})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "chat.completion"
        assert body["model"] == "tiny-chat"  # tiny-base is below the factual quality floor
        msg = body["choices"][0]["message"]
        assert msg["role"] == "assistant" and isinstance(msg["content"], str)
        assert body["choices"][0]["finish_reason"] in ("stop", "length")
        usage = body["usage"]
        assert 0 < usage["completion_tokens"] <= 8 and usage["prompt_tokens"] > 0
        calm = body["calm"]
        assert calm["model"] == "tiny-chat" and "utility" in calm["reason"]
        assert calm["domain"] == "factual" and calm["domain_source"] != "request"
        assert calm["energy"] == "estimated" and calm["energy_j"] > 0
        scored = {c["model"]: c for c in calm["candidates"]}
        assert "below" not in str(scored["tiny-chat"]["excluded"] or "")
        assert "floor" in scored["tiny-base"]["excluded"]
        assert calm["latency_ms"] > 0 and calm["completion_tokens"] == usage["completion_tokens"]
        assert calm["request_id"] == body["id"]


def test_server_chat_stream(make_settings: Callable[..., Settings]) -> None:
    s = make_settings()
    with run_daemon(s), uds_client(s) as c, c.stream(
            "POST", "/v1/chat/completions",
            json={"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}],
                  "max_tokens": 6, "temperature": 0, "stream": True,
                  "stream_options": {"include_usage": True}}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert all(e["object"] == "chat.completion.chunk" for e in chunks)
    final = chunks[-1]
    assert final["choices"][0]["finish_reason"] in ("stop", "length")
    assert final["calm"]["model"] == "tiny-chat" and "pinned" in final["calm"]["reason"]
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in chunks)
    assert final["usage"]["completion_tokens"] == final["calm"]["completion_tokens"] <= 6
    # Streaming and non-streaming give the same greedy text.
    with run_daemon(s), uds_client(s) as c:
        plain = c.post("/v1/chat/completions", json={
            "model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 6, "temperature": 0}).json()
    assert plain["choices"][0]["message"]["content"] == text


def test_server_completions_plain_and_stream(make_settings: Callable[..., Settings]) -> None:
    s = make_settings()
    with run_daemon(s), uds_client(s) as c:
        r = c.post("/v1/completions", json={"model": "tiny-base", "prompt": "Question: hi",
                                            "max_tokens": 5, "temperature": 0})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "text_completion" and body["model"] == "tiny-base"
        text = body["choices"][0]["text"]
        with c.stream("POST", "/v1/completions", json={
                "model": "tiny-base", "prompt": "Question: hi", "max_tokens": 5,
                "temperature": 0, "stream": True}) as rs:
            events = sse_events(rs)
        assert events[-1] == "[DONE]"
        assert "".join(e["choices"][0]["text"] for e in events[:-1]) == text


def test_server_models_health_status(make_settings: Callable[..., Settings]) -> None:
    s = make_settings()
    with run_daemon(s), uds_client(s) as c:
        assert c.get("/health").json()["status"] == "ok"
        ids = [m["id"] for m in c.get("/v1/models").json()["data"]]
        assert ids == ["auto", "tiny-chat", "tiny-base"]
        c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}],
                                             "max_tokens": 2})
        st = c.get("/calm/status").json()
        assert st["memory"]["resident"] == ["tiny-chat"]
        assert 0 < st["memory"]["used_bytes"] <= st["memory"]["budget_bytes"]
        tiny = next(m for m in st["models"] if m["name"] == "tiny-chat")
        assert tiny["state"] == "ready" and tiny["loads"] == 1 and tiny["file"] == "verified"
    assert not s.socket_path.exists()  # removed on shutdown


def test_server_errors_are_json_and_daemon_survives(make_settings: Callable[..., Settings],
                                                    ) -> None:
    s = make_settings()
    with run_daemon(s), uds_client(s) as c:
        assert stat.S_IMODE(s.socket_path.stat().st_mode) == 0o660
        cases = [
            (c.post("/v1/chat/completions", content=b"{not json"), 400, None),
            (c.post("/v1/chat/completions", json={"model": "nope", "messages": [
                {"role": "user", "content": "x"}]}), 404, "model_not_found"),
            (c.post("/v1/chat/completions", json={"messages": []}), 400, None),
            (c.post("/v1/chat/completions", content=b"x" * (2 << 20)), 413, None),
            (c.get("/v1/nothing"), 404, "not_found"),
            (c.get("/v1/chat/completions"), 405, None),
            (c.post("/v1/chat/completions", json={"messages": [
                {"role": "user", "content": "the " * 3000}]}), 400, "context_length_exceeded"),
        ]
        for resp, status, code in cases:
            assert resp.status_code == status, resp.text
            err = resp.json()["error"]
            assert err["message"] and err["type"]
            if code:
                assert err["code"] == code
        # Still serving after all of that.
        ok = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}],
                                                  "max_tokens": 2})
        assert ok.status_code == 200


def test_server_unavailable_model_is_503_and_others_serve(
        make_settings: Callable[..., Settings]) -> None:
    s = make_settings()
    (s.models_dir / "tiny-base.gguf").write_bytes(b"GGUF truncated")
    with run_daemon(s), uds_client(s) as c:
        r = c.post("/v1/completions", json={"model": "tiny-base", "prompt": "x"})
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "model_unavailable"
        assert "wrong-size" in r.json()["error"]["message"]
        assert r.headers["retry-after"]
        ok = c.post("/v1/completions", json={"model": "tiny-chat", "prompt": "x",
                                             "max_tokens": 2})
        assert ok.status_code == 200
        st = c.get("/calm/status").json()
        base = next(m for m in st["models"] if m["name"] == "tiny-base")
        assert base["file"] == "wrong-size" and base["unavailable"]


def test_server_raw_http_edge_cases(make_settings: Callable[..., Settings]) -> None:
    s = make_settings()
    with run_daemon(s):
        def raw(data: bytes) -> bytes:
            with socket.socket(socket.AF_UNIX) as sk:
                sk.settimeout(10)
                sk.connect(str(s.socket_path))
                sk.sendall(data)
                out = b""
                while chunk := sk.recv(65536):
                    out += chunk
                return out

        assert raw(b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400")
        assert raw(b"GET /health HTTP/1.1\r\nHost: c\r\nX: " + b"a" * 70000 + b"\r\n\r\n") \
            .startswith(b"HTTP/1.1 431")
        assert raw(b"POST /v1/completions HTTP/1.1\r\nHost: c\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n").startswith(b"HTTP/1.1 411")
        # HTTP/1.1 requires a Host header (RFC 9112); HTTP/1.0 does not.
        assert raw(b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n") \
            .startswith(b"HTTP/1.1 400")
        resp = raw(b"GET /health HTTP/1.0\r\n\r\n")
        assert resp.startswith(b"HTTP/1.1 200") and b'"status":"ok"' in resp
        resp = raw(b"GET /health HTTP/1.1\r\nHost: c\r\nConnection: close\r\n\r\n")
        assert resp.startswith(b"HTTP/1.1 200") and b'"status":"ok"' in resp
        # Two pipelined keep-alive requests on one connection.
        two = raw(b"GET /health HTTP/1.1\r\nHost: c\r\n\r\n"
                  b"GET /health HTTP/1.1\r\nHost: c\r\nConnection: close\r\n\r\n")
        assert two.count(b"HTTP/1.1 200") == 2


def test_server_feedback_metrics_and_status(make_settings: Callable[..., Settings]) -> None:
    s = make_settings()
    with run_daemon(s), uds_client(s) as c:
        body = c.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "Write a Python function that adds two "
                          "numbers."}], "max_tokens": 4}).json()
        rid, model, domain = body["id"], body["calm"]["model"], body["calm"]["domain"]
        st = c.get("/calm/status").json()
        before = next(e for e in st["estimates"] if e["model"] == model
                      and e["domain"] == domain)
        fb = c.post("/calm/feedback", json={"request_id": rid, "score": 1.0})
        assert fb.status_code == 200, fb.text
        assert fb.json()["model"] == model and fb.json()["quality"] > before["quality"]
        assert c.post("/calm/feedback", json={"request_id": rid, "pass": False}) \
            .status_code == 200
        assert c.post("/calm/feedback", json={"request_id": "nope", "score": 1}) \
            .status_code == 404
        assert c.post("/calm/feedback", json={"request_id": rid, "score": 2}).status_code == 400
        assert c.post("/calm/feedback", json={"request_id": rid}).status_code == 400

        st = c.get("/calm/status").json()
        assert st["recent_decisions"][0]["request_id"] == rid
        assert st["recent_decisions"][0]["chosen"] == model
        assert st["classifier"]["runtime"]
        assert st["energy"]["kind"] == "estimated" and st["energy"]["source"] == "estimate"
        assert st["knowledge"]["writes"] >= 1 and st["knowledge"]["degraded"] is None
        assert any(h["model"] == model for h in st["health"])

        m = c.get("/metrics")
        assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
        text = m.text
        for name in ("calm_edge_requests_total", "calm_edge_completions_total",
                     "calm_edge_decisions_total", "calm_edge_tokens_total",
                     "calm_edge_energy_joules_total", "calm_edge_request_latency_seconds_bucket",
                     "calm_edge_model_resident", "calm_edge_ram_budget_bytes",
                     "calm_edge_power_milliwatts", "calm_edge_board_energy_joules_total"):
            assert name in text, name
        assert f'calm_edge_completions_total{{domain="{domain}",model="{model}"}} 1.0' in text


def test_server_model_admin_routes_and_runtime_budget(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    # 16k contexts: each model is charged ~25 MiB (the budget's floor is 16 MiB).
    s0 = make_settings()
    fleet = tmp_path / "big.toml"
    fleet.write_text("".join(
        model_entry(n, f"{n}.gguf", s0.models_dir / f"{n}.gguf", n_ctx=16384)
        for n in ("tiny-chat", "tiny-base")))
    s = make_settings(paths={"fleet": str(fleet)})
    factory = FakeFactory(answer_tokens=3)
    with run_daemon(s, factory), uds_client(s) as c:
        r = c.post("/calm/models/tiny-chat/pin")
        assert r.status_code == 200 and r.json()["pinned"] and r.json()["state"] == "ready"
        assert c.post("/calm/models/tiny-base/load").json()["state"] == "ready"
        st = c.get("/calm/status").json()
        assert sorted(st["memory"]["resident"]) == ["tiny-base", "tiny-chat"]
        one = max(m["charged_bytes"] for m in st["models"])
        # Shrink the budget to one model: the idle, unpinned one goes; the pinned one stays.
        r = c.post("/calm/budget", json={"ram_budget": one + 1024})
        assert r.status_code == 200, r.text
        assert r.json()["evicted"] == ["tiny-base"] and r.json()["resident"] == ["tiny-chat"]
        assert r.json()["used_bytes"] <= r.json()["budget_bytes"]
        # A load that needs the pinned model's room is refused, not squeezed in.
        r = c.post("/calm/models/tiny-base/load")
        assert r.status_code == 503 and "pinned" in r.json()["error"]["message"]
        assert c.post("/calm/models/tiny-chat/unpin").json()["pinned"] is False
        assert c.post("/calm/models/tiny-base/load").json()["state"] == "ready"
        assert c.post("/calm/models/tiny-base/unload").json()["state"] == "unloaded"
        for path, status in (("/calm/models/nope/load", 404), ("/calm/models/tiny-chat/x", 404),
                             ("/calm/models/../../etc/passwd/load", 404)):
            assert c.post(path).status_code == status, path
        assert c.get("/calm/models/tiny-chat/load").status_code == 405
        for bad in ({"ram_budget": "lots"}, {"ram_budget": 5}, {}, {"ram_budget": True}):
            assert c.post("/calm/budget", json=bad).status_code == 400
        metrics = c.get("/metrics").text
        assert 'calm_edge_model_evictions_total{model="tiny-base"} 1.0' in metrics


def test_top_shows_models_tiers_queue_and_decisions(make_settings: Callable[..., Settings],
                                                    ) -> None:
    """`calm-edge top` on a dumb terminal: plain frames from /calm/status, with each
    model's tier, the queue and the last decision."""
    import io

    from calm_edge import top

    s = make_settings()
    with run_daemon(s, FakeFactory(answer_tokens=3)), uds_client(s) as c:
        r = c.post("/v1/chat/completions", json={
            "model": "tiny-chat", "max_tokens": 3,
            "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200
        out = io.StringIO()
        assert top.run(lambda: c.get("/calm/status").json(), 0.01, frames=2, out=out,
                       curses_ok=False) == 0
    text = out.getvalue()
    assert text.count("-- ") == 2 and "memory [" in text and "queue: 0 waiting" in text
    chat = next(line for line in text.splitlines() if line.startswith("tiny-chat"))
    assert " ready " in chat and "tiny-base" in text
    assert "-> tiny-chat" in text  # the last decision


def test_budget_too_small_for_any_model_is_a_clear_503(make_settings: Callable[..., Settings],
                                                       ) -> None:
    """No evict/reload loop: every model is refused at once with what it would need."""
    s = make_settings(memory={"ram_budget": "16M"})
    factory = FakeFactory(answer_tokens=3)
    with run_daemon(s, factory), uds_client(s) as c:
        for _ in range(2):
            r = c.post("/v1/chat/completions", json={
                "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 503, r.text
            msg = r.json()["error"]["message"]
            assert "tiny-chat: needs" in msg and "tiny-base: needs" in msg
            assert "but the RAM budget is 16.0 MiB" in msg
    assert factory.loads == []
