"""Knowledge: the SQLite store behind the MAPE-K loop (request log, decision log,
estimates, model health). Survives restarts; bounded retention.

One writer thread owns the connection (`sqlite3` objects stay on the thread that made
them); the event loop submits work and awaits it. Each finished request is one
transaction, committed before the response's last bytes are sent, so a crash or
`kill -9` loses at most the requests in flight.

Durability: WAL with synchronous=NORMAL. In WAL mode NORMAL never corrupts the database;
a process crash or kill loses nothing committed (the WAL is in the OS page cache), and a
power cut can lose only the last transactions before the most recent checkpoint's sync,
never consistency. FULL would add an fsync per request (milliseconds and flash wear on an
SD card or eMMC) for a guarantee we do not need: a lost log line is acceptable, a corrupt
store is not.

A database that cannot be opened or fails `PRAGMA quick_check` is moved aside
(`knowledge.db.corrupt-<time>`) and a fresh one is started. If the disk fills up the
store stops writing, keeps the loop's state in memory, and says so (`degraded`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from calm_edge.analyze import (
    BetaQuality,
    Estimate,
    Health,
    Knowledge,
    PageHinkley,
    Stat,
)

log = logging.getLogger("calm_edge.knowledge")
T = TypeVar("T")

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY, ts REAL NOT NULL, kind TEXT, model TEXT, domain TEXT,
    domain_source TEXT, difficulty REAL, mode TEXT, prompt_tokens INTEGER,
    completion_tokens INTEGER, ttft_ms REAL, latency_ms REAL, wait_ms REAL, energy_j REAL,
    energy_measured INTEGER, finish TEXT, status INTEGER, error TEXT,
    cache_hit INTEGER NOT NULL DEFAULT 0, feedback REAL);
CREATE INDEX IF NOT EXISTS requests_ts ON requests(ts);
CREATE TABLE IF NOT EXISTS decisions (
    request_id TEXT PRIMARY KEY, ts REAL NOT NULL, domain TEXT, difficulty REAL, mode TEXT,
    chosen TEXT, reason TEXT, explored INTEGER, candidates TEXT);
CREATE INDEX IF NOT EXISTS decisions_ts ON decisions(ts);
CREATE TABLE IF NOT EXISTS estimates (
    model TEXT NOT NULL, domain TEXT NOT NULL, state TEXT NOT NULL, updated REAL NOT NULL,
    PRIMARY KEY (model, domain));
CREATE TABLE IF NOT EXISTS health (
    model TEXT PRIMARY KEY, state TEXT NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS calibration (
    device_key TEXT NOT NULL, model TEXT NOT NULL, sha256 TEXT NOT NULL, item TEXT NOT NULL,
    result TEXT NOT NULL, ts REAL NOT NULL, PRIMARY KEY (device_key, model, sha256, item));
"""


@dataclass(frozen=True)
class RequestRecord:
    id: str
    ts: float                 # Unix time
    kind: str                 # chat | completion
    model: str | None
    domain: str | None
    domain_source: str | None
    difficulty: float | None
    mode: str | None
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float | None
    latency_ms: float
    wait_ms: float | None
    energy_j: float | None
    energy_measured: bool | None
    finish: str | None
    status: int
    error: str | None = None
    cache_hit: bool = False


@dataclass(frozen=True)
class DecisionRecord:
    request_id: str
    ts: float
    domain: str
    difficulty: float | None
    mode: str
    chosen: str
    reason: str
    explored: bool
    candidates: Sequence[Mapping[str, object]]


def _request_row(r: RequestRecord) -> tuple[object, ...]:
    return (r.id, r.ts, r.kind, r.model, r.domain, r.domain_source, r.difficulty, r.mode,
            r.prompt_tokens, r.completion_tokens, r.ttft_ms, r.latency_ms, r.wait_ms,
            r.energy_j, None if r.energy_measured is None else int(r.energy_measured),
            r.finish, r.status, r.error, int(r.cache_hit))


# -- (de)serialising the analyze values -----------------------------------------------------

def _stat(d: Any) -> Stat:
    return Stat(int(d["n"]), float(d["mean"]), float(d["var"]))


def estimate_to_json(e: Estimate) -> str:
    return json.dumps(dataclasses.asdict(e), separators=(",", ":"))


def estimate_from_json(text: str) -> Estimate:
    d = json.loads(text)
    return Estimate(
        model=d["model"], domain=d["domain"],
        prefill_ms_per_token=_stat(d["prefill_ms_per_token"]),
        decode_ms_per_token=_stat(d["decode_ms_per_token"]),
        completion_tokens=_stat(d["completion_tokens"]),
        energy_mj_per_token=_stat(d["energy_mj_per_token"]),
        quality=BetaQuality(float(d["quality"]["alpha"]), float(d["quality"]["beta"])),
        requests=int(d["requests"]), errors=int(d["errors"]),
        slo_breaches=int(d["slo_breaches"]), last_ts=float(d["last_ts"]),
        limit_share=_stat(d["limit_share"]) if "limit_share" in d else Stat(),
        fit_observed=_stat(d["fit_observed"]) if "fit_observed" in d else Stat(),
        fit_predicted=_stat(d["fit_predicted"]) if "fit_predicted" in d else Stat(),
        prompt_overhead=_stat(d["prompt_overhead"]) if "prompt_overhead" in d else Stat(),
        quality_prior=BetaQuality(float(d["quality_prior"]["alpha"]),
                                  float(d["quality_prior"]["beta"]))
        if d.get("quality_prior") else None)


def health_to_json(h: Health) -> str:
    return json.dumps(dataclasses.asdict(h), separators=(",", ":"))


def health_from_json(text: str) -> Health:
    d = json.loads(text)
    det = d["detector"]
    return Health(
        model=d["model"],
        detector=PageHinkley(int(det["n"]), float(det["mean"]), float(det["cum"]),
                             float(det["cum_min"])),
        healthy_decode_ms=_stat(d["healthy_decode_ms"]),
        baseline_decode_ms=float(d["baseline_decode_ms"]),
        recent_ratio=_stat(d["recent_ratio"]), degraded=bool(d["degraded"]),
        degraded_since_ts=float(d["degraded_since_ts"]), alarms=int(d["alarms"]),
        recoveries=int(d["recoveries"]))


def _drop_oldest_quarter(conn: sqlite3.Connection) -> int:
    total = conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
    n = conn.execute("DELETE FROM requests WHERE id IN (SELECT id FROM requests ORDER BY ts "
                     "LIMIT ?)", (max(total // 4, 1),)).rowcount
    conn.execute("DELETE FROM decisions WHERE request_id NOT IN (SELECT id FROM requests)")
    return int(n)


# -- the store ------------------------------------------------------------------------------

class KnowledgeStore:
    def __init__(self, path: Path, *, retention_days: float, max_requests: int,
                 max_db_bytes: int = 256 << 20,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.retention_days, self.max_requests = retention_days, max_requests
        self.max_db_bytes = max_db_bytes
        self._clock = clock
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="calm-knowledge")
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # guards the status fields below (read by the loop)
        self.degraded: str | None = None  # why writes stopped, if they did
        self.moved_aside: Path | None = None
        self.writes = 0
        self._noted: list[RequestRecord] = []  # owned by the event loop

    # All _x methods run on the writer thread.
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count={max(self.max_db_bytes // page, 64)}")
        row = conn.execute("PRAGMA quick_check").fetchone()
        if row is None or row[0] != "ok":
            conn.close()
            raise sqlite3.DatabaseError(f"quick_check: {row[0] if row else 'no result'}")
        conn.executescript(_SCHEMA)
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                     (str(SCHEMA_VERSION),))
        return conn

    def _move_aside(self, why: str) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                src.replace(Path(str(target) + suffix))
        self.moved_aside = target
        log.error("knowledge store %s is unreadable (%s); moved it to %s and starting fresh",
                  self.path, why, target)

    def _open(self) -> Knowledge:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = self._connect()
        except sqlite3.DatabaseError as e:
            self._move_aside(str(e))
            self._conn = self._connect()
        return self._load()

    def _load(self) -> Knowledge:
        assert self._conn is not None
        est: dict[tuple[str, str], Estimate] = {}
        for model, domain, state in self._conn.execute(
                "SELECT model, domain, state FROM estimates"):
            try:
                est[(model, domain)] = estimate_from_json(state)
            except (ValueError, KeyError, TypeError) as e:
                log.warning("ignoring unreadable estimate for %s/%s: %s", model, domain, e)
        health: dict[str, Health] = {}
        for model, state in self._conn.execute("SELECT model, state FROM health"):
            try:
                health[model] = health_from_json(state)
            except (ValueError, KeyError, TypeError) as e:
                log.warning("ignoring unreadable health state for %s: %s", model, e)
        return Knowledge(est, health)

    def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self._conn is not None
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            out = fn(self._conn)
        except BaseException:
            if self._conn.in_transaction:  # SQLite rolls back by itself on SQLITE_FULL
                self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")
        return out

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T | None:
        """Run `fn` in a transaction. When the database or the disk is full, drop the
        oldest quarter of the log and retry once; if that fails too, stop writing and keep
        serving from memory (`degraded` says why)."""
        if self._conn is None or self.degraded is not None:
            return None
        try:
            try:
                out = self._tx(fn)
            except sqlite3.OperationalError as e:
                if "full" not in str(e):
                    raise
                n = self._tx(_drop_oldest_quarter)
                log.warning("knowledge store full (%s): dropped the oldest %d requests", e, n)
                out = self._tx(fn)
        except sqlite3.OperationalError as e:
            msg = str(e)
            with self._lock:
                self.degraded = f"writes stopped: {msg}"
            log.error("knowledge store %s: %s; continuing with in-memory state only "
                      "(learned estimates will not survive a restart)", self.path, msg)
            return None
        with self._lock:
            self.writes += 1
        return out

    # -- API for the event loop ---------------------------------------------------------------

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn)

    async def open(self) -> Knowledge:
        """Open (or recover) the database and load what was learned."""
        return await self._run(self._open)

    async def record(self, request: RequestRecord, decision: DecisionRecord | None,
                     estimates: Sequence[Estimate], health: Sequence[Health]) -> None:
        """Persist one finished request and the state it changed, in one transaction."""
        now = self._clock()

        def tx(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO requests VALUES "
                "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,NULL)", _request_row(request))
            if decision is not None:
                d = decision
                conn.execute("INSERT OR REPLACE INTO decisions VALUES (?,?,?,?,?,?,?,?,?)",
                             (d.request_id, d.ts, d.domain, d.difficulty, d.mode, d.chosen,
                              d.reason, int(d.explored),
                              json.dumps(list(d.candidates), separators=(",", ":"))))
            for e in estimates:
                conn.execute("INSERT OR REPLACE INTO estimates VALUES (?,?,?,?)",
                             (e.model, e.domain, estimate_to_json(e), now))
            for h in health:
                conn.execute("INSERT OR REPLACE INTO health VALUES (?,?,?)",
                             (h.model, health_to_json(h), now))

        await self._run(lambda: self._write(tx))

    def note(self, request: RequestRecord) -> bool:
        """Queue a request row that teaches the loop nothing (a cache hit) for the next
        `flush()`; True when the queue was empty (the caller should schedule a flush).
        Such rows are written in batches, at most ~1 s late: a crash can lose the last ones.
        """
        was_empty = not self._noted
        self._noted.append(request)
        return was_empty

    async def flush(self) -> None:
        """Write the queued rows in one transaction."""
        rows, self._noted = self._noted, []
        if not rows:
            return

        def tx(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT OR REPLACE INTO requests VALUES "
                "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,NULL)",
                [_request_row(r) for r in rows])

        await self._run(lambda: self._write(tx))

    async def record_feedback(self, request_id: str, score: float,
                              estimates: Sequence[Estimate]) -> None:
        now = self._clock()

        def tx(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE requests SET feedback = ? WHERE id = ?", (score, request_id))
            for e in estimates:
                conn.execute("INSERT OR REPLACE INTO estimates VALUES (?,?,?,?)",
                             (e.model, e.domain, estimate_to_json(e), now))

        await self._run(lambda: self._write(tx))

    async def lookup(self, request_id: str) -> tuple[str | None, str | None] | None:
        """(model, domain) of a logged request, or None if unknown."""
        def q() -> tuple[str | None, str | None] | None:
            if self._conn is None:
                return None
            row = self._conn.execute("SELECT model, domain FROM requests WHERE id = ?",
                                     (request_id,)).fetchone()
            return None if row is None else (row[0], row[1])

        return await self._run(q)

    async def recent_decisions(self, limit: int) -> list[dict[str, Any]]:
        def q() -> list[dict[str, Any]]:
            if self._conn is None:
                return []
            rows = self._conn.execute(
                "SELECT request_id, ts, domain, difficulty, mode, chosen, reason, explored, "
                "candidates FROM decisions ORDER BY ts DESC LIMIT ?", (limit,)).fetchall()
            return [{"request_id": r[0], "ts": r[1], "domain": r[2], "difficulty": r[3],
                     "mode": r[4], "chosen": r[5], "reason": r[6], "explored": bool(r[7]),
                     "candidates": json.loads(r[8])} for r in rows]

        return await self._run(q)

    async def prune(self) -> int:
        """Apply retention: drop rows older than retention_days or beyond max_requests."""
        cutoff = self._clock() - self.retention_days * 86400

        def tx(conn: sqlite3.Connection) -> int:
            n = conn.execute("DELETE FROM requests WHERE ts < ?", (cutoff,)).rowcount
            n += conn.execute(
                "DELETE FROM requests WHERE id IN (SELECT id FROM requests ORDER BY ts DESC "
                "LIMIT -1 OFFSET ?)", (self.max_requests,)).rowcount
            conn.execute("DELETE FROM decisions WHERE request_id NOT IN "
                         "(SELECT id FROM requests)")
            return n

        return await self._run(lambda: self._write(tx) or 0)

    # -- calibration items (calm_edge.calibration) --------------------------------------------

    async def calibration_items(self, device_key: str,
                                ) -> dict[tuple[str, str], dict[str, tuple[Any, float]]]:
        """{(model, sha256): {item: (result, ts)}} measured on this device."""
        def q() -> dict[tuple[str, str], dict[str, tuple[Any, float]]]:
            out: dict[tuple[str, str], dict[str, tuple[Any, float]]] = {}
            if self._conn is None:
                return out
            for model, sha, item, result, ts in self._conn.execute(
                    "SELECT model, sha256, item, result, ts FROM calibration "
                    "WHERE device_key = ?", (device_key,)):
                try:
                    out.setdefault((model, sha), {})[item] = (json.loads(result), float(ts))
                except ValueError as e:
                    log.warning("ignoring unreadable calibration item %s/%s: %s", model,
                                item, e)
            return out

        return await self._run(q)

    async def record_calibration(self, device_key: str, model: str, sha256: str, item: str,
                                 result: Mapping[str, Any]) -> None:
        """Store one finished calibration item (its own transaction: a kill loses at most
        the item in progress). The first item for a (device, model file) drops that model's
        items from other devices, builds or files."""
        now = self._clock()

        def tx(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM calibration WHERE model = ? AND "
                         "(device_key != ? OR sha256 != ?)", (model, device_key, sha256))
            conn.execute("INSERT OR REPLACE INTO calibration VALUES (?,?,?,?,?,?)",
                         (device_key, model, sha256, item,
                          json.dumps(result, separators=(",", ":")), now))

        await self._run(lambda: self._write(tx))

    async def clear_calibration(self, model: str | None = None) -> None:
        """Forget calibration items (of one model, or all): the next run starts afresh."""
        def tx(conn: sqlite3.Connection) -> None:
            if model is None:
                conn.execute("DELETE FROM calibration")
            else:
                conn.execute("DELETE FROM calibration WHERE model = ?", (model,))

        await self._run(lambda: self._write(tx))

    def counts(self) -> dict[str, int]:
        """Row counts (blocking; for tests and tools, not the event loop)."""
        def q() -> dict[str, int]:
            if self._conn is None:
                return {}
            return {t: self._conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                    for t in ("requests", "decisions", "estimates", "health", "calibration")}

        return self._writer.submit(q).result()

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {"path": str(self.path), "writes": self.writes, "degraded": self.degraded,
                    "moved_aside": str(self.moved_aside) if self.moved_aside else None}

    def close(self) -> None:
        def shut() -> None:
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("PRAGMA optimize")
                self._conn.close()
                self._conn = None

        with contextlib.suppress(RuntimeError):
            self._writer.submit(shut).result()
        self._writer.shutdown(wait=True)
