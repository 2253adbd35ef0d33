"""`calm-edge bench`: CALM against single-model baselines on a workload with checkable answers.

    calm-edge bench [run] [--limit N] [--domains code,math] [--policies calm,largest,...]
                    [--budget SIZE] [--pattern steady|shifting] [--mode M] [--seed S]
                    [--out DIR] [--state DIR] [--no-feedback] [--no-cache]
    calm-edge bench report DIR

Modules: `workload` (the shipped queries, selection, arrival patterns), `graders` (+
`sandbox` for code), `policies` (what each policy is; the oracle), `runner` (daemon per run,
requests, grading, resumable results), `report` (table, report.json, report.png).
Importing this package needs neither matplotlib nor a daemon; `main` is the CLI entry.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from calm_edge.bench.policies import POLICIES

__all__ = ["POLICIES", "main"]


def _split(value: str | None) -> tuple[str, ...] | None:
    if not value:
        return None
    return tuple(v.strip() for v in value.split(",") if v.strip())


def main(args: argparse.Namespace) -> int:
    """Run `calm-edge bench` from parsed arguments (calm_edge.cli builds the parser)."""
    from calm_edge.bench.report import ReportError, write_report
    from calm_edge.bench.runner import BenchConfig, BenchError, run_bench
    from calm_edge.bench.workload import WorkloadError

    if args.action == "report":
        if args.dir is None:
            print("calm-edge bench report: give the results directory", file=sys.stderr)
            return 2
        try:
            _, text = write_report(Path(args.dir), png=not args.no_png)
        except (ReportError, ValueError) as e:
            print(f"calm-edge bench report: {e}", file=sys.stderr)
            return 1
        print(text, end="")
        print(f"report: {Path(args.dir) / 'report.json'}", file=sys.stderr)
        return 0
    if args.dir is not None:
        print("calm-edge bench: a directory is only taken by `bench report DIR`; use --out",
              file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path("bench-results") / time.strftime("%Y%m%d-%H%M%S")
    cfg = BenchConfig(
        out_dir=out, policies=_split(args.policies) or POLICIES, limit=args.limit,
        domains=_split(args.domains), budget=args.budget, pattern=args.pattern,
        mode=args.mode, seed=args.seed, feedback=not args.no_feedback,
        calm_cache=not args.no_cache, state=None if args.state is None else Path(args.state),
        profile=args.profile, fleet=None if args.fleet is None else Path(args.fleet),
        models_dir=None if args.models_dir is None else Path(args.models_dir),
        workload=None if args.workload is None else Path(args.workload),
        png=not args.no_png)
    print(f"calm-edge bench: results in {out}", file=sys.stderr)
    try:
        outcome = run_bench(cfg)
    except (BenchError, WorkloadError, ReportError) as e:
        print(f"calm-edge bench: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ncalm-edge bench: interrupted; rerun with --out {out} (and the same options) "
              f"to resume; `calm-edge bench report {out}` shows what is there", file=sys.stderr)
        return 130
    if outcome.report_text:
        print(outcome.report_text, end="")
    print(f"report: {out / 'report.txt'}, {out / 'report.json'}"
          + (f", {out / 'report.png'}" if (out / "report.png").exists() else ""),
          file=sys.stderr)
    return 0 if outcome.complete else 1
