"""The field conditions of a /calm/status document as text (`calm-edge status`). Pure;
light to import (the CLI client imports it)."""

from __future__ import annotations

from typing import Any


def field_lines(f: dict[str, Any] | None) -> list[str]:
    """The field conditions of a /calm/status document as a few lines of text (calm-edge
    status): power state, closest trip point, energy pacing, the last rescale, notes."""
    if not f:
        return []
    parts = []
    power = f.get("power") or {}
    if power.get("nvpmodel"):
        parts.append(f"power mode {power['nvpmodel']['name']}")
    for kind, ratio in sorted((f.get("cap_ratios") or {}).items()):
        parts.append(f"{kind} caps {ratio:.0%}")
    trip = (f.get("thermal") or {}).get("closest_trip")
    if trip is not None:
        where = "below" if trip["margin_c"] >= 0 else "above"
        parts.append(f"{trip['zone']} {abs(trip['margin_c']):.1f} C {where} its {trip['type']} "
                     f"trip ({trip['trip_c']:.0f} C)")
        if f["thermal"].get("pressure"):
            parts.append(f"thermal pressure {f['thermal']['pressure']:.2f}")
    e = f.get("energy") or {}
    mode = f"effective mode {e.get('effective_mode')}"
    if e.get("kind"):
        rate = f", spending {e['spend_rate_w']:.2f} W" if e.get("spend_rate_w") is not None \
            else ""
        pace = f", pace {e['pace']:.2f}" if e.get("pace") is not None else ""
        mode += (f" ({e['kind']} budget: {e['remaining_wh']:.1f} of {e['budget_wh']:.1f} Wh, "
                 f"{e['remaining_s'] / 3600:.1f} h left{pace}{rate}"
                 f"{'; EXHAUSTED' if e.get('exhausted') else ''})")
    parts.append(mode)
    lines = ["field: " + " · ".join(parts)]
    for r in (f.get("rescales") or [])[:1]:
        lines.append(f"  rescaled ({r['change']}): " + ", ".join(
            f"{m} x{v['factor']:.2f} ({v['source']})" for m, v in r["models"].items()))
    lines += [f"  note: {n}" for n in f.get("notes") or []]
    return lines
