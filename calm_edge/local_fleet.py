"""Writing the local manifest of added models (`fleet.local.toml`), atomically and locked.

The manifest is the commit point of `calm-edge models add` and `remove`: it is written to
a temporary name in its directory, fsync-ed, renamed over the old one and the directory
fsync-ed, so a crash leaves either the old or the new manifest, never a torn one. Writers
hold an advisory lock (`flock` on `.fleet.local.lock` beside it) around read-modify-write.
Reading is calm_edge.fleet's (`read_local_models`), which validates what is written here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from calm_edge.fleet import ModelSpec, open_new

HEADER = """\
# Models added with `calm-edge models add`; merged with the fleet manifest when the daemon
# starts or reloads. Written by calm-edge: edit with care (`calm-edge models list` checks
# it). `quality` of an added model is a guess from its parameter count until it is
# calibrated on the device (quality_guess); `auto` routing skips it until then.
"""


def _str(text: str) -> str:
    """A TOML basic string. JSON's escapes are TOML's; DEL must be escaped too, and lone
    surrogates (undecodable bytes in a path) cannot be written as UTF-8."""
    clean = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return json.dumps(clean, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)  # round-trips; never inf or nan here
    if isinstance(v, str):
        return _str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def model_toml(spec: ModelSpec) -> str:
    """One `[[model]]` table (with its `[model.added]`) for `spec`."""
    lines = ["[[model]]"]
    fields: list[tuple[str, object]] = [
        ("name", spec.name), ("file", spec.file), ("sha256", spec.sha256),
        ("size_bytes", spec.size_bytes), ("n_ctx", spec.n_ctx), ("format", spec.format)]
    if spec.format == "completion" or spec.prompt_template != "{prompt}":
        fields.append(("prompt_template", spec.prompt_template))
    fields.append(("stop", list(spec.stop)))
    if spec.system_prompt:
        fields.append(("system_prompt", spec.system_prompt))
    fields += [("params_b", spec.params_b), ("tags", list(spec.tags))]
    if spec.license:
        fields.append(("license", spec.license))
    lines += [f"{k} = {_value(v)}" for k, v in fields]
    quality = ", ".join(f"{d} = {_value(q)}" for d, q in spec.quality.items())
    lines.append(f"quality = {{ {quality} }}")
    a = spec.added
    if a is not None:
        lines.append("[model.added]")
        lines += [f"{k} = {_value(v)}" for k, v in (
            ("source", a.source), ("at", a.added_at), ("arch", a.arch),
            ("quantization", a.quantization), ("context_length", a.context_length),
            ("quality_guess", a.quality_guess), ("domains", list(a.domains)))]
    return "\n".join(lines) + "\n"


def manifest_toml(models: Sequence[ModelSpec]) -> str:
    return HEADER + "\nversion = 1\n" + "".join("\n" + model_toml(m) for m in models)


def _fsync_dir(dir_fd: int) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse fsync on a directory
        os.fsync(dir_fd)


def write_manifest(path: Path, models: Sequence[ModelSpec]) -> None:
    """Replace `path` with a manifest of `models`: temp file, fsync, rename, fsync dir.
    Never writes through a link planted at the temporary name."""
    text = manifest_toml(models).encode("utf-8")
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    tmp = f".{path.name}.tmp"
    try:
        with open_new(dfd, tmp) as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path.name, src_dir_fd=dfd, dst_dir_fd=dfd)
        _fsync_dir(dfd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dfd)
        os.close(dfd)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the writers' lock of the manifest `path` (blocking)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent / f".{path.name}.lock",
                 os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
