#!/usr/bin/env python3
"""Two clients share one daemon: the polite one's latency with and without quotas.

A greedy client keeps `--greedy` (32) requests in flight at once; a polite client sends one
request at a time. Each run spawns a daemon on tiny test models (one generation at a time,
`max_parallel = 1`) and measures for `--seconds`:

- **off**: `[quotas]` off, one queue in arrival order (the daemon before issue 18);
- **quotas**: `[quotas]` on, both clients weight 1 (weighted fair sharing) and the greedy
  client limited to half the queue (`max_queue_share = 0.5`), plus any `--greedy-quota`.

It prints, per run, the polite client's latency p50/p95/max, both clients' answers and
429s, and each client's share of generation time from the daemon's status; then the
polite p95 ratio, and a JSON line.

Clients are told apart as the daemon tells them apart: by TCP source address (default:
the greedy client connects from 127.0.0.2, the polite one from 127.0.0.1, to a daemon on
127.0.0.1), or with `--via uid` (root) over the Unix socket, the greedy client as the
user nobody and the polite one as root.

    python scripts/bench_quotas.py                          # 2 runs x 30 s
    python scripts/bench_quotas.py --seconds 4 --warmup 1   # a smoke run
    python scripts/bench_quotas.py --via uid --greedy-quota tokens_per_min=3000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from loadtest import percentile  # scripts/ is sys.path[0] when run as a script

QUESTIONS = ["What is the capital of France?", "Write a haiku about rain.",
             "List three uses of copper.", "Explain what a hash table is.",
             "What is 17 times 23?", "Translate 'good morning' into Spanish."]
GREEDY_ADDR, POLITE_ADDR = "127.0.0.2", "127.0.0.1"


# -- the clients (run as worker processes, so that each can have its own identity) ----------

def request(target: dict[str, Any], body: bytes, timeout_s: float) -> int:
    """One chat completion on its own connection; its HTTP status."""
    if target["unix"]:
        sk = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sk.settimeout(timeout_s)
        sk.connect(target["unix"])
    else:
        sk = socket.create_connection(("127.0.0.1", target["port"]), timeout=timeout_s,
                                      source_address=(target["source"], 0))
    with sk:
        head = ("POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Connection: close\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n")
        sk.sendall(head.encode() + body)
        data = b""
        while chunk := sk.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


def worker(spec: dict[str, Any]) -> None:
    """`concurrency` threads, each sending requests back to back from `start_at` until
    `until` (wall clock); prints [[started_at, latency_s, status], ...] as JSON."""
    out: list[list[float]] = []
    lock = threading.Lock()

    def loop(i: int) -> None:
        rng = random.Random(spec["seed"] + i)
        while time.time() < spec["until"]:
            body = json.dumps({
                "model": spec["model"], "max_tokens": spec["max_tokens"],
                "temperature": 0.8, "calm": {"cache": False},
                "messages": [{"role": "user", "content": rng.choice(QUESTIONS)}]}).encode()
            t0 = time.time()
            try:
                status = request(spec["target"], body, spec["timeout_s"])
            except (OSError, IndexError, ValueError):
                status = 0
            with lock:
                out.append([t0, time.time() - t0, status])
            if status != 200:  # greedy: back after a moment, whatever Retry-After says
                time.sleep(spec["pause_s"] if status == 429 else 0.2)

    delay = spec["start_at"] - time.time()
    if delay > 0:
        time.sleep(delay)
    threads = [threading.Thread(target=loop, args=(i,), daemon=True)
               for i in range(spec["concurrency"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(spec["until"] - time.time() + spec["timeout_s"] + 5)
    print(json.dumps(out))


def start_worker(script: Path, spec: dict[str, Any], as_nobody: bool) -> subprocess.Popen[str]:
    cmd = [sys.executable, str(script), "--worker", json.dumps(spec)]
    kwargs: dict[str, Any] = {}
    if as_nobody:
        setpriv = shutil.which("setpriv")
        if setpriv is not None:
            cmd = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
        else:
            kwargs = {"user": 65534, "group": 65534, "extra_groups": []}
    return subprocess.Popen(cmd, cwd="/", stdout=subprocess.PIPE, text=True, **kwargs)


# -- the daemon -------------------------------------------------------------------------------

def write_fleet(tmp: Path) -> Path:
    from calm_edge.testing.tiny_gguf import write_tiny_gguf

    models = tmp / "models"
    models.mkdir()
    gguf = write_tiny_gguf(models / "tiny-a.gguf")
    data = gguf.read_bytes()
    (tmp / "fleet.toml").write_text(
        f'[[model]]\nname = "tiny-a"\nfile = "tiny-a.gguf"\n'
        f'sha256 = "{hashlib.sha256(data).hexdigest()}"\nsize_bytes = {len(data)}\n'
        "n_ctx = 512\nquality = { code = 0.5, math = 0.5, factual = 0.5, instruct = 0.5, "
        "writing = 0.5 }\n")
    return models


def profile(via: str, port: int, quotas: bool, greedy_quota: dict[str, str]) -> str:
    tcp = f'tcp = "127.0.0.1:{port}"\n' if via == "tcp" else 'socket_mode = "0666"\n'
    text = ('[device]\nname = "bench-quotas"\n[memory]\nram_budget = "256M"\n'
            "[runtime]\nn_threads = 1\nn_batch = 64\nmax_parallel = 1\n"
            f'[server]\nsocket_group = ""\nmax_queue = 64\n{tcp}'
            "[calibration]\nauto = false\n[residency]\nprefetch = false\n")
    if not quotas:
        return text
    greedy, polite = (('user = "nobody"', 'user = "root"') if via == "uid" else
                      (f'tcp = "{GREEDY_ADDR}"', f'tcp = "{POLITE_ADDR}"'))
    extra = "".join(f"{k} = {v}\n" for k, v in greedy_quota.items())
    return text + ("[quotas]\nenabled = true\n"
                   f'[[quotas.client]]\nname = "greedy"\n{greedy}\nmax_queue_share = 0.5\n'
                   f"{extra}"
                   f'[[quotas.client]]\nname = "polite"\n{polite}\n')


def unix_get(sock_path: Path, target: str) -> tuple[int, bytes]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sk:
        sk.settimeout(10)
        sk.connect(str(sock_path))
        sk.sendall(f"GET {target} HTTP/1.1\r\nHost: calm\r\nConnection: close\r\n\r\n"
                   .encode())
        data = b""
        while chunk := sk.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def serve(tmp: Path, name: str, text: str, models: Path) -> tuple[subprocess.Popen[bytes], Path]:
    run = tmp / name
    run.mkdir()
    run.chmod(0o711)  # nobody must reach the socket (--via uid)
    (run / "profile.toml").write_text(text)
    sock = run / "calm.sock"
    proc = subprocess.Popen([sys.executable, "-m", "calm_edge.cli", "serve", "--profile",
                             str(run / "profile.toml"), "--models-dir", str(models),
                             "--fleet", str(tmp / "fleet.toml"), "--socket", str(sock),
                             "--state-dir", str(run / "state"), "--log-level", "error"])
    deadline = time.monotonic() + 60
    while True:
        try:
            if unix_get(sock, "/health")[0] == 200:
                return proc, sock
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"the daemon for run {name!r} did not start")
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return -9


# -- one run ---------------------------------------------------------------------------------

def one_run(args: argparse.Namespace, tmp: Path, models: Path, name: str,
            quotas: bool) -> dict[str, Any]:
    port = _free_port()
    proc, sock = serve(tmp, name, profile(args.via, port, quotas, args.greedy_quota), models)
    try:
        script = Path(__file__).resolve()
        t0 = time.time() + 1.0  # both workers are up by then
        until = t0 + args.warmup + args.seconds
        common = {"model": "tiny-a", "max_tokens": args.max_tokens, "until": until,
                  "timeout_s": args.client_timeout, "pause_s": args.greedy_pause}
        greedy_target = {"unix": str(sock)} if args.via == "uid" else {
            "unix": "", "port": port, "source": GREEDY_ADDR}
        polite_target = {"unix": str(sock)} if args.via == "uid" else {
            "unix": "", "port": port, "source": POLITE_ADDR}
        greedy = start_worker(script, {**common, "target": greedy_target, "seed": 1,
                                       "concurrency": args.greedy, "start_at": t0},
                              as_nobody=args.via == "uid")
        polite = start_worker(script, {**common, "target": polite_target, "seed": 1000,
                                       "concurrency": 1, "start_at": t0 + args.warmup},
                              as_nobody=False)
        g_out, _ = greedy.communicate(timeout=args.seconds + args.warmup + 600)
        p_out, _ = polite.communicate(timeout=args.seconds + 600)
        status = json.loads(unix_get(sock, "/calm/status")[1])
    finally:
        rc = stop(proc)
    g, p = json.loads(g_out or "[]"), json.loads(p_out or "[]")
    measured = t0 + args.warmup
    polite_ok = [lat for start, lat, st in p if st == 200 and start >= measured]
    greedy_ok = [lat for start, lat, st in g if st == 200 and start >= measured]
    shares = {c["client"]: c["last_minute"]["gen_share"]
              for c in (status.get("quotas") or {}).get("clients", [])}
    return {
        "run": name, "quotas": quotas, "daemon_exit": rc,
        "polite": {"answers": len(polite_ok), "errors": sum(1 for _, _, st in p if st != 200),
                   "p50_ms": percentile(polite_ok, 50) * 1000,
                   "p95_ms": percentile(polite_ok, 95) * 1000,
                   "max_ms": max(polite_ok, default=float("nan")) * 1000},
        "greedy": {"answers": len(greedy_ok), "refused_429": sum(1 for _, _, st in g
                                                                if st == 429),
                   "other_errors": sum(1 for _, _, st in g if st not in (200, 429)),
                   "p50_ms": percentile(greedy_ok, 50) * 1000},
        "answers_per_s": (len(polite_ok) + len(greedy_ok)) / args.seconds,
        "gen_share": shares,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(json.loads(sys.argv[2]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=3.0,
                    help="seconds the greedy client runs alone first (not measured)")
    ap.add_argument("--greedy", type=int, default=32, help="the greedy client's concurrency")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--via", choices=("tcp", "uid"), default="tcp",
                    help="tell the clients apart by TCP address, or by uid (needs root)")
    ap.add_argument("--greedy-quota", action="append", default=[], metavar="FIELD=VALUE",
                    help="another [[quotas.client]] field for the greedy client in the "
                    "quotas run, e.g. tokens_per_min=3000 (TOML values)")
    ap.add_argument("--greedy-pause", type=float, default=0.05,
                    help="seconds the greedy client waits after a 429")
    ap.add_argument("--client-timeout", type=float, default=300.0)
    ap.add_argument("--json", type=Path, help="also write the report here")
    args = ap.parse_args()
    if args.via == "uid" and os.geteuid() != 0:
        sys.exit("--via uid needs root (the greedy client runs as nobody)")
    if not 1 <= args.greedy <= 256 or args.seconds <= 0:
        sys.exit("--greedy must be in [1, 256] and --seconds > 0")
    args.greedy_quota = dict(kv.split("=", 1) for kv in args.greedy_quota)

    tmp = Path(tempfile.mkdtemp(prefix="ce-quota-"))
    tmp.chmod(0o711)
    try:
        models = write_fleet(tmp)
        runs = [one_run(args, tmp, models, "off", quotas=False),
                one_run(args, tmp, models, "quotas", quotas=True)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\ntwo clients on tiny models, one generation at a time, {args.seconds:.0f} s "
          f"measured per run (after {args.warmup:.0f} s of warm-up); greedy: {args.greedy} "
          f"at once, polite: one at a time; max_tokens {args.max_tokens}; clients by "
          f"{'uid' if args.via == 'uid' else 'TCP address'}")
    print(f"{'run':<8} {'polite p50':>10} {'p95':>8} {'max':>8} {'answers':>7} │ "
          f"{'greedy answers':>14} {'429s':>6} {'p50':>8} │ {'answers/s':>9}  generation share")
    for r in runs:
        p, g = r["polite"], r["greedy"]
        share = ", ".join(f"{k} {v:.0%}" for k, v in sorted(r["gen_share"].items())) or "-"
        print(f"{r['run']:<8} {p['p50_ms']:>8.0f}ms {p['p95_ms']:>6.0f}ms {p['max_ms']:>6.0f}ms "
              f"{p['answers']:>7} │ {g['answers']:>14} {g['refused_429']:>6} "
              f"{g['p50_ms']:>6.0f}ms │ {r['answers_per_s']:>9.1f}  {share}")
    off, on = runs
    ratio = on["polite"]["p95_ms"] / off["polite"]["p95_ms"] if off["polite"]["p95_ms"] else \
        float("nan")
    print(f"polite client's p95 with quotas: {ratio:.2f}x of without "
          f"({on['polite']['p95_ms']:.0f} ms vs {off['polite']['p95_ms']:.0f} ms)")
    report = {"greedy": args.greedy, "seconds": args.seconds, "max_tokens": args.max_tokens,
              "via": args.via, "greedy_quota": args.greedy_quota, "runs": runs,
              "polite_p95_ratio": ratio}
    print(json.dumps(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    bad = [r["run"] for r in runs if r["daemon_exit"] != 0 or r["polite"]["errors"]
           or r["greedy"]["other_errors"]]
    if bad:
        print(f"problems in run(s): {', '.join(bad)} (daemon exit, or errors other than 429)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
