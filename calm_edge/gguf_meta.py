"""Read a GGUF file's header (metadata and tensor table) without loading weights.

Used to estimate a model's memory footprint before loading it and to reject truncated or
malformed files early. Pure Python; reads only the header (tens of KB to a few MB).
Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

_MAGIC = b"GGUF"
_MAX_STRING = 64 << 20  # a sane bound on one metadata string (chat templates are KBs)
_MAX_ARRAY = 1 << 24
_MAX_ITEMS = 1 << 20

# Scalar value types: id -> struct format.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9

# ggml tensor types: id -> (block size in elements, bytes per block).
GGML_BLOCK: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
    9: (32, 40), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176),
    14: (256, 210), 15: (256, 292), 16: (256, 66), 17: (256, 74), 18: (256, 98),
    19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82), 23: (256, 136),
    24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
    34: (256, 54), 35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18),
}

GGML_TYPE_NAMES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
    10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS",
    17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S",
    23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M",
    30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4", 40: "NVFP4", 41: "Q1_0",
}

# `general.file_type` (llama.cpp's llama_ftype): id -> name.
FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
    38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0",
}


class GGUFError(ValueError):
    """The file is not a readable GGUF model."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int

    @property
    def n_bytes(self) -> int | None:
        block = GGML_BLOCK.get(self.ggml_type)
        if block is None:
            return None
        n = 1
        for d in self.shape:
            n *= d
        return (n // block[0]) * block[1]


@dataclass(frozen=True)
class GGUFInfo:
    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: tuple[TensorInfo, ...]
    data_offset: int
    file_bytes: int

    @property
    def arch(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    def arch_int(self, key: str, default: int = 0) -> int:
        value = self.metadata.get(f"{self.arch}.{key}", default)
        if isinstance(value, list):  # per-layer arrays (e.g. head_count_kv): take the max
            value = max(value) if value else default
        return int(value)

    @property
    def weights_bytes(self) -> int:
        return self.file_bytes - self.data_offset

    @property
    def n_params(self) -> int:
        total = 0
        for t in self.tensors:
            n = 1
            for d in t.shape:
                n *= d
            total += n
        return total

    @property
    def context_length(self) -> int:
        """The context the model was trained for (0 when the file does not say)."""
        return self.arch_int("context_length")

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) and value.strip() else None

    @property
    def general_name(self) -> str:
        value = self.metadata.get("general.name")
        return value.strip() if isinstance(value, str) else ""

    @property
    def quantization(self) -> str:
        """The file type llama.cpp's quantizer recorded (`general.file_type`, e.g.
        "Q4_K_M"), else the type holding most of the weights' bytes."""
        ftype = self.metadata.get("general.file_type")
        if isinstance(ftype, int) and not isinstance(ftype, bool) and ftype in FILE_TYPES:
            return FILE_TYPES[ftype]
        by_type: dict[int, int] = {}
        for t in self.tensors:
            by_type[t.ggml_type] = by_type.get(t.ggml_type, 0) + (t.n_bytes or 0)
        if not by_type:
            return "unknown"
        top = max(by_type, key=lambda k: (by_type[k], -k))
        return GGML_TYPE_NAMES.get(top, f"type {top}")


class _Reader:
    def __init__(self, fh: BinaryIO, where: Path) -> None:
        self.fh, self.where = fh, where

    def read(self, n: int) -> bytes:
        data = self.fh.read(n)
        if len(data) != n:
            raise GGUFError(f"{self.where}: truncated header")
        return data

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.unpack("<Q")
        if n > _MAX_STRING:
            raise GGUFError(f"{self.where}: implausible string length {n}")
        return self.read(n).decode("utf-8", errors="replace")

    def value(self, vtype: int, keep: bool) -> Any:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, n = self.unpack("<I"), self.unpack("<Q")
            if n > _MAX_ARRAY:
                raise GGUFError(f"{self.where}: implausible array length {n}")
            if not keep:  # skip large arrays (token lists) cheaply
                if etype in _SCALARS:
                    self.fh.seek(n * struct.calcsize(_SCALARS[etype]), 1)
                else:
                    for _ in range(n):
                        self.value(etype, keep=False)
                return n
            return [self.value(etype, keep=True) for _ in range(n)]
        raise GGUFError(f"{self.where}: unknown metadata value type {vtype}")


def read_gguf(path: Path) -> GGUFInfo:
    """Parse header, metadata and tensor table; check the tensor data fits in the file.

    Large arrays (tokenizer vocabularies) are skipped and stored as their length.
    Raises GGUFError naming the file for anything malformed or truncated.
    """
    try:
        file_bytes = path.stat().st_size
        with path.open("rb") as fh:
            r = _Reader(fh, path)
            if r.read(4) != _MAGIC:
                raise GGUFError(f"{path}: not a GGUF file (bad magic)")
            version = r.unpack("<I")
            if version not in (2, 3):
                raise GGUFError(f"{path}: unsupported GGUF version {version}")
            n_tensors, n_kv = r.unpack("<Q"), r.unpack("<Q")
            if n_tensors > _MAX_ITEMS or n_kv > _MAX_ITEMS:
                raise GGUFError(f"{path}: implausible counts ({n_tensors} tensors, {n_kv} keys)")
            meta: dict[str, Any] = {}
            for _ in range(n_kv):
                key = r.string()
                vtype = r.unpack("<I")
                keep = not key.startswith("tokenizer.ggml.")  # vocab arrays: length only
                meta[key] = r.value(vtype, keep=keep)
            tensors = []
            for _ in range(n_tensors):
                name = r.string()
                n_dims = r.unpack("<I")
                if n_dims > 8:
                    raise GGUFError(f"{path}: tensor {name!r} has {n_dims} dimensions")
                shape = tuple(r.unpack("<Q") for _ in range(n_dims))
                tensors.append(TensorInfo(name, shape, r.unpack("<I"), r.unpack("<Q")))
            align = int(meta.get("general.alignment", 32)) or 32
            pos = fh.tell()
            data_offset = (pos + align - 1) // align * align
    except OSError as e:
        raise GGUFError(f"{path}: cannot read: {e.strerror}") from None
    end = 0
    for t in tensors:
        n = t.n_bytes
        if n is not None:
            end = max(end, t.offset + n)
    if data_offset + end > file_bytes:
        raise GGUFError(
            f"{path}: truncated: tensor data needs {data_offset + end} bytes, file has "
            f"{file_bytes}")
    return GGUFInfo(path, version, meta, tuple(tensors), data_offset, file_bytes)


@dataclass(frozen=True)
class Footprint:
    """Estimated resident memory of a loaded model, in bytes."""

    weights_bytes: int
    repack_bytes: int
    kv_cache_bytes: int
    compute_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.repack_bytes + self.kv_cache_bytes + self.compute_bytes


# Context structures, graph metadata, output buffer, sampler and Python objects per loaded
# model (a fresh process grows ~12 MiB beyond the buffers llama.cpp reports for SmolLM2).
_OVERHEAD_BYTES = 16 << 20
# Tensor types llama.cpp's CPU backend repacks into interleaved copies (Q4_0, Q4_K, IQ4_NL).
_REPACKED_TYPES = (2, 12, 20)


def estimate_footprint(info: GGUFInfo, n_ctx: int, n_batch: int, *, cpu_repack: bool = True,
                       kv_bytes_per_elem: int = 2, mmap: bool = True) -> Footprint:
    """Weights (tensor data) + CPU repack copies + f16 KV cache + compute buffers.

    - repack: with CPU inference llama.cpp copies Q4_0/Q4_K/IQ4_NL matrices (rows a multiple
      of 8, not the token embedding) into an interleaved layout; checked against llama.cpp's
      "CPU_REPACK" figure. With mmap the mapped pages it read stay resident too (two
      copies); without mmap those tensors are read straight into their repacked buffer, so
      the weights are held once (`repack_bytes` is 0).
    - `n_batch` is the micro-batch (llama.cpp's n_ubatch): it sizes the compute buffers.
    - KV: 2 (K and V) x layers x n_ctx x kv heads x head dim x bytes per element.
    - compute: the graph's logits for one batch (n_batch x n_vocab floats) dominate, plus
      activations (~32 bytes per batch token per embedding dim) and fixed overhead.
    These are upper bounds; the residency manager prefers measured RSS once it has it.
    """
    n_layer = info.arch_int("block_count")
    n_embd = info.arch_int("embedding_length")
    n_head = max(info.arch_int("attention.head_count", 1), 1)
    n_head_kv = info.arch_int("attention.head_count_kv", n_head) or n_head
    head_k = info.arch_int("attention.key_length", n_embd // n_head)
    head_v = info.arch_int("attention.value_length", n_embd // n_head)
    kv = n_layer * n_ctx * n_head_kv * (head_k + head_v) * kv_bytes_per_elem
    vocab = info.metadata.get("tokenizer.ggml.tokens", 0)
    n_vocab = info.arch_int("vocab_size", vocab if isinstance(vocab, int) else len(vocab))
    compute = n_batch * n_vocab * 4 + n_batch * n_embd * 32 + _OVERHEAD_BYTES
    repack = 0
    if cpu_repack and mmap:
        repack = sum(t.n_bytes or 0 for t in info.tensors
                     if t.ggml_type in _REPACKED_TYPES and t.name != "token_embd.weight"
                     and len(t.shape) == 2 and t.shape[1] % 8 == 0)
    return Footprint(info.weights_bytes, repack, kv, compute)
