"""Optional tiers (`[[tier]]`, `calm-edge models pull --tier`): the manifest's table, the
llama.cpp re-encoding on a tiny GGUF made here, and the add that follows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from calm_edge.cli import main
from calm_edge.config import ConfigError, Settings
from calm_edge.fleet import FileStatus, fleet_from_mapping, load_fleet, read_local_models, verify
from calm_edge.gguf_meta import read_gguf
from calm_edge.tiers import TierError, derive, pull_tier, tier_models

TIER = '\n[[tier]]\ntier = "large"\nname = "tiny-chat-q8"\nfrom = "tiny-chat"\ntype = "Q8_0"\n'


def manifest(tiers: list[dict[str, Any]]) -> dict[str, Any]:
    model = {"name": "m", "file": "m.gguf", "sha256": "0" * 64, "size_bytes": 1,
             "n_ctx": 512, "quality": {"code": 0.5}}
    return {"version": 1, "model": [model], "tier": tiers}


@pytest.mark.parametrize("tier, field", [
    ({"tier": "large", "name": "x", "from": "nope", "type": "Q8_0"}, "from"),
    ({"tier": "large", "name": "x", "from": "m", "type": "Q4_0"}, "type"),
    ({"tier": "large", "name": "m", "from": "m", "type": "F16"}, "name"),
    ({"tier": "large", "name": "x", "from": "m", "type": "F16", "size": 3}, "size"),
    ({"tier": "large", "from": "m", "type": "F16"}, "name"),
])
def test_fleet_tier_table_errors_name_the_field(tier: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as ei:
        fleet_from_mapping(manifest([tier]), Path("fleet.toml"))
    assert ei.value.key == field and "tier[0]" in str(ei.value)


def test_fleet_tier_table_parses() -> None:
    fleet = fleet_from_mapping(manifest([{"tier": "large", "name": "m-q8", "from": "m",
                                          "type": "Q8_0"}]), Path("fleet.toml"))
    (t,) = tier_models(fleet, "large")
    assert (t.name, t.derive_from, t.type) == ("m-q8", "m", "Q8_0")
    with pytest.raises(TierError, match=r"no tier 'huge'.*tiers: large"):
        tier_models(fleet, "huge")


def test_tiers_derive_reencodes_a_gguf(tiny_gguf: Path, tmp_path: Path) -> None:
    """The tiny model is f32; re-encoded as Q8_0 and F16 it keeps its tensors and
    metadata (chat template included) and shrinks accordingly."""
    src = read_gguf(tiny_gguf)
    sizes = {}
    for ftype in ("Q8_0", "F16"):
        out = tmp_path / f"{ftype}.gguf"
        derive(tiny_gguf, out, ftype, threads=1)
        info = read_gguf(out)
        assert info.quantization == ftype
        assert info.chat_template == src.chat_template
        assert len(info.tensors) == len(src.tensors)
        sizes[ftype] = out.stat().st_size
    assert sizes["Q8_0"] < sizes["F16"] < tiny_gguf.stat().st_size


def test_tiers_derive_failure_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(TierError, match="could not re-encode"):
        derive(bad, tmp_path / "out.gguf", "Q8_0", threads=1)
    assert not (tmp_path / "out.gguf").exists()


@pytest.fixture
def tier_settings(make_settings: Callable[..., Settings], tiny_fleet: tuple[Path, Path],
                  ) -> Callable[[bool], Settings]:
    fleet, _ = tiny_fleet
    fleet.write_text(fleet.read_text() + TIER)

    def make(offered: bool) -> Settings:
        return make_settings(**({"memory": {"tiers": ["large"]}} if offered else {}))
    return make


def test_tiers_pull_refuses_a_profile_without_the_tier(
        tier_settings: Callable[[bool], Settings]) -> None:
    settings = tier_settings(False)
    with pytest.raises(TierError, match="does not offer the 'large' tier"):
        pull_tier("large", settings, load_fleet(settings.fleet_path))
    assert read_local_models(settings.local_fleet_path) == ()


def test_tiers_pull_builds_adds_and_is_idempotent(
        tier_settings: Callable[[bool], Settings]) -> None:
    settings = tier_settings(True)
    fleet = load_fleet(settings.fleet_path)
    said: list[str] = []
    (r,) = pull_tier("large", settings, fleet, threads=1, say=said.append)
    assert r.action == "added" and r.added is not None
    (spec,) = read_local_models(settings.local_fleet_path)
    source = fleet.get("tiny-chat")
    assert source is not None
    # An added model with its source's priors and context, not a guess; the file verifies
    # and is the re-encoded one; the temporary build directory is gone.
    assert spec.name == "tiny-chat-q8" and spec.added is not None
    assert dict(spec.quality) == dict(source.quality) and not spec.added.quality_guess
    assert spec.n_ctx == source.n_ctx and spec.format == "chat"
    assert "re-encoded as Q8_0" in spec.added.source
    assert verify(settings.models_dir, spec) is FileStatus.VERIFIED
    assert read_gguf(settings.models_dir / spec.file).quantization == "Q8_0"
    assert not [p for p in settings.models_dir.iterdir() if p.name.startswith(".tier-")]
    assert any("building tiny-chat-q8" in line for line in said)
    (again,) = pull_tier("large", settings, fleet, threads=1)
    assert again.action == "present"


def test_tiers_cli_pull_tier(tier_settings: Callable[[bool], Settings], tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    settings = tier_settings(True)
    profile = tmp_path / "tiered.toml"
    profile.write_text('[device]\nname = "tiered"\n[memory]\nram_budget = "256M"\n'
                       'tiers = ["large"]\n[runtime]\nn_threads = 1\nn_batch = 64\n')
    args = ["models", "pull", "--tier", "large", "--profile", str(profile),
            "--models-dir", str(settings.models_dir), "--fleet", str(settings.fleet_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "tiny-chat-q8: added" in out and "calm-edge calibrate tiny-chat-q8" in out
    assert main([*args[:3], "huge", *args[4:]]) == 1
    assert "no tier 'huge'" in capsys.readouterr().err
    assert main([*args[:2], "tiny-chat", *args[2:]]) == 2
