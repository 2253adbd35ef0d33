"""`calm-edge models add | remove | export | import`: users bring their own GGUF files.

Adding a model, in order, refusing with a clear error before anything is written:
1. the source: a regular file this user can read (a link is followed and said so; the
   models directory gets a real file, never a link);
2. its GGUF header (calm_edge.gguf_meta): not GGUF, truncated, no tensors;
3. the prompt format: the file's chat template, or `--completion-template` for a base
   model; neither is an error;
4. llama.cpp (calm_edge.backends.probe): a vocab-only load says whether this build knows
   the architecture, and the chat template must render;
5. its footprint against the RAM budget of every profile (the one in use and the shipped
   ones): too large for all of them is an error;
6. under the manifest lock: a name or file taken by the fleet or an added model;
7. the file goes into the models directory under a temporary name (hard-linked when on
   the same filesystem and owned by this user, else copied while hashing), is fsync-ed,
   checked again and renamed; its SHA-256 sidecar is written;
8. the local manifest is rewritten atomically (calm_edge.local_fleet): the commit point.
A failure after 7 removes the file it installed; a crash leaves at most a verified file
that no manifest names, which a later add of the same file reuses.

Removing rewrites the manifest first, then deletes the file and its sidecar. Only models
of the local manifest can be removed. Blocking throughout (hashing: seconds per GB).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import math
import os
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from calm_edge.backends.probe import ProbeError, ProbeResult, probe_llama_cpp
from calm_edge.config import (
    ConfigError,
    Profile,
    Settings,
    mem_total_bytes,
    profile_from_mapping,
    read_toml,
)
from calm_edge.domains import DOMAINS, Domain
from calm_edge.fleet import (
    NAME_RE,
    AddedInfo,
    FileStatus,
    Fleet,
    ModelSpec,
    PromptFormat,
    model_footprint,
    model_path,
    open_new,
    read_local_models,
    record_verified,
    sha256_file,
    verify,
)
from calm_edge.gguf_meta import GGUFError, GGUFInfo, read_gguf
from calm_edge.local_fleet import locked, write_manifest
from calm_edge.paths import profile_dirs
from calm_edge.units import format_bytes

LOCAL_MANIFEST = "fleet.local.toml"
DEFAULT_N_CTX = 4096  # the context an added model gets unless told (KV cache grows with it)

Probe = Callable[[Path, str | None], ProbeResult]  # (file, chat template to render)


class ModelsError(RuntimeError):
    """An add, remove, export or import refused; the message says what and why. Nothing
    was changed."""


@dataclass(frozen=True)
class AddOptions:
    name: str | None = None                  # default: general.name or the file stem
    domains: tuple[Domain, ...] = ()         # meant for these (priors elsewhere halved)
    n_ctx: int | None = None                 # default: min(trained context, DEFAULT_N_CTX)
    completion_template: str | None = None   # a base model: format = completion
    stop: tuple[str, ...] = ()
    copy: bool = False                       # never hard-link


@dataclass(frozen=True)
class Fit:
    profile: str
    footprint_bytes: int
    budget_bytes: int

    @property
    def fits(self) -> bool:
        return self.footprint_bytes <= self.budget_bytes


@dataclass(frozen=True)
class AddResult:
    spec: ModelSpec
    action: str                  # "copied", "linked", "in place", "reused", "present"
    path: Path
    fits: tuple[Fit, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class RemoveResult:
    spec: ModelSpec
    file_removed: bool
    path: Path


# -- pure helpers ------------------------------------------------------------------------

def sanitize_name(text: str) -> str:
    """A fleet model name (NAME_RE) from free text; "" when nothing usable is left."""
    s = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")
    return s[:64].rstrip("-._")


def sanitize_file(name: str) -> str:
    """A models-directory file name ending in .gguf from a source file name."""
    stem = name[:-5] if name.lower().endswith(".gguf") else name
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")[:195].rstrip("-._")
    return f"{s or 'model'}.gguf"


# Quality guesses for a general instruct model of a given size, per domain, at these
# parameter counts (billions); interpolated in log(parameters), clamped at the ends.
# Anchored on the default fleet's measurements (DESIGN.md: 0.135B ~0.3/0.05/0.5/0.2,
# 1.5B ~0.95/0.55/0.87/0.8 for code/math/factual/instruct), discounted for a model nobody
# measured, and rising toward what 3B-8B instruct models reach. Only a starting point:
# calibration on the device replaces it.
_GUESS_PARAMS_B = (0.1, 0.5, 1.5, 3.0, 8.0)
_GUESS: Mapping[Domain, tuple[float, ...]] = {
    "code": (0.25, 0.55, 0.80, 0.85, 0.90),
    "math": (0.05, 0.15, 0.45, 0.65, 0.80),
    "factual": (0.40, 0.55, 0.75, 0.82, 0.88),
    "instruct": (0.20, 0.45, 0.70, 0.80, 0.86),
    "writing": (0.30, 0.45, 0.70, 0.78, 0.85),
}
OFF_DOMAIN_SHARE = 0.5  # a model meant for other domains starts at this share of the guess


def guess_quality(params_b: float, domains: Sequence[str] = ()) -> dict[Domain, float]:
    """Prior quality per domain for a model nobody measured, from its size. With
    `domains`, the others start at OFF_DOMAIN_SHARE of the guess. Pure."""
    xs = [math.log(p) for p in _GUESS_PARAMS_B]
    x = math.log(min(max(params_b, _GUESS_PARAMS_B[0]), _GUESS_PARAMS_B[-1]))
    i = max(j for j in range(len(xs) - 1) if xs[j] <= x) if x < xs[-1] else len(xs) - 2
    t = (x - xs[i]) / (xs[i + 1] - xs[i])
    out: dict[Domain, float] = {}
    for d in DOMAINS:
        ys = _GUESS[d]
        q = ys[i] + t * (ys[i + 1] - ys[i])
        if domains and d not in domains:
            q *= OFF_DOMAIN_SHARE
        out[d] = round(q, 2)
    return out


def fits_for(info: GGUFInfo, spec: ModelSpec,
             profiles: Sequence[tuple[str, Profile]]) -> tuple[Fit, ...]:
    """The footprint of `spec` under each profile's runtime settings, against its budget."""
    return tuple(Fit(name, model_footprint(info, spec, p.runtime).total_bytes,
                     p.memory.ram_budget_bytes) for name, p in profiles)


# -- environment -------------------------------------------------------------------------

def profiles_to_check(settings: Settings) -> list[tuple[str, Profile]]:
    """The profile in use (with its environment and CLI overrides), then every profile
    file on the search path (operator's first; one per name). Unreadable ones are skipped:
    they are reported where they are used."""
    used = Path(settings.profile_source)
    out = [(f"{used.stem} (in use)", settings.profile)]
    seen = {used.stem}
    total = mem_total_bytes()
    for d in profile_dirs():
        for f in sorted(d.glob("*.toml")) if d.is_dir() else []:
            if f.stem in seen:
                continue
            seen.add(f.stem)
            with contextlib.suppress(ConfigError):
                out.append((f.stem, profile_from_mapping(read_toml(f), where=str(f),
                                                         mem_total_bytes=total)))
    return out


def _check_owner(models_dir: Path) -> None:
    """Root writing into a directory another user owns would leave files (and the
    sidecar directory) that user, the service, cannot replace: refuse."""
    if os.geteuid() != 0:
        return
    with contextlib.suppress(FileNotFoundError):
        owner = models_dir.stat().st_uid
        if owner != 0:
            raise ModelsError(f"{models_dir} belongs to uid {owner}: run this as that user "
                              f"(e.g. sudo runuser -u <user> -- calm-edge models ...), not as "
                              "root")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def _source(path: Path) -> tuple[Path, list[str]]:
    """The file to read and notes about it. Errors name the path (and a link's target)."""
    notes = []
    try:
        st = os.lstat(path)
    except OSError as e:
        raise ModelsError(f"{path}: {e.strerror}") from None
    real = path
    if stat.S_ISLNK(st.st_mode):
        real = Path(os.path.realpath(path))
        notes.append(f"{path} is a link to {real}: its content is copied into the models "
                     "directory (the daemon never follows links there)")
        try:
            st = real.stat()
        except OSError as e:
            raise ModelsError(f"{path} is a link to {real}, which cannot be read: "
                              f"{e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ModelsError(f"{path} is not a regular file")
    try:
        with real.open("rb"):
            pass
    except OSError as e:
        via = f" (the target of the link {path})" if real != path else ""
        raise ModelsError(f"{real}{via} cannot be read as uid {os.geteuid()}: {e.strerror}; "
                          "make it readable by the user that runs this (the service's user "
                          "for the service's models) or copy it somewhere that user can "
                          "read") from None
    return real, notes


def _header(path: Path) -> GGUFInfo:
    try:
        info = read_gguf(path)
    except GGUFError as e:
        raise ModelsError(str(e)) from None
    if not info.tensors:
        raise ModelsError(f"{path}: a GGUF file without tensors (a vocabulary-only file?)")
    if "general.architecture" not in info.metadata:
        raise ModelsError(f"{path}: the GGUF names no architecture (general.architecture)")
    return info


# -- add -------------------------------------------------------------------------------

def _spec_for(info: GGUFInfo, real: Path, source: Path, opts: AddOptions,
              expect: ModelSpec | None) -> ModelSpec:
    """The manifest entry from the header and the options (or the imported entry); sha256
    is filled in once the installed file is hashed."""
    if expect is not None:
        if expect.format == "chat" and info.chat_template is None:
            raise ModelsError(f"{source}: model {expect.name!r} is a chat model but the file "
                              "has no chat template (tokenizer.chat_template)")
        assert expect.added is not None  # every model of a local manifest has it
        return replace(expect, added=replace(expect.added, source=str(source.absolute()),
                                             added_at=_now()))
    fmt: PromptFormat
    if opts.completion_template is not None:
        if "{prompt}" not in opts.completion_template:
            raise ModelsError("--completion-template must contain {prompt}")
        fmt, template = "completion", opts.completion_template
    elif info.chat_template is not None:
        fmt, template = "chat", "{prompt}"
    else:
        raise ModelsError(
            f"{source}: no chat template (tokenizer.chat_template) in the GGUF, so chat "
            "messages cannot be formatted for it (a base model?). Add it as a completion "
            "model: --completion-template 'Question: {prompt}\\nAnswer:' --stop "
            "'\\nQuestion:', or use the instruct/chat GGUF of this model")
    trained = info.context_length
    n_ctx = opts.n_ctx if opts.n_ctx is not None else min(trained or DEFAULT_N_CTX,
                                                           DEFAULT_N_CTX)
    if not 128 <= n_ctx <= 1 << 20:
        raise ModelsError(f"--n-ctx must be in [128, 1048576], got {n_ctx}")
    if trained and n_ctx > trained:
        raise ModelsError(f"--n-ctx {n_ctx} exceeds the context {source.name} was trained "
                          f"for ({trained})")
    name = opts.name if opts.name is not None else (
        sanitize_name(info.general_name) or sanitize_name(source.stem))
    if not NAME_RE.match(name):
        raise ModelsError(f"model name {name!r} is not valid: lowercase letters, digits, "
                          "'.', '_', '-', at most 64, starting with a letter or digit"
                          + ("" if opts.name is not None else "; pass --name"))
    params_b = float(f"{info.n_params / 1e9:.4g}")
    return ModelSpec(
        name=name, file=sanitize_file(source.name), sha256="0" * 64,
        size_bytes=real.stat().st_size, n_ctx=n_ctx, format=fmt, stop=opts.stop,
        quality=guess_quality(params_b, opts.domains), tags=("added", *opts.domains),
        prompt_template=template, params_b=params_b,
        added=AddedInfo(source=str(source.absolute()), added_at=_now(), arch=info.arch,
                        quantization=info.quantization, context_length=trained,
                        quality_guess=True, domains=tuple(opts.domains)))


def _clashes(spec: ModelSpec, fleet: Fleet, local: Sequence[ModelSpec],
             local_path: Path) -> ModelSpec | None:
    """Raise when the name or file is taken; return the same model already added (for an
    idempotent import), else None."""
    other = fleet.get(spec.name)
    if other is not None:
        raise ModelsError(f"{spec.name!r} is a model of the fleet manifest {fleet.source}; "
                          "pick another --name")
    same = next((m for m in local if m.name == spec.name), None)
    if same is not None:
        if same.sha256 == spec.sha256 and same.file == spec.file:
            return same
        raise ModelsError(f"{spec.name!r} is already an added model (in {local_path}, from "
                          f"{same.added.source if same.added else '?'}); pick another --name "
                          f"or remove it first: calm-edge models remove {spec.name}")
    for m in (*fleet.models, *local):
        if m.file == spec.file:
            raise ModelsError(f"the file name {spec.file} is taken by model {m.name!r}; "
                              "rename the source file")
    return None


def _install(real: Path, dest: Path, size: int, *, copy: bool) -> tuple[str, str, bool]:
    """Put `real`'s content at `dest` (a new file). Returns (sha256, action, created)."""
    try:
        st_dest = os.lstat(dest)
    except FileNotFoundError:
        st_dest = None
    if st_dest is not None:
        if stat.S_ISLNK(st_dest.st_mode) or not stat.S_ISREG(st_dest.st_mode):
            raise ModelsError(f"{dest} exists and is not a regular file (a link?); calm-edge "
                              "never follows links in the models directory: remove it")
        if real.samefile(dest):
            return sha256_file(dest), "in place", False
        if st_dest.st_size == size:  # left by a crash or `remove --keep-file`?
            digest = sha256_file(dest)
            if digest == sha256_file(real):
                return digest, "reused", False
        raise ModelsError(f"{dest} exists and holds another file; remove it or rename the "
                          "source file")
    st = real.stat()
    dfd = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    tmp = f".{dest.name}.adding"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dfd)
        action = "copied"
        if not copy and st.st_dev == dest.parent.stat().st_dev and st.st_uid == os.geteuid():
            try:
                os.link(real, tmp, dst_dir_fd=dfd)
                action = "linked"
            except OSError:  # e.g. protected_hardlinks, or a filesystem without links
                pass
        if action == "linked":
            digest = sha256_file(dest.parent / tmp)
        else:
            h = hashlib.sha256()
            with real.open("rb") as src, open_new(dfd, tmp) as dst:
                while block := src.read(4 << 20):
                    dst.write(block)
                    h.update(block)
                dst.flush()
                os.fsync(dst.fileno())
            digest = h.hexdigest()
        staged = dest.parent / tmp
        if staged.stat().st_size != size:
            raise ModelsError(f"{real} changed while it was being added "
                              f"({staged.stat().st_size} bytes, was {size}); try again")
        _header(staged)  # what was copied is still a whole GGUF
        os.replace(tmp, dest.name, src_dir_fd=dfd, dst_dir_fd=dfd)
        with contextlib.suppress(OSError):
            os.fsync(dfd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dfd)
        os.close(dfd)
    return digest, action, True


def add_model(source: Path, models_dir: Path, fleet: Fleet, local_path: Path,
              profiles: Sequence[tuple[str, Profile]], opts: AddOptions = AddOptions(), *,
              probe: Probe = probe_llama_cpp, expect: ModelSpec | None = None) -> AddResult:
    """Add the GGUF `source` to the local manifest `local_path` and its file to
    `models_dir`. `fleet` is the fleet manifest without the local one; `profiles` are
    checked for room, the one in use first (profiles_to_check). With `expect` (an entry of
    a bundle's manifest: import), the file must match its SHA-256 and its settings are
    kept. Raises ModelsError; then nothing was changed."""
    real, notes = _source(source)
    info = _header(real)
    if expect is not None and real.stat().st_size != expect.size_bytes:
        raise ModelsError(f"{source}: {real.stat().st_size} bytes, its manifest entry says "
                          f"{expect.size_bytes}")
    chat = expect.format == "chat" if expect is not None else opts.completion_template is None
    try:  # first: an unknown architecture is the news, whatever else is wrong
        probed = probe(real, info.chat_template if chat else None)
    except ProbeError as e:
        raise ModelsError(str(e)) from None
    spec = _spec_for(info, real, source, opts, expect)
    notes += probed.notes
    fits = fits_for(info, spec, profiles)
    if fits and not any(f.fits for f in fits):
        big = max(fits, key=lambda f: f.budget_bytes)
        hint = " (a smaller --n-ctx shrinks its KV cache)" if expect is None else ""
        raise ModelsError(
            f"{source}: needs about {format_bytes(big.footprint_bytes)} loaded with n_ctx "
            f"{spec.n_ctx}, more than the RAM budget of every profile; the largest is "
            f"{format_bytes(big.budget_bytes)} ({big.profile}){hint}")
    if fits and not fits[0].fits:
        notes.append(f"it does not fit the budget of the profile in use ({fits[0].profile}: "
                     f"needs {format_bytes(fits[0].footprint_bytes)} of "
                     f"{format_bytes(fits[0].budget_bytes)}): it will not load here")
    _check_owner(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    with locked(local_path):
        local = read_local_models(local_path)
        present = _clashes(spec if expect is None else replace(spec, sha256=expect.sha256),
                           fleet, local, local_path)
        dest = model_path(models_dir, spec)
        if present is not None:
            if verify(models_dir, present) is FileStatus.VERIFIED:
                return AddResult(present, "present", dest, fits, tuple(notes))
            raise ModelsError(f"{present.name!r} is already added but its file {dest} is "
                              "missing or differs; remove it first: calm-edge models remove "
                              f"{present.name}")
        digest, action, created = _install(real, dest, spec.size_bytes, copy=opts.copy)
        try:
            if expect is not None and digest != expect.sha256:
                raise ModelsError(f"{source}: SHA-256 {digest} differs from its manifest "
                                  f"entry's {expect.sha256} (corrupt or another file)")
            spec = replace(spec, sha256=digest)
            record_verified(models_dir, spec)
            write_manifest(local_path, (*local, spec))
        except BaseException:
            if created:
                dest.unlink(missing_ok=True)
            raise
    return AddResult(spec, action, dest, fits, tuple(notes))


# -- remove ------------------------------------------------------------------------------

def remove_model(name: str, models_dir: Path, fleet: Fleet, local_path: Path, *,
                 keep_file: bool = False) -> RemoveResult:
    """Take `name` out of the local manifest, then delete its file and sidecar (unless
    `keep_file`). Models of the fleet manifest are refused."""
    _check_owner(models_dir)
    with locked(local_path):
        local = read_local_models(local_path)
        spec = next((m for m in local if m.name == name), None)
        if spec is None:
            if fleet.get(name) is not None:
                raise ModelsError(f"{name!r} is part of the fleet manifest {fleet.source}, not "
                                  "an added model: `models remove` removes only models added "
                                  "with `calm-edge models add`")
            known = ", ".join(m.name for m in local) or "none"
            raise ModelsError(f"{name!r} is not an added model (added: {known})")
        write_manifest(local_path, [m for m in local if m.name != name])
    path = model_path(models_dir, spec)
    removed = False
    if not keep_file:
        with contextlib.suppress(FileNotFoundError):
            if not path.is_symlink():
                path.unlink()
                removed = True
        (models_dir / ".verified" / f"{spec.file}.json").unlink(missing_ok=True)
    return RemoveResult(spec, removed, path)


# -- bundles -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    models: tuple[ModelSpec, ...]


def export_models(names: Sequence[str], models_dir: Path, local_path: Path,
                  out_dir: Path) -> ExportResult:
    """Put the added models `names` (all when empty) with their files and a local manifest
    of them into `out_dir`, for an offline bundle. Each file is verified first."""
    local = read_local_models(local_path)
    unknown = [n for n in names if n not in {m.name for m in local}]
    if unknown:
        raise ModelsError(f"not added models: {', '.join(unknown)} (added: "
                          f"{', '.join(m.name for m in local) or 'none'}, in {local_path})")
    chosen = [m for m in local if not names or m.name in names]
    for m in chosen:
        status = verify(models_dir, m)
        if status is not FileStatus.VERIFIED:
            raise ModelsError(f"{m.name}: its file {model_path(models_dir, m)} is "
                              f"{status.value}; remove and add it again")
    out_dir.mkdir(parents=True, exist_ok=True)
    for m in chosen:
        src, dst = model_path(models_dir, m), out_dir / m.file
        dst.unlink(missing_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            dfd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                with src.open("rb") as fi, open_new(dfd, m.file) as fo:
                    while block := fi.read(4 << 20):
                        fo.write(block)
            finally:
                os.close(dfd)
    write_manifest(out_dir / LOCAL_MANIFEST, chosen)
    return ExportResult(out_dir, tuple(chosen))


def import_models(bundle_dir: Path, models_dir: Path, fleet: Fleet, local_path: Path,
                  profiles: Sequence[tuple[str, Profile]], *,
                  probe: Probe = probe_llama_cpp) -> list[AddResult]:
    """Add every model of `bundle_dir`/fleet.local.toml from the files beside it, each
    checked against its entry's SHA-256 and like any added model. Idempotent: a model
    already added from the same file is "present". Stops at the first failure (the models
    before it stay added)."""
    if not (bundle_dir / LOCAL_MANIFEST).exists():
        raise ModelsError(f"{bundle_dir / LOCAL_MANIFEST}: no such file")
    try:
        entries = read_local_models(bundle_dir / LOCAL_MANIFEST)
    except ConfigError as e:
        raise ModelsError(str(e)) from None
    return [add_model(bundle_dir / m.file, models_dir, fleet, local_path, profiles,
                      probe=probe, expect=m) for m in entries]
