#!/usr/bin/env python3
"""Label the outcome corpus: run fleet models on every query, grade, record pass/fail.

    .venv/bin/python scripts/label_outcomes.py                          # the whole fleet
    .venv/bin/python scripts/label_outcomes.py --models smollm2-135m,gemma3-270m
    .venv/bin/python scripts/label_outcomes.py --models qwen2.5-coder-1.5b \\
        --limit-per-domain 20 --time-budget-min 60

Starts one `calm-edge serve` subprocess (profile x86-dev by default, a private socket and
state directory in a temp dir, `--log-level warning`), then for each model of `--models`
asks every selected query of models/router/outcome_corpus.jsonl pinned to that model
(calm_edge.bench.daemon.ask, as the bench: streamed chat completion, temperature 0, the
query's max_tokens, `calm.cache` false),
grades the reply with calm_edge.bench.graders and appends one JSON line to
models/router/outcomes.jsonl, flushed at once:

    {"query_id", "model", "domain", "passed", "detail", "latency_ms", "completion_tokens",
     "prompt_tokens", "finish_reason", "ts"}

latency_ms is measured at the client (request sent -> last event received) after a
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
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from calm_edge.bench import graders
from calm_edge.bench.daemon import DaemonProcess, DaemonStartError, ask, serve_daemon, warm_up
from calm_edge.bench.workload import Query, arrange, load_workload, select
from calm_edge.client import Client, ClientError
from calm_edge.progress import Progress

ROOT = Path(__file__).resolve().parent.parent
ROUTER_DIR = ROOT / "models" / "router"
DEFAULT_CORPUS = ROUTER_DIR / "outcome_corpus.jsonl"
DEFAULT_OUT = ROUTER_DIR / "outcomes.jsonl"
DEFAULT_MODELS = ("smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
READY_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 1800.0


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

@contextmanager
def daemon(profile: str, python: str) -> Iterator[DaemonProcess]:
    """Run `calm-edge serve` with a private state dir until the block ends."""
    tmp = Path(tempfile.mkdtemp(prefix="ceo-", dir="/tmp"))
    log_path = tmp / "serve.log"
    args = ["--profile", profile, "--state-dir", str(tmp / "state"), "--log-level", "warning"]
    try:
        with serve_daemon(python, args, log_path, ready_timeout_s=READY_TIMEOUT_S,
                          request_timeout_s=REQUEST_TIMEOUT_S) as d:
            print(f"daemon ready (pid {d.proc.pid})", file=sys.stderr)
            try:
                yield d
            except BaseException:
                if not d.alive():
                    print(f"daemon log:\n{d.log_tail()}", file=sys.stderr)
                raise
    except DaemonStartError as e:
        raise LabelError(str(e)) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def label_one(client: Client, model: str, q: Query, alive: Callable[[], bool],
              ) -> tuple[dict[str, Any], str]:
    """Ask, grade, and build the record (and the reply). A refused request is a failed
    record; a dead daemon raises LabelError."""
    rec: dict[str, Any] = {"query_id": q.id, "model": model, "domain": q.domain}
    try:
        reply = ask(client, q, model, {"cache": False})
    except ClientError as e:
        if not alive():
            raise LabelError(f"the daemon died during {model} / {q.id}: {e}") from None
        rec.update(passed=False, detail="request failed", error=str(e)[:300], latency_ms=None,
                   completion_tokens=None, prompt_tokens=None, finish_reason=None,
                   ts=round(time.time(), 3))
        return rec, ""
    passed, detail = graders.grade(q.grader, reply.text, q.grader_args)
    calm = reply.calm
    if calm.get("model") not in (None, model):
        raise LabelError(f"asked for {model} but {calm.get('model')} answered {q.id}")
    rec.update(passed=bool(passed), detail=detail[:200], latency_ms=round(reply.latency_ms, 1),
               completion_tokens=calm.get("completion_tokens"),
               prompt_tokens=calm.get("prompt_tokens"),
               finish_reason=calm.get("finish_reason"), ts=round(time.time(), 3))
    return rec, reply.text


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
        with daemon(args.profile, args.python) as d, \
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
                    warm_up(client, model)
                except ClientError as e:
                    raise LabelError(f"warm-up of {model} failed: {e}") from None
                print(f"{model}: loaded in {time.monotonic() - t_model:.1f} s",
                      file=sys.stderr)
                progress = Progress(model, len(pending), sys.stderr, unit="query")
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
                    progress.update()
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
