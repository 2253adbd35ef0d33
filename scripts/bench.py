#!/usr/bin/env python3
"""Run `calm-edge bench` (same options): `.venv/bin/python scripts/bench.py --limit 2`."""

from __future__ import annotations

import sys

from calm_edge.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
