"""Aggregate a results directory into the bench report: a terminal table, report.json and
report.png.

`build_report` is pure (records + meta in, a JSON-able dict out). Every policy is measured
on the same queries: those that every policy in the report has answered (all of them, for
a complete run). `render_png` needs matplotlib (the `bench` extra), imported only there.
"""

from __future__ import annotations

import importlib
import json
import math
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from calm_edge.bench.policies import (
    MODEL_RUN_PREFIX,
    POLICIES,
    STATIC_TOLERANCE,
    model_run,
    policy_results,
)
from calm_edge.bench.results import Result, Segment, read_meta, read_records
from calm_edge.units import format_bytes

REPORT_JSON, REPORT_TXT, REPORT_PNG = "report.json", "report.txt", "report.png"
BASELINE = "largest"

# The issues' targets, CALM vs always-largest (and vs the oracle and static routing).
# Issue 7: the mission's ratios.
TARGET_LATENCY_RATIO = 0.50
TARGET_ENERGY_RATIO = 0.45
TARGET_QUALITY_RATIO = 0.97
TARGET_DOMAIN_RATIO = 0.90
TARGET_ORACLE_LATENCY_RATIO = 1.10
PUBLISHED = {"latency": 0.60, "energy": 0.50}  # the CALM paper's reported ratios
# Issue 16: cheap switching.
TARGET_MAX_LOADS = 20
TARGET_SWAP_S_PER_QUERY = 0.05
# Issue 17: the adaptation pays.
TARGET_17_LATENCY_RATIO = 0.70
TARGET_17_ENERGY_RATIO = 0.70
TARGET_17_DOMAIN_LATENCY_RATIO = 0.50
TARGET_17_FAST_DOMAINS = ("code", "factual", "instruct")
CONVERGENCE_WINDOWS = 4  # arrival-order slices of each domain in the convergence table


class ReportError(RuntimeError):
    pass


# -- statistics ----------------------------------------------------------------------------

def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None if empty."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _summary(values: Sequence[float]) -> dict[str, float | None]:
    return {"mean": statistics.fmean(values) if values else None,
            "p50": percentile(values, 50), "p95": percentile(values, 95)}


def _per_token(rows: Sequence[Result]) -> float | None:
    """Joules per generated token over the answers that have both figures (prefill's
    energy included: the whole request's joules over its output tokens)."""
    both = [r for r in rows if r.energy_j is not None and r.completion_tokens]
    tokens = sum(r.completion_tokens or 0 for r in both)
    return sum(r.energy_j or 0.0 for r in both) / tokens if tokens else None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


# -- aggregation ---------------------------------------------------------------------------

def policy_metrics(rows: Sequence[Result], domains: Sequence[str],
                   segments: Sequence[Segment] | None, live: bool) -> dict[str, Any]:
    """Metrics of one policy over its results on the common queries.

    `segments`: the daemon lifetimes of the run behind the policy (None for the oracle,
    which is not a run). `live`: swaps and RSS belong to this policy (False for the
    oracle, whose answers come from several runs with their models resident).
    """
    ok = [r for r in rows if r.error is None]
    by_domain: dict[str, list[Result]] = {d: [r for r in rows if r.domain == d] for d in domains}
    energies = [r.energy_j for r in ok if r.energy_j is not None]
    kinds = {r.energy_kind for r in ok if r.energy_j is not None}
    overhead = [r.ttft_ms - r.server_ttft_ms for r in ok
                if r.ttft_ms is not None and r.server_ttft_ms is not None]
    route_ms = [r.route_ms for r in ok if r.route_ms is not None]
    cache_known = any(r.cache is not None for r in rows)
    m: dict[str, Any] = {
        "n": len(rows),
        "errors": len(rows) - len(ok),
        "quality": {
            "overall": sum(r.passed for r in rows) / len(rows) if rows else None,
            "per_domain": {d: (sum(r.passed for r in rs) / len(rs) if rs else None)
                           for d, rs in by_domain.items()},
            "passed": sum(r.passed for r in rows),
        },
        "latency_ms": _summary([r.latency_ms for r in ok if r.latency_ms is not None]),
        "latency_mean_per_domain": {
            d: statistics.fmean(lat) if (lat := [r.latency_ms for r in rs if r.error is None
                                                 and r.latency_ms is not None]) else None
            for d, rs in by_domain.items()},
        "ttft_ms": _summary([r.ttft_ms for r in ok if r.ttft_ms is not None]),
        "energy_j_per_query": statistics.fmean(energies) if energies else None,
        "energy_j_per_token": _per_token(ok),
        "energy_kind": (None if not kinds else kinds.pop() if len(kinds) == 1 else "mixed"),
        "swaps": sum(sum(r.loads.values()) for r in rows) if live else None,
        "swap_s": round(sum(r.load_s for r in rows), 3) if live else None,
        "cache_hits": sum(r.cache in ("hit", "near") for r in rows) if cache_known else None,
        "peak_rss_bytes": max((s.peak_rss_bytes for s in segments or ()
                               if s.peak_rss_bytes is not None), default=None) if live else None,
        "budget_bytes": max((s.budget_bytes for s in segments or ()
                             if s.budget_bytes is not None), default=None),
        "overhead_ms": statistics.fmean(overhead) if overhead else None,
        "routing_overhead_ms": None,  # set by build_report: overhead_ms - largest's
        "route_ms": statistics.fmean(route_ms) if route_ms else None,
        "tokens_per_query": statistics.fmean([r.completion_tokens for r in ok
                                              if r.completion_tokens is not None])
        if any(r.completion_tokens is not None for r in ok) else None,
        "models": dict(sorted(Counter(r.model or "?" for r in rows).items())),
        "feedback_sent": sum(r.feedback is True for r in rows),
    }
    peak, budget = m["peak_rss_bytes"], m["budget_bytes"]
    m["peak_rss_vs_budget"] = peak / budget if peak and budget else None
    return m


def _policy_order(meta: Mapping[str, Any], by_run: Mapping[str, Any]) -> list[str]:
    wanted = list(meta.get("policies") or POLICIES)
    rows = [p for p in POLICIES if p in wanted]
    largest_name, smallest_name = str(meta["largest"]), str(meta["smallest"])
    for run in sorted(by_run):  # pinned runs not shown as largest/smallest get a row too
        if run.startswith(MODEL_RUN_PREFIX) and run[len(MODEL_RUN_PREFIX):] not in (
                largest_name, smallest_name):
            rows.append(run)
    rows += [p for p in wanted if p.startswith(MODEL_RUN_PREFIX) and p not in rows]
    return rows


def build_report(meta: Mapping[str, Any], results: Sequence[Result],
                 segments: Sequence[Segment]) -> dict[str, Any]:
    by_run: dict[str, dict[str, Result]] = {}
    for r in results:
        by_run.setdefault(r.run, {})[r.query_id] = r
    model_names: list[str] = list(meta["models"])
    largest_name, smallest_name = meta["largest"], meta["smallest"]
    per_policy = {p: policy_results(p, by_run, model_names, largest_name, smallest_name)
                  for p in _policy_order(meta, by_run)}
    missing = [p for p, rs in per_policy.items() if not rs]
    present = {p: rs for p, rs in per_policy.items() if rs}
    notes: list[str] = []
    if not present:
        raise ReportError("no results yet")
    common = set.intersection(*(set(rs) for rs in present.values()))
    total = len(meta.get("query_ids") or ()) or max(len(rs) for rs in present.values())
    if missing:
        notes.append(f"no results for {', '.join(missing)} (not run yet)")
    if len(common) < total:
        notes.append(f"partial run: every policy is measured on the {len(common)} of {total} "
                     "queries that all of them have answered")
    domains = [d for d in meta.get("domains_order") or ()
               if any(r.domain == d for rs in present.values() for r in rs.values())]
    domains += sorted({r.domain for rs in present.values() for r in rs.values()} - set(domains))
    segs_by_run: dict[str, list[Segment]] = {}
    for s in segments:
        segs_by_run.setdefault(s.run, []).append(s)

    def run_of(policy: str) -> str | None:
        if policy == "largest":
            return MODEL_RUN_PREFIX + str(largest_name)
        if policy == "smallest":
            return MODEL_RUN_PREFIX + str(smallest_name)
        return None if policy == "oracle" else policy

    policies: dict[str, Any] = {}
    for p, rs in present.items():
        rows = [rs[q] for q in sorted(common)]
        run = run_of(p)
        policies[p] = policy_metrics(rows, domains, segs_by_run.get(run or "", []),
                                     live=run is not None)
        policies[p]["run"] = run
    base_over = policies.get(BASELINE, {}).get("overhead_ms")
    for m in policies.values():  # what routing adds to a pinned request's overhead
        m["routing_overhead_ms"] = None if m["overhead_ms"] is None or base_over is None \
            else m["overhead_ms"] - base_over
    ratios = _ratios(policies, domains)
    qids = sorted(common)
    domain_of = {q: r.domain for rs in present.values() for q, r in rs.items()}
    pinned = {m: by_run[model_run(m)] for m in model_names if by_run.get(model_run(m))}
    table_routes = hindsight_table(pinned, {q: domain_of[q] for q in qids}, meta["models"]) \
        if len(pinned) == len(model_names) else {}
    table = {q: pinned[table_routes[domain_of[q]]][q] for q in qids
             if domain_of[q] in table_routes and q in pinned[table_routes[domain_of[q]]]}
    report: dict[str, Any] = {
        "meta": dict(meta),
        "queries": len(common),
        "domains": {d: sum(1 for q in common if domain_of[q] == d) for d in domains},
        "policies": policies,
        "ratios_vs_largest": ratios,
        "targets": _targets(policies, ratios, domains),
        "calm_vs_oracle": _calm_vs_oracle(present, qids, domains),
        "cascades": _cascades(present["calm"], qids) if "calm" in present else [],
        "hindsight_table": table_routes,
        "convergence": _convergence(present["calm"], present.get("static"),
                                    table if len(table) == len(qids) else None, qids,
                                    domains) if "calm" in present else {},
        "notes": notes + _standing_notes(meta, policies),
    }
    return report


def _ratios(policies: Mapping[str, Any], domains: Sequence[str]) -> dict[str, Any]:
    base = policies.get(BASELINE)
    if base is None:
        return {}
    out: dict[str, Any] = {}
    for p, m in policies.items():
        out[p] = {
            "quality": _ratio(m["quality"]["overall"], base["quality"]["overall"]),
            "latency_mean": _ratio(m["latency_ms"]["mean"], base["latency_ms"]["mean"]),
            "latency_p95": _ratio(m["latency_ms"]["p95"], base["latency_ms"]["p95"]),
            "ttft_p50": _ratio(m["ttft_ms"]["p50"], base["ttft_ms"]["p50"]),
            "energy": _ratio(m["energy_j_per_query"], base["energy_j_per_query"]),
            "per_domain": {d: _ratio(m["quality"]["per_domain"].get(d),
                                     base["quality"]["per_domain"].get(d)) for d in domains},
        }
    return out


def _target(name: str, value: float | None, threshold: float, op: str, unit: str = "x",
            note: str = "", issue: int = 7) -> dict[str, Any]:
    """One target: `value` against `threshold` (`op` "<=" or ">="), in `unit` ("x" for a
    ratio, "" for a count, " s" for seconds); `issue` is the issue that set it."""
    base = {"name": name, "target": f"{op} {_fmt_unit(threshold, unit)}", "unit": unit,
            "issue": issue}
    if value is None:
        return {**base, "value": None, "pass": None, "margin": None,
                "note": note or "not measurable"}
    passed = value <= threshold if op == "<=" else value >= threshold
    margin = value - threshold
    if not passed and op == "<=":
        need = f"needs {(1 - threshold / value) * 100:.0f}% less"
    elif not passed:
        need = f"needs {(threshold / value - 1) * 100:.0f}% more" if value else "needs > 0"
    else:
        need = ""
    return {**base, "value": value, "pass": passed, "margin": margin,
            "note": "; ".join(x for x in (need, note) if x)}


def _fmt_unit(v: float, unit: str) -> str:
    if unit == "":
        return f"{v:.0f}" if float(v).is_integer() else f"{v:.2f}"
    return f"{v:.3f}{unit}" if unit == " s" else f"{v:.2f}{unit}"


def _targets(policies: Mapping[str, Any], ratios: Mapping[str, Any],
             domains: Sequence[str]) -> list[dict[str, Any]]:
    if "calm" not in policies or BASELINE not in policies:
        return []
    r = ratios["calm"]
    calm, base = policies["calm"], policies[BASELINE]
    t = [
        _target("CALM mean latency vs largest", r["latency_mean"], TARGET_LATENCY_RATIO, "<=",
                note=f"published ~{PUBLISHED['latency']:.2f}x"),
        _target("CALM energy/query vs largest", r["energy"], TARGET_ENERGY_RATIO, "<=",
                note=f"published ~{PUBLISHED['energy']:.2f}x; energy "
                     f"{calm['energy_kind'] or 'not reported'}"),
        _target("CALM overall quality vs largest", r["quality"], TARGET_QUALITY_RATIO, ">="),
    ]
    for d in domains:
        v = r["per_domain"].get(d)
        base_q = base["quality"]["per_domain"].get(d)
        if v is None and base_q == 0:  # the baseline never passes: any quality holds
            v = 1.0
        t.append(_target(f"CALM {d} quality vs largest", v, TARGET_DOMAIN_RATIO, ">="))
    if "oracle" in policies:
        o = policies["oracle"]
        lat = _ratio(calm["latency_ms"]["mean"], o["latency_ms"]["mean"])
        q = _ratio(calm["quality"]["overall"], o["quality"]["overall"])
        t.append(_target("CALM mean latency vs oracle", lat, TARGET_ORACLE_LATENCY_RATIO, "<=",
                         note="the oracle pays no swaps and knows the grades"))
        t.append(_target("CALM quality vs oracle (equal quality)", q, TARGET_QUALITY_RATIO,
                         ">="))
    n = calm["n"] or 0
    if calm["swaps"] is not None:
        t.append(_target("CALM model loads", calm["swaps"], TARGET_MAX_LOADS, "<=", unit="",
                         issue=16, note="every load after the warm-up's, budget "
                         + (format_bytes(calm["budget_bytes"]) if calm["budget_bytes"]
                            else "?")))
        t.append(_target("CALM swap time per query", calm["swap_s"] / n if n else None,
                         TARGET_SWAP_S_PER_QUERY, "<=", unit=" s", issue=16))
    t.append(_target("CALM peak RSS vs budget", calm["peak_rss_vs_budget"], 1.0, "<=",
                     issue=16, note="the whole process against the models' budget"))
    if "static" in policies:
        s = policies["static"]
        t += [
            _target("CALM quality vs static", _ratio(calm["quality"]["overall"],
                                                     s["quality"]["overall"]), 1.0, ">=",
                    issue=17),
            _target("CALM mean latency vs static", _ratio(calm["latency_ms"]["mean"],
                                                          s["latency_ms"]["mean"]), 1.0, "<=",
                    issue=17),
            _target("CALM energy/query vs static", _ratio(calm["energy_j_per_query"],
                                                          s["energy_j_per_query"]), 1.0, "<=",
                    issue=17),
        ]
    t.append(_target("CALM mean latency vs largest", r["latency_mean"],
                     TARGET_17_LATENCY_RATIO, "<=", issue=17))
    t.append(_target("CALM energy/query vs largest", r["energy"], TARGET_17_ENERGY_RATIO, "<=",
                     issue=17))
    for d in TARGET_17_FAST_DOMAINS:
        if d in domains:
            t.append(_target(f"CALM {d} mean latency vs largest",
                             _ratio(calm["latency_mean_per_domain"].get(d),
                                    base["latency_mean_per_domain"].get(d)),
                             TARGET_17_DOMAIN_LATENCY_RATIO, "<=", issue=17))
    return t


def _cascades(calm: Mapping[str, Result], common: Sequence[str]) -> list[dict[str, Any]]:
    """Per (cheap model, domain): how many cascades kept the cheap answer or escalated, and
    how often each kind was right (from `calm.cascade`, e.g. "a kept (P=..)" or
    "a (P=.. < ..) -> b")."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for q in common:
        r = calm[q]
        if not r.cascade:
            continue
        first = r.cascade.split(" ", 1)[0]
        escalated = " -> " in r.cascade
        c = rows.setdefault((first, r.domain), {"model": first, "domain": r.domain,
                                                "cascades": 0, "kept": 0, "escalated": 0,
                                                "kept_right": 0, "escalated_right": 0})
        c["cascades"] += 1
        key = "escalated" if escalated else "kept"
        c[key] += 1
        c[key + "_right"] += int(r.passed)
    out = []
    for k in sorted(rows):
        c = rows[k]
        c["escalation_rate"] = c["escalated"] / c["cascades"]
        out.append(c)
    return out


def _convergence(calm: Mapping[str, Result], static: Mapping[str, Result] | None,
                 table: Mapping[str, Result] | None, common: Sequence[str],
                 domains: Sequence[str]) -> dict[str, Any]:
    """CALM against fixed tables in arrival order: per domain, CALM's queries in the order
    it answered them, cut into CONVERGENCE_WINDOWS slices; per slice the pass rate and mean
    latency of CALM, of `static` and of the `table` chosen in hindsight, on the same
    queries."""
    out: dict[str, Any] = {}
    for d in domains:
        qs = sorted((q for q in common if calm[q].domain == d), key=lambda q: calm[q].ts)
        if not qs:
            continue
        k, rows = CONVERGENCE_WINDOWS, []
        for i in range(k):
            lo, hi = i * len(qs) // k, (i + 1) * len(qs) // k
            sl = qs[lo:hi]
            if not sl:
                continue
            row: dict[str, Any] = {"from": lo + 1, "to": hi}
            for name, rs in (("calm", calm), ("static", static), ("table", table)):
                if rs is None:
                    continue
                row[name] = {"quality": sum(rs[q].passed for q in sl) / len(sl),
                             "latency_ms": statistics.fmean(rs[q].latency_ms or 0.0
                                                            for q in sl)}
            rows.append(row)
        out[d] = rows
    return out


def hindsight_table(pinned: Mapping[str, Mapping[str, Result]], domain_of: Mapping[str, str],
                    sizes: Mapping[str, int], tolerance: float = STATIC_TOLERANCE,
                    ) -> dict[str, str]:
    """The fixed domain table a router could have learned, chosen with the grades: per
    domain, the smallest model whose pass rate on that domain's queries (`domain_of`: query
    id -> domain) is at least `tolerance` x the best model's (static's rule on measured
    quality instead of priors). Only models that answered every query are candidates."""
    routes: dict[str, str] = {}
    for d in sorted(set(domain_of.values())):
        qs = [q for q, dd in domain_of.items() if dd == d]
        rates = {m: sum(rs[q].passed for q in qs) / len(qs) for m, rs in pinned.items()
                 if all(q in rs for q in qs)}
        if not rates:
            continue
        best = max(rates.values())
        ok = [m for m, v in rates.items() if v >= tolerance * best]
        routes[d] = min(ok, key=lambda m: (sizes.get(m, 0), m))
    return routes


def _calm_vs_oracle(present: Mapping[str, Mapping[str, Result]], common: Sequence[str],
                    domains: Sequence[str]) -> dict[str, Any] | None:
    """Where CALM loses against the oracle, per domain: answers it got wrong that some model
    got right, and the latency it spent beyond the oracle's choice."""
    if "calm" not in present or "oracle" not in present:
        return None
    calm, orc = present["calm"], present["oracle"]
    out: dict[str, Any] = {}
    for d in domains:
        qs = [q for q in common if calm[q].domain == d]
        wrong = [q for q in qs if not calm[q].passed and orc[q].passed]
        slower = [q for q in qs if calm[q].passed and orc[q].passed and
                  (calm[q].latency_ms or 0) > (orc[q].latency_ms or 0)]
        extra = sum((calm[q].latency_ms or 0) - (orc[q].latency_ms or 0) for q in qs)
        out[d] = {
            "queries": len(qs),
            "calm_wrong_oracle_right": len(wrong),
            "wrong_cheapest_right_model": dict(Counter(orc[q].model or "?" for q in wrong)),
            "calm_right_but_slower": len(slower),
            "extra_latency_ms_total": round(extra, 1),
            "calm_models": dict(Counter(calm[q].model or "?" for q in qs)),
            "oracle_models": dict(Counter(orc[q].model or "?" for q in qs)),
        }
    return out


def _standing_notes(meta: Mapping[str, Any], policies: Mapping[str, Any]) -> list[str]:
    notes = []
    if "calm" in policies:
        notes.append("calm: model 'auto', mode " + str(meta.get("mode")) + "; " + (
            "the runner's pass/fail grade of each answer was sent as /calm/feedback (the "
            "client's quality signal)" if meta.get("feedback") else "no quality feedback sent"))
    notes.append("pinned, random and static requests set calm.cache=false (plain models); "
                 "calm uses the daemon's response cache "
                 + ("as configured" if meta.get("calm_cache", True) else "disabled (--no-cache)"))
    for p, m in policies.items():
        if m["errors"]:
            notes.append(f"{p}: {m['errors']} requests failed (counted as wrong answers; "
                         "results.jsonl has the errors)")
    kinds = {m.get("energy_kind") for m in policies.values()} - {None}
    if kinds == {"estimated"}:
        notes.append("energy is estimated (no power sensor): the CPU-time estimator makes "
                     "energy ratios track busy time, not measured joules")
    if all(m.get("cache_hits") is None for m in policies.values()):
        notes.append("cache hits: the daemon does not report them (calm.cache absent)")
    notes.append("latency and TTFT are measured at the client, end to end over the socket; "
                 "overhead_ms = client TTFT - the daemon's TTFT (HTTP, classify, plan, relay); "
                 "routing_overhead_ms = a policy's overhead_ms - largest's (pinned, same path)")
    if meta.get("static_routes"):
        notes.append("static routes: " + ", ".join(f"{d}->{m}" for d, m in
                                                   meta["static_routes"].items()))
    return notes


# -- rendering -------------------------------------------------------------------------------

def _f(v: float | None, fmt: str, scale: float = 1.0, dash: str = "-") -> str:
    if v is None:
        return dash
    return format(v * scale if scale != 1.0 else v, fmt)


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def render_table(report: Mapping[str, Any]) -> str:
    meta, pol = report["meta"], report["policies"]
    domains = list(report["domains"])
    lines = []
    dom = ", ".join(f"{d} {n}" for d, n in report["domains"].items())
    budget_bytes = next((m["budget_bytes"] for m in pol.values() if m.get("budget_bytes")),
                        None)
    budget = (format_bytes(budget_bytes) if budget_bytes else "?") + (
        f" (--budget {meta['budget']})" if meta.get("budget") else
        f" (profile {meta.get('profile')})")
    lines.append(f"calm-edge bench · {report['queries']} queries ({dom}) · pattern "
                 f"{meta.get('pattern')} · seed {meta.get('seed')} · mode {meta.get('mode')} · "
                 f"budget {budget}")
    dcols = "".join(f" {d[:8]:>8}" for d in domains)
    head = (f"{'policy':<24} {'quality':>7}{dcols} | {'lat mean':>8} {'p50':>7} {'p95':>7} | "
            f"{'TTFT p50':>8} | {'J/query':>8} {'energy':<9} | {'swaps':>5} {'swap s':>7} | "
            f"{'cache':>5} | {'peak RSS':>10}")
    lines += [head, "-" * len(head)]
    for p, m in pol.items():
        q = m["quality"]
        dq = "".join(f" {_f(q['per_domain'].get(d), '.2f'):>8}" for d in domains)
        lat, ttft = m["latency_ms"], m["ttft_ms"]
        rss = format_bytes(m["peak_rss_bytes"]) if m["peak_rss_bytes"] else "-"
        lines.append(
            f"{p:<24} {_f(q['overall'], '.3f'):>7}{dq} | {_f(lat['mean'], '.2f', 1e-3):>7}s "
            f"{_f(lat['p50'], '.2f', 1e-3):>6}s {_f(lat['p95'], '.2f', 1e-3):>6}s | "
            f"{_f(ttft['p50'], '.2f', 1e-3):>7}s | {_f(m['energy_j_per_query'], '.1f'):>8} "
            f"{(m['energy_kind'] or '-'):<9} | {_f(m['swaps'], 'd'):>5} "
            f"{_f(m['swap_s'], '.1f'):>7} | {_f(m['cache_hits'], 'd', dash='n/a'):>5} | "
            f"{rss:>10}")
    ratios = report.get("ratios_vs_largest") or {}
    if ratios:
        lines.append("")
        dcols = "".join(f" {d[:8]:>8}" for d in domains)
        head = (f"{'vs largest':<24} {'quality':>7}{dcols} | {'lat mean':>8} {'lat p95':>8} | "
                f"{'TTFT p50':>8} | {'energy':>7}")
        lines += [head, "-" * len(head)]
        for p, r in ratios.items():
            dq = "".join(f" {_x(r['per_domain'].get(d)):>8}" for d in domains)
            lines.append(f"{p:<24} {_x(r['quality']):>7}{dq} | {_x(r['latency_mean']):>8} "
                         f"{_x(r['latency_p95']):>8} | {_x(r['ttft_p50']):>8} | "
                         f"{_x(r['energy']):>7}")
    rss_budget = next((m["budget_bytes"] for m in pol.values() if m.get("budget_bytes")), None)
    if rss_budget:
        lines.append(f"\nRAM budget for models: {format_bytes(rss_budget)} (peak RSS is the "
                     "whole daemon process: models, KV caches, Python)")
    per_token = {p: m["energy_j_per_token"] for p, m in pol.items()
                 if m.get("energy_j_per_token") is not None}
    if per_token:
        lines.append("energy per output token (J, the request's joules / its output tokens): "
                     + ", ".join(f"{p} {v:.2f}" for p, v in per_token.items()))
    over = {p: m["overhead_ms"] for p, m in pol.items() if m.get("overhead_ms") is not None}
    if over:
        lines.append("overhead (client TTFT - daemon TTFT), ms: " + ", ".join(
            f"{p} {v:.1f}" for p, v in over.items()) + (
            f"; static classifier in the runner {pol['static']['route_ms']:.2f} ms"
            if pol.get("static", {}).get("route_ms") is not None else ""))
    routing = {p: pol[p]["routing_overhead_ms"] for p in ("calm", "static")
               if pol.get(p, {}).get("routing_overhead_ms") is not None}
    if routing:
        lines.append("routing overhead (overhead minus largest's), ms: " + ", ".join(
            f"{p} {v:+.1f}" for p, v in routing.items()))
    targets = report.get("targets") or []
    if targets:
        lines.append("\ntargets (the issue that set each in brackets):")
        for t in targets:
            status = "n/a " if t["pass"] is None else ("PASS" if t["pass"] else "MISS")
            unit = t.get("unit", "x")
            value = "-" if t["value"] is None else _fmt_unit(t["value"], unit)
            by = "" if t["pass"] is not False else f" by {_fmt_unit(abs(t['margin']), unit)}"
            note = f"  ({t['note']})" if t["note"] else ""
            lines.append(f"  {status}  [{t.get('issue', 7):>2}] {t['name']:<38} {value:>8} "
                         f"(target {t['target']}){by}{note}")
    cascades = report.get("cascades") or []
    if cascades:
        lines.append("\ncascades (calm): the cheap model answers first; kept or escalated")
        lines.append(f"  {'cheap model':<22} {'domain':<9} {'cascades':>8} {'kept':>5} "
                     f"{'right':>5} {'escal.':>6} {'right':>5} {'rate':>6}")
        for c in cascades:
            lines.append(f"  {c['model']:<22} {c['domain']:<9} {c['cascades']:>8} "
                         f"{c['kept']:>5} {c['kept_right']:>5} {c['escalated']:>6} "
                         f"{c['escalated_right']:>5} {c['escalation_rate']:>6.0%}")
    conv = report.get("convergence") or {}
    if conv:
        table = report.get("hindsight_table") or {}
        lines.append("\nCALM in arrival order against fixed tables, per domain (pass rate, mean "
                     "latency on the same queries)" + (
                         "; table = the best fixed table in hindsight: " + ", ".join(
                             f"{d}->{m}" for d, m in table.items()) if table else ""))
        for d, rows in conv.items():
            for row in rows:
                cells = [f"{name} {row[name]['quality']:.2f} "
                         f"{row[name]['latency_ms'] / 1000:5.2f}s"
                         for name in ("calm", "static", "table") if name in row]
                lines.append(f"  {d:<9} {row['from']:>3}-{row['to']:<3} " + " | ".join(cells))
    cvo = report.get("calm_vs_oracle")
    if cvo:
        lines.append("\nwhere CALM loses against the oracle:")
        for d, c in cvo.items():
            lines.append(f"  {d:<9} wrong where a model was right: "
                         f"{c['calm_wrong_oracle_right']:>3} of {c['queries']} (cheapest right: "
                         f"{c['wrong_cheapest_right_model']}); "
                         f"right but slower: {c['calm_right_but_slower']}; extra latency "
                         f"{c['extra_latency_ms_total'] / 1000:.1f} s; calm used "
                         f"{c['calm_models']}, oracle {c['oracle_models']}")
    if report.get("notes"):
        lines.append("\nnotes:")
        lines += [f"  - {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def render_png(report: Mapping[str, Any], path: Path) -> None:
    """Quality vs mean latency (marker area ~ energy per query) and per-domain quality
    bars. Raises ReportError if matplotlib (the `bench` extra) is missing."""
    try:
        mpl: Any = importlib.import_module("matplotlib")
    except ImportError:
        raise ReportError("report.png needs matplotlib: pip install 'calm-edge[bench]'"
                          ) from None
    mpl.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")
    pol = report["policies"]
    domains = list(report["domains"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.2))
    energies = [m["energy_j_per_query"] for m in pol.values() if m["energy_j_per_query"]]
    emax = max(energies) if energies else 1.0
    cmap = plt.get_cmap("tab10")
    for i, (p, m) in enumerate(pol.items()):
        lat, q = m["latency_ms"]["mean"], m["quality"]["overall"]
        if lat is None or q is None:
            continue
        e = m["energy_j_per_query"]
        size = 60 + 1400 * (e / emax) if e else 60
        ax1.scatter([lat / 1000], [q], s=size, alpha=0.55, color=cmap(i % 10),
                    edgecolors="black", linewidths=0.6)
        ax1.annotate(p, (lat / 1000, q), textcoords="offset points",
                     xytext=(6, 6 + 9 * (i % 3)),
                     fontsize=8)
    ax1.set_xlabel("mean latency per query (s)")
    ax1.set_ylabel("quality (pass rate)")
    kind = next((m["energy_kind"] for m in pol.values() if m["energy_kind"]), None)
    ax1.set_title(f"quality vs latency (marker area ~ energy/query, {kind or 'no energy'})",
                  fontsize=10)
    ax1.set_ylim(0, 1.05)
    ax1.grid(alpha=0.3)
    width = 0.8 / max(len(pol), 1)
    for i, (p, m) in enumerate(pol.items()):
        vals = [m["quality"]["per_domain"].get(d) or 0.0 for d in domains]
        xs = [j + (i - (len(pol) - 1) / 2) * width for j in range(len(domains))]
        ax2.bar(xs, vals, width=width, label=p, color=cmap(i % 10))
    ax2.set_xticks(range(len(domains)))
    ax2.set_xticklabels(domains)
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel("quality (pass rate)")
    ax2.set_title("quality per domain", fontsize=10)
    ax2.legend(fontsize=7, ncol=2)
    ax2.grid(axis="y", alpha=0.3)
    fig.suptitle(f"calm-edge bench: {report['queries']} queries, pattern "
                 f"{report['meta'].get('pattern')}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out_dir: Path, *, png: bool = True) -> tuple[dict[str, Any], str]:
    """Build the report of a results directory and write report.json, report.txt and
    (if `png` and matplotlib is installed) report.png. Returns (report, table text); a
    note in the report says when the PNG could not be drawn."""
    meta = read_meta(out_dir)
    if meta is None:
        raise ReportError(f"{out_dir} is not a bench results directory (no meta.json)")
    results, segments = read_records(out_dir)
    report = build_report(meta, results, segments)
    if png:
        try:
            render_png(report, out_dir / REPORT_PNG)
        except ReportError as e:
            report["notes"].append(str(e))
    text = render_table(report)
    (out_dir / REPORT_JSON).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
    (out_dir / REPORT_TXT).write_text(text, encoding="utf-8")
    return report, text
