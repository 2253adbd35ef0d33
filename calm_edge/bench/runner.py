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
  result is appended to results.jsonl. A thread samples the daemon's VmRSS every 0.25 s.
- **Resume.** Rerunning with the same `--out` skips every (run, query) already recorded and
  refuses to mix different workloads, seeds, patterns or query sets.

Blocking; one request in flight at a time. The runner owns its daemon subprocesses and
stops them (SIGTERM, then SIGKILL) on exit, error or interruption.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from calm_edge.bench import graders
from calm_edge.bench.policies import (
    DEFAULT_POLICIES,
    MODEL_RUN_PREFIX,
    POLICIES,
    ModelFacts,
    largest,
    random_choice,
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
from calm_edge.client import Client, ClientError
from calm_edge.domains import DOMAINS

RSS_SAMPLE_S = 0.25
CLASSIFY_TAIL_CHARS = 2000  # as the daemon's Monitor: the classifier reads the query's tail


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
class Plan:
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
    from calm_edge.fleet import FileStatus, cached_status, load_fleet

    cli: dict[str, dict[str, Any]] = {
        "paths": {"fleet": None if cfg.fleet is None else str(cfg.fleet),
                  "models_dir": None if cfg.models_dir is None else str(cfg.models_dir)}}
    settings = load_settings(cfg.profile, cli=cli)
    fleet = load_fleet(settings.fleet_path)
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


def make_plan(cfg: BenchConfig) -> Plan:
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
    return Plan(tuple(ordered), tuple(runs), tuple(models), default_model, big, small,
                routes, meta)


_RESUME_KEYS = ("workload_digest", "query_ids", "pattern", "seed", "mode", "feedback",
                "calm_cache", "budget", "profile", "largest", "smallest")


def check_resume(old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    diff = [k for k in _RESUME_KEYS if old.get(k) != new.get(k)]
    if diff:
        raise BenchError(f"the results directory holds a different bench ({', '.join(diff)} "
                         "differ); use another --out, or the same options to resume")


# -- the daemon subprocess ----------------------------------------------------------------------

class RssSampler:
    """Samples /proc/<pid>/status VmRSS in a daemon thread; `peak_bytes` is the maximum."""

    def __init__(self, pid: int, interval_s: float = RSS_SAMPLE_S) -> None:
        self.pid, self.interval_s = pid, interval_s
        self.peak_bytes: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-rss", daemon=True)

    def sample(self) -> None:
        try:
            with Path(f"/proc/{self.pid}/status").open(encoding="ascii") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1]) * 1024
                        self.peak_bytes = max(self.peak_bytes or 0, rss)
                        return
        except (OSError, ValueError, IndexError):
            return

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def start(self) -> None:
        self.sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sample()


@dataclass
class DaemonProcess:
    proc: subprocess.Popen[bytes]
    client: Client
    socket_dir: Path
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


def _safe(run: str) -> str:
    return run.replace(":", "_").replace("/", "_")


@contextmanager
def daemon_for(cfg: BenchConfig, run: str) -> Iterator[DaemonProcess]:
    """Start `calm-edge serve` for one run, wait until it answers /health, yield it, and
    stop it (SIGTERM; SIGKILL after 60 s) however the block ends."""
    state = cfg.out_dir / "state" / _safe(run)
    if not state.exists() and cfg.state is not None:
        shutil.copytree(cfg.state, state)
    state.mkdir(parents=True, exist_ok=True)
    logs = cfg.out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{_safe(run)}.log"
    socket_dir = Path(tempfile.mkdtemp(prefix="ceb-", dir="/tmp"))  # short: sun_path limit
    sock = socket_dir / "calm.sock"
    cmd = [cfg.python, "-m", "calm_edge.cli", "serve", "--profile", cfg.profile,
           "--socket", str(sock), "--state-dir", str(state), "--log-level", "info"]
    if cfg.budget:
        cmd += ["--ram-budget", cfg.budget]
    if cfg.fleet:
        cmd += ["--fleet", str(cfg.fleet)]
    if cfg.models_dir:
        cmd += ["--models-dir", str(cfg.models_dir)]
    with log_path.open("ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
        log.flush()
        # No calibration inside a measured run: a calibrated state comes in with --state.
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True,
                                env={**os.environ, "CALM_EDGE_CALIBRATION_AUTO": "false"})
    d = DaemonProcess(proc, Client(sock, timeout_s=cfg.request_timeout_s), socket_dir,
                      log_path, RssSampler(proc.pid))
    try:
        wait_ready(proc, d.client, cfg.ready_timeout_s, log_path)
        d.rss.start()
        yield d
    finally:
        d.client.close()
        d.rss.stop()
        stop_process(proc)
        shutil.rmtree(socket_dir, ignore_errors=True)


def wait_ready(proc: subprocess.Popen[bytes], client: Client, timeout_s: float,
               log_path: Path) -> None:
    """Poll the daemon's /health until it answers. BenchError if it exits first (with its
    log's tail) or is not ready within timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"the daemon exited with status {proc.returncode} before it "
                             f"was ready; its log ({log_path}) ends:\n{log_tail(log_path)}")
        if client.socket_path.exists():
            try:
                client.get("/health")
                return
            except ClientError:
                pass
        time.sleep(0.1)
    raise BenchError(f"the daemon was not ready after {timeout_s:.0f} s; see {log_path}")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM a daemon and wait for it (SIGKILL after 60 s); nothing if it has exited."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


# -- one request ---------------------------------------------------------------------------

@dataclass
class Answer:
    text: str
    latency_ms: float
    ttft_ms: float | None
    calm: dict[str, Any]


def ask(client: Client, query: Query, model: str, calm_opts: Mapping[str, Any],
        clock: Callable[[], float] = time.perf_counter) -> Answer:
    """Send one streamed request; time it at the client. Raises ClientError."""
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
    return Answer("".join(parts), latency, ttft, info)


def _load_counts(status: Mapping[str, Any]) -> dict[str, tuple[int, float | None, float | None]]:
    """model -> (loads, load_seconds_total or None, last_load_s or None)."""
    return {m["name"]: (int(m.get("loads") or 0), m.get("load_seconds_total"),
                        m.get("last_load_s")) for m in status.get("models") or ()}


def load_delta(before: Mapping[str, tuple[int, float | None, float | None]],
               after: Mapping[str, tuple[int, float | None, float | None]],
               ) -> tuple[dict[str, int], float]:
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

class Progress:
    """A progress line with an ETA: redrawn in place on a terminal, otherwise a line every
    10 results or 30 s. ETA = queries left x the mean wall time per query so far."""

    def __init__(self, total: int, done: int, stream: TextIO) -> None:
        self.total, self.done, self.stream = total, done, stream
        self.tty = stream.isatty()
        self.start = time.monotonic()
        self.new = 0
        self._last_line = 0.0
        self.label = ""

    def set_run(self, label: str) -> None:
        self.label = label
        self.draw(force=True)

    def step(self) -> None:
        self.done += 1
        self.new += 1
        self.draw()

    def draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.tty and not force and self.new % 10 and now - self._last_line < 30:
            return
        self._last_line = now
        frac = self.done / max(self.total, 1)
        bar = "#" * int(frac * 24) + "." * (24 - int(frac * 24))
        per = (now - self.start) / self.new if self.new else None
        eta = _fmt_s(per * (self.total - self.done)) if per is not None else "?"
        line = (f"[{bar}] {self.done}/{self.total} {self.label} · "
                f"{_fmt_s(now - self.start)} elapsed · "
                f"{'?' if per is None else f'{per:.1f}'} s/query · eta {eta}")
        self.stream.write(("\r" + line + "\x1b[K") if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _fmt_s(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


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
    progress = Progress(total, already, cfg.progress or sys.stderr)
    classifier = _classifier() if "static" in plan.runs else None
    new = 0
    stopped = False
    with ResultStore(cfg.out_dir) as store:
        try:
            for i, run in enumerate(plan.runs, 1):
                pending = [q for q in plan.queries if (run, q.id) not in done]
                if not pending:
                    continue
                progress.set_run(f"run {i}/{len(plan.runs)} {run}")
                limit = None if cfg.max_new_results is None else cfg.max_new_results - new
                n, finished = _run_one(cfg, plan, run, pending, store, progress, classifier,
                                       limit)
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


def _classifier() -> Any:
    from calm_edge.classifier import load_classifier

    return load_classifier()


def _run_one(cfg: BenchConfig, plan: Plan, run: str, pending: Sequence[Query],
             store: ResultStore, progress: Progress, classifier: Any, limit: int | None,
             ) -> tuple[int, bool]:
    """One daemon lifetime of `run` over `pending`. Returns (results recorded, whether the
    run got through all of `pending`). A daemon that dies is an error; a request the
    daemon refuses is a recorded (failed) result."""
    names = [m.name for m in plan.models]
    started = time.time()
    n = 0
    finished = False
    budget: int | None = None
    with daemon_for(cfg, run) as d:
        warm = run[len(MODEL_RUN_PREFIX):] if run.startswith(MODEL_RUN_PREFIX) \
            else plan.default_model
        _warm_up(d.client, warm)
        status = _status(d)
        budget = (status.get("memory") or {}).get("budget_bytes")
        first_counts = counts = _load_counts(status)
        try:
            for q in pending:
                if limit is not None and n >= limit:
                    break
                result = _one_query(cfg, run, q, d, names, plan, classifier, counts)
                counts = result.pop("_counts")
                store.append(Result(**result))
                n += 1
                progress.step()
            else:
                finished = True
        finally:
            loads, _ = load_delta({k: (0, None, None) for k in first_counts}, counts)
            store.append(Segment(run, started, time.time(), n, d.rss.peak_bytes, budget,
                                 loads, finished))
    return n, finished


def _status(d: DaemonProcess) -> dict[str, Any]:
    try:
        status: dict[str, Any] = d.client.get("/calm/status")
    except ClientError as e:
        raise BenchError(f"GET /calm/status failed: {e}; the daemon's log ({d.log_path}) "
                         f"ends:\n{d.log_tail()}") from None
    return status


WARM_UP = Query(id="warm-up", domain="instruct", messages=(
    {"role": "user", "content": "Reply with the word ready."},), prompt=None,
    grader="instructions", grader_args={}, max_tokens=1, source="bench", licence="")


def _warm_up(client: Client, model: str) -> None:
    """Load `model` with a one-token request unlike any workload query (llama.cpp reuses
    the KV cache of a shared prompt prefix, which would flatter the first query's TTFT)."""
    probe = WARM_UP
    try:
        ask(client, probe, model, {"cache": False})
    except ClientError as e:
        raise BenchError(f"warm-up request to {model} failed: {e}") from None


def _one_query(cfg: BenchConfig, run: str, q: Query, d: DaemonProcess, names: Sequence[str],
               plan: Plan, classifier: Any, counts: Any) -> dict[str, Any]:
    route_ms: float | None = None
    routed: str | None = None
    calm_opts: dict[str, Any] = {"cache": False}
    t_route = time.perf_counter()
    if run == "calm":
        model = "auto"
        calm_opts = {"mode": cfg.mode}
        if not cfg.calm_cache:
            calm_opts["cache"] = False
    elif run == "random":
        model = random_choice(names, cfg.seed, q.id)
    elif run == "static":
        c = classifier.classify(q.text[-CLASSIFY_TAIL_CHARS:])
        routed = str(c.domain)
        model = plan.static_routes[routed]
    else:
        model = run[len(MODEL_RUN_PREFIX):]
    route_s = time.perf_counter() - t_route
    if run == "static":
        route_ms = route_s * 1000.0
    rec: dict[str, Any] = {"run": run, "query_id": q.id, "domain": q.domain,
                           "routed_domain": routed, "route_ms": route_ms}
    try:
        a = ask(d.client, q, model, calm_opts)
    except ClientError as e:
        if not d.alive():
            raise BenchError(f"the daemon died during {run} / {q.id}; its log "
                             f"({d.log_path}) ends:\n{d.log_tail()}") from None
        rec.update(passed=False, detail="request failed", error=str(e),
                   model=None if model == "auto" else model, ts=time.time())
        rec["_counts"] = _load_counts(_status(d))
        return rec
    if route_ms is not None:  # the static router's classification is part of its latency
        a.latency_ms += route_ms
        a.ttft_ms = None if a.ttft_ms is None else a.ttft_ms + route_ms
    after = _load_counts(_status(d))
    loads, load_s = load_delta(counts, after)
    passed, detail = graders.grade(q.grader, a.text, q.grader_args)
    info = a.calm
    feedback: bool | None = None
    if run == "calm" and cfg.feedback and info.get("request_id"):
        try:
            d.client.post("/calm/feedback", {"request_id": info["request_id"], "pass": passed})
            feedback = True
        except ClientError:
            feedback = False
    rec.update(
        passed=passed, detail=detail, model=info.get("model", model),
        latency_ms=round(a.latency_ms, 2),
        ttft_ms=None if a.ttft_ms is None else round(a.ttft_ms, 2),
        server_latency_ms=info.get("latency_ms"), server_ttft_ms=info.get("ttft_ms"),
        wait_ms=info.get("wait_ms"), energy_j=info.get("energy_j"),
        energy_kind=info.get("energy"), prompt_tokens=info.get("prompt_tokens"),
        completion_tokens=info.get("completion_tokens"),
        finish_reason=info.get("finish_reason"), cache=info.get("cache"), loads=loads,
        load_s=load_s, reason=info.get("reason"), explored=info.get("explored"),
        feedback=feedback, reply=a.text, ts=time.time())
    if run == "calm":
        rec["routed_domain"] = info.get("domain")
    rec["_counts"] = after
    return rec
