"""`calm-edge top`: a live view of the daemon for an operator on the board, as jtop and
nvtop give: resident models with their tier and memory against the budget, the queue with
predicted waits, generations in flight with their speed, power, and the last decisions.

It reads `/calm/status` over the socket every `interval_s`. On a terminal with curses it
redraws in place until `q`; elsewhere (a dumb terminal, a pipe, a log) it prints the frame
as plain lines each interval. `render` is pure: a status document in, lines out.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from calm_edge.units import format_bytes


def _bar(frac: float, width: int = 20) -> str:
    n = max(0, min(width, round(frac * width)))
    return "[" + "#" * n + "." * (width - n) + "]"


def _s(x: Any, fmt: str = ".1f", unit: str = "") -> str:
    return "-" if x is None else f"{format(x, fmt)}{unit}"


def render(st: dict[str, Any], width: int = 100) -> list[str]:
    """One frame, from a /calm/status document."""
    mem, dev = st["memory"], st.get("device") or {}
    sched = st.get("scheduler") or {}
    energy = st.get("energy") or {}
    lines = [f"calm-edge {st['version']} · up {st['uptime_s']:.0f}s · profile "
             f"{st['profile']['name']} · requests {st['requests_total']} · in flight "
             f"{st.get('in_flight', 0)}"]
    used, budget = mem["used_bytes"], mem["budget_bytes"]
    lines.append(f"memory {_bar(used / max(budget, 1))} {format_bytes(used)} of "
                 f"{format_bytes(budget)} budget · process RSS "
                 f"{format_bytes(dev.get('rss_bytes') or 0)}")
    rails = dev.get("power_rails_mw") or {}
    power = ", ".join(f"{r} {mw / 1000:.2f} W" for r, mw in rails.items()) or (
        f"{dev['power_mw'] / 1000:.2f} W" if dev.get("power_mw") is not None else "-")
    temp = f" · max temp {dev['max_temp_c']:.0f} C" if dev.get("max_temp_c") is not None else ""
    lines.append(f"power ({energy.get('kind', '?')}, {energy.get('source', '?')}): {power} · "
                 f"{energy.get('total_j', 0):.0f} J since start{temp}")
    lines.append("")
    lines.append(f"{'model':<22} {'state':<9} {'tier':<5} {'charged':>10} {'measured':>10} "
                 f"{'use':>4} {'loads':>5} {'evict':>5}")
    for m in st["models"]:
        measured = format_bytes(m["measured_bytes"]) if m.get("measured_bytes") else "-"
        lines.append(f"{m['name']:<22} {m['state']:<9} {m.get('tier', '-'):<5} "
                     f"{format_bytes(m['charged_bytes']):>10} {measured:>10} "
                     f"{m['in_use']:>4} {m['loads']:>5} {m['evictions']:>5}")
    lines.append("")
    queue = [q for q in sched.get("queue", []) if not q.get("background")]
    lines.append(f"queue: {len(queue)} waiting · a new request would wait "
                 f"{_s(sched.get('predicted_wait_s'), '.1f', ' s')} · lanes "
                 f"{sched.get('free_lanes', '?')}/{sched.get('lanes', '?')} free · refused "
                 f"{sum((sched.get('rejected') or {}).values())}")
    for q in queue[:8]:
        who = f"  {q['client']}" if q.get("client") else ""
        lines.append(f"  waiting  {q['model']:<22} priority {q['priority']:>3}  waited "
                     f"{q['waited_s']:6.1f} s  predicted {q['predicted_s']:6.1f} s{who}")
    for a in sched.get("active", []):
        kind = "background" if a.get("background") else "running"
        lines.append(f"  {kind:<8} {a['model']:<22} {a['running_s']:6.1f} s of predicted "
                     f"{a['predicted_s']:.1f} s · {a.get('tokens', 0)} tokens · "
                     f"{_s(a.get('tokens_per_s'))} tok/s")
    clients = (st.get("quotas") or {}).get("clients") or []
    if clients:
        lines.append("")
        lines.append("clients (last minute): " + " · ".join(
            f"{c['client']} {c['last_minute']['gen_share']:.0%} of generation, "
            f"{c['waiting']} waiting" + (f", {sum(c['refused'].values())} refused"
                                         if c["refused"] else "")
            for c in clients[:4]))
    lines.append("")
    lines.append("last decisions:")
    for d in (st.get("recent_decisions") or [])[:5]:
        lines.append(f"  {d['domain']:<8} {d['mode']:<8} -> {d['chosen']:<20} "
                     f"{d['latency_ms']:>7.0f} ms  {d['reason']}")
    return [line[:width] for line in lines]


def run(fetch: Callable[[], dict[str, Any]], interval_s: float = 1.0, *,
        frames: int | None = None, out: TextIO | None = None,
        curses_ok: bool | None = None) -> int:
    """Show frames from `fetch` until q (curses) or Ctrl-C, or `frames` of them."""
    out = out if out is not None else sys.stdout
    if curses_ok is None:
        curses_ok = out.isatty() and os.environ.get("TERM", "dumb") not in ("", "dumb")
    if curses_ok:
        try:
            import curses
        except ImportError:
            curses_ok = False
        else:
            return int(curses.wrapper(lambda scr: _curses_loop(scr, fetch, interval_s,
                                                               frames)))
    shown = 0
    with contextlib.suppress(KeyboardInterrupt):
        while frames is None or shown < frames:
            lines = render(fetch())
            out.write(time.strftime("-- %H:%M:%S ") + "-" * 60 + "\n")
            out.write("\n".join(lines) + "\n")
            out.flush()
            shown += 1
            if frames is None or shown < frames:
                time.sleep(interval_s)
    return 0


def _curses_loop(scr: Any, fetch: Callable[[], dict[str, Any]], interval_s: float,
                 frames: int | None) -> int:
    import curses

    curses.curs_set(0)
    scr.timeout(int(interval_s * 1000))
    shown = 0
    while frames is None or shown < frames:
        height, width = scr.getmaxyx()
        scr.erase()
        try:
            lines = render(fetch(), width - 1)
        except Exception as e:  # the daemon went away: say so and keep trying
            lines = [f"cannot read the daemon's status: {e}", "", "q quits"]
        for i, line in enumerate(lines[: height - 1]):
            scr.addstr(i, 0, line)
        scr.addstr(min(len(lines), height - 1), 0, "q quits"[: width - 1])
        scr.refresh()
        shown += 1
        if scr.getch() in (ord("q"), ord("Q")):
            break
    return 0
