#!/usr/bin/env python3
"""Answer-length priors for models/fleet.toml from graded answers: per model and domain, the
mean length of the answers that ended by themselves and the share cut by max_tokens.

    .venv/bin/python scripts/answer_lengths.py [--outcomes models/router/outcomes.jsonl]

Reads the labelled answers of scripts/label_outcomes.py (every fleet model on the outcome
corpus: not the bench, not the canaries; greedy, each query's max_tokens) and prints the
`answer_tokens` and `limit_share` lines to paste into each [[model]] of the manifest. The
loop starts from them for a model it has not yet seen answer in a domain on this device.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

from calm_edge.domains import DOMAINS

DEFAULT = Path(__file__).resolve().parent.parent / "models" / "router" / "outcomes.jsonl"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--outcomes", type=Path, default=DEFAULT)
    args = ap.parse_args()
    rows: dict[tuple[str, str], list[dict[str, object]]] = collections.defaultdict(list)
    for line in args.outcomes.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            rows[(str(r["model"]), str(r["domain"]))].append(r)
    models = list(dict.fromkeys(m for m, _ in rows))  # in the order they appear
    for model in models:
        tokens, shares = [], []
        for d in DOMAINS:
            rs = rows.get((model, d))
            if not rs:
                continue
            natural = [int(str(r["completion_tokens"])) for r in rs
                       if r["finish_reason"] != "length"]
            cut = sum(r["finish_reason"] == "length" for r in rs) / len(rs)
            if natural:
                tokens.append(f"{d} = {sum(natural) / len(natural):.0f}")
            shares.append(f"{d} = {cut:.2f}")
        print(f"# {model} ({sum(len(rows[(model, d)]) for d in DOMAINS if (model, d) in rows)}"
              " answers)")
        print(f"answer_tokens = {{ {', '.join(tokens)} }}")
        print(f"limit_share = {{ {', '.join(shares)} }}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
