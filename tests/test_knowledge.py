"""The knowledge store on real SQLite: recovery, retention, a full disk, kill -9."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from calm_edge.analyze import ALL, Estimate, Health, Stat
from calm_edge.client import Client, ClientError
from calm_edge.config import Settings
from calm_edge.knowledge import DecisionRecord, KnowledgeStore, RequestRecord


def rec(i: int, ts: float = 1000.0) -> RequestRecord:
    return RequestRecord(id=f"r{i}", ts=ts, kind="chat", model="m", domain="code",
                         domain_source="fixed", difficulty=0.5, mode="balanced",
                         prompt_tokens=10, completion_tokens=20, ttft_ms=5.0, latency_ms=50.0,
                         wait_ms=0.0, energy_j=1.5, energy_measured=False, finish="stop",
                         status=200)


def dec(i: int, ts: float = 1000.0) -> DecisionRecord:
    return DecisionRecord(f"r{i}", ts, "code", 0.5, "balanced", "m", "because", False,
                          [{"model": "m", "utility": 0.5}])


EST = Estimate("m", ALL, decode_ms_per_token=Stat(3, 10.0, 1.0))


def test_knowledge_roundtrip_and_recent_decisions(tmp_path: Path) -> None:
    async def main() -> None:
        store = KnowledgeStore(tmp_path / "k.db", retention_days=30, max_requests=1000)
        k = await store.open()
        assert not k.estimates
        await store.record(rec(1), dec(1), [EST], [Health("m", baseline_decode_ms=9.0)])
        assert await store.lookup("r1") == ("m", "code")
        assert await store.lookup("nope") is None
        recent = await store.recent_decisions(5)
        assert recent[0]["chosen"] == "m" and recent[0]["candidates"][0]["model"] == "m"
        store.close()
        store2 = KnowledgeStore(tmp_path / "k.db", retention_days=30, max_requests=1000)
        k2 = await store2.open()
        assert k2.estimates[("m", ALL)] == EST
        assert k2.health["m"].baseline_decode_ms == 9.0
        store2.close()

    asyncio.run(main())


def test_knowledge_corrupt_database_is_moved_aside(tmp_path: Path) -> None:
    db = tmp_path / "k.db"
    db.write_bytes(b"this is not a database" * 100)

    async def main() -> None:
        store = KnowledgeStore(db, retention_days=30, max_requests=1000)
        k = await store.open()
        assert not k.estimates
        assert store.moved_aside is not None and store.moved_aside.exists()
        assert store.moved_aside.read_bytes().startswith(b"this is not")
        await store.record(rec(1), None, [EST], [])
        assert store.counts()["requests"] == 1
        store.close()

    asyncio.run(main())


def test_knowledge_retention_prunes_old_and_excess_rows(tmp_path: Path) -> None:
    now = [1_000_000.0]

    async def main() -> None:
        store = KnowledgeStore(tmp_path / "k.db", retention_days=1, max_requests=100,
                               clock=lambda: now[0])
        await store.open()
        for i in range(150):
            ts = now[0] - 3 * 86400 if i < 20 else now[0] - i
            await store.record(rec(i, ts), dec(i, ts), [], [])
        pruned = await store.prune()
        counts = store.counts()
        assert counts["requests"] == 100 and counts["decisions"] == 100
        assert pruned == 50
        store.close()

    asyncio.run(main())


def test_knowledge_full_database_drops_oldest_then_degrades(tmp_path: Path) -> None:
    async def main() -> None:
        store = KnowledgeStore(tmp_path / "k.db", retention_days=30, max_requests=10**6,
                               max_db_bytes=1 << 20)
        await store.open()
        big = [{"model": "m", "pad": "x" * 2000}]
        for i in range(600):  # ~1.2 MB of decisions into a 1 MiB cap
            await store.record(rec(i, 1000.0 + i),
                               DecisionRecord(f"r{i}", 1000.0 + i, "code", None, "balanced",
                                              "m", "r", False, big), [], [])
        assert store.degraded is None  # the cap was met by dropping the oldest requests
        counts = store.counts()
        assert 0 < counts["requests"] < 600
        # A single record larger than the whole cap cannot fit: writes stop, nothing raises.
        huge = [{"pad": "x" * (2 << 20)}]
        await store.record(rec(10_000), DecisionRecord("r10000", 1.0, "code", None, "b", "m",
                                                       "r", False, huge), [], [])
        assert store.degraded is not None and "full" in store.degraded
        assert store.status()["degraded"] == store.degraded
        await store.record(rec(10_001), None, [], [])  # ignored, no exception
        store.close()

    asyncio.run(main())


def test_knowledge_survives_kill_9_during_a_burst(make_settings: Callable[..., Settings],
                                                  tmp_path: Path) -> None:
    s = make_settings()
    env = {**os.environ, "HOME": str(tmp_path)}
    cmd = [sys.executable, "-m", "calm_edge.cli", "serve", "--profile", s.profile_source,
           "--socket", str(s.socket_path), "--state-dir", str(s.state_dir),
           "--models-dir", str(s.models_dir), "--fleet", str(s.fleet_path)]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    done: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        with Client(s.socket_path, timeout_s=30) as c:
            while not stop.is_set():
                try:
                    r = c.post("/v1/chat/completions", {
                        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
                except ClientError:
                    return
                with lock:
                    done.append(r["id"])

    try:
        deadline = time.monotonic() + 30
        while not s.socket_path.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        while len(done) < 30:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        stop.set()
        for t in threads:
            t.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    db = s.state_dir / "knowledge.db"
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        ids = {r[0] for r in conn.execute("SELECT id FROM requests WHERE status = 200")}
    finally:
        conn.close()
    answered = set(done)
    assert answered <= ids, f"lost {len(answered - ids)} answered requests"
    # Restart: the daemon comes back with what it learned.
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:  # the killed daemon's socket file is still there: wait for a live one
            assert proc.poll() is None and time.monotonic() < deadline
            try:
                with Client(s.socket_path) as probe:
                    st = probe.get("/calm/status")
                break
            except ClientError:
                time.sleep(0.05)
        learned = sum(e["requests"] for e in st["estimates"] if e["domain"] == ALL)
        assert learned >= len(answered)
        assert json.dumps(st["knowledge"])  # status reports the store
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
