"""The policies the bench compares, which live runs each needs, and the after-the-fact oracle.

Pure functions over fleet facts and recorded results; no I/O.

- `calm` (live run `calm`): `model: "auto"`, the daemon's full MAPE-K loop (mode
  `--mode`), with the runner's grades sent back as `/calm/feedback` unless `--no-feedback`.
- `largest` (run `model:<largest>`): always the fleet's largest model by `size_bytes` (the
  single-LLM baseline), pinned.
- `smallest` (run `model:<smallest>`): always the smallest model by `size_bytes`, pinned.
- `random` (live run `random`): per query a model drawn uniformly, seeded by (seed, query
  id), pinned.
- `static` (live run `static`): the runner classifies the query with the bundled classifier
  and pins the model `static_routes` assigns to that domain; no QoS feedback.
- `oracle` (computed from every `model:<name>` run): per query, the fastest model (lowest
  client latency in its pinned run) whose answer passed; if none passed, the largest
  model's answer.

`largest` and `smallest` reuse the pinned per-model runs (the same requests); `random` runs
live because its swaps are part of its cost. `live_run` gives the `LiveRun` that decides,
per query, how a live run sends it; the runner does the I/O.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from calm_edge.bench.results import Result
from calm_edge.bench.workload import Query

POLICIES = ("calm", "static", "random", "largest", "smallest", "oracle")
DEFAULT_POLICIES = POLICIES
MODEL_RUN_PREFIX = "model:"
# `static`: the cheapest model whose prior quality for the domain is within this factor of
# the best prior for that domain (the per-domain quality floor, 0.90x).
STATIC_TOLERANCE = 0.90


@dataclass(frozen=True)
class ModelFacts:
    """What the bench needs to know about a fleet model (from fleet.toml)."""

    name: str
    size_bytes: int
    quality: Mapping[str, float]


def model_run(name: str) -> str:
    return MODEL_RUN_PREFIX + name


def largest(models: Sequence[ModelFacts]) -> str:
    """The largest model by file size (ties: the first name in sort order)."""
    return min(models, key=lambda m: (-m.size_bytes, m.name)).name


def smallest(models: Sequence[ModelFacts]) -> str:
    return min(models, key=lambda m: (m.size_bytes, m.name)).name


def static_routes(models: Sequence[ModelFacts], domains: Iterable[str],
                  tolerance: float = STATIC_TOLERANCE) -> dict[str, str]:
    """domain -> model for the `static` policy: among the models whose prior quality for the
    domain is at least `tolerance` x the best prior for it, the smallest (by size_bytes,
    ties by name). With tolerance 1.0 this is "the best prior, cheapest among ties"."""
    routes: dict[str, str] = {}
    for d in domains:
        best = max(m.quality.get(d, 0.0) for m in models)
        ok = [m for m in models if m.quality.get(d, 0.0) >= tolerance * best]
        routes[d] = min(ok, key=lambda m: (m.size_bytes, m.name)).name
    return routes


def random_choice(models: Sequence[str], seed: int, query_id: str) -> str:
    """The `random` policy's model for a query: uniform, and the same for the same (seed,
    query) whatever the order of arrival or a resume in between."""
    return random.Random(f"random:{seed}:{query_id}").choice(sorted(models))


def runs_for(policies: Iterable[str], model_names: Sequence[str], largest_name: str,
             smallest_name: str) -> list[str]:
    """The live runs the policies need, in execution order: the largest model's pinned run
    first, then `calm` (the two the targets compare), then the other pinned runs from
    largest to smallest, then `static` and `random`. `model_names` is largest-first."""
    wanted: set[str] = set()
    for p in policies:
        if p == "largest":
            wanted.add(model_run(largest_name))
        elif p == "smallest":
            wanted.add(model_run(smallest_name))
        elif p == "oracle":
            wanted.update(model_run(m) for m in model_names)
        elif p.startswith(MODEL_RUN_PREFIX):
            wanted.add(p)
        else:
            wanted.add(p)
    order = [model_run(largest_name), "calm",
             *(model_run(m) for m in model_names if m != largest_name), "static", "random"]
    return [r for r in order if r in wanted]


# -- live runs: how each sends a query ------------------------------------------------------

AUTO = "auto"  # the model name that lets the daemon choose


@dataclass(frozen=True)
class Choice:
    """How one query goes out in a live run."""

    model: str                                  # a pinned fleet model, or AUTO
    calm: Mapping[str, Any] = field(default_factory=dict)  # the request's `calm` options
    routed_domain: str | None = None            # the runner's router's domain (static)


class LiveRun(Protocol):
    """One live run's policy. `choose` is deterministic for a query and does no I/O."""

    @property
    def name(self) -> str: ...

    @property
    def warm_model(self) -> str:
        """The model the warm-up request loads."""

    @property
    def routes_at_client(self) -> bool:
        """`choose` is the client's router: its time counts as the answer's latency."""

    @property
    def sends_feedback(self) -> bool:
        """The grades go back as /calm/feedback."""

    def choose(self, query: Query) -> Choice: ...


@dataclass(frozen=True)
class CalmRun:
    """`calm`: model "auto", the daemon's loop in `mode` (its cache off unless `cache`)."""

    mode: str
    cache: bool
    feedback: bool
    warm_model: str
    name: str = "calm"
    routes_at_client: bool = False

    @property
    def sends_feedback(self) -> bool:
        return self.feedback

    def choose(self, query: Query) -> Choice:
        calm: dict[str, Any] = {"mode": self.mode}
        if not self.cache:
            calm["cache"] = False
        return Choice(AUTO, calm)


@dataclass(frozen=True)
class PinnedRun:
    """`model:<name>`: every query pinned to one model, the daemon's cache off."""

    model: str
    routes_at_client: bool = False
    sends_feedback: bool = False

    @property
    def name(self) -> str:
        return model_run(self.model)

    @property
    def warm_model(self) -> str:
        return self.model

    def choose(self, query: Query) -> Choice:
        return Choice(self.model, {"cache": False})


@dataclass(frozen=True)
class RandomRun:
    """`random`: per query a uniformly drawn model (`random_choice`), pinned."""

    models: tuple[str, ...]
    seed: int
    warm_model: str
    name: str = "random"
    routes_at_client: bool = False
    sends_feedback: bool = False

    def choose(self, query: Query) -> Choice:
        return Choice(random_choice(self.models, self.seed, query.id), {"cache": False})


@dataclass(frozen=True)
class StaticRun:
    """`static`: the runner's classifier names the domain (`classify`: query text ->
    domain) and the model `routes` assigns to it is pinned."""

    routes: Mapping[str, str]
    classify: Callable[[str], str]
    warm_model: str
    name: str = "static"
    routes_at_client: bool = True
    sends_feedback: bool = False

    def choose(self, query: Query) -> Choice:
        domain = self.classify(query.text)
        return Choice(self.routes[domain], {"cache": False}, routed_domain=domain)


def live_run(run: str, *, models: Sequence[str], default_model: str, mode: str,
             calm_cache: bool, feedback: bool, seed: int, routes: Mapping[str, str],
             classify: Callable[[str], str] | None) -> LiveRun:
    """The policy of live run `run` (a name `runs_for` returns). `classify` is needed for
    `static` only. ValueError for an unknown run."""
    if run.startswith(MODEL_RUN_PREFIX):
        return PinnedRun(run[len(MODEL_RUN_PREFIX):])
    if run == "calm":
        return CalmRun(mode, calm_cache, feedback, default_model)
    if run == "random":
        return RandomRun(tuple(models), seed, default_model)
    if run == "static":
        if classify is None:
            raise ValueError("the static run needs a classifier")
        return StaticRun(routes, classify, default_model)
    raise ValueError(f"not a live run: {run!r}")


def policy_results(policy: str, by_run: Mapping[str, Mapping[str, Result]],
                   model_names: Sequence[str], largest_name: str, smallest_name: str,
                   ) -> dict[str, Result]:
    """query id -> the Result that stands for `policy` on that query."""
    if policy == "largest":
        return dict(by_run.get(model_run(largest_name), {}))
    if policy == "smallest":
        return dict(by_run.get(model_run(smallest_name), {}))
    if policy == "oracle":
        return oracle({m: by_run.get(model_run(m), {}) for m in model_names}, largest_name)
    return dict(by_run.get(policy, {}))


def oracle(per_model: Mapping[str, Mapping[str, Result]], largest_name: str,
           ) -> dict[str, Result]:
    """Per query, the lowest-latency passing answer among the models' pinned runs, else the
    largest model's answer. Only queries that every model answered (without an error)
    are decided. The oracle is an idealized lower bound: it knows the grades in advance
    and pays no swap (each pinned run had its model resident)."""
    if not per_model:
        return {}
    common = set.intersection(*(set(r) for r in per_model.values()))
    chosen: dict[str, Result] = {}
    for qid in sorted(common):
        answers = [per_model[m][qid] for m in sorted(per_model)]
        if any(a.error is not None or a.latency_ms is None for a in answers):
            continue
        passing = [a for a in answers if a.passed]
        if passing:
            chosen[qid] = min(passing, key=lambda a: (a.latency_ms or 0.0, a.model or ""))
        elif largest_name in per_model:
            chosen[qid] = per_model[largest_name][qid]
    return chosen
