"""A `calm-edge serve` subprocess for measured runs, and one timed request to it.

Used by the bench runner (one daemon per run) and by scripts/label_outcomes.py (one daemon
for all models). The daemon runs in its own session with its own calibration off (a measured
run must not share the CPU with it; a calibrated state comes in through the state
directory; `calibrate=True` keeps it, for runs that measure it), on a socket in a short
private directory (the sun_path limit).

Blocking. Whoever enters `serve_daemon` owns the subprocess: it is stopped (SIGTERM, then
SIGKILL) however the block ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calm_edge.bench.workload import Query
from calm_edge.client import Client, ClientError
from calm_edge.memory import process_rss_bytes

RSS_SAMPLE_S = 0.25
STOP_GRACE_S = 60.0


class DaemonStartError(RuntimeError):
    """The daemon exited, or did not become ready in time."""


class RssSampler:
    """Samples a process's RSS (calm_edge.memory.process_rss_bytes) in a daemon thread;
    `peak_bytes` is the largest reading, None until one succeeds."""

    def __init__(self, pid: int, interval_s: float = RSS_SAMPLE_S,
                 probe: Callable[[int], int] | None = None) -> None:
        self.pid, self.interval_s = pid, interval_s
        self._probe = probe or (lambda p: process_rss_bytes(pid=p))
        self.peak_bytes: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-rss", daemon=True)

    def sample(self) -> None:
        rss = self._probe(self.pid)
        if rss > 0:  # 0: unknown (the process is gone, or /proc is unreadable)
            self.peak_bytes = max(self.peak_bytes or 0, rss)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def start(self) -> None:
        self.sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.sample()


@dataclass
class DaemonProcess:
    proc: subprocess.Popen[bytes]
    client: Client
    log_path: Path
    rss: RssSampler

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 15) -> str:
        return log_tail(self.log_path, n)


def log_tail(path: Path, n: int = 15) -> str:
    """The last n lines of a log file; "" if it cannot be read."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


@contextmanager
def serve_daemon(python: str, args: Sequence[str], log_path: Path, *,
                 ready_timeout_s: float, request_timeout_s: float,
                 calibrate: bool = False) -> Iterator[DaemonProcess]:
    """Start `python -m calm_edge.cli serve --socket <private> *args`, appending its output
    to `log_path` (after a header line), wait until it answers /health, sample its RSS, and
    yield it. DaemonStartError if it exits or is not ready within `ready_timeout_s`.
    `calibrate` leaves the daemon's own calibration on (`calibration.auto` as configured),
    for runs that measure a daemon as users run it."""
    socket_dir = Path(tempfile.mkdtemp(prefix="ceb-", dir="/tmp"))  # short: sun_path limit
    sock = socket_dir / "calm.sock"
    cmd = [python, "-m", "calm_edge.cli", "serve", "--socket", str(sock), *args]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
        log.flush()
        env = dict(os.environ) if calibrate else \
            {**os.environ, "CALM_EDGE_CALIBRATION_AUTO": "false"}
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, env=env)
    d = DaemonProcess(proc, Client(sock, timeout_s=request_timeout_s), log_path,
                      RssSampler(proc.pid))
    try:
        wait_ready(proc, d.client, ready_timeout_s, log_path)
        d.rss.start()
        yield d
    finally:
        d.client.close()
        d.rss.stop()
        stop_process(proc)
        shutil.rmtree(socket_dir, ignore_errors=True)


def wait_ready(proc: subprocess.Popen[bytes], client: Client, timeout_s: float,
               log_path: Path) -> None:
    """Poll the daemon's /health until it answers. DaemonStartError if it exits first (with its
    log's tail) or is not ready within timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DaemonStartError(f"the daemon exited with status {proc.returncode} before it "
                              f"was ready; its log ({log_path}) ends:\n{log_tail(log_path)}")
        if client.socket_path.exists():
            try:
                client.get("/health")
                return
            except ClientError:
                pass
        time.sleep(0.1)
    raise DaemonStartError(f"the daemon was not ready after {timeout_s:.0f} s; see {log_path}")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM a daemon and wait for it (SIGKILL after STOP_GRACE_S); nothing if it has
    exited."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


# -- one request ---------------------------------------------------------------------------

@dataclass
class Reply:
    """One answer as the client saw it. Times in ms from sending the request."""

    text: str
    latency_ms: float               # to the last event
    ttft_ms: float | None           # to the first chunk with content; None: no content
    calm: dict[str, Any]            # the final chunk's `calm` object ({} if none came)


def ask(client: Client, query: Query, model: str, calm_opts: Mapping[str, Any],
        clock: Callable[[], float] = time.perf_counter) -> Reply:
    """Send one streamed request (temperature 0, the query's max_tokens) and time it at the
    client. Raises ClientError."""
    body: dict[str, Any] = {"model": model, "max_tokens": query.max_tokens,
                            "temperature": 0.0, "stream": True}
    if calm_opts:
        body["calm"] = dict(calm_opts)
    if query.messages is not None:
        path = "/v1/chat/completions"
        body["messages"] = [dict(m) for m in query.messages]
    else:
        path = "/v1/completions"
        body["prompt"] = query.prompt
    parts: list[str] = []
    info: dict[str, Any] = {}
    # Client.stream opens its own connection and drops (without closing) the keep-alive one
    # that get/post left idle: close that first so no socket is leaked.
    client.close()
    t0 = clock()
    ttft: float | None = None
    for event in client.stream(path, body):
        for choice in event.get("choices") or ():
            text = (choice.get("delta") or {}).get("content") or choice.get("text")
            if text:
                if ttft is None:
                    ttft = (clock() - t0) * 1000.0
                parts.append(text)
        if isinstance(event.get("calm"), dict):
            info = event["calm"]
    latency = (clock() - t0) * 1000.0
    return Reply("".join(parts), latency, ttft, info)


WARM_UP = Query(id="warm-up", domain="instruct", messages=(
    {"role": "user", "content": "Reply with the word ready."},), prompt=None,
    grader="instructions", grader_args={}, max_tokens=1, source="bench", licence="")


def warm_up(client: Client, model: str) -> None:
    """Load `model` with a one-token request unlike any workload query (llama.cpp reuses
    the KV cache of a shared prompt prefix, which would flatter the first query's TTFT).
    Raises ClientError."""
    ask(client, WARM_UP, model, {"cache": False})
