#!/usr/bin/env python3
"""Label the outcome corpus: run fleet models on every query, grade, record pass/fail.

    .venv/bin/python scripts/label_outcomes.py                          # the whole fleet
    .venv/bin/python scripts/label_outcomes.py --models smollm2-135m,gemma3-270m
    .venv/bin/python scripts/label_outcomes.py --models qwen2.5-coder-1.5b \\
        --limit-per-domain 20 --time-budget-min 60

Starts one `calm-edge serve` subprocess (profile x86-dev by default, a private socket and
state directory in a temp dir, `--log-level warning`), then for each model of `--models`
asks every selected query of models/router/outcome_corpus.jsonl pinned to that model
(chat completion, not streamed, temperature 0, the query's max_tokens, `calm.cache` false),
grades the reply with calm_edge.bench.graders and appends one JSON line to
models/router/outcomes.jsonl, flushed at once:

    {"query_id", "model", "domain", "passed", "detail", "latency_ms", "completion_tokens",
     "prompt_tokens", "finish_reason", "ts"}

latency_ms is measured at the client (request sent -> whole answer received) after a
warm-up request has loaded the model; a request the daemon refuses (e.g. a prompt longer
than the context) is recorded as failed with `error`. Resumable: (query, model) pairs already
in the output are skipped, so rerunning after an interruption continues where it stopped.
Queries go out in domain-interleaved order (calm_edge.bench.workload.arrange, "steady"), so a
run cut short by --time-budget-min still covers the domains evenly. `--replies FILE` also
appends each raw reply (for inspection; not meant to be committed).

Blocking; one request in flight at a time. The script owns its daemon and stops it
(SIGTERM, then SIGKILL) however it ends.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from calm_edge.bench import graders
from calm_edge.bench.runner import BenchError, Progress, log_tail, stop_process, wait_ready
from calm_edge.bench.workload import Query, arrange, load_workload, select
from calm_edge.client import Client, ClientError

ROOT = Path(__file__).resolve().parent.parent
ROUTER_DIR = ROOT / "models" / "router"
DEFAULT_CORPUS = ROUTER_DIR / "outcome_corpus.jsonl"
DEFAULT_OUT = ROUTER_DIR / "outcomes.jsonl"
DEFAULT_MODELS = ("smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
READY_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 1800.0
WARM_UP_TEXT = "Reply with the word ready."  # unlike any corpus query (no KV-prefix reuse)


class LabelError(RuntimeError):
    pass


# -- the outcomes file -------------------------------------------------------------------------

def read_outcomes(path: Path) -> list[dict[str, Any]]:
    """The records of an outcomes file ([] if absent). A malformed line (a write cut short
    by a crash) is skipped with a warning: its pair is simply asked again."""
    if not path.exists():
        return []
    out: list[dict[str, Any]] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            str(rec["query_id"]), str(rec["model"]), bool(rec["passed"])
        except (ValueError, KeyError, TypeError):
            print(f"warning: {path}:{n}: skipping a malformed line", file=sys.stderr)
            continue
        out.append(rec)
    return out


def done_pairs(records: Sequence[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(str(r["query_id"]), str(r["model"])) for r in records}


def pending_for(model: str, queries: Sequence[Query], done: set[tuple[str, str]],
                ) -> list[Query]:
    return [q for q in queries if (q.id, model) not in done]


# -- the daemon --------------------------------------------------------------------------------

@dataclass
class Daemon:
    client: Client
    proc: subprocess.Popen[bytes]

    def alive(self) -> bool:
        return self.proc.poll() is None


@contextmanager
def daemon(profile: str, python: str, log: TextIO) -> Iterator[Daemon]:
    """Run `calm-edge serve` on a private socket and state dir until the block ends."""
    tmp = Path(tempfile.mkdtemp(prefix="ceo-", dir="/tmp"))  # short: sun_path limit
    sock, state, log_path = tmp / "calm.sock", tmp / "state", tmp / "serve.log"
    cmd = [python, "-m", "calm_edge.cli", "serve", "--profile", profile, "--socket", str(sock),
           "--state-dir", str(state), "--log-level", "warning"]
    with log_path.open("wb") as f:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=f,
                                start_new_session=True,
                                env={**os.environ, "CALM_EDGE_CALIBRATION_AUTO": "false"})
    client = Client(sock, timeout_s=REQUEST_TIMEOUT_S)
    try:
        try:
            wait_ready(proc, client, READY_TIMEOUT_S, log_path)
        except BenchError as e:
            raise LabelError(str(e)) from None
        print(f"daemon ready (pid {proc.pid}, {sock})", file=log)
        yield Daemon(client, proc)
    except BaseException:
        if proc.poll() is not None:
            print(f"daemon log:\n{log_tail(log_path)}", file=sys.stderr)
        raise
    finally:
        client.close()
        stop_process(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def ask(client: Client, model: str, q: Query) -> tuple[str, dict[str, Any], float]:
    """(reply text, response JSON, client latency ms). Raises ClientError."""
    body: dict[str, Any] = {"model": model, "max_tokens": q.max_tokens, "temperature": 0.0,
                            "stream": False, "calm": {"cache": False}}
    if q.messages is not None:
        path = "/v1/chat/completions"
        body["messages"] = [dict(m) for m in q.messages]
    else:
        path = "/v1/completions"
        body["prompt"] = q.prompt
    t0 = time.perf_counter()
    resp: dict[str, Any] = client.post(path, body)
    latency_ms = (time.perf_counter() - t0) * 1000.0
    choice = (resp.get("choices") or [{}])[0]
    text = (choice.get("message") or {}).get("content") if q.messages is not None \
        else choice.get("text")
    return str(text or ""), resp, latency_ms


def label_one(client: Client, model: str, q: Query, alive: Callable[[], bool],
              ) -> tuple[dict[str, Any], str]:
    """Ask, grade, and build the record (and the reply). A refused request is a failed
    record; a dead daemon raises LabelError."""
    rec: dict[str, Any] = {"query_id": q.id, "model": model, "domain": q.domain}
    try:
        text, resp, latency_ms = ask(client, model, q)
    except ClientError as e:
        if not alive():
            raise LabelError(f"the daemon died during {model} / {q.id}: {e}") from None
        rec.update(passed=False, detail="request failed", error=str(e)[:300], latency_ms=None,
                   completion_tokens=None, prompt_tokens=None, finish_reason=None,
                   ts=round(time.time(), 3))
        return rec, ""
    passed, detail = graders.grade(q.grader, text, q.grader_args)
    usage = resp.get("usage") or {}
    calm = resp.get("calm") or {}
    if calm.get("model") not in (None, model):
        raise LabelError(f"asked for {model} but {calm.get('model')} answered {q.id}")
    rec.update(passed=bool(passed), detail=detail[:200], latency_ms=round(latency_ms, 1),
               completion_tokens=usage.get("completion_tokens"),
               prompt_tokens=usage.get("prompt_tokens"),
               finish_reason=calm.get("finish_reason"), ts=round(time.time(), 3))
    return rec, text


# -- main --------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS),
                    help="comma-separated fleet model names, labeled in this order")
    ap.add_argument("--limit-per-domain", type=int, default=None,
                    help="only the first N queries of each domain (corpus file order)")
    ap.add_argument("--domains", default=None, help="comma-separated; default all")
    ap.add_argument("--time-budget-min", type=float, default=None,
                    help="stop starting new queries after this many minutes")
    ap.add_argument("--profile", default="x86-dev")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--replies", type=Path, default=None,
                    help="also append {query_id, model, reply} lines to this file")
    args = ap.parse_args(argv)

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    corpus = load_workload(args.corpus)
    domains = None if args.domains is None else tuple(args.domains.split(","))
    chosen = arrange(select(corpus, domains, args.limit_per_domain), "steady", 0)
    done = done_pairs(read_outcomes(args.out))
    work = {m: pending_for(m, chosen, done) for m in models}
    total = sum(len(v) for v in work.values())
    print(f"{len(chosen)} queries x {len(models)} models: {total} to ask, "
          f"{len(chosen) * len(models) - total} already in {args.out}", file=sys.stderr)
    if not total:
        return 0
    deadline = None if args.time_budget_min is None else \
        time.monotonic() + args.time_budget_min * 60.0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    replies = None if args.replies is None else args.replies.open("a", encoding="utf-8")
    timed_out = False
    try:
        with daemon(args.profile, args.python, sys.stderr) as d, \
                args.out.open("a", encoding="utf-8") as out:
            client = d.client
            names = {m["id"] for m in client.get("/v1/models").get("data") or ()}
            unknown = [m for m in models if m not in names]
            if unknown:
                raise LabelError(f"not served by the daemon: {unknown} (has {sorted(names)})")
            for model in models:
                pending = work[model]
                if not pending:
                    continue
                t_model = time.monotonic()
                try:
                    client.post("/v1/chat/completions", {
                        "model": model, "max_tokens": 1, "temperature": 0.0,
                        "calm": {"cache": False},
                        "messages": [{"role": "user", "content": WARM_UP_TEXT}]})
                except ClientError as e:
                    raise LabelError(f"warm-up of {model} failed: {e}") from None
                print(f"{model}: loaded in {time.monotonic() - t_model:.1f} s",
                      file=sys.stderr)
                progress = Progress(len(pending), 0, sys.stderr)
                progress.set_run(model)
                passed = n = 0
                t0 = time.monotonic()
                for q in pending:
                    if deadline is not None and time.monotonic() > deadline:
                        timed_out = True
                        break
                    rec, text = label_one(client, model, q, d.alive)
                    out.write(json.dumps(rec) + "\n")
                    out.flush()
                    if replies is not None:
                        replies.write(json.dumps({"query_id": q.id, "model": model,
                                                  "reply": text}) + "\n")
                        replies.flush()
                    n += 1
                    passed += bool(rec["passed"])
                    progress.step()
                progress.close()
                print(f"{model}: {n} queries in {(time.monotonic() - t0) / 60:.1f} min, "
                      f"{passed} passed", file=sys.stderr)
                if timed_out:
                    print("time budget spent: stopping", file=sys.stderr)
                    break
    except LabelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if replies is not None:
            replies.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
