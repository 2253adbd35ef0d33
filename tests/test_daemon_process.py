"""The real `calm-edge serve` process: signals, drain, CLI client commands."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from calm_edge.client import Client, ClientError
from calm_edge.config import Settings
from tests.conftest import uds_client


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60,
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "calm_edge.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture
def served(make_settings: Callable[..., Settings], tmp_path: Path,
           ) -> Iterator[tuple[Settings, subprocess.Popen[str]]]:
    s = make_settings()
    env = {**os.environ, "CALM_EDGE_MODELS_DIR": str(s.models_dir),
           "CALM_EDGE_FLEET": str(s.fleet_path), "HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "calm_edge.cli", "serve", "--profile",
         s.profile_source, "--socket", str(s.socket_path), "--state-dir", str(s.state_dir)],
        env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:  # serving (signal handlers installed), not just bound
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "daemon did not start"
            try:
                with Client(s.socket_path) as c:
                    c.get("/health")
                break
            except ClientError:
                time.sleep(0.05)
        yield s, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()


def test_daemon_sigterm_drains_streaming_request(served: tuple[Settings, subprocess.Popen[str]],
                                                 ) -> None:
    s, proc = served
    with uds_client(s) as c, c.stream(
            "POST", "/v1/chat/completions",
            json={"model": "tiny-chat", "messages": [{"role": "user", "content": "go"}],
                  "max_tokens": 200, "temperature": 1.5, "min_p": 0, "top_k": 0, "seed": 5,
                  "stream": True}) as r:
        lines = r.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert "chat.completion.chunk" in first
        proc.send_signal(signal.SIGTERM)
        rest = list(lines)  # the in-flight stream is finished, not cut
    assert rest[-1] == "data: [DONE]" or rest[-2:] == ["data: [DONE]", ""]
    final = json.loads(next(x for x in reversed(rest) if x.startswith('data: {"id"'))[6:])
    assert final["choices"][0]["finish_reason"] in ("stop", "length")
    assert proc.wait(30) == 0
    assert not s.socket_path.exists()
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert "draining" in err and "stopped" in err
    with socket.socket(socket.AF_UNIX) as sk, pytest.raises(OSError):
        sk.connect(str(s.socket_path))


def test_daemon_sigint_exits_zero_when_idle(served: tuple[Settings, subprocess.Popen[str]],
                                            ) -> None:
    _, proc = served
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0


def test_daemon_cli_ask_status_models(served: tuple[Settings, subprocess.Popen[str]]) -> None:
    s, _ = served
    env = {"CALM_EDGE_SOCKET": str(s.socket_path)}
    r = cli("ask", "hello there", "--max-tokens", "4", "--temperature", "0", env=env)
    assert r.returncode == 0, r.stderr
    assert "[tiny-chat" in r.stderr and "tokens" in r.stderr
    r = cli("ask", "hello", "--no-stream", "--json", "--max-tokens", "3", env=env)
    assert json.loads(r.stdout)["calm"]["model"] == "tiny-chat"
    r = cli("status", env=env)
    assert r.returncode == 0 and "tiny-chat" in r.stdout and "ready" in r.stdout
    assert json.loads(cli("status", "--json", env=env).stdout)["models"][0]["name"] == "tiny-chat"
    r = cli("models", "list", "--models-dir", str(s.models_dir), "--fleet", str(s.fleet_path))
    assert r.returncode == 0 and "verified" in r.stdout and "tiny-base" in r.stdout
    listing = json.loads(cli("models", "list", "--json", "--models-dir", str(s.models_dir),
                             "--fleet", str(s.fleet_path)).stdout)
    assert all(m["status"] == "verified" and m["footprint_bytes"] > 0
               for m in listing["models"])
    r = cli("models", "verify", "--models-dir", str(s.models_dir), "--fleet", str(s.fleet_path))
    assert r.returncode == 0 and r.stdout.count("verified") == 2


def test_daemon_cli_reports_missing_daemon_and_bad_config(tmp_path: Path) -> None:
    r = cli("status", "--socket", str(tmp_path / "none.sock"))
    assert r.returncode == 1 and "no daemon socket" in r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[runtime]\nn_threads = -4\n")
    r = cli("serve", "--profile", str(bad), "--socket", str(tmp_path / "s.sock"))
    assert r.returncode == 2
    assert f"{bad}: [runtime] n_threads: must be >= 0" in r.stderr


def test_daemon_refuses_second_instance(served: tuple[Settings, subprocess.Popen[str]],
                                        tmp_path: Path) -> None:
    s, _ = served
    r = cli("serve", "--profile", s.profile_source, "--socket", str(s.socket_path),
            env={"CALM_EDGE_FLEET": str(s.fleet_path), "CALM_EDGE_MODELS_DIR": str(s.models_dir)})
    assert r.returncode == 1 and "already listening" in r.stderr


def test_daemon_sighup_reloads_profile_and_fleet(
        served: tuple[Settings, subprocess.Popen[str]], tmp_path: Path) -> None:
    s, proc = served
    profile = Path(s.profile_source)
    profile.write_text(profile.read_text().replace('ram_budget = "256M"',
                                                   'ram_budget = "300M"'))
    fleet = s.fleet_path
    original_fleet = fleet.read_text()
    first = original_fleet.split("[[model]]")[1]
    fleet.write_text(original_fleet + "[[model]]" + first.replace('name = "tiny-chat"',
                                                                  'name = "tiny-copy"'))
    proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while True:
        with uds_client(s) as c:
            ids = [m["id"] for m in c.get("/v1/models").json()["data"]]
            st = c.get("/calm/status").json()
        if "tiny-copy" in ids:
            break
        assert time.monotonic() < deadline, ids
        time.sleep(0.1)
    assert st["memory"]["budget_bytes"] == 300 << 20
    assert proc.poll() is None
    # A broken manifest is refused; the daemon keeps serving the previous fleet.
    fleet.write_text("[[model]]\nname = 'x'\n")
    with uds_client(s) as c:
        r = c.post("/calm/reload")
        assert r.status_code == 400 and "file" in r.json()["error"]
        assert "tiny-copy" in [m["id"] for m in c.get("/v1/models").json()["data"]]
        assert c.post("/v1/chat/completions", json={
            "model": "tiny-copy", "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 2}).status_code == 200
        # Removing a model: it is retired (and unloaded), requests for it are 404.
        fleet.write_text(original_fleet)
        r = c.post("/calm/reload")
        assert r.status_code == 200 and r.json()["removed"] == ["tiny-copy"]
        assert c.post("/v1/chat/completions", json={
            "model": "tiny-copy", "messages": [{"role": "user", "content": "x"}]}
                      ).status_code == 404
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
