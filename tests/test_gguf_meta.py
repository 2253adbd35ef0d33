from __future__ import annotations

from pathlib import Path

import pytest

from calm_edge.gguf_meta import GGUFError, estimate_footprint, read_gguf


def test_gguf_meta_reads_tiny_model(tiny_gguf: Path) -> None:
    info = read_gguf(tiny_gguf)
    assert info.arch == "llama"
    assert info.arch_int("block_count") == 2
    assert info.arch_int("embedding_length") == 64
    assert info.metadata["tokenizer.ggml.model"] == "llama"
    assert info.metadata["tokenizer.ggml.tokens"] > 256  # large arrays kept as their length
    assert "tokenizer.chat_template" in info.metadata
    assert len(info.tensors) == 3 + 2 * 9
    assert 0 < info.data_offset < info.file_bytes
    tensor_bytes = sum(t.n_bytes or 0 for t in info.tensors)
    assert tensor_bytes <= info.weights_bytes < tensor_bytes + 32 * len(info.tensors)
    assert info.n_params > 50_000


def test_gguf_meta_footprint_components(tiny_gguf: Path) -> None:
    info = read_gguf(tiny_gguf)
    fp = estimate_footprint(info, n_ctx=512, n_batch=64)
    # KV: 2 layers x 512 ctx x 4 kv heads x (16 + 16) head dims x 2 bytes (f16)
    assert fp.kv_cache_bytes == 2 * 512 * 4 * 32 * 2
    assert fp.weights_bytes == info.weights_bytes
    assert fp.repack_bytes == 0  # f32 tensors are not repacked
    n_vocab = info.metadata["tokenizer.ggml.tokens"]
    assert fp.compute_bytes >= 64 * n_vocab * 4
    assert fp.total_bytes == fp.weights_bytes + fp.kv_cache_bytes + fp.compute_bytes
    assert estimate_footprint(info, 1024, 64).kv_cache_bytes == 2 * fp.kv_cache_bytes


def test_gguf_meta_rejects_truncated_file(tiny_gguf: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[: tiny_gguf.stat().st_size // 2])
    with pytest.raises(GGUFError, match="truncated"):
        read_gguf(cut)
    head_only = tmp_path / "head.gguf"
    head_only.write_bytes(tiny_gguf.read_bytes()[:100])
    with pytest.raises(GGUFError, match="truncated"):
        read_gguf(head_only)


def test_gguf_meta_rejects_non_gguf(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOPE" + bytes(64))
    with pytest.raises(GGUFError, match="bad magic"):
        read_gguf(bad)
    with pytest.raises(GGUFError, match="cannot read"):
        read_gguf(tmp_path / "missing.gguf")
