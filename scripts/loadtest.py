#!/usr/bin/env python3
"""Load and soak test: N concurrent clients over the Unix socket for T seconds.

Each client loops over a realistic mix: chat completions (plain and streamed), text
completions, streams the client abandons after the first tokens, invalid requests (bad
JSON, bad parameters, unknown routes) and, with --tiny, "injected" requests for a model
whose file is truncated (expected 503). It reports requests by kind and status, latency
percentiles of the answered ones, the daemon's RSS over time, and every unexpected
outcome (a 5xx that was not injected, a connection error, a malformed response). Exit
status 1 if there was any.

Two hostile kinds of client can join (issue 14): --stalled N clients each ask for a long
stream and never read it (a hung UI; the daemon must drop each within its write timeout
while the others go on), and --over-cap N clients each try to hold more connections than
--conn-cap allows (run as another user, nobody, so that the cap is theirs alone: needs
root; the excess must be refused at accept).

    python scripts/loadtest.py --tiny --clients 32 --seconds 20          # CI's short run
    python scripts/loadtest.py --clients 64 --seconds 60 --profile x86-dev --max-tokens 48 \
        --max-queue 16 --client-timeout 300   # the real fleet: 2 cores shed load with 429
    python scripts/loadtest.py --socket /run/calm-edge/calm.sock ...     # a running daemon
    python scripts/loadtest.py --tiny --stalled 2 --over-cap 1 --conn-cap 8   # hostile ones
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

QUESTIONS = [
    "What is the capital of France?", "Write a Python function that reverses a string.",
    "What is 17 times 23?", "Summarize the plot of Hamlet in two sentences.",
    "List three uses of copper.", "Explain what a hash table is.",
    "Translate 'good morning' into Spanish.", "Give me a haiku about rain.",
]
KINDS = {"chat": 40, "stream": 25, "completion": 10, "abandon": 10, "invalid": 10,
         "injected": 5}


@dataclass
class Outcome:
    kind: str
    status: int            # HTTP status, or 0 for a connection-level failure
    latency_s: float
    error: str = ""


@dataclass
class Stats:
    outcomes: list[Outcome] = field(default_factory=list)
    rss: list[tuple[float, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    over_cap: dict[str, int] = field(default_factory=dict)

    def add(self, o: Outcome) -> None:
        with self.lock:
            self.outcomes.append(o)


def http_request(sock_path: Path, method: str, target: str, body: bytes, *,
                 abandon_after: int = 0, timeout_s: float = 120.0) -> tuple[int, bytes, bytes]:
    """One request on its own connection. With abandon_after > 0, read that many SSE
    events and hang up. Returns (status, body, head); the body is checked by the caller."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sk:
        sk.settimeout(timeout_s)
        sk.connect(str(sock_path))
        head = (f"{method} {target} HTTP/1.1\r\nHost: calm\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        sk.sendall(head.encode() + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sk.recv(65536)
            if not chunk:
                raise ConnectionError("closed before the response head")
            data += chunk
        status = int(data.split(b" ", 2)[1])
        if abandon_after and status == 200:
            while data.count(b"data: ") < abandon_after:
                chunk = sk.recv(65536)
                if not chunk:
                    break
                data += chunk
            return status, data, b""  # closing the socket abandons the stream
        while chunk := sk.recv(65536):
            data += chunk
        head_bytes, _, body = data.partition(b"\r\n\r\n")
        return status, body, head_bytes


def check_body(status: int, body: bytes, stream: bool) -> str:
    """'' if the response is well formed, else what is wrong with it."""
    if stream and status == 200:
        text = body.decode(errors="replace")
        if "data: [DONE]" not in text and '"error"' not in text:
            return "stream ended without [DONE]"
        return ""
    if b"\r\n" in body[:8] and stream:  # chunked error body: strip the chunk framing
        body = body.split(b"\r\n", 1)[1]
    try:
        payload = json.loads(body.split(b"\r\n0\r\n")[0] if stream else body)
    except ValueError:
        return f"not JSON: {body[:80]!r}"
    if status >= 400 and "error" not in payload:
        return "error status without an error object"
    return ""


def retry_after_s(head: bytes) -> float:
    """The Retry-After header of a response head, else 1 s."""
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"retry-after":
            try:
                return max(float(value.strip()), 0.0)
            except ValueError:
                break
    return 1.0


def client(sock_path: Path, stats: Stats, until: float, budget: list[int], seed: int,
           model: str, max_tokens: int, broken: str | None, timeout_s: float) -> None:
    rng = random.Random(seed)
    kinds = [k for k in KINDS if k != "injected" or broken]
    weights = [KINDS[k] for k in kinds]
    while time.monotonic() < until:
        with stats.lock:
            if budget[0] <= 0:
                return
            budget[0] -= 1
        kind = rng.choices(kinds, weights)[0]
        q = rng.choice(QUESTIONS)
        chat = {"model": model, "messages": [{"role": "user", "content": q}],
                "max_tokens": max_tokens}
        target, body, stream, abandon = "/v1/chat/completions", chat, False, 0
        if kind in ("stream", "abandon"):
            body, stream = {**chat, "stream": True}, True
            abandon = 2 if kind == "abandon" else 0
        elif kind == "completion":
            target = "/v1/completions"
            body = {"model": model, "prompt": q, "max_tokens": max_tokens}
        elif kind == "injected":
            body = {**chat, "model": broken}
        raw = json.dumps(body).encode()
        if kind == "invalid":
            target, raw = rng.choice([
                ("/v1/chat/completions", b"{not json"),
                ("/v1/chat/completions", json.dumps({**chat, "max_tokens": -3}).encode()),
                ("/v1/chat/completions", json.dumps({"messages": "hi"}).encode()),
                ("/v1/nothing", b"{}"),
            ])
        t0 = time.monotonic()
        try:
            status, payload, head = http_request(sock_path, "POST", target, raw,
                                                 abandon_after=abandon, timeout_s=timeout_s)
        except (OSError, ConnectionError, ValueError, IndexError) as e:
            stats.add(Outcome(kind, 0, time.monotonic() - t0, f"{type(e).__name__}: {e}"))
            continue
        latency = time.monotonic() - t0
        problem = "" if abandon else check_body(status, payload, stream)
        stats.add(Outcome(kind, status, latency, problem))
        if status == 429:  # a well-behaved client backs off as told (jittered, capped)
            time.sleep(min(max(retry_after_s(head), 0.5), 5.0) * rng.uniform(0.5, 1.0))


def stalled_client(sock_path: Path, stats: Stats, until: float, model: str, max_tokens: int,
                   timeout_s: float, pause_s: float) -> None:
    """Ask for a long stream, never read it (a tiny receive buffer), and wait for the daemon
    to close the connection. Outcome 'stalled': dropped before the end of the stream, with
    the status of the response head and latency = seconds until the drop; 'stalled-done'
    when the whole answer fitted in the buffers on the way (nothing to drop); an error if
    the connection was still open after timeout_s. Then a pause of pause_s: a hung client
    does not come back at once."""
    body = json.dumps({"model": model, "max_tokens": max_tokens, "stream": True,
                       "messages": [{"role": "user", "content": "Tell me a very long story."}],
                       "calm": {"cache": False}}).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: calm\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    while time.monotonic() < until:
        t0 = time.monotonic()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sk:
            sk.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            try:
                sk.connect(str(sock_path))
                sk.sendall(head.encode() + body)
            except OSError as e:
                stats.add(Outcome("stalled", 0, time.monotonic() - t0, f"{e}"))
                continue
            poller = select.poll()  # the peer's close shows without reading what it sent
            poller.register(sk, select.POLLRDHUP | select.POLLHUP)
            dropped = bool(poller.poll(timeout_s * 1000))
            latency = time.monotonic() - t0
            sk.settimeout(5)
            data = b""
            try:
                while chunk := sk.recv(1 << 20):
                    data += chunk
            except OSError:
                pass
        status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
        kind = "stalled-done" if b"data: [DONE]" in data or status != 200 else "stalled"
        stats.add(Outcome(kind, status, latency,
                          "" if dropped else f"not dropped within {timeout_s:.0f}s"))
        time.sleep(max(min(pause_s, until - time.monotonic()), 0.0))


def over_cap_worker(sock_path: Path, seconds: float, cap: int) -> None:
    """(Runs as another user.) Again and again, try to hold cap + 2 keep-alive connections
    for 2 s; print one JSON line: how many the daemon accepted and refused, and the most
    it ever let this user hold at once."""
    until = time.monotonic() + seconds
    accepted = refused = most = 0
    while time.monotonic() < until:
        held = []
        for _ in range(cap + 2):
            sk = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sk.settimeout(10)
            try:
                sk.connect(str(sock_path))
                sk.sendall(b"GET /health HTTP/1.1\r\nHost: calm\r\n\r\n")
                ok = sk.recv(4096).startswith(b"HTTP/1.1 200 ")
            except OSError:
                ok = False
            if ok:
                accepted += 1
                held.append(sk)
            else:
                refused += 1
                sk.close()
        most = max(most, len(held))
        time.sleep(2.0)
        for sk in held:
            sk.close()
        time.sleep(0.2)
    print(json.dumps({"accepted": accepted, "refused": refused, "most_held": most}))


def run_over_cap(sock_path: Path, seconds: float, cap: int, stats: Stats) -> None:
    """One over-cap client as nobody; its outcomes go into stats as kind 'overcap'."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--over-cap-worker", str(sock_path),
           "--seconds", str(seconds), "--conn-cap", str(cap)]
    setpriv = shutil.which("setpriv")  # it can exec an interpreter under a closed /root
    as_nobody: dict[str, Any] = {"user": 65534, "group": 65534, "extra_groups": []}
    if setpriv is not None:
        cmd, as_nobody = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
                          *cmd], {}
    proc = subprocess.run(cmd, cwd="/", capture_output=True, text=True,
                          timeout=seconds + 120, check=False, **as_nobody)
    try:
        got = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        stats.add(Outcome("overcap", 0, 0.0, f"worker failed: {proc.stderr[-300:]}"))
        return
    stats.add(Outcome("overcap", 200, 0.0, "" if got["most_held"] <= cap else
                      f"held {got['most_held']} connections, over the cap {cap}"))
    stats.add(Outcome("overcap", 503, 0.0, "" if got["refused"] else "never refused"))
    with stats.lock:
        stats.over_cap = got


def unexpected(o: Outcome) -> str | None:
    if o.error:
        return o.error
    if o.kind in ("stalled", "stalled-done", "overcap"):
        return None
    if o.status == 0:
        return "no response"
    if o.kind == "invalid":
        return None if 400 <= o.status < 500 else f"invalid request answered {o.status}"
    if o.kind == "injected":
        return None if o.status == 503 else f"broken model answered {o.status}"
    if o.status == 429:
        return None  # backpressure is a correct answer under overload
    if o.status != 200:
        return f"status {o.status}"
    return None


def tiny_setup(tmp: Path) -> tuple[list[str], str]:
    """A fleet of two tiny random models and one truncated one; returns the serve args."""
    from calm_edge.testing.tiny_gguf import write_tiny_gguf

    models = tmp / "models"
    models.mkdir()
    gguf = write_tiny_gguf(models / "tiny.gguf")
    entries = []
    for name in ("tiny-a", "tiny-b", "broken"):
        path = models / f"{name}.gguf"
        shutil.copy(gguf, path)
        data = path.read_bytes()
        entries.append(f'[[model]]\nname = "{name}"\nfile = "{name}.gguf"\n'
                       f'sha256 = "{hashlib.sha256(data).hexdigest()}"\n'
                       f"size_bytes = {len(data)}\nn_ctx = 512\n"
                       'quality = { code = 0.5, math = 0.5, factual = 0.5, instruct = 0.5, '
                       "writing = 0.5 }\n")
    (models / "broken.gguf").write_bytes(gguf.read_bytes()[:50_000])  # truncated
    (tmp / "fleet.toml").write_text("\n".join(entries))
    (tmp / "profile.toml").write_text(
        '[device]\nname = "loadtest-tiny"\n[memory]\nram_budget = "256M"\n'
        "[runtime]\nn_threads = 1\nn_batch = 64\nmax_parallel = 2\n"
        '[server]\nsocket_group = ""\nmax_queue = 256\n')
    return ["--profile", str(tmp / "profile.toml"), "--models-dir", str(models), "--fleet",
            str(tmp / "fleet.toml")], "broken"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--over-cap-worker":
        wp = argparse.ArgumentParser()
        wp.add_argument("--over-cap-worker", type=Path)
        wp.add_argument("--seconds", type=float)
        wp.add_argument("--conn-cap", type=int)
        wa = wp.parse_args()
        over_cap_worker(wa.over_cap_worker, wa.seconds, wa.conn_cap)
        return 0
    from calm_edge.memory import process_rss_bytes

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--max-requests", type=int, default=100_000, help="stop after this many")
    ap.add_argument("--socket", type=Path, help="use a running daemon")
    ap.add_argument("--tiny", action="store_true", help="spawn a daemon on tiny test models")
    ap.add_argument("--profile", default="x86-dev", help="profile for a spawned daemon")
    ap.add_argument("--model", default="auto")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--max-queue", type=int,
                    help="server.max_queue of a spawned daemon (beyond it: 429)")
    ap.add_argument("--client-timeout", type=float, default=120.0,
                    help="seconds a client waits for a response (a timeout is a failure)")
    ap.add_argument("--rss-limit", default="", help="fail if the daemon's RSS exceeds this")
    ap.add_argument("--stalled", type=int, default=0,
                    help="clients that ask for a long stream and never read it")
    ap.add_argument("--stalled-tokens", type=int, default=4000,
                    help="max_tokens of a stalled client's stream")
    ap.add_argument("--stall-pause", type=float, default=20.0,
                    help="seconds a stalled client waits after being dropped")
    ap.add_argument("--over-cap", type=int, default=0,
                    help="clients (as nobody: needs root) that try to hold more connections "
                    "than --conn-cap")
    ap.add_argument("--conn-cap", type=int,
                    help="server.max_connections_per_uid of a spawned daemon")
    ap.add_argument("--write-timeout", type=float,
                    help="server.write_timeout_s of a spawned daemon")
    ap.add_argument("--json", type=Path, help="also write the report as JSON")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if not 1 <= args.clients <= 1024 or not 0 < args.seconds <= 24 * 3600:
        sys.exit("--clients must be in [1, 1024] and --seconds in (0, 86400]")
    if args.over_cap and (os.geteuid() != 0 or args.conn_cap is None):
        sys.exit("--over-cap needs root (its clients run as nobody) and --conn-cap")
    if args.conn_cap is not None and args.conn_cap < args.clients + args.stalled + 2:
        sys.exit("--conn-cap applies to every uid: give it room for the other clients "
                 f"(at least --clients + --stalled + 2 = {args.clients + args.stalled + 2})")

    tmp = Path(tempfile.mkdtemp(prefix="ce-load-"))
    proc: subprocess.Popen[bytes] | None = None
    broken: str | None = None
    sock = args.socket
    if sock is None:
        sock = tmp / "calm.sock"
        serve = ["--profile", args.profile]
        if args.tiny:
            serve, broken = tiny_setup(tmp)
        env = dict(os.environ)
        for name, value in (("MAX_QUEUE", args.max_queue),
                            ("MAX_CONNECTIONS_PER_UID", args.conn_cap),
                            ("WRITE_TIMEOUT_S", args.write_timeout)):
            if value is not None:
                env[f"CALM_EDGE_SERVER_{name}"] = str(value)
        if args.over_cap:  # nobody must reach the socket: the directory and the socket
            tmp.chmod(0o711)
            env["CALM_EDGE_SERVER_SOCKET_MODE"] = "0666"
        proc = subprocess.Popen([sys.executable, "-m", "calm_edge.cli", "serve", *serve,
                                 "--socket", str(sock), "--state-dir", str(tmp / "state"),
                                 "--log-level", "warning"], env=env)
        deadline = time.monotonic() + 60
        while True:
            try:
                if http_request(sock, "GET", "/health", b"")[0] == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit("the daemon did not start")
            time.sleep(0.1)
    stats = Stats()
    stop = threading.Event()

    def sample_rss() -> None:
        t0 = time.monotonic()
        while not stop.is_set() and proc is not None:
            stats.rss.append((time.monotonic() - t0, process_rss_bytes(pid=proc.pid)))
            stop.wait(0.5)

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    until = time.monotonic() + args.seconds
    budget = [args.max_requests]
    model = "tiny-a" if args.tiny and args.model == "auto" else args.model
    threads = [threading.Thread(target=client, args=(sock, stats, until, budget,
                                                     args.seed + i, model, args.max_tokens,
                                                     broken, args.client_timeout),
                                 daemon=True)
               for i in range(args.clients)]
    threads += [threading.Thread(target=stalled_client, args=(
        sock, stats, until, model, args.stalled_tokens, args.client_timeout,
        args.stall_pause), daemon=True)
        for _ in range(args.stalled)]
    threads += [threading.Thread(target=run_over_cap, args=(
        sock, args.seconds, args.conn_cap, stats), daemon=True) for _ in range(args.over_cap)]
    t_start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.seconds + 300)
    hung = sum(t.is_alive() for t in threads)
    elapsed = time.monotonic() - t_start
    stop.set()
    sampler.join(2)
    if proc is not None:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = -9
    else:
        rc = 0
    shutil.rmtree(tmp, ignore_errors=True)

    outs = stats.outcomes
    by = Counter((o.kind, o.status) for o in outs)
    kinds = sorted({k for k, _ in by})
    statuses = sorted({s for _, s in by})
    print(f"\n{len(outs)} requests from {args.clients} clients in {elapsed:.1f}s "
          f"({len(outs) / elapsed:.1f}/s)")
    print(f"{'kind':<13}" + "".join(f"{s:>7}" for s in statuses))
    for k in kinds:
        print(f"{k:<13}" + "".join(f"{by.get((k, s), 0):>7}" for s in statuses))
    ok = [o.latency_s for o in outs if o.status == 200 and o.kind in
          ("chat", "stream", "completion")]
    p50, p95, p99 = (percentile(ok, q) for q in (50, 95, 99))
    print(f"latency of answered requests: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
          f"p99 {p99 * 1000:.0f} ms ({len(ok)} answers, {len(ok) / elapsed:.2f}/s)")
    drops = [o.latency_s for o in outs if o.kind == "stalled" and not o.error]
    if args.stalled:
        done = sum(o.kind == "stalled-done" for o in outs)
        print(f"stalled streams dropped by the daemon: {len(drops)}, median "
              f"{percentile(drops, 50):.1f} s after the request ({done} more fitted whole in "
              "the buffers)")
    if stats.over_cap:
        print(f"over-cap client: {stats.over_cap['accepted']} connections accepted, "
              f"{stats.over_cap['refused']} refused, at most {stats.over_cap['most_held']} "
              f"held at once (cap {args.conn_cap})")
    max_rss = max((r for _, r in stats.rss), default=0)
    if stats.rss:
        first, last = stats.rss[0][1], stats.rss[-1][1]
        print(f"daemon RSS: start {first >> 20} MiB, end {last >> 20} MiB, max "
              f"{max_rss >> 20} MiB ({len(stats.rss)} samples)")
    problems = [(o, why) for o in outs if (why := unexpected(o))]
    five_xx = sum(1 for o in outs if o.status >= 500
                  and o.kind not in ("injected", "overcap"))
    print(f"5xx other than injected: {five_xx}; unexpected outcomes: {len(problems)}; "
          f"clients still running: {hung}; daemon exit status {rc}")
    for o, why in problems[:20]:
        print(f"  {o.kind}: {why}")
    failed = bool(problems) or hung > 0 or rc != 0
    if args.rss_limit:
        from calm_edge.units import parse_size_bytes

        if max_rss > parse_size_bytes(args.rss_limit):
            print(f"RSS {max_rss >> 20} MiB over the limit {args.rss_limit}")
            failed = True
    report: dict[str, Any] = {
        "clients": args.clients, "seconds": elapsed, "requests": len(outs),
        "by_kind_status": {f"{k}:{s}": n for (k, s), n in by.items()},
        "latency_ms": {"p50": p50 * 1000, "p95": p95 * 1000, "p99": p99 * 1000},
        "answers": len(ok), "answers_per_s": len(ok) / elapsed,
        "stalled_dropped": len(drops), "over_cap": stats.over_cap,
        "max_rss_bytes": max_rss, "unexpected": [why for _, why in problems],
        "five_xx_not_injected": five_xx, "hung_clients": hung, "daemon_exit": rc}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
