"""Which device a calibration belongs to: CPU, GPU, backend build and runtime settings.

A model's speed, memory and even its greedy answers follow the kernels the backend picked
for this CPU or GPU, so a calibration is valid only for the same model file on the same
`DeviceIdentity` (its `key`). Reads `<root>/proc/cpuinfo`, the device tree and the NVIDIA
driver's /proc files; the root is injectable for tests.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from calm_edge.config import RuntimeConfig

# CPU features that select different matrix kernels in llama.cpp (x86 flags, ARM Features).
_KERNEL_FLAGS = frozenset({
    "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "avx512vbmi", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
    "asimd", "asimddp", "asimdhp", "sve", "sve2", "i8mm", "bf16", "fphp",
})


@dataclass(frozen=True)
class DeviceIdentity:
    cpu: str           # model name (x86) or the board's device-tree model (ARM)
    cpu_flags: str     # the kernel-relevant features, sorted
    gpu: str           # "none", or the NVIDIA GPU's model
    build: str         # backend version and compiled features
    runtime: str       # threads, GPU layers, batch, flash attention

    @property
    def key(self) -> str:
        text = "\n".join((self.cpu, self.cpu_flags, self.gpu, self.build, self.runtime))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_status(self) -> dict[str, str]:
        return {"key": self.key, "cpu": self.cpu, "cpu_flags": self.cpu_flags,
                "gpu": self.gpu, "build": self.build, "runtime": self.runtime}


def _read(path: Path) -> str:
    try:
        return path.read_bytes().rstrip(b"\x00").decode(errors="replace")
    except OSError:
        return ""


def cpu_description(root: Path) -> tuple[str, str]:
    """(model, kernel-relevant flags) from /proc/cpuinfo and the device tree."""
    model, flags = "", set()
    for line in _read(root / "proc" / "cpuinfo").splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware") and not model:
            model = value.strip()
        elif key in ("flags", "features"):
            flags |= set(value.split()) & _KERNEL_FLAGS
    board = _read(root / "proc" / "device-tree" / "model").strip()
    if board:
        model = f"{board} ({model})" if model else board
    return model or "unknown", " ".join(sorted(flags))


def gpu_description(root: Path) -> str:
    """The NVIDIA GPU's model from the driver's /proc files, or "none". A Jetson's GPU is
    part of the board the device tree names."""
    base = root / "proc" / "driver" / "nvidia" / "gpus"
    names = []
    if base.is_dir():
        for info in sorted(base.glob("*/information")):
            for line in _read(info).splitlines():
                key, _, value = line.partition(":")
                if key.strip() == "Model":
                    names.append(value.strip())
    return ", ".join(names) or "none"


def identify(root: Path, build: str, runtime: RuntimeConfig, n_threads: int) -> DeviceIdentity:
    """`n_threads` is the resolved count (the profile's 0 means all usable CPUs)."""
    cpu, flags = cpu_description(root)
    rt = (f"threads={n_threads} batch_threads={runtime.n_threads_batch or n_threads} "
          f"gpu_layers={runtime.n_gpu_layers} n_batch={runtime.n_batch} "
          f"n_ubatch={runtime.micro_batch} "
          f"flash_attn={runtime.flash_attn} mmap={runtime.use_mmap}")
    return DeviceIdentity(cpu, flags, gpu_description(root), build, rt)
