"""Parsing and formatting of sizes and durations given by people (config files, CLI flags)."""

from __future__ import annotations

import re

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_BINARY = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_DECIMAL = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_size_bytes(text: str) -> int:
    """Parse "800M", "4G", "1.5GiB", "512MB" or "1048576" into bytes.

    K/M/G/T and KiB/MiB/GiB/TiB are binary (powers of 1024, as systemd's MemoryMax=);
    KB/MB/GB/TB are decimal. Raises ValueError with the offending text.
    """
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"not a size: {text!r} (expected e.g. '800M', '4G', '1.5GiB')")
    number, prefix, suffix = m.group(1), m.group(2).lower(), m.group(3).lower()
    decimal = suffix == "b" and prefix != ""
    table = _DECIMAL if decimal else _BINARY
    return int(float(number) * table[prefix])


def format_bytes(n: float) -> str:
    """Human-readable binary size: 1536 -> '1.5 KiB'."""
    value = float(n)
    if abs(value) < 1024:
        return f"{value:.0f} B"
    for unit in ("KiB", "MiB"):
        value /= 1024
        if abs(value) < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.2f} GiB"
