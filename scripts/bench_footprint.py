#!/usr/bin/env python3
"""Footprint levers, per model of the fleet, each in a fresh process.

    .venv/bin/python scripts/bench_footprint.py [--models a,b] [--levers base,nommap,...]
        [--decode 64] [--repeat 3] [--json out.json]

For each (model, lever): load time, RSS after load, peak RSS (VmHWM) after a ~200-token
prompt and a greedy answer, prefill and decode tokens/s, the estimate
(calm_edge.fleet.model_footprint) for the lever's settings, and whether the greedy
answer's tokens equal the baseline's. Levers, each on top of `base` (the profile's threads
and n_batch 256, the manifest's n_ctx, f16 KV):

    base      mmap, n_ubatch = n_batch (before issue 16)
    nommap    use_mmap=False: repacked tensors are read into their repacked buffer only
    ubatch64  n_ubatch=64: the graph's logits buffer is n_ubatch x n_vocab floats
    ubatch128 n_ubatch=128
    ctx1024   n_ctx=1024: half the KV cache
    kvq8      q8_0 K and V cache (needs flash attention)
    combined  nommap + ubatch64 + ctx1024
    shipped   nommap + ubatch128 (the x86-dev profile)

Measured side by side in one run: each repetition runs every lever of a model once, in
turn, and speeds are the median over repetitions (single runs vary by +-10% on a shared
2-core VM). Decode speed must stay within 3% of base.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

LEVERS: dict[str, dict[str, Any]] = {
    "base": {"use_mmap": True},
    "nommap": {"use_mmap": False},
    "ubatch64": {"n_ubatch": 64},
    "ubatch128": {"n_ubatch": 128},
    "ctx1024": {"n_ctx": 1024},
    "kvq8": {"type_k": 8, "type_v": 8, "flash_attn": True},
    "combined": {"use_mmap": False, "n_ubatch": 64, "n_ctx": 1024},
    "shipped": {"use_mmap": False, "n_ubatch": 128},
}

PROMPT = ("Here is a short passage. " + "The quick brown fox jumps over the lazy dog. " * 18
          + "\nSummarize the passage in one sentence, then write a Python function that "
            "counts the words in a string.")

CHILD = r"""
import json, os, sys, time, contextlib, io
import llama_cpp
from calm_edge.memory import process_rss_bytes

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0

path, kw, prompt, n_decode = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4])
rss0 = process_rss_bytes()
t0 = time.monotonic()
threads = len(os.sched_getaffinity(0))
with contextlib.redirect_stderr(io.StringIO()):
    llm = llama_cpp.Llama(model_path=path, n_threads=threads, n_threads_batch=threads,
                          verbose=False, **kw)
load_s = time.monotonic() - t0
rss_load = process_rss_bytes()
toks = llm.tokenize(prompt.encode(), add_bos=True)
vocab = llama_cpp.llama_model_get_vocab(llm.model)
out, ttft = [], 0.0
t0 = time.monotonic()
for tok in llm.generate(toks, temp=0.0, top_k=1, reset=True):
    if not out:
        ttft = time.monotonic() - t0
    if llama_cpp.llama_vocab_is_eog(vocab, tok):
        break
    out.append(tok)
    if len(out) >= n_decode:
        break
total = time.monotonic() - t0
print(json.dumps({"load_s": load_s, "rss_load": rss_load - rss0,
                  "rss_after": process_rss_bytes() - rss0, "peak": hwm() - rss0,
                  "prompt_tokens": len(toks), "prefill_tok_s": len(toks) / ttft,
                  "decode_tok_s": (len(out) - 1) / (total - ttft) if len(out) > 1 else 0.0,
                  "tokens": out}))
"""


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the repetitions (tokens from the first)."""
    out = dict(runs[0])
    for key in ("load_s", "rss_load", "rss_after", "peak", "prefill_tok_s", "decode_tok_s"):
        out[key] = statistics.median(r[key] for r in runs)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="x86-dev")
    ap.add_argument("--models", help="comma-separated (default: the whole fleet)")
    ap.add_argument("--levers", default=",".join(LEVERS))
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from calm_edge.config import load_settings
    from calm_edge.fleet import load_fleet, model_path
    from calm_edge.gguf_meta import estimate_footprint, read_gguf
    from calm_edge.units import format_bytes

    s = load_settings(args.profile)
    rt = s.profile.runtime
    fleet = load_fleet(s.fleet_path)
    names = args.models.split(",") if args.models else [m.name for m in fleet.models]
    rows: list[dict[str, Any]] = []
    print(f"{'model':<20} {'lever':<9} {'estimate':>10} {'RSS load':>10} {'peak':>10} "
          f"{'load s':>7} {'prefill/s':>9} {'decode/s':>9} {'vs base':>8} same")
    for name in names:
        spec = fleet.by_name[name]
        path = model_path(s.models_dir, spec)
        info = read_gguf(path)
        levers = args.levers.split(",")
        runs: dict[str, list[dict[str, Any]]] = {lv: [] for lv in levers}
        settings: dict[str, dict[str, Any]] = {}
        for _ in range(args.repeat):
            for lever in levers:
                kw = {"n_ctx": spec.n_ctx, "n_batch": rt.n_batch, "n_ubatch": rt.n_batch,
                      "use_mmap": True, "flash_attn": rt.flash_attn, **LEVERS[lever]}
                settings[lever] = kw
                r = subprocess.run([sys.executable, "-c", CHILD, str(path), json.dumps(kw),
                                    PROMPT, str(args.decode)], capture_output=True, text=True,
                                   timeout=900)
                if r.returncode != 0:
                    print(f"{name:<20} {lever:<9} failed: {r.stderr.strip()[-300:]}")
                    continue
                runs[lever].append(json.loads(r.stdout.strip().splitlines()[-1]))
        base = _median_run(runs[levers[0]])
        for lever in levers:
            if not runs[lever]:
                continue
            kw = settings[lever]
            est = estimate_footprint(info, kw["n_ctx"], kw["n_ubatch"],
                                     cpu_repack=rt.n_gpu_layers == 0,
                                     kv_bytes_per_elem=1 if kw.get("type_k") == 8 else 2,
                                     mmap=kw["use_mmap"])
            m = _median_run(runs[lever])
            ratio = m["decode_tok_s"] / base["decode_tok_s"] if base["decode_tok_s"] else 0.0
            same = all(x["tokens"] == runs[levers[0]][0]["tokens"] for x in runs[lever])
            print(f"{name:<20} {lever:<9} {format_bytes(est.total_bytes):>10} "
                  f"{format_bytes(m['rss_load']):>10} {format_bytes(m['peak']):>10} "
                  f"{m['load_s']:>7.2f} {m['prefill_tok_s']:>9.0f} {m['decode_tok_s']:>9.1f} "
                  f"{ratio:>7.2f}x {'yes' if same else 'NO'}", flush=True)
            rows.append({"model": name, "lever": lever, "settings": kw,
                         "estimate_bytes": est.total_bytes, "ratio_decode": ratio,
                         "same_tokens": same, "repeats": len(runs[lever]),
                         **{k: v for k, v in m.items() if k != "tokens"}})
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
