"""Optional model tiers (`calm-edge models pull --tier NAME`): larger models for boards with
the memory for them.

A tier model is declared in the fleet manifest (`[[tier]]`: calm_edge.fleet.TierSpec) and
offered by the profiles that list its tier (`memory.tiers`). Pulling one:
1. pulls and verifies the fleet model it derives from (calm_edge.pull);
2. re-encodes its weights with llama.cpp (`llama_model_quantize` to Q8_0 or F16) into a
   private directory inside the models directory;
3. adds the result like a user's GGUF (calm_edge.models_add): header, llama.cpp and
   footprint checks, SHA-256 into the local manifest, the source's quality priors. Like
   every added model it gets only pinned requests until it is calibrated on this device.

Why derived rather than downloaded: no larger instruct GGUF installs offline from PyPI
the way the default fleet does (searched 2026-12: nothing above 1.5B ships its weights in
wheels). A re-encoded model costs what a larger one costs (the Q8_0 1.5B is the size of a
3B Q4_K_M) but knows no more than its source; the README says what that means for the
bench. Blocking throughout.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from calm_edge.config import Settings
from calm_edge.fleet import FileStatus, Fleet, TierSpec, model_path, read_local_models, verify
from calm_edge.models_add import AddOptions, AddResult, ModelsError, add_model, profiles_to_check

# llama_ftype values (llama.h) of the types a tier may use.
_FTYPES = {"Q8_0": 7, "F16": 1}


class TierError(RuntimeError):
    """A tier could not be pulled; the message says which and why. The manifests are
    unchanged."""


@dataclass(frozen=True)
class TierResult:
    spec: TierSpec
    action: str          # "present", "added"
    build_s: float = 0.0
    added: AddResult | None = None


def tier_models(fleet: Fleet, tier: str) -> list[TierSpec]:
    """The tier's models. TierError naming the known tiers when there are none."""
    found = [t for t in fleet.tiers if t.tier == tier]
    if not found:
        known = sorted({t.tier for t in fleet.tiers})
        raise TierError(f"the fleet manifest {fleet.source} has no tier {tier!r}"
                        + (f" (tiers: {', '.join(known)})" if known else " (it has no tiers)"))
    return found


def derive(src: Path, dest: Path, ftype: str, *, threads: int) -> None:
    """Re-encode the GGUF `src` as `ftype` (Q8_0 or F16) into `dest` with llama.cpp
    (dequantized first where `src` is quantized). Blocking: tens of seconds per GB.
    llama.cpp's per-tensor lines go to the debug log. TierError on failure."""
    import llama_cpp

    from calm_edge.backends.llama_cpp import _route_native_logs

    _route_native_logs()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = _FTYPES[ftype]
    params.allow_requantize = True
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dest).encode(),
                                        ctypes.byref(params))
    if rc != 0:
        raise TierError(f"llama.cpp could not re-encode {src} as {ftype} (status {rc}); "
                        "see the debug log (--log-level debug)")


def pull_tier(tier: str, settings: Settings, base_fleet: Fleet, *, force: bool = False,
              pull_source: Callable[[str], None] | None = None,
              threads: int = 0, say: Callable[[str], None] = lambda _: None,
              ) -> list[TierResult]:
    """Build and add every model of `tier` that is not added yet. `base_fleet` is the
    manifest without the local one; `pull_source(name)` installs a fleet model (the CLI
    passes `calm-edge models pull`'s). Refuses a tier the profile does not offer unless
    `force`. TierError, or ModelsError from the add; a failed build leaves nothing."""
    specs = tier_models(base_fleet, tier)
    profile = settings.profile
    if tier not in profile.memory.tiers and not force:
        offered = ", ".join(profile.memory.tiers) or "none"
        budget_gib = profile.memory.ram_budget_bytes / (1 << 30)
        raise TierError(f"profile {profile.device.name} does not offer the {tier!r} tier "
                        f"(its tiers: {offered}; RAM budget {budget_gib:.2f} GiB): use a "
                        "profile that does (x86-large, the Jetson Orin profiles) or --force")
    from calm_edge.backends.llama_cpp import usable_cpus

    local = {m.name: m for m in read_local_models(settings.local_fleet_path)}
    out = []
    for t in specs:
        have = local.get(t.name)
        if have is not None and verify(settings.models_dir, have) is FileStatus.VERIFIED:
            out.append(TierResult(t, "present"))
            continue
        source = base_fleet.get(t.derive_from)
        assert source is not None  # the manifest's parser checked it
        if pull_source is not None:
            pull_source(source.name)
        if verify(settings.models_dir, source) is not FileStatus.VERIFIED:
            raise TierError(f"{t.name} is built from {source.name}, whose file is missing or "
                            f"does not verify: calm-edge models pull {source.name}")
        settings.models_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".tier-", dir=settings.models_dir))
        try:
            built = work / f"{t.name}.gguf"
            say(f"building {t.name}: {source.name} re-encoded as {t.type} (llama.cpp; "
                "about a minute per GB)")
            t0 = time.monotonic()
            derive(model_path(settings.models_dir, source), built, t.type,
                   threads=threads or usable_cpus())
            build_s = time.monotonic() - t0
            say(f"built {built.stat().st_size / (1 << 30):.2f} GiB in {build_s:.0f} s; "
                "adding it")
            res = add_model(built, settings.models_dir, base_fleet, settings.local_fleet_path,
                            profiles_to_check(settings), AddOptions(
                                name=t.name, quality=dict(source.quality), n_ctx=source.n_ctx,
                                stop=source.stop,
                                origin=f"{source.name} (sha256 {source.sha256[:16]}...) "
                                       f"re-encoded as {t.type}"))
        finally:
            with contextlib.suppress(OSError):
                shutil.rmtree(work)
        out.append(TierResult(t, "added", build_s, res))
    return out


__all__ = ["ModelsError", "TierError", "TierResult", "derive", "pull_tier", "tier_models"]
