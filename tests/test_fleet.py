from __future__ import annotations

import os
from pathlib import Path

import pytest

from calm_edge.config import ConfigError
from calm_edge.fleet import FileStatus, cached_status, fleet_from_mapping, load_fleet, verify
from calm_edge.paths import bundled_dir


def test_fleet_bundled_manifest_is_valid() -> None:
    fleet = load_fleet(bundled_dir("models") / "fleet.toml")
    names = [m.name for m in fleet.models]
    assert names == ["smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
    assert fleet.default_model in names
    gemma = fleet.get("gemma3-270m")
    assert gemma is not None and gemma.format == "completion" and gemma.stop
    for m in fleet.models:
        assert m.source is not None and len(m.source.packages) == len(m.source.members)
        assert set(m.quality) == {"code", "math", "factual", "instruct", "writing"}
        assert set(m.answer_tokens) == set(m.limit_share) == {"code", "math", "factual",
                                                              "instruct"}
        assert m.prior_length("factual") is not None and m.prior_length("writing") is None


def _model(**over: object) -> dict[str, object]:
    m: dict[str, object] = {"name": "m", "file": "m.gguf", "sha256": "a" * 64,
                            "size_bytes": 10, "n_ctx": 512}
    m.update(over)
    return m


@pytest.mark.parametrize(("model", "key", "fragment"), [
    (_model(sha256="xyz"), "sha256", "invalid value"),
    (_model(file="../etc/passwd.gguf"), "file", "invalid value"),
    (_model(name="Bad Name"), "name", "invalid value"),
    (_model(size_bytes=0), "size_bytes", "positive"),
    (_model(n_ctx=True), "n_ctx", "expected an integer"),
    (_model(format="chatty"), "format", "expected 'chat' or 'completion'"),
    (_model(quality={"poetry": 0.5}), "quality.poetry", "unknown domain"),
    (_model(quality={"code": 1.5}), "quality.code", "[0, 1]"),
    (_model(answer_tokens={"poetry": 5}), "answer_tokens.poetry", "unknown domain"),
    (_model(answer_tokens={"code": -1}), "answer_tokens.code", "expected a number"),
    (_model(limit_share={"code": 2}), "limit_share.code", "[0, 1]"),
    (_model(limit_share=[0.1]), "limit_share", "expected a table"),
    (_model(prompt_template="no placeholder"), "prompt_template", "{prompt}"),
    (_model(colour="red"), "colour", "unknown field"),
    ({"name": "m"}, "file", "missing"),
    (_model(source={"packages": ["unpinned"], "members": ["a"]}), "source.packages", "pinned"),
    (_model(source={"packages": ["a==1"], "members": ["../x"]}), "source.members", "relative"),
])
def test_fleet_errors_name_model_and_field(model: dict[str, object], key: str,
                                           fragment: str) -> None:
    with pytest.raises(ConfigError) as ei:
        fleet_from_mapping({"model": [model]}, Path("fleet.toml"))
    assert ei.value.key == key
    assert ei.value.where == "fleet.toml"
    assert fragment in str(ei.value)


def test_fleet_duplicate_and_default_checked() -> None:
    with pytest.raises(ConfigError, match="duplicate model name"):
        fleet_from_mapping({"model": [_model(), _model()]}, Path("f"))
    with pytest.raises(ConfigError, match="default_model"):
        fleet_from_mapping({"default_model": "other", "model": [_model()]}, Path("f"))
    with pytest.raises(ConfigError, match="no \\[\\[model\\]\\]"):
        fleet_from_mapping({}, Path("f"))


def test_fleet_verify_states(tiny_fleet: tuple[Path, Path]) -> None:
    fleet_path, models = tiny_fleet
    spec = load_fleet(fleet_path).models[0]
    path = models / spec.file
    assert cached_status(models, spec) is FileStatus.VERIFIED
    # Same size, different bytes: the sidecar no longer vouches for it (mtime changed)...
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(1, 1))
    assert cached_status(models, spec) is FileStatus.UNVERIFIED
    # ...and hashing refuses it.
    assert verify(models, spec) is FileStatus.HASH_MISMATCH
    assert cached_status(models, spec) is FileStatus.UNVERIFIED
    path.write_bytes(bytes(data[:100]))
    assert verify(models, spec) is FileStatus.WRONG_SIZE
    path.unlink()
    assert verify(models, spec) is FileStatus.MISSING


def test_fleet_verify_records_and_reuses(tiny_fleet: tuple[Path, Path], tiny_gguf: Path) -> None:
    fleet_path, models = tiny_fleet
    spec = load_fleet(fleet_path).models[0]
    (models / ".verified" / f"{spec.file}.json").unlink()
    assert cached_status(models, spec) is FileStatus.UNVERIFIED
    hashed: list[int] = []
    assert verify(models, spec, progress=hashed.append) is FileStatus.VERIFIED
    assert sum(hashed) == spec.size_bytes
    hashed.clear()
    assert verify(models, spec, progress=hashed.append) is FileStatus.VERIFIED
    assert hashed == []  # the sidecar saved a re-hash
    assert verify(models, spec, force=True, progress=hashed.append) is FileStatus.VERIFIED
    assert sum(hashed) == spec.size_bytes
