"""The bench runner: replay the workload through a real daemon once per live run, grade
every answer, append results as they come, then write the report.

How a run happens (see calm_edge.bench.policies for what each run is):

- **A fresh daemon per run.** `python -m calm_edge.cli serve --profile P --socket <tmp>
  --state-dir <out>/state/<run> [--ram-budget B] [--fleet F] [--models-dir D]`, as a
  subprocess in its own session, logging to `<out>/logs/<run>.log`. A fresh process per run
  means no residency, page-cache-warm loads or learned knowledge carry over from one policy
  to the next. The state directory is the run's own and starts empty (so CALM learns during
  its run), or as a copy of `--state DIR`; a resumed run reopens it, so CALM keeps what it
  had learned before the interruption.
- **Warm-up.** After the daemon is ready, one unrecorded request (`max_tokens` 1) loads a
  model: the pinned model for `model:<name>` runs, the fleet's `default_model` for `calm`,
  `random` and `static`. Every run starts with a resident model, as a deployed daemon
  would; later loads count as swaps.
- **Requests.** Chat completions, `stream: true`, `temperature: 0`, the query's
  `max_tokens`, one at a time in the arrival order of `--pattern`. `calm` sends
  `model: "auto"` with `calm.mode`; the others pin a model and set `calm.cache: false`.
  Latency is timed at the client from sending the request to the last event, TTFT to the
  first chunk with content; the final chunk's `calm` object gives the model, energy (and
  whether measured), the daemon's own TTFT and the cache outcome.
- **After each answer**: `GET /calm/status` gives the loads since the previous answer (the
  swaps this query caused) and their load time; the answer is graded; for `calm` with
  feedback on, the grade goes back as `POST /calm/feedback {"request_id", "pass"}`; the
  result is appended to results.jsonl. A thread samples the daemon's RSS every 0.25 s
  (calm_edge.bench.daemon).
- **Resume.** Rerunning with the same `--out` skips every (run, query) already recorded and
  refuses to mix different workloads, seeds, patterns or query sets.

Blocking; one request in flight at a time. The runner owns its daemon subprocesses and
stops them (SIGTERM, then SIGKILL) on exit, error or interruption.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from calm_edge.bench import graders
from calm_edge.bench.daemon import DaemonProcess, DaemonStartError, ask, serve_daemon, warm_up
from calm_edge.bench.policies import (
    AUTO,
    DEFAULT_POLICIES,
    MODEL_RUN_PREFIX,
    POLICIES,
    LiveRun,
    ModelFacts,
    largest,
    live_run,
    runs_for,
    smallest,
    static_routes,
)
from calm_edge.bench.results import (
    Result,
    ResultStore,
    Segment,
    done_pairs,
    read_meta,
    read_records,
    write_meta,
)
from calm_edge.bench.workload import (
    PATTERNS,
    Pattern,
    Query,
    arrange,
    load_workload,
    select,
    workload_digest,
)
from calm_edge.client import ClientError
from calm_edge.domains import DOMAINS
from calm_edge.monitor import CLASSIFY_TAIL_CHARS
from calm_edge.progress import Progress


class BenchError(RuntimeError):
    pass


@dataclass
class BenchConfig:
    out_dir: Path
    policies: tuple[str, ...] = DEFAULT_POLICIES
    limit: int | None = None            # first N queries of each domain (file order)
    domains: tuple[str, ...] | None = None
    budget: str | None = None           # --ram-budget for the daemon (profile's if None)
    pattern: Pattern = "steady"
    mode: str = "balanced"
    seed: int = 0
    feedback: bool = True
    calm_cache: bool = True
    state: Path | None = None
    profile: str = "x86-dev"
    fleet: Path | None = None
    models_dir: Path | None = None
    workload: Path | None = None
    python: str = field(default_factory=lambda: sys.executable)
    ready_timeout_s: float = 300.0
    request_timeout_s: float = 1800.0
    png: bool = True
    # Test seam: behave as if interrupted after this many new results (None: run to the end).
    max_new_results: int | None = None
    progress: TextIO | None = None      # default sys.stderr


@dataclass(frozen=True)
class BenchPlan:
    """What a bench run will do, resolved from the config, the fleet and the workload."""

    queries: tuple[Query, ...]          # in arrival order
    runs: tuple[str, ...]
    models: tuple[ModelFacts, ...]      # available fleet models, largest first
    default_model: str
    largest: str
    smallest: str
    static_routes: Mapping[str, str]
    meta: Mapping[str, Any]


# -- planning ---------------------------------------------------------------------------------

def _fleet_facts(cfg: BenchConfig) -> tuple[list[ModelFacts], str, list[str]]:
    """(available models, default model, notes). Models whose file is missing or corrupt
    are left out with a note: they could not answer."""
    from calm_edge.config import load_settings
    from calm_edge.fleet import FileStatus, cached_status, fleet_for

    cli: dict[str, dict[str, Any]] = {
        "paths": {"fleet": None if cfg.fleet is None else str(cfg.fleet),
                  "models_dir": None if cfg.models_dir is None else str(cfg.models_dir)}}
    settings = load_settings(cfg.profile, cli=cli)
    fleet = fleet_for(settings)  # the daemon serves the added models too
    models, notes = [], []
    for spec in fleet.models:
        status = cached_status(settings.models_dir, spec)
        if status in (FileStatus.VERIFIED, FileStatus.UNVERIFIED):
            models.append(ModelFacts(spec.name, spec.size_bytes,
                                     {d: spec.prior_quality(d) for d in DOMAINS}))
        else:
            notes.append(f"model {spec.name} left out: file {status.value} in "
                         f"{settings.models_dir}")
    if not models:
        raise BenchError(f"no model of the fleet is installed in {settings.models_dir}; "
                         "run `calm-edge models pull`")
    models.sort(key=lambda m: (-m.size_bytes, m.name))
    return models, fleet.default_model, notes


def make_plan(cfg: BenchConfig) -> BenchPlan:
    unknown = [p for p in cfg.policies if p not in POLICIES and
               not p.startswith(MODEL_RUN_PREFIX)]
    if unknown:
        raise BenchError(f"unknown policies: {', '.join(unknown)} (known: "
                         f"{', '.join(POLICIES)}, model:<name>)")
    if cfg.pattern not in PATTERNS:
        raise BenchError(f"unknown pattern {cfg.pattern!r}")
    models, default_model, notes = _fleet_facts(cfg)
    names = [m.name for m in models]
    bad = [p for p in cfg.policies if p.startswith(MODEL_RUN_PREFIX)
           and p[len(MODEL_RUN_PREFIX):] not in names]
    if bad:
        raise BenchError(f"not an installed fleet model: {', '.join(bad)}")
    workload = load_workload(cfg.workload)
    if cfg.domains is not None:
        missing = set(cfg.domains) - {q.domain for q in workload}
        if missing:
            raise BenchError(f"no queries for domain(s) {', '.join(sorted(missing))}")
    chosen = select(workload, cfg.domains, cfg.limit)
    ordered = arrange(chosen, cfg.pattern, cfg.seed)
    big, small = largest(models), smallest(models)
    routes = static_routes(models, DOMAINS)
    if default_model not in names:
        default_model = big
    runs = runs_for(cfg.policies, names, big, small)
    domains_order = [d for d in DOMAINS if any(q.domain == d for q in ordered)]
    meta = {
        "version": 1,
        "workload": str(cfg.workload or "bundled"),
        "workload_digest": workload_digest(chosen),
        "query_ids": sorted(q.id for q in chosen),
        "domains_order": domains_order,
        "limit": cfg.limit, "domains": list(cfg.domains) if cfg.domains else None,
        "pattern": cfg.pattern, "seed": cfg.seed, "mode": cfg.mode,
        "feedback": cfg.feedback, "calm_cache": cfg.calm_cache,
        "budget": cfg.budget, "profile": cfg.profile,
        "state": None if cfg.state is None else str(cfg.state),
        "policies": list(cfg.policies), "runs": runs,
        "models": {m.name: m.size_bytes for m in models},
        "default_model": default_model, "largest": big, "smallest": small,
        "static_routes": {d: routes[d] for d in domains_order},
        "static_rule": "cheapest (size_bytes) model whose prior quality for the domain is "
                       ">= 0.90 x the best prior for it",
        "fleet_notes": notes,
    }
    return BenchPlan(tuple(ordered), tuple(runs), tuple(models), default_model, big, small,
                routes, meta)


_RESUME_KEYS = ("workload_digest", "query_ids", "pattern", "seed", "mode", "feedback",
                "calm_cache", "budget", "profile", "largest", "smallest")


def check_resume(old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    diff = [k for k in _RESUME_KEYS if old.get(k) != new.get(k)]
    if diff:
        raise BenchError(f"the results directory holds a different bench ({', '.join(diff)} "
                         "differ); use another --out, or the same options to resume")


# -- the daemon subprocess ----------------------------------------------------------------------

def _safe(run: str) -> str:
    return run.replace(":", "_").replace("/", "_")


@contextmanager
def daemon_for(cfg: BenchConfig, run: str) -> Iterator[DaemonProcess]:
    """Start `calm-edge serve` for one run (its own state directory, a copy of `cfg.state`
    at first), wait until it answers /health, yield it, and stop it however the block
    ends. BenchError if it does not become ready."""
    state = cfg.out_dir / "state" / _safe(run)
    if not state.exists() and cfg.state is not None:
        shutil.copytree(cfg.state, state)
    state.mkdir(parents=True, exist_ok=True)
    args = ["--profile", cfg.profile, "--state-dir", str(state), "--log-level", "info"]
    if cfg.budget:
        args += ["--ram-budget", cfg.budget]
    if cfg.fleet:
        args += ["--fleet", str(cfg.fleet)]
    if cfg.models_dir:
        args += ["--models-dir", str(cfg.models_dir)]
    try:
        with serve_daemon(cfg.python, args, cfg.out_dir / "logs" / f"{_safe(run)}.log",
                          ready_timeout_s=cfg.ready_timeout_s,
                          request_timeout_s=cfg.request_timeout_s) as d:
            yield d
    except DaemonStartError as e:
        raise BenchError(str(e)) from None


# -- one request ---------------------------------------------------------------------------

LoadCounts = Mapping[str, tuple[int, float | None, float | None]]


def _load_counts(status: Mapping[str, Any]) -> LoadCounts:
    """model -> (loads, load_seconds_total or None, last_load_s or None)."""
    return {m["name"]: (int(m.get("loads") or 0), m.get("load_seconds_total"),
                        m.get("last_load_s")) for m in status.get("models") or ()}


def load_delta(before: LoadCounts, after: LoadCounts) -> tuple[dict[str, int], float]:
    """Loads between two status snapshots and the time they took: from the daemon's
    `load_seconds_total` when it reports it, else `last_load_s` per load (approximate when
    a model loaded twice in between)."""
    loads: dict[str, int] = {}
    seconds = 0.0
    for name, (n1, total1, last1) in after.items():
        n0, total0, _ = before.get(name, (0, None, None))
        if n1 > n0:
            loads[name] = n1 - n0
            if total1 is not None and total0 is not None:
                seconds += float(total1) - float(total0)
            elif last1 is not None:
                seconds += float(last1) * (n1 - n0)
    return loads, round(seconds, 4)


# -- the run loop --------------------------------------------------------------------------

@dataclass
class RunOutcome:
    out_dir: Path
    new_results: int
    complete: bool
    report_text: str | None


def run_bench(cfg: BenchConfig) -> RunOutcome:
    """Run (or resume) the bench into cfg.out_dir and write its report. Blocking."""
    plan = make_plan(cfg)
    old = read_meta(cfg.out_dir)
    if old is not None:
        check_resume(old, plan.meta)
        meta = {**old, **plan.meta,
                "policies": sorted(set(old.get("policies") or []) | set(plan.meta["policies"]),
                                   key=_policy_key),
                "runs": list(dict.fromkeys([*(old.get("runs") or []), *plan.runs])),
                "created": old.get("created")}
    else:
        meta = {**plan.meta, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_meta(cfg.out_dir, meta)
    results, _ = read_records(cfg.out_dir)
    done = done_pairs(results)
    total = len(plan.runs) * len(plan.queries)
    already = sum((run, q.id) in done for run in plan.runs for q in plan.queries)
    progress = Progress("", total, cfg.progress or sys.stderr, done=already, unit="query")
    classify = _static_classifier() if "static" in plan.runs else None
    new = 0
    stopped = False
    with ResultStore(cfg.out_dir) as store:
        try:
            for i, run in enumerate(plan.runs, 1):
                pending = [q for q in plan.queries if (run, q.id) not in done]
                if not pending:
                    continue
                progress.set_label(f"run {i}/{len(plan.runs)} {run}")
                policy = live_run(run, models=[m.name for m in plan.models],
                                  default_model=plan.default_model, mode=cfg.mode,
                                  calm_cache=cfg.calm_cache, feedback=cfg.feedback,
                                  seed=cfg.seed, routes=plan.static_routes, classify=classify)
                limit = None if cfg.max_new_results is None else cfg.max_new_results - new
                n, finished = _run_one(cfg, policy, pending, store, progress, limit)
                new += n
                if not finished:
                    stopped = True
                    break
        finally:
            progress.close()
    results, _ = read_records(cfg.out_dir)
    done = done_pairs(results)
    complete = not stopped and all((r, q.id) in done for r in plan.runs for q in plan.queries)
    text = None
    if results:
        from calm_edge.bench.report import write_report

        _, text = write_report(cfg.out_dir, png=cfg.png)
    return RunOutcome(cfg.out_dir, new, complete, text)


def _policy_key(p: str) -> tuple[int, str]:
    return (POLICIES.index(p) if p in POLICIES else len(POLICIES), p)


def _static_classifier() -> Callable[[str], str]:
    """The `static` run's router: the bundled classifier on the query's tail, as the
    daemon's Monitor reads it."""
    from calm_edge.classifier import load_classifier

    classifier = load_classifier()
    return lambda text: str(classifier.classify(text[-CLASSIFY_TAIL_CHARS:]).domain)


def _run_one(cfg: BenchConfig, policy: LiveRun, pending: Sequence[Query], store: ResultStore,
             progress: Progress, limit: int | None) -> tuple[int, bool]:
    """One daemon lifetime of `policy`'s run over `pending`. Returns (results recorded,
    whether the run got through all of `pending`). A daemon that dies is an error; a
    request the daemon refuses is a recorded (failed) result."""
    started = time.time()
    n = 0
    finished = False
    budget: int | None = None
    with daemon_for(cfg, policy.name) as d:
        try:
            warm_up(d.client, policy.warm_model)
        except ClientError as e:
            raise BenchError(f"warm-up request to {policy.warm_model} failed: {e}") from None
        status = _status(d)
        budget = (status.get("memory") or {}).get("budget_bytes")
        first_counts = counts = _load_counts(status)
        try:
            for q in pending:
                if limit is not None and n >= limit:
                    break
                result, counts = _one_query(cfg, policy, q, d, counts)
                store.append(result)
                n += 1
                progress.update()
            else:
                finished = True
        finally:
            loads, _ = load_delta({k: (0, None, None) for k in first_counts}, counts)
            store.append(Segment(policy.name, started, time.time(), n, d.rss.peak_bytes,
                                 budget, loads, finished))
    return n, finished


def _status(d: DaemonProcess) -> dict[str, Any]:
    try:
        status: dict[str, Any] = d.client.get("/calm/status")
    except ClientError as e:
        raise BenchError(f"GET /calm/status failed: {e}; the daemon's log ({d.log_path}) "
                         f"ends:\n{d.log_tail()}") from None
    return status


def _one_query(cfg: BenchConfig, policy: LiveRun, q: Query, d: DaemonProcess,
               counts: LoadCounts) -> tuple[Result, LoadCounts]:
    """Route, ask, grade (and send feedback) for one query. Returns its result and the
    daemon's load counters after it (the next query's `counts`)."""
    run = policy.name
    t_route = time.perf_counter()
    choice = policy.choose(q)
    route_ms = (time.perf_counter() - t_route) * 1000.0 if policy.routes_at_client else None
    try:
        a = ask(d.client, q, choice.model, choice.calm)
    except ClientError as e:
        if not d.alive():
            raise BenchError(f"the daemon died during {run} / {q.id}; its log "
                             f"({d.log_path}) ends:\n{d.log_tail()}") from None
        failed = Result(run, q.id, q.domain, passed=False, detail="request failed",
                        model=None if choice.model == AUTO else choice.model,
                        routed_domain=choice.routed_domain, route_ms=route_ms, error=str(e),
                        ts=time.time())
        return failed, _load_counts(_status(d))
    if route_ms is not None:  # the client's routing is part of the answer's latency
        a.latency_ms += route_ms
        a.ttft_ms = None if a.ttft_ms is None else a.ttft_ms + route_ms
    after = _load_counts(_status(d))
    loads, load_s = load_delta(counts, after)
    passed, detail = graders.grade(q.grader, a.text, q.grader_args)
    info = a.calm
    feedback: bool | None = None
    if policy.sends_feedback and info.get("request_id"):
        try:
            d.client.post("/calm/feedback", {"request_id": info["request_id"], "pass": passed})
            feedback = True
        except ClientError:
            feedback = False
    # the daemon's domain when it routed, else the client router's (static), else none
    routed = info.get("domain") if choice.model == AUTO else choice.routed_domain
    result = Result(
        run, q.id, q.domain, passed=passed, detail=detail,
        model=info.get("model", choice.model), latency_ms=round(a.latency_ms, 2),
        ttft_ms=None if a.ttft_ms is None else round(a.ttft_ms, 2),
        server_latency_ms=info.get("latency_ms"), server_ttft_ms=info.get("ttft_ms"),
        wait_ms=info.get("wait_ms"), energy_j=info.get("energy_j"),
        energy_kind=info.get("energy"), prompt_tokens=info.get("prompt_tokens"),
        completion_tokens=info.get("completion_tokens"),
        finish_reason=info.get("finish_reason"), cache=info.get("cache"), loads=loads,
        load_s=load_s, routed_domain=routed, reason=info.get("reason"),
        explored=info.get("explored"), cascade=info.get("cascade"), route_ms=route_ms,
        feedback=feedback, reply=a.text, ts=time.time())
    return result, after
