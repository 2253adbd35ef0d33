"""The results directory of a bench run: `meta.json`, the append-only `results.jsonl`.

`results.jsonl` holds one JSON object per line, appended and flushed as each answer is
graded, so an interrupted run loses at most the answer in flight:

- `{"kind": "result", "run": ..., "query_id": ..., ...}`: one graded answer (`Result`);
- `{"kind": "segment", "run": ..., ...}`: one daemon lifetime of a run (peak RSS, wall time).

A run is one live series of requests: `model:<name>` (every query pinned to one model),
`random`, `static` or `calm`. Policies are views on runs (calm_edge.bench.policies).
Owned by the runner's main thread; not thread-safe.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.jsonl"
META_FILE = "meta.json"


@dataclass
class Result:
    """One graded answer. Times in ms measured at the client unless named `server_*`."""

    run: str
    query_id: str
    domain: str
    passed: bool
    detail: str
    model: str | None = None          # the model that answered (calm.model)
    latency_ms: float | None = None   # request sent -> last event received
    ttft_ms: float | None = None      # request sent -> first content chunk received
    server_latency_ms: float | None = None
    server_ttft_ms: float | None = None  # calm.ttft_ms: wait (load/queue) + model TTFT
    wait_ms: float | None = None
    energy_j: float | None = None
    energy_kind: str | None = None    # "measured" | "estimated" | None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    cache: str | None = None          # calm.cache when the daemon reports it
    loads: dict[str, int] = field(default_factory=dict)  # model loads during this query
    load_s: float = 0.0               # time spent loading during this query
    routed_domain: str | None = None  # the daemon's (calm) or the runner's (static) domain
    reason: str | None = None
    explored: bool | None = None
    cascade: str | None = None        # calm.cascade: what a cascade did
    route_ms: float | None = None     # runner-side routing time (static's classifier)
    feedback: bool | None = None      # True: /calm/feedback accepted the grade
    error: str | None = None
    reply: str = ""
    ts: float = 0.0                   # wall clock when recorded

    def to_json(self) -> dict[str, Any]:
        return {"kind": "result", **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Result:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class Segment:
    run: str
    started_ts: float
    ended_ts: float
    results: int                    # results recorded in this segment
    peak_rss_bytes: int | None      # of the daemon process, sampled every 0.25 s
    budget_bytes: int | None
    loads: dict[str, int] = field(default_factory=dict)  # incl. warm-up
    completed: bool = False         # the run had no queries left when it ended
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"kind": "segment", **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Segment:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def read_records(out_dir: Path) -> tuple[list[Result], list[Segment]]:
    """All records of a results directory. A torn last line (a crash mid-write) is
    ignored; a malformed line elsewhere raises ValueError naming it."""
    path = out_dir / RESULTS_FILE
    results: list[Result] = []
    segments: list[Segment] = []
    if not path.exists():
        return results, segments
    lines = path.read_text(encoding="utf-8").split("\n")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except ValueError:
            if n == len(lines):  # torn final line, no newline after it
                break
            raise ValueError(f"{path}:{n}: not JSON") from None
        if d.get("kind") == "result":
            results.append(Result.from_json(d))
        elif d.get("kind") == "segment":
            segments.append(Segment.from_json(d))
    return results, segments


class ResultStore:
    """Appends records to `results.jsonl`, one flushed line each."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / RESULTS_FILE
        self._repair()
        self._fh = self.path.open("a", encoding="utf-8")

    def _repair(self) -> None:
        """Cut a torn last line so that the next append starts on a line of its own."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with self.path.open("r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)

    def append(self, record: Result | Segment) -> None:
        self._fh.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def done_pairs(results: list[Result]) -> set[tuple[str, str]]:
    return {(r.run, r.query_id) for r in results}


def iter_run(results: list[Result], run: str) -> Iterator[Result]:
    return (r for r in results if r.run == run)


def read_meta(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / META_FILE
    if not path.exists():
        return None
    meta: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return meta


def write_meta(out_dir: Path, meta: Mapping[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(out_dir / META_FILE)
