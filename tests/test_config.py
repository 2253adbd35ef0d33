from __future__ import annotations

from pathlib import Path

import pytest

from calm_edge import paths
from calm_edge.config import (
    ConfigError,
    detect_profile_name,
    load_settings,
    profile_from_mapping,
    read_toml,
)
from calm_edge.units import format_bytes, parse_size_bytes
from tests.conftest import bundled_profile

BUNDLED = ["x86-dev", "jetson-orin-nano-8gb", "jetson-orin-nx-16gb", "jetson-agx-orin-64gb",
           "rpi5-8gb"]


@pytest.mark.parametrize("name", BUNDLED)
def test_config_bundled_profiles_load(name: str, tmp_path: Path) -> None:
    s = load_settings(bundled_profile(name), env={"HOME": str(tmp_path)})
    p = s.profile
    assert p.device.name == name
    assert p.memory.ram_budget_bytes > 100 << 20
    assert p.power.idle_power_mw < p.power.active_power_mw
    assert p.slo.latency_ms > 0
    assert p.qos.weights("eco").energy > p.qos.weights("quality").energy
    assert s.models_dir == tmp_path / ".local/share/calm-edge/models"


def test_config_env_and_cli_precedence(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "CALM_EDGE_RAM_BUDGET": "1G",
           "CALM_EDGE_RUNTIME_N_THREADS": "3", "CALM_EDGE_SOCKET": "/tmp/env.sock"}
    s = load_settings(bundled_profile("x86-dev"), env=env)
    assert s.profile.memory.ram_budget_bytes == 1 << 30
    assert s.profile.runtime.n_threads == 3
    assert s.socket_path == Path("/tmp/env.sock")
    s = load_settings(bundled_profile("x86-dev"), env=env,
                      cli={"memory": {"ram_budget": "800M"}, "server": {"socket": "/tmp/cli.sock"}})
    assert s.profile.memory.ram_budget_bytes == 800 << 20
    assert s.socket_path == Path("/tmp/cli.sock")
    assert s.profile.runtime.n_threads == 3


def test_config_percent_budget_uses_memtotal() -> None:
    p = profile_from_mapping({"memory": {"ram_budget": "50%"}}, where="t.toml",
                             mem_total_bytes=8 << 30)
    assert p.memory.ram_budget_bytes == 4 << 30


@pytest.mark.parametrize(("data", "section", "key", "fragment"), [
    ({"runtime": {"n_threads": "two"}}, "runtime", "n_threads", "expected an integer"),
    ({"runtime": {"n_threadz": 2}}, "runtime", "n_threadz", "unknown field"),
    ({"runtime": {"n_batch": 1}}, "runtime", "n_batch", "must be >= 8"),
    ({"memory": {"ram_budget": "lots"}}, "memory", "ram_budget", "not a size"),
    ({"power": {"source": "solar"}}, "power", "source", "expected one of"),
    ({"qos": {"eco": {"energy": -1.0}}}, "qos.eco", "energy", "must be >= 0"),
    ({"server": {"socket_mode": "0999"}}, "server", "socket_mode", "octal"),
    ({"runtime": {"use_mmap": "yes"}}, "runtime", "use_mmap", "true or false"),
    ({"bogus": {}}, "", "bogus", "unknown field"),
])
def test_config_errors_name_file_section_field(data: dict[str, object], section: str, key: str,
                                               fragment: str) -> None:
    with pytest.raises(ConfigError) as ei:
        profile_from_mapping(data, where="profiles/bad.toml")
    e = ei.value
    assert (e.where, e.section, e.key) == ("profiles/bad.toml", section, key)
    assert fragment in str(e)
    assert str(e).startswith("profiles/bad.toml: ")


def test_config_env_error_names_variable() -> None:
    with pytest.raises(ConfigError, match=r"CALM_EDGE_RUNTIME_N_THREADS.*must be >= 0"):
        profile_from_mapping({}, where="x", env={"CALM_EDGE_RUNTIME_N_THREADS": "-1"})
    with pytest.raises(ConfigError, match=r"CALM_EDGE_RUNTIME_N_THREADZ.*unknown field"):
        profile_from_mapping({}, where="x", env={"CALM_EDGE_RUNTIME_N_THREADZ": "1"})
    # A variable that names no section is someone else's: ignored (with a warning).
    assert profile_from_mapping({}, where="x", env={"CALM_EDGE_NOPE": "1"}) == \
        profile_from_mapping({}, where="x")


def test_config_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[runtime\nn_threads = 2")
    with pytest.raises(ConfigError, match=r"bad\.toml: invalid TOML"):
        read_toml(bad)
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(str(tmp_path / "missing.toml"), env={})
    with pytest.raises(ConfigError, match=r"no such profile.*x86-dev"):
        load_settings("no-such-board", env={})


@pytest.mark.parametrize(("model", "expected"), [
    (b"NVIDIA Jetson Orin Nano Developer Kit\x00", "jetson-orin-nano-8gb"),
    (b"NVIDIA Jetson Orin NX Engineering Reference Developer Kit\x00", "jetson-orin-nx-16gb"),
    (b"Jetson AGX Orin Developer Kit\x00", "jetson-agx-orin-64gb"),
    (b"Raspberry Pi 5 Model B Rev 1.0\x00", "rpi5-8gb"),
    (None, "x86-dev"),
])
def test_config_detect_profile_from_device_tree(tmp_path: Path, model: bytes | None,
                                                expected: str) -> None:
    if model is not None:
        (tmp_path / "proc/device-tree").mkdir(parents=True)
        (tmp_path / "proc/device-tree/model").write_bytes(model)
    assert detect_profile_name(tmp_path) == expected


@pytest.mark.parametrize(("text", "n"), [
    ("800M", 800 << 20), ("4G", 4 << 30), ("1.5GiB", 3 << 29), ("512MB", 512 * 10**6),
    ("1048576", 1 << 20), (" 2 g ", 2 << 30),
])
def test_units_parse_size(text: str, n: int) -> None:
    assert parse_size_bytes(text) == n


def test_units_parse_size_rejects_garbage() -> None:
    for bad in ("", "G", "1.2.3M", "-5M", "5X"):
        with pytest.raises(ValueError):
            parse_size_bytes(bad)
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(3 << 30) == "3.00 GiB"


def test_paths_defaults_follow_systemd_then_xdg(tmp_path: Path) -> None:
    env = {"STATE_DIRECTORY": "/var/lib/calm-edge:/other", "RUNTIME_DIRECTORY": "/run/ce"}
    assert paths.state_dir("", env) == Path("/var/lib/calm-edge")
    assert paths.models_dir("", env) == Path("/var/lib/calm-edge/models")
    assert paths.server_socket_path("", env) == Path("/run/ce/calm.sock")
    env = {"HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "st")}
    assert paths.state_dir("", env) == tmp_path / "st/calm-edge"
    assert paths.state_dir("~/x", env).name == "x"


def test_config_retired_keys_load_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """Profiles written for earlier versions still load: keys nothing read any more are
    ignored with a warning that names them; a misspelt key is still an error."""
    data = {"slo": {"latency_ms": 9000.0, "ttft_ms": 3000.0},
            "runtime": {"backend": "llama_cpp", "n_threads": 2}}
    with caplog.at_level("WARNING", logger="calm_edge.config"):
        prof = profile_from_mapping(data, where="old.toml")
    assert prof.slo.latency_ms == 9000.0 and prof.runtime.n_threads == 2
    assert "[slo] ttft_ms is no longer used" in caplog.text
    assert "[runtime] backend is no longer used" in caplog.text
    with pytest.raises(ConfigError, match=r"\[slo\] ttft_msx"):
        profile_from_mapping({"slo": {"ttft_msx": 1.0}}, where="old.toml")


def test_config_parse_budget_as_the_profile_does() -> None:
    from calm_edge.config import parse_budget

    assert parse_budget("1G") == 1 << 30 and parse_budget(1 << 30) == 1 << 30
    assert parse_budget("50%") > 0
    for bad in ("x", "1K", "0%"):
        with pytest.raises(ValueError):
            parse_budget(bad)
