"""`calm-edge models add | remove | export | import` on tiny GGUFs made here, with the real
llama.cpp probe; the local manifest's round trip and its merge with the fleet."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from calm_edge.backends.llama_cpp import llama_cpp_factory
from calm_edge.bench.workload import Query
from calm_edge.calibration import load_canaries
from calm_edge.calibration.local import calibrate_locally
from calm_edge.cli import main
from calm_edge.config import ConfigError, Profile, Settings, profile_from_mapping, read_toml
from calm_edge.domains import DOMAINS
from calm_edge.fleet import (
    FileStatus,
    Fleet,
    cached_status,
    fleet_for,
    fleet_from_mapping,
    load_fleet,
    local_models_from_mapping,
    read_local_models,
)
from calm_edge.local_fleet import manifest_toml, write_manifest
from calm_edge.models_add import (
    AddOptions,
    AddResult,
    ModelsError,
    add_model,
    export_models,
    guess_quality,
    import_models,
    remove_model,
    sanitize_file,
    sanitize_name,
)
from calm_edge.testing.tiny_gguf import write_tiny_gguf
from tests.conftest import run_daemon, uds_client


def budget(size: str) -> Profile:
    return profile_from_mapping({"memory": {"ram_budget": size},
                                 "runtime": {"n_batch": 64}}, where="test")


ROOMY = [("roomy", budget("1G"))]


class Env:
    """A fleet manifest of two tiny models, its models directory and the local manifest."""

    def __init__(self, fleet_path: Path, models: Path) -> None:
        self.fleet_path, self.models = fleet_path, models
        self.local = models / "fleet.local.toml"

    @property
    def fleet(self) -> Fleet:
        return load_fleet(self.fleet_path)

    def add(self, source: Path, opts: AddOptions | None = None,
            profiles: list[tuple[str, Profile]] | None = None) -> AddResult:
        return add_model(source, self.models, self.fleet, self.local,
                         ROOMY if profiles is None else profiles, opts or AddOptions())

    def listing(self) -> set[str]:
        return {p.name for p in self.models.iterdir()} - {".fleet.local.toml.lock"}


@pytest.fixture
def env(tiny_fleet: tuple[Path, Path]) -> Env:
    return Env(*tiny_fleet)


@pytest.fixture
def source(tmp_path: Path, tiny_gguf: Path) -> Path:
    """A user's GGUF outside the models directory (another seed: another SHA-256)."""
    d = tmp_path / "downloads"
    d.mkdir()
    return write_tiny_gguf(d / "My Model Q8.gguf", seed=7, name="My Model 1B Instruct")


def test_models_add_installs_a_verified_file_and_the_fleet_merges_it(env: Env,
                                                                     source: Path) -> None:
    before = env.listing()
    res = env.add(source, AddOptions(domains=("code",)))
    spec, a = res.spec, res.spec.added
    assert a is not None
    assert spec.name == "my-model-1b-instruct" and spec.file == "My-Model-Q8.gguf"
    assert spec.format == "chat" and spec.n_ctx == 512 and a.context_length == 512
    assert a.arch == "llama" and a.quantization == "F32"
    assert a.source == str(source) and a.quality_guess
    assert a.domains == ("code",) and spec.tags == ("added", "code")
    assert 0 < spec.params_b < 0.001
    # the guess from its size, lowered outside the domains it is meant for
    guess = guess_quality(spec.params_b)
    assert spec.quality["code"] == guess["code"]
    assert all(spec.quality[d] == pytest.approx(guess[d] * 0.5, abs=0.01)
               for d in guess if d != "code")
    installed = env.models / spec.file
    assert installed.is_file() and not installed.is_symlink()
    assert installed.read_bytes() == source.read_bytes()
    assert cached_status(env.models, spec) is FileStatus.VERIFIED  # sidecar written
    assert env.listing() == before | {spec.file, "fleet.local.toml"}
    assert read_local_models(env.local) == (spec,)  # the manifest round trip
    merged = load_fleet(env.fleet_path, env.local)
    assert [m.name for m in merged.models] == ["tiny-chat", "tiny-base", spec.name]
    assert merged.local_source == env.local and merged.default_model == "tiny-chat"
    assert [m.added is not None for m in merged.models] == [False, False, True]


def test_models_add_links_on_the_same_filesystem_and_copies_when_asked(
        env: Env, source: Path, tmp_path: Path) -> None:
    linked = env.add(source)
    assert linked.action == "linked"
    assert (env.models / "My-Model-Q8.gguf").stat().st_ino == source.stat().st_ino
    other = write_tiny_gguf(tmp_path / "other.gguf", seed=8)
    copied = env.add(other, AddOptions(name="other", copy=True))
    assert copied.action == "copied"
    assert (env.models / "other.gguf").stat().st_ino != other.stat().st_ino
    # a file already in the models directory is added in place
    inside = write_tiny_gguf(env.models / "inside.gguf", seed=9)
    assert env.add(inside, AddOptions(name="inside")).action == "in place"


def _nothing_changed(env: Env, before: set[str]) -> None:
    assert env.listing() == before
    assert not env.local.exists()
    assert not any(n.endswith((".adding", ".tmp")) for n in env.listing())


def test_models_add_refuses_a_truncated_file(env: Env, source: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(source.read_bytes()[: source.stat().st_size - 1000])
    before = env.listing()
    with pytest.raises(ModelsError, match=r"cut\.gguf: truncated"):
        env.add(cut)
    _nothing_changed(env, before)


def test_models_add_refuses_a_file_that_is_not_gguf(env: Env, tmp_path: Path) -> None:
    bad = tmp_path / "notes.gguf"
    bad.write_text("these are not weights\n" * 100)
    before = env.listing()
    with pytest.raises(ModelsError, match="not a GGUF file"):
        env.add(bad)
    corrupt = tmp_path / "corrupt.gguf"  # a GGUF header whose counts are garbage
    corrupt.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + b"\xff" * 16 + bytes(64))
    with pytest.raises(ModelsError, match="implausible counts"):
        env.add(corrupt)
    with pytest.raises(ModelsError, match="is not a regular file"):
        env.add(tmp_path)
    with pytest.raises(ModelsError, match="No such file"):
        env.add(tmp_path / "missing.gguf")
    _nothing_changed(env, before)


def test_models_add_follows_a_link_and_installs_a_real_file(env: Env, source: Path,
                                                            tmp_path: Path) -> None:
    link = tmp_path / "current.gguf"
    link.symlink_to(source)
    res = env.add(link)
    installed = env.models / "current.gguf"
    assert installed.is_file() and not installed.is_symlink()
    assert any("is a link to" in n for n in res.notes)
    dangling = tmp_path / "gone.gguf"
    dangling.symlink_to(tmp_path / "nowhere.gguf")
    with pytest.raises(ModelsError, match=r"gone\.gguf is a link to .*nowhere\.gguf, which "
                                          "cannot be read"):
        env.add(dangling)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_models_add_refuses_a_link_to_a_file_this_user_may_not_read(env: Env, source: Path,
                                                                     tmp_path: Path) -> None:
    source.chmod(0)
    link = tmp_path / "link.gguf"
    link.symlink_to(source)
    with pytest.raises(ModelsError, match=r"the target of the link .* cannot be read as uid"):
        env.add(link)


def test_models_add_never_writes_through_a_link_planted_in_the_models_dir(
        env: Env, source: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (env.models / "My-Model-Q8.gguf").symlink_to(victim)
    with pytest.raises(ModelsError, match="not a regular file"):
        env.add(source)
    assert victim.read_text() == "keep me" and not env.local.exists()


def test_models_add_refuses_a_duplicate_name_or_file(env: Env, source: Path,
                                                     tmp_path: Path) -> None:
    env.add(source)
    manifest = env.local.read_text()
    with pytest.raises(ModelsError, match="'my-model-1b-instruct' is already an added model"):
        env.add(write_tiny_gguf(tmp_path / "again.gguf", seed=3, name="My Model 1B Instruct"))
    with pytest.raises(ModelsError, match=f"'tiny-chat' is a model of the fleet manifest "
                                          f"{env.fleet_path}"):
        env.add(source, AddOptions(name="tiny-chat"))
    with pytest.raises(ModelsError, match=r"file name My-Model-Q8\.gguf is taken by model "
                                          r"'my-model-1b-instruct'"):
        env.add(source, AddOptions(name="second"))
    with pytest.raises(ModelsError, match="not valid"):
        env.add(source, AddOptions(name="Bad Name"))
    assert env.local.read_text() == manifest


def test_models_add_refuses_an_architecture_llama_cpp_does_not_know(env: Env,
                                                                    tmp_path: Path) -> None:
    odd = write_tiny_gguf(tmp_path / "odd.gguf", arch="nosucharch")
    before = env.listing()
    with pytest.raises(ModelsError, match=r"llama-cpp-python \S+ cannot load it: unknown model "
                                          "architecture: 'nosucharch'"):
        env.add(odd)
    _nothing_changed(env, before)


def test_models_add_without_a_chat_template_needs_a_completion_template(
        env: Env, tmp_path: Path) -> None:
    base = write_tiny_gguf(tmp_path / "base.gguf", chat_template=None, seed=4)
    with pytest.raises(ModelsError, match=r"no chat template \(tokenizer.chat_template\).*"
                                          "--completion-template"):
        env.add(base)
    assert not env.local.exists()
    res = env.add(base, AddOptions(completion_template="Q: {prompt}\nA:", stop=("\nQ:",)))
    spec = res.spec
    assert spec.format == "completion" and spec.prompt_template == "Q: {prompt}\nA:"
    assert read_local_models(env.local)[0].stop == ("\nQ:",)


def test_models_add_refuses_a_chat_template_that_does_not_render(env: Env,
                                                                 tmp_path: Path) -> None:
    broken = write_tiny_gguf(tmp_path / "broken.gguf", seed=5,
                             chat_template="{% for m in messages %}{{ m.content }")
    with pytest.raises(ModelsError, match=r"chat template .* does not render"):
        env.add(broken)
    assert not env.local.exists()


def test_models_add_refuses_a_model_too_large_for_every_profile(env: Env,
                                                                source: Path) -> None:
    small = [("in use", budget("16M")), ("other", budget("16.5M"))]  # it needs ~17 MiB
    before = env.listing()
    with pytest.raises(ModelsError, match=r"more than the RAM budget of every profile; the "
                                          r"largest is 16.5 MiB \(other\)"):
        env.add(source, profiles=small)
    _nothing_changed(env, before)
    # Too large for the profile in use only: added, with a note.
    res = env.add(source, profiles=[("in use", budget("16M")), ("big", budget("1G"))])
    assert any("does not fit the budget of the profile in use" in n
               for n in res.notes)
    assert [f.fits for f in res.fits] == [False, True]


def test_models_add_n_ctx_is_bounded_by_the_trained_context(env: Env, source: Path) -> None:
    with pytest.raises(ModelsError, match=r"exceeds the context .* trained for"):
        env.add(source, AddOptions(n_ctx=1024))
    assert env.add(source, AddOptions(n_ctx=256)).spec.n_ctx == 256


def test_models_remove_deletes_only_added_models(env: Env, source: Path, tmp_path: Path,
                                                 ) -> None:
    spec = env.add(source).spec
    keep = env.add(write_tiny_gguf(tmp_path / "keep.gguf", seed=6),
                   AddOptions(name="keep", copy=True)).spec
    with pytest.raises(ModelsError, match="part of the fleet manifest"):
        remove_model("tiny-chat", env.models, env.fleet, env.local)
    with pytest.raises(ModelsError, match=r"'nope' is not an added model \(added: "):
        remove_model("nope", env.models, env.fleet, env.local)
    res = remove_model(spec.name, env.models, env.fleet, env.local)
    assert res.file_removed and not (env.models / spec.file).exists()
    assert not (env.models / ".verified" / f"{spec.file}.json").exists()
    assert source.exists()  # the user's own file is untouched
    assert read_local_models(env.local) == (keep,)
    res = remove_model("keep", env.models, env.fleet, env.local, keep_file=True)
    assert not res.file_removed and (env.models / keep.file).exists()
    assert read_local_models(env.local) == ()
    assert [m.name for m in load_fleet(env.fleet_path, env.local).models] == [
        "tiny-chat", "tiny-base"]
    # the kept file is reused by a later add of the same content
    assert env.add(tmp_path / "keep.gguf", AddOptions(name="keep")).action == "reused"


def test_local_manifest_round_trips_odd_strings(env: Env, source: Path) -> None:
    spec = env.add(source).spec
    assert spec.added is not None
    odd = dataclasses.replace(
        spec, format="completion", stop=("\n\n", "»", 'say "hi"', "\\x", "\t"),
        prompt_template='Frage: {prompt}\n"Antwort" \\ \x7f \x01 ü 🙂:',
        system_prompt="Sei knapp.\r\n", license="Apache-2.0",
        added=dataclasses.replace(spec.added, source="/home/ü/a b/\udcff.gguf",
                                  domains=("code", "math")))
    write_manifest(env.local, [odd])
    back = read_local_models(env.local)[0]
    assert odd.added is not None
    assert back == dataclasses.replace(odd, added=dataclasses.replace(
        odd.added, source="/home/ü/a b/\ufffd.gguf"))
    assert local_models_from_mapping({"version": 1}, env.local) == ()
    assert "version = 1" in manifest_toml([])


def test_fleet_merge_refuses_a_name_or_file_in_both_manifests(env: Env, source: Path) -> None:
    spec = env.add(source).spec
    write_manifest(env.local, [dataclasses.replace(spec, name="tiny-chat")])
    with pytest.raises(ConfigError, match=f"{env.local}.*'tiny-chat' is also a model of the "
                                          f"fleet manifest {env.fleet_path}"):
        load_fleet(env.fleet_path, env.local)
    write_manifest(env.local, [dataclasses.replace(spec, file="tiny-chat.gguf")])
    with pytest.raises(ConfigError, match=r"tiny-chat\.gguf is also the file of 'tiny-chat'"):
        load_fleet(env.fleet_path, env.local)


def test_fleet_manifest_and_local_manifest_keep_their_roles(env: Env, source: Path) -> None:
    spec = env.add(source).spec
    raw = read_toml(env.local)
    with pytest.raises(ConfigError, match=r"added: only models of a local manifest"):
        fleet_from_mapping(raw, Path("fleet.toml"))
    del raw["model"][0]["added"]
    with pytest.raises(ConfigError, match=r"added: missing"):
        local_models_from_mapping(raw, env.local)
    with pytest.raises(ConfigError, match="default_model: unknown top-level field"):
        local_models_from_mapping({"default_model": spec.name}, env.local)


def test_models_add_and_remove_via_the_cli(make_settings: Callable[..., Settings],
                                           source: Path, capsys: pytest.CaptureFixture[str],
                                           ) -> None:
    s = make_settings()
    common = ["--profile", s.profile_source, "--models-dir", str(s.models_dir), "--fleet",
              str(s.fleet_path)]
    assert main(["models", "add", str(source), "--name", "mine", "--domains", "code,math",
                 *common]) == 0
    out = capsys.readouterr()
    assert "added mine" in out.out and "quality priors (a guess" in out.out
    assert "after a reload" in out.err
    assert main(["models", "list", "--json", *common]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["models"]}
    assert rows["mine"]["origin"] == "added" and rows["tiny-chat"]["origin"] == "fleet"
    assert rows["mine"]["status"] == "verified" and rows["mine"]["added"]["quality_guess"]
    assert [m.name for m in fleet_for(s).models][-1] == "mine"
    assert main(["models", "list", *common]) == 0
    assert "pinned requests reach it at once" in capsys.readouterr().out
    assert main(["models", "add", str(source), "--domains", "poetry", *common]) == 2
    assert main(["models", "remove", "tiny-chat", *common]) == 1
    assert "not an added model" in capsys.readouterr().err
    assert main(["models", "remove", "mine", *common]) == 0
    assert [m.name for m in fleet_for(s).models] == ["tiny-chat", "tiny-base"]


def test_models_export_then_import_carries_added_models(env: Env, source: Path,
                                                       tmp_path: Path) -> None:
    spec = env.add(source, AddOptions(name="mine", domains=("code",))).spec
    out = tmp_path / "bundle-added"
    res = export_models([], env.models, env.local, out)
    assert [m.name for m in res.models] == ["mine"]
    assert (out / spec.file).read_bytes() == source.read_bytes()
    device = tmp_path / "device-models"
    local = device / "fleet.local.toml"
    added = import_models(out, device, env.fleet, local, ROOMY)
    assert [(r.spec.name, r.action) for r in added] == [("mine", "copied")] or \
        [(r.spec.name, r.action) for r in added] == [("mine", "linked")]
    back = read_local_models(local)[0]
    assert back.sha256 == spec.sha256 and back.quality == spec.quality
    assert back.added is not None and back.added.domains == ("code",)
    assert back.added.source == str(out / spec.file)
    again = import_models(out, device, env.fleet, local, ROOMY)
    assert [r.action for r in again] == ["present"]  # idempotent
    # A corrupt carried file: refused by its SHA-256, and nothing is left behind.
    other = tmp_path / "device2"
    shutil.copytree(out, tmp_path / "tampered")
    data = bytearray((tmp_path / "tampered" / spec.file).read_bytes())
    data[-10] ^= 0xFF
    (tmp_path / "tampered" / spec.file).write_bytes(bytes(data))
    with pytest.raises(ModelsError, match="differs from its manifest entry"):
        import_models(tmp_path / "tampered", other, env.fleet, other / "fleet.local.toml",
                      ROOMY)
    assert not (other / spec.file).exists() and not (other / "fleet.local.toml").exists()
    with pytest.raises(ModelsError, match="not added models: nope"):
        export_models(["nope"], env.models, env.local, out)


def test_models_add_name_and_file_sanitizing_and_the_quality_guess() -> None:
    assert sanitize_name("Llama 3.2 3B Instruct") == "llama-3.2-3b-instruct"
    assert sanitize_name("  __Qwen2.5/Coder!!") == "qwen2.5-coder"
    assert sanitize_name("***") == ""
    assert sanitize_file("Llama 3.2 (Q4_K_M).gguf") == "Llama-3.2-Q4_K_M.gguf"
    assert sanitize_file("model.bin") == "model.bin.gguf"
    small, big = guess_quality(0.135), guess_quality(8.0)
    assert all(0 < small[d] < big[d] <= 0.9 for d in small)
    assert guess_quality(70.0) == big and guess_quality(0.01) == guess_quality(0.1)
    mid = guess_quality(3.0, ["code"])
    assert mid["code"] == guess_quality(3.0)["code"]
    assert mid["math"] == pytest.approx(guess_quality(3.0)["math"] * 0.5, abs=0.01)


def _few_canaries() -> list[Query]:
    """Two short canaries in each of four domains (none in writing)."""
    out: list[Query] = []
    for d in ("code", "math", "factual", "instruct"):
        out += [dataclasses.replace(q, max_tokens=8) for q in load_canaries()
                if q.domain == d][:2]
    return out


def test_daemon_routes_auto_to_an_added_model_only_once_it_is_calibrated(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """The real daemon: an added model, on paper the best for writing, gets no `auto`
    request (not even by exploration, epsilon 1) until calibrated here; a pinned request
    reaches it at once. After `calm-edge calibrate` and a reload it is routed to."""
    s = make_settings("[loop]\nexplore_epsilon = 1.0\n")
    mine = write_tiny_gguf(tmp_path / "mine.gguf", seed=11)

    def ask(c: httpx.Client, i: int, model: str = "auto") -> dict[str, Any]:
        r = c.post("/v1/chat/completions", json={
            "model": model, "max_tokens": 2, "calm": {"domain": "writing", "mode": "quality"},
            "messages": [{"role": "user", "content": f"Write a line about the number {i}."}]})
        assert r.status_code == 200, r.text
        info: dict[str, Any] = r.json()["calm"]
        return info

    def ids(c: httpx.Client) -> set[str]:
        return {m["id"] for m in c.get("/v1/models").json()["data"]}

    sysfs = tmp_path / "sysfs"  # one device for the daemon and the calibration run
    sysfs.mkdir()
    with run_daemon(s, sysfs_root=sysfs), uds_client(s) as c:
        assert ids(c) == {"auto", "tiny-chat", "tiny-base"}
        # Added while the daemon runs: it is served after a reload, not before.
        assert main(["models", "add", str(mine), "--name", "mine", "--profile",
                     s.profile_source, "--models-dir", str(s.models_dir), "--fleet",
                     str(s.fleet_path)]) == 0
        assert "mine" not in ids(c)
        # On paper the best model for writing (its quality is only a guess).
        spec = read_local_models(s.local_fleet_path)[0]
        write_manifest(s.local_fleet_path, [dataclasses.replace(
            spec, quality=dict.fromkeys(DOMAINS, 0.99))])
        r = c.post("/calm/reload").json()
        assert r["ok"] and r["added"] == ["mine"] and r["local_fleet"] == str(s.local_fleet_path)
        models = {m["id"]: m for m in c.get("/v1/models").json()["data"]}
        assert models["mine"]["calm"]["origin"] == "added"
        for i in range(6):
            info = ask(c, i)
            assert info["model"] != "mine"
            assert "mine" not in {cand["model"] for cand in info["candidates"]}
            assert info["explored"] or "not routed to mine (added, not calibrated on this " \
                "device yet)" in info["reason"]
        assert ask(c, 101, model="mine")["model"] == "mine"
        status = c.get("/calm/status").json()
        assert {m["name"]: m["origin"] for m in status["models"]}["mine"] == "added"

        run = asyncio.run(calibrate_locally(s, fleet_for(s), llama_cpp_factory, "unknown",
                                            ["mine"], quick=False, canaries=_few_canaries(),
                                            root=sysfs))
        assert not run.failed and run.results["mine"].complete
        assert c.post("/calm/reload").json()["ok"]
        routed = [ask(c, 200 + i) for i in range(4)]
        assert all("mine" in {cand["model"] for cand in r["candidates"]} for r in routed)
        assert "mine" in {r["model"] for r in routed}
        # `models add --reload` asks the daemon itself.
        assert main(["models", "add", str(write_tiny_gguf(tmp_path / "b.gguf", seed=12)),
                     "--name", "other", "--profile", s.profile_source, "--models-dir",
                     str(s.models_dir), "--fleet", str(s.fleet_path), "--socket",
                     str(s.socket_path), "--reload"]) == 0
        assert "other" in ids(c)
