"""A calibrated first answer: scripts/quickstart.sh calibrates the fleet before the first
question (its dry run on the tiny models, real llama.cpp, runs the script's own calibration
step into the state directory the daemon reads), and `calm-edge calibrate` beside a running
daemon has it reload, so that it routes from the new results."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from calm_edge.config import Settings, load_settings
from calm_edge.fleet import load_fleet
from calm_edge.knowledge import KnowledgeStore
from calm_edge.testing.fakes import FakeFactory
from tests.conftest import run_daemon, write_profile

REPO = Path(__file__).resolve().parent.parent
VENV = str(Path(sys.executable).parent.parent)  # the venv running the tests has calm_edge


def test_quickstart_dry_run_calibrates_the_tiny_fleet_into_the_state_dir(
        tiny_fleet: tuple[Path, Path], tmp_path: Path, short_tmp: Path) -> None:
    fleet, models = tiny_fleet
    profile = write_profile(tmp_path / "profile.toml")
    state = tmp_path / "state"
    env = {**os.environ, "QUICKSTART_DRY_RUN": "1", "QUICKSTART_VENV": VENV,
           "CALM_EDGE_FLEET": str(fleet), "CALM_EDGE_MODELS_DIR": str(models),
           "CALM_EDGE_STATE_DIR": str(state), "CALM_EDGE_PROFILE": str(profile),
           "CALM_EDGE_SOCKET": str(short_tmp / "none.sock")}  # no daemon there
    r = subprocess.run(["bash", str(REPO / "scripts" / "quickstart.sh")], env=env,
                       capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "==> calibrating the fleet on this device" in out
    assert "==> tiny-chat (1/2)" in out and "==> tiny-base (2/2)" in out  # progress
    assert "dry run done" in out and "starting the daemon" not in out

    async def stored() -> dict[str, set[str]]:
        store = KnowledgeStore(state / "knowledge.db", retention_days=1, max_requests=100)
        await store.open()
        try:
            items = await store.calibration_items(_device_key(profile, fleet, models, state))
        finally:
            store.close()
        return {name: set(i) for (name, _), i in items.items()}

    items = asyncio.run(stored())
    assert set(items) == {m.name for m in load_fleet(fleet).models}
    for name, keys in items.items():
        assert {"load", "done"} <= keys, (name, keys)
        assert sum(k.startswith("canary:") for k in keys) >= 4  # a few per domain


def test_calibrate_beside_a_running_daemon_has_it_reload(
        make_settings: Callable[..., Settings], tiny_fleet: tuple[Path, Path],
        tmp_path: Path) -> None:
    from calm_edge.backends.llama_cpp import build_info

    fleet, models = tiny_fleet
    s = make_settings()
    # The calibrate command identifies the device from the real /proc and /sys: the daemon
    # must read the same root to find its items under the same device key.
    with run_daemon(s, FakeFactory(), backend_build=build_info(), sysfs_root=Path("/"),
                    memory_probe=lambda: 0) as daemon:
        assert daemon.orchestrator is not None and daemon.orchestrator.calibration == {}
        r = subprocess.run(
            [str(Path(VENV) / "bin" / "calm-edge"), "calibrate", "--quick",
             "--profile", str(tmp_path / "profile.toml"), "--state-dir", str(s.state_dir),
             "--socket", str(s.socket_path), "--fleet", str(fleet), "--models-dir",
             str(models)], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "a daemon is running" in r.stderr and "daemon reloaded" in r.stderr
        assert set(daemon.orchestrator.calibration) == {"tiny-chat", "tiny-base"}


def _device_key(profile: Path, fleet: Path, models: Path, state: Path) -> str:
    """The device key `calm-edge calibrate` stored its items under, as the daemon derives
    it from the same settings."""
    from calm_edge.backends.llama_cpp import build_info
    from calm_edge.calibration import identify
    from calm_edge.runtime import resolved_threads

    s = load_settings(str(profile), env={}, cli={"paths": {
        "fleet": str(fleet), "models_dir": str(models), "state_dir": str(state)}})
    return identify(Path("/"), build_info(), s.profile.runtime, resolved_threads(s)).key
