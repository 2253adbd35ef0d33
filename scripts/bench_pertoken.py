#!/usr/bin/env python3
"""Where one decode step's time goes, per model, from llama.cpp's compute to the daemon.

    .venv/bin/python scripts/bench_pertoken.py [--models a,b] [--tokens 64] [--reps 5]
        [--profile x86-dev] [--threads N] [--no-daemon] [--json out.json]

For each model of the fleet, in one process, with the profile's runtime settings (threads,
n_batch, n_ubatch, mmap), milliseconds per generated token after the first (the prompt is
timed apart) along the path a token takes:

    compute      llama_decode of one token after the prompt, nothing else: llama.cpp's own
                 compute-bound speed for this model and thread count (the reference)
    +greedy      compute + llama.cpp's greedy sampler (llama_sampler_sample fills an
                 n_vocab candidate array per token)
    lcpp         llama-cpp-python's own loop, `Llama.generate` + `detokenize` (what the
                 backend ran before it drove llama.cpp itself)
    backend      calm_edge's LlamaCppBackend.generate, greedy
    backend+conf the same with the chosen tokens' log-probabilities (cascades)
    daemon       a pinned, streamed request to a `calm-edge serve` started by this script:
                 the daemon's own decode figure (worker thread) and the client's (from the
                 first to the last chunk)

Every repetition runs every path of a model once, in turn, so slow phases of a shared
machine hit all paths alike; figures are medians over repetitions. Then the ratios:
each path against `compute`, and each model against the largest one (the cost range the
router has to work with). Greedy answers of `lcpp`, `backend` and the daemon must be the
same tokens: a mismatch is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from calm_edge.backends.base import ChatMessage, GenerationRequest, SamplingParams
from calm_edge.backends.llama_cpp import LlamaCppBackend, build_info, usable_cpus
from calm_edge.bench.daemon import serve_daemon
from calm_edge.config import RuntimeConfig, load_settings
from calm_edge.events import Final
from calm_edge.fleet import ModelSpec, model_path

PROMPT = "Count from 1 to 300, separated by spaces."
PATHS = ("compute", "+greedy", "lcpp", "backend", "backend+conf", "daemon", "daemon@client")


def _llama(path: Path, spec: ModelSpec, rt: RuntimeConfig, threads: int) -> Any:
    import llama_cpp

    with contextlib.redirect_stderr(io.StringIO()):
        return llama_cpp.Llama(model_path=str(path), n_ctx=spec.n_ctx, n_batch=rt.n_batch,
                               n_ubatch=rt.micro_batch, n_threads=threads,
                               n_threads_batch=rt.n_threads_batch or threads,
                               n_gpu_layers=rt.n_gpu_layers, use_mmap=rt.use_mmap,
                               flash_attn=rt.flash_attn, verbose=False)


def _prompt_tokens(backend: LlamaCppBackend, req: GenerationRequest) -> list[int]:
    return backend._prompt_tokens(req)[0]


def time_compute(llm: Any, prompt: list[int], n: int, greedy: bool) -> tuple[float, float]:
    """(wall, CPU) ms per llama_decode of one token after `prompt` (a fixed token, or the
    greedy sampler's choice fed back)."""
    import llama_cpp

    ctx = llm.ctx
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
    arr = (llama_cpp.llama_token * len(prompt))(*prompt)
    if llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(arr, len(prompt))) != 0:
        raise RuntimeError("prompt decode failed")
    chain = None
    if greedy:
        chain = llama_cpp.llama_sampler_chain_init(
            llama_cpp.llama_sampler_chain_default_params())
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
    one = (llama_cpp.llama_token * 1)(prompt[-1])
    batch = llama_cpp.llama_batch_get_one(one, 1)
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            if chain is not None:
                one[0] = llama_cpp.llama_sampler_sample(chain, ctx, -1)
            if llama_cpp.llama_decode(ctx, batch) != 0:
                raise RuntimeError("decode failed")
        return ((time.perf_counter() - t0) * 1000 / n, (time.process_time() - c0) * 1000 / n)
    finally:
        if chain is not None:
            llama_cpp.llama_sampler_free(chain)
        llm.reset()


def time_lcpp(llm: Any, prompt: list[int], n: int) -> tuple[float, float, list[int]]:
    """llama-cpp-python's loop, greedy: (wall, CPU) ms per token after the first, and the
    tokens."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    llm.reset()
    toks: list[int] = []
    t1 = c1 = 0.0
    for tok in llm.generate(prompt, temp=0.0, reset=True):
        if not toks:
            t1, c1 = time.perf_counter(), time.process_time()
        if llama_cpp.llama_vocab_is_eog(vocab, tok):
            break
        llm.detokenize([tok])
        toks.append(tok)
        if len(toks) >= n:
            break
    k = max(1, len(toks) - 1)
    return ((time.perf_counter() - t1) * 1000 / k, (time.process_time() - c1) * 1000 / k,
            toks)


def time_backend(b: LlamaCppBackend, req: GenerationRequest,
                 ) -> tuple[float, float, str]:
    """The backend, from an empty cache: (wall, CPU) ms per token after the first (CPU
    from the first text out), and the text."""
    text: list[str] = []
    stats = None
    c1 = None
    for item in b.generate(req, lambda: False):
        if isinstance(item, Final):
            stats = item.value
            c2 = time.process_time()
        else:
            c1 = time.process_time() if c1 is None else c1
            text.append(item.text)
    assert stats is not None
    b._kv.clear()  # the next run starts from an empty cache too (no prefix reuse)
    import llama_cpp

    llama_cpp.llama_memory_clear(b._mem, True)
    k = max(1, stats.completion_tokens - 1)
    cpu = (c2 - c1) * 1000 / k if c1 is not None else float("nan")
    return (stats.total_s - stats.ttft_s) * 1000 / k, cpu, "".join(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="x86-dev")
    ap.add_argument("--models", help="comma-separated (default: the whole fleet)")
    ap.add_argument("--tokens", type=int, default=64, help="tokens per timed answer")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0,
                    help="decode threads (default: the profile's)")
    ap.add_argument("--no-daemon", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    settings = load_settings(args.profile, cli={})
    from calm_edge.fleet import load_fleet

    fleet = load_fleet(settings.fleet_path)
    names = args.models.split(",") if args.models else [m.name for m in fleet.models]
    specs = [s for s in fleet.models if s.name in names]
    rt = settings.profile.runtime
    threads = args.threads or rt.n_threads or usable_cpus()
    rt = RuntimeConfig(**{**rt.__dict__, "n_threads": threads})
    print(f"{build_info()}\nthreads {threads}, n_batch {rt.n_batch}, n_ubatch "
          f"{rt.micro_batch}, mmap {rt.use_mmap}; {args.tokens} tokens x {args.reps} reps")

    req = GenerationRequest(SamplingParams(max_tokens=args.tokens, temperature=0.0),
                            messages=(ChatMessage("user", PROMPT),))
    conf_req = GenerationRequest(req.params, messages=req.messages, confidence=True)
    # (wall ms, CPU ms) per token, per model and path, one pair per repetition.
    runs: dict[str, dict[str, list[tuple[float, float]]]] = {
        s.name: {p: [] for p in PATHS} for s in specs}
    answers: dict[str, dict[str, Any]] = {s.name: {} for s in specs}

    daemon_cm: Any = contextlib.nullcontext()
    state = Path(tempfile.mkdtemp(prefix="bench-pertoken-"))
    if not args.no_daemon:
        os.environ["CALM_EDGE_RUNTIME_N_THREADS"] = str(threads)  # the same as the paths above
        budget = sum(s.size_bytes for s in specs) * 2 + (1 << 30)
        daemon_cm = serve_daemon(sys.executable, [
            "--profile", args.profile, "--state-dir", str(state), "--ram-budget",
            str(budget), "--models-dir", str(settings.models_dir)],
            state / "serve.log", ready_timeout_s=120, request_timeout_s=600)
    with daemon_cm as daemon:
        for spec in specs:
            path = model_path(settings.models_dir, spec)
            print(f"==> {spec.name}", flush=True)
            llm = _llama(path, spec, rt, threads)
            b = LlamaCppBackend(spec, path, rt)
            prompt = _prompt_tokens(b, req)
            if daemon is not None:
                body = {"model": spec.name, "max_tokens": args.tokens, "temperature": 0.0,
                        "stream": False, "messages": [{"role": "user", "content": "hi"}],
                        "calm": {"cache": False}}
                daemon.client.post("/v1/chat/completions", {**body, "max_tokens": 1})
            try:
                for _ in range(args.reps):
                    r, a = runs[spec.name], answers[spec.name]
                    r["compute"].append(time_compute(llm, prompt, args.tokens, False))
                    r["+greedy"].append(time_compute(llm, prompt, args.tokens, True))
                    wall, cpu, toks = time_lcpp(llm, prompt, args.tokens)
                    r["lcpp"].append((wall, cpu))
                    text = llm.detokenize(toks).decode(errors="replace")
                    # The backend drops a completion model's leading blank after a chat
                    # prompt rendered as "Question: ...\nAnswer:"; compare like for like.
                    a["lcpp"] = text.lstrip() if spec.format == "completion" else text
                    wall, cpu, a["backend"] = time_backend(b, req)
                    r["backend"].append((wall, cpu))
                    r["backend+conf"].append(time_backend(b, conf_req)[:2])
                    if daemon is not None:
                        d, c, a["daemon"] = _daemon_once(daemon, spec.name, args.tokens)
                        r["daemon"].append(d)
                        r["daemon@client"].append(c)
            finally:
                b.close()
                llm.close()
            if daemon is not None:
                daemon.client.post(f"/calm/models/{spec.name}/unload", {})
    report(specs, runs, answers)
    if args.json:
        args.json.write_text(json.dumps({
            "build": build_info(), "threads": threads, "tokens": args.tokens,
            "reps": args.reps, "runs": runs, "answers": answers}, indent=2))
    return 0


def _cpu_ms(pid: int) -> float:
    """CPU time (user + system, all threads) of process `pid` so far, in ms."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def _daemon_once(daemon: Any, model: str, tokens: int,
                 ) -> tuple[tuple[float, float], tuple[float, float], str]:
    """One streamed, pinned request: ((the daemon's decode ms/token, the daemon process's
    CPU ms/token over the whole request), (the client's ms/token, nan), text)."""
    body = {"model": model, "max_tokens": tokens, "temperature": 0.0, "stream": True,
            "messages": [{"role": "user", "content": PROMPT}], "calm": {"cache": False}}
    client = daemon.client
    client.close()
    stamps: list[float] = []
    parts: list[str] = []
    calm: dict[str, Any] = {}
    c0 = _cpu_ms(daemon.proc.pid)
    for event in client.stream("/v1/chat/completions", body):
        for ch in event.get("choices") or ():
            text = (ch.get("delta") or {}).get("content")
            if text:
                stamps.append(time.perf_counter())
                parts.append(text)
        if isinstance(event.get("calm"), dict):
            calm = event["calm"]
    cpu = _cpu_ms(daemon.proc.pid) - c0
    n = int(calm.get("completion_tokens") or 0)
    tok_s = float(calm.get("decode_tokens_per_s") or 0.0)
    nan = float("nan")
    daemon_ms = 1000.0 / tok_s if tok_s else nan
    # The client sees chunks (the relay coalesces tokens): first chunk to last, over the
    # tokens after the first.
    client_ms = ((stamps[-1] - stamps[0]) * 1000 / (n - 1)
                 if len(stamps) > 1 and n > 1 else nan)
    return (daemon_ms, cpu / n if n else nan), (client_ms, nan), "".join(parts)


def _table(title: str, specs: list[ModelSpec], paths: list[str],
           cell: Any, width: int, extra: Any = None) -> None:
    print(f"\n{title}")
    head = f"{'model':<{width}}  " + (f"{'weights':>9}  " if extra else "")
    print(head + "  ".join(f"{p:>13}" for p in paths))
    for s in specs:
        row = f"{s.name:<{width}}  " + (f"{extra(s):>9}  " if extra else "")
        print(row + "  ".join(f"{cell(s, p):>13}" for p in paths))


def report(specs: list[ModelSpec], runs: dict[str, dict[str, list[tuple[float, float]]]],
           answers: dict[str, dict[str, Any]]) -> None:
    def med(name: str, path: str, i: int) -> float:
        vals = [v[i] for v in runs[name][path] if v[i] == v[i]]
        return statistics.median(vals) if vals else float("nan")

    paths = [p for p in PATHS if any(runs[s.name][p] for s in specs)]
    w = max(len(s.name) for s in specs)
    largest = max(specs, key=lambda s: s.size_bytes)
    for i, kind in ((0, "wall"), (1, "CPU (all threads)")):
        _table(f"{kind} ms per token (median over repetitions)", specs, paths,
               lambda s, p, i=i: f"{med(s.name, p, i):.2f}", w)
    _table("speed as a share of llama.cpp's compute (wall: compute ms / path ms)", specs,
           paths, lambda s, p: f"{med(s.name, 'compute', 0) / med(s.name, p, 0):.3f}", w)
    _table(f"wall time per token against {largest.name} (same path, same run)", specs, paths,
           lambda s, p: f"{med(s.name, p, 0) / med(largest.name, p, 0):.3f}x", w,
           extra=lambda s: f"{s.size_bytes / largest.size_bytes:.2f}x")
    for s in specs:
        a = answers[s.name]
        same = {k: v == a.get("backend") for k, v in a.items()}
        if not all(same.values()):
            print(f"\n{s.name}: greedy answers differ between paths: "
                  + ", ".join(f"{k} {'=' if v else '!='} backend" for k, v in same.items()))
            for k, v in a.items():
                print(f"  {k}: {v[:120]!r}")


if __name__ == "__main__":
    sys.exit(main())
