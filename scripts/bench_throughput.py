#!/usr/bin/env python3
"""Decode throughput through the daemon vs raw llama-cpp-python, side by side in one run.

Starts `calm-edge serve` as a subprocess on a private socket, then alternates: one greedy
generation with raw `llama_cpp.Llama.create_completion(stream=True)` in this process, one
through the daemon's `/v1/completions` (streamed over the Unix socket, timed at the
client). Same model file, prompt, threads, batch and max_tokens; greedy decoding, so both
produce the same tokens. Decode tokens/s = (tokens - 1) / (time of last token - time of
first token), i.e. prompt processing excluded. Reports medians and the ratio.

    python scripts/bench_throughput.py [--model smollm2-135m] [--runs 5] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from calm_edge.backends.llama_cpp import usable_cpus
from calm_edge.client import Client
from calm_edge.config import load_settings
from calm_edge.fleet import FileStatus, load_fleet, model_path, verify

PROMPT = "Once upon a time, in a small village at the edge of a great forest, there lived"


def raw_run(llm: object, max_tokens: int) -> tuple[float, int]:
    t_first = t_last = 0.0
    n = 0
    for _chunk in llm.create_completion(PROMPT, max_tokens=max_tokens, temperature=0.0,  # type: ignore[attr-defined]
                                        stream=True):
        now = time.perf_counter()
        if n == 0:
            t_first = now
        t_last = now
        n += 1
    return (n - 1) / (t_last - t_first), n


def daemon_run(client: Client, model: str, max_tokens: int) -> tuple[float, int]:
    t_first = t_last = 0.0
    n_chunks = 0
    tokens = 0
    for event in client.stream("/v1/completions", {
            "model": model, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0.0,
            "stream": True, "calm": {"cache": False}}):  # every run decodes
        now = time.perf_counter()
        if event["choices"] and event["choices"][0].get("text"):
            if n_chunks == 0:
                t_first = now
            t_last = now
            n_chunks += 1
        if "calm" in event:
            tokens = event["calm"]["completion_tokens"]
    # Chunks are tokens except where stop handling merges them; use the exact token count.
    return (tokens - 1) / (t_last - t_first), tokens


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--profile", default="x86-dev")
    args = ap.parse_args()

    settings = load_settings(args.profile)
    fleet = load_fleet(settings.fleet_path)
    spec = fleet.get(args.model)
    if spec is None:
        sys.exit(f"unknown model {args.model}")
    if verify(settings.models_dir, spec) is not FileStatus.VERIFIED:
        sys.exit(f"{args.model} is not installed: calm-edge models pull {args.model}")
    rt = settings.profile.runtime
    n_threads = rt.n_threads or usable_cpus()

    tmp = Path(tempfile.mkdtemp(prefix="ce-bench-"))
    sock = tmp / "calm.sock"
    env = {**os.environ, "CALM_EDGE_LOG_LEVEL": "warning", "CALM_EDGE_CALIBRATION_AUTO": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "calm_edge.cli", "serve", "--profile",
                             args.profile, "--socket", str(sock), "--state-dir", str(tmp)],
                            env=env)
    try:
        deadline = time.monotonic() + 60
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit("daemon did not start")
            time.sleep(0.1)
        client = Client(sock)
        daemon_run(client, args.model, 8)  # load + warm up

        import llama_cpp

        llm = llama_cpp.Llama(str(model_path(settings.models_dir, spec)), n_ctx=spec.n_ctx,
                              n_batch=rt.n_batch, n_ubatch=rt.n_batch, n_threads=n_threads,
                              n_threads_batch=n_threads, verbose=False)
        raw_run(llm, 8)  # warm up

        raw, via = [], []
        for i in range(args.runs):
            r, rn = raw_run(llm, args.max_tokens)
            d, dn = daemon_run(client, args.model, args.max_tokens)
            raw.append(r)
            via.append(d)
            print(f"run {i + 1}: raw {r:7.1f} tok/s ({rn} tokens)   daemon {d:7.1f} tok/s "
                  f"({dn} tokens)", flush=True)
        llm.close()
        client.close()
        r_med, d_med = statistics.median(raw), statistics.median(via)
        result = {"model": args.model, "runs": args.runs, "max_tokens": args.max_tokens,
                  "n_threads": n_threads, "raw_decode_tok_s": round(r_med, 2),
                  "daemon_decode_tok_s": round(d_med, 2), "ratio": round(d_med / r_med, 4)}
        print(f"decode tokens/s ({args.model}, median of {args.runs}): daemon {d_med:.1f} vs "
              f"raw llama-cpp-python {r_med:.1f} -> {100 * d_med / r_med:.1f}% "
              f"(target >= 97%)")
        print(json.dumps(result))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
