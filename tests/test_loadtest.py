"""The short load test (CI): 32 clients x 20 s on the tiny models, through a real daemon."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_loadtest_short_run_on_tiny_models(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "loadtest.py"), "--tiny",
                        "--clients", "32", "--seconds", "20", "--max-tokens", "16",
                        "--rss-limit", "1G", "--json", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(out.read_text())
    by = report["by_kind_status"]
    assert report["unexpected"] == [] and report["five_xx_not_injected"] == 0
    assert report["hung_clients"] == 0 and report["daemon_exit"] == 0
    assert by.get("injected:503", 0) > 0      # the truncated model is refused, not served
    assert by.get("abandon:200", 0) > 0       # early disconnects happened
    assert sum(n for k, n in by.items() if k.startswith("invalid:4")) > 0
    assert sum(n for k, n in by.items() if k.endswith(":200")) > 100
    assert 0 < report["max_rss_bytes"] < 1 << 30
