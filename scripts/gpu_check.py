#!/usr/bin/env python3
"""GPU check: the daemon on a CUDA build of llama-cpp-python against raw llama-cpp-python.

    python scripts/gpu_check.py --out DIR [--tokens 256] [--layers 8 --dim 2048]
    python scripts/gpu_check.py --smoke --out DIR     # CPU, a tiny model: checks the script

Writes a random f32 GGUF with calm_edge.testing (no model download), then:
1. raw: a fresh process loads it with every layer offloaded (`n_gpu_layers=-1`) and decodes
   greedily with llama-cpp-python's `Llama.generate`, then times bare one-token
   `llama_decode` calls (llama.cpp's own speed, "compute"). It prints whether the build
   supports GPU offload and how many layers llama.cpp says it offloaded, so a raw run that
   silently stayed on the CPU shows itself;
2. daemon: `calm-edge serve` with the jetson-agx-orin-64gb profile (every layer offloaded,
   GPU memory measured through NVML on a discrete GPU), one streamed request of the same
   prompt and length; decode tok/s from the daemon's own statistics and at the client;
3. unload: GPU memory (nvidia-smi) before the load, after it, and after
   POST /calm/models/<name>/unload;
4. accounting: the memory the daemon charged the model against what nvidia-smi saw.
Prints a table and writes gpu_check.json to --out. Exit status 1 when a check fails.
Targets: daemon decode >= 0.97 x raw llama-cpp-python, >= 0.95 x compute (issue 22).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PROMPT = "the capital of France is"

RAW = r"""
import json, sys, time, io, contextlib
import llama_cpp
path, tokens, layers, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[5])
err = io.StringIO()
t0 = time.monotonic()
with contextlib.redirect_stderr(err):
    llm = llama_cpp.Llama(model_path=path, n_ctx=1024, n_batch=256, n_gpu_layers=layers,
                          n_threads=threads, flash_attn=False, verbose=True)
load_s = time.monotonic() - t0
prompt = llm.tokenize(sys.argv[4].encode(), add_bos=True)
n, ttft, t0 = 0, 0.0, time.monotonic()
for tok in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
    if n == 0:
        ttft = time.monotonic() - t0
    if llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(llm.model), tok):
        break
    n += 1
    if n >= tokens:
        break
total = time.monotonic() - t0
# llama.cpp's own speed: one-token llama_decode calls after the prompt, nothing else.
ctx = llm.ctx
llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
arr = (llama_cpp.llama_token * len(prompt))(*prompt)
assert llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(arr, len(prompt))) == 0
one = (llama_cpp.llama_token * 1)(prompt[-1])
batch = llama_cpp.llama_batch_get_one(one, 1)
assert llama_cpp.llama_decode(ctx, batch) == 0
llama_cpp.llama_get_logits_ith(ctx, -1)
n_dec = max(n - 1, 8)
c0 = time.monotonic()
for _ in range(n_dec):
    assert llama_cpp.llama_decode(ctx, batch) == 0
    llama_cpp.llama_get_logits_ith(ctx, -1)  # waits for the step, as a sampler would
compute_tok_s = n_dec / (time.monotonic() - c0)
offload = [ln.strip() for ln in err.getvalue().splitlines() if "offload" in ln.lower()]
print(json.dumps({"tokens": n, "ttft_s": ttft, "total_s": total, "load_s": load_s,
                  "decode_tok_s": (n - 1) / (total - ttft) if n > 1 else 0.0,
                  "compute_tok_s": compute_tok_s,
                  "gpu_offload_supported": bool(llama_cpp.llama_supports_gpu_offload()),
                  "offload_log": offload[-4:],
                  "system_info": llama_cpp.llama_print_system_info().decode()}))
"""


def nvidia_smi_used_mib() -> float | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used",
                              "--format=csv,noheader,nounits"], capture_output=True,
                             text=True, timeout=30, check=True).stdout
        return float(out.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_fleet(work: Path, model: Path, name: str) -> Path:
    fleet = work / "fleet.toml"
    fleet.write_text(f"""version = 1
default_model = "{name}"
[[model]]
name = "{name}"
file = "{model.name}"
sha256 = "{sha256(model)}"
size_bytes = {model.stat().st_size}
n_ctx = 1024
format = "completion"
stop = []
quality = {{ factual = 0.5 }}
""")
    return fleet


def run_raw(model: Path, tokens: int, layers: int, threads: int) -> dict[str, Any]:
    r = subprocess.run([sys.executable, "-c", RAW, str(model), str(tokens), str(layers),
                        PROMPT, str(threads)], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"raw llama-cpp-python failed ({r.returncode}):\n{r.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return result


def run_daemon(work: Path, fleet: Path, name: str, tokens: int, profile: str,
               env_extra: dict[str, str]) -> dict[str, Any]:
    import httpx

    sock = Path(tempfile.mkdtemp(prefix="gc-", dir="/tmp")) / "c.sock"
    env = {**os.environ, "CALM_EDGE_PROFILE": profile, "CALM_EDGE_SOCKET": str(sock),
           "CALM_EDGE_STATE_DIR": str(work / "state"), "CALM_EDGE_MODELS_DIR": str(work),
           "CALM_EDGE_FLEET": str(fleet), "CALM_EDGE_CACHE_ENABLED": "false",
           "CALM_EDGE_CALIBRATION_AUTO": "false", "CALM_EDGE_RUNTIME_FLASH_ATTN": "false",
           "CALM_EDGE_RESIDENCY_PREFETCH": "false", **env_extra}
    log = (work / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "calm_edge.cli", "serve", "--log-level",
                             "info"], env=env, stdout=log, stderr=subprocess.STDOUT)
    out: dict[str, Any] = {}
    try:
        return _drive_daemon(proc, http_for(sock), sock, work, name, tokens, out)
    except httpx.HTTPError as e:
        proc.poll()
        raise SystemExit(f"the daemon failed ({type(e).__name__}: {e}; exit status "
                         f"{proc.returncode}); its log ends:\n"
                         + "\n".join((work / "serve.log").read_text(errors="replace")
                                      .splitlines()[-40:])) from None
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(60)
        log.close()
        shutil.rmtree(sock.parent, ignore_errors=True)


def http_for(sock: Path) -> Any:
    import httpx

    return httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://calm",
                        timeout=600)


def _drive_daemon(proc: subprocess.Popen[Any], http: Any, sock: Path, work: Path, name: str,
                  tokens: int, out: dict[str, Any]) -> dict[str, Any]:
    """Load, one streamed answer, status, unload: what run_daemon reports."""
    deadline = time.monotonic() + 120
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the daemon did not start:\n{(work / 'serve.log').read_text()}")
        time.sleep(0.2)
    out["gpu_mib_before_load"] = nvidia_smi_used_mib()
    r = http.post(f"/calm/models/{name}/load")
    r.raise_for_status()
    out["gpu_mib_loaded"] = nvidia_smi_used_mib()
    body = {"model": name, "prompt": PROMPT, "max_tokens": tokens, "temperature": 0,
            "stream": True}
    t0, first, n_chunks = time.monotonic(), None, 0
    calm: dict[str, Any] = {}
    with http.stream("POST", "/v1/completions", json=body) as resp:
        for line in resp.iter_lines():
            if not line.startswith("data:") or line.endswith("[DONE]"):
                continue
            event = json.loads(line[5:])
            if first is None:
                first = time.monotonic()
            n_chunks += 1
            calm = event.get("calm", calm)
    total = time.monotonic() - t0
    out.update({"daemon": calm, "client_total_s": total,
                "client_ttft_s": (first or t0) - t0, "chunks": n_chunks})
    st = http.get("/calm/status").json()
    m = next(x for x in st["models"] if x["name"] == name)
    out["status_model"] = {k: m.get(k) for k in ("estimated_bytes", "measured_bytes",
                                                 "charged_bytes", "memory_source")}
    r = http.post(f"/calm/models/{name}/unload")
    r.raise_for_status()
    time.sleep(1.0)
    out["gpu_mib_unloaded"] = nvidia_smi_used_mib()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--layers", type=int, default=8, help="model layers (random f32)")
    ap.add_argument("--dim", type=int, default=2048, help="model width")
    ap.add_argument("--profile", default="jetson-agx-orin-64gb")
    ap.add_argument("--memory-source", default="nvml",
                    help="the daemon's memory.gpu_memory_source (auto, nvml, memavailable, none)")
    ap.add_argument("--smoke", action="store_true", help="CPU only, a tiny model: test the "
                    "script where there is no GPU")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from calm_edge.testing.tiny_gguf import write_tiny_gguf

    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    name = "random-f32"
    model = work / f"{name}.gguf"
    layers, dim = (2, 64) if args.smoke else (args.layers, args.dim)
    t0 = time.monotonic()
    write_tiny_gguf(model, n_ctx=1024, n_layer=layers, n_embd=dim, n_head=max(dim // 128, 4),
                    n_ff=dim * 11 // 4, chat_template=None)
    size_mib = model.stat().st_size / (1 << 20)
    print(f"model: {layers} layers x {dim}, {size_mib:.0f} MiB f32 "
          f"(written in {time.monotonic() - t0:.0f} s)", flush=True)
    fleet = write_fleet(work, model, name)
    gpu_layers = 0 if args.smoke else -1
    env_extra = {"CALM_EDGE_MEMORY_GPU_MEMORY_SOURCE": args.memory_source}
    if args.smoke:
        env_extra["CALM_EDGE_RUNTIME_N_GPU_LAYERS"] = "0"
    # The daemon's decode threads, so that both sides run llama.cpp alike.
    from calm_edge.backends.llama_cpp import usable_cpus
    from calm_edge.config import load_settings

    profile = "x86-dev" if args.smoke else args.profile
    threads = load_settings(profile).profile.runtime.n_threads or usable_cpus()
    raw = run_raw(model, args.tokens, gpu_layers, threads)
    print(f"raw:    {raw['tokens']} tokens, {raw['decode_tok_s']:.1f} tok/s (GPU offload "
          f"supported: {raw['gpu_offload_supported']}; {raw['offload_log']}); compute "
          f"{raw['compute_tok_s']:.1f} tok/s", flush=True)
    daemon = run_daemon(work, fleet, name, args.tokens, profile,
                        {**env_extra, "CALM_EDGE_RUNTIME_N_THREADS": str(threads)})
    d = daemon["daemon"]
    ratio = d.get("decode_tokens_per_s", 0.0) / raw["decode_tok_s"] if raw["decode_tok_s"] \
        else 0.0
    vs_compute = d.get("decode_tokens_per_s", 0.0) / raw["compute_tok_s"] \
        if raw["compute_tok_s"] else 0.0
    print(f"daemon: {d.get('completion_tokens')} tokens, {d.get('decode_tokens_per_s')} tok/s "
          f"-> {ratio:.3f} x raw (target >= 0.97), {vs_compute:.3f} x compute (target >= "
          "0.95)")
    before, loaded, unloaded = (daemon.get("gpu_mib_before_load"), daemon.get("gpu_mib_loaded"),
                                daemon.get("gpu_mib_unloaded"))
    sm = daemon["status_model"]
    print(f"GPU memory (nvidia-smi, MiB): before load {before}, loaded {loaded}, after unload "
          f"{unloaded}")
    print(f"charged: estimate {sm['estimated_bytes']}, measured {sm['measured_bytes']} "
          f"({sm['memory_source']}), charged {sm['charged_bytes']}")
    checks = {"decode_ratio_ge_0.97": ratio >= 0.97,
              "decode_vs_compute_ge_0.95": vs_compute >= 0.95,
              "same_tokens": d.get("completion_tokens") == raw["tokens"]}
    if not args.smoke:
        checks["raw_offloaded"] = raw["gpu_offload_supported"]
        if before is not None and loaded is not None and unloaded is not None:
            grew = (loaded - before) * (1 << 20)
            checks["unload_returns_gpu_memory"] = unloaded - before < 0.1 * (loaded - before)
            checks["charged_covers_gpu_memory"] = (sm["charged_bytes"] or 0) >= 0.9 * grew
    for k, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {k}")
    report = {"model_mib": size_mib, "layers": layers, "dim": dim, "raw": raw,
              "daemon": daemon, "ratio": ratio, "vs_compute": vs_compute, "checks": checks}
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    shutil.copy(work / "serve.log", args.out / "serve.log")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
