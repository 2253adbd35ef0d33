"""Shared fixtures: a hermetic environment for every test, a tiny real GGUF, a fleet of it,
settings, and a running daemon."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from calm_edge.backends.base import BackendFactory
from calm_edge.config import Settings, load_settings
from calm_edge.fleet import load_fleet, verify
from calm_edge.paths import bundled_dir, models_dir
from calm_edge.testing.decoy import Decoy, outer_daemon_sockets
from calm_edge.testing.tiny_gguf import write_tiny_gguf

# -- hermetic tests ---------------------------------------------------------------------------
# Nothing installed, running or set on the machine may decide a test's outcome. Every test
# runs without the outer CALM_EDGE_* and systemd variables, with a runtime, state and data
# directory of its own; a test that starts a daemon or a client names its socket. Decoy
# daemons listen where a daemon of the outer environment would ($CALM_EDGE_SOCKET,
# $XDG_RUNTIME_DIR/calm-edge/calm.sock, and the paths in CALM_TEST_DECOY_SOCKETS, which CI
# sets to the system socket): a test whose client reaches one fails, naming the client.

OUTER_ENV = dict(os.environ)  # as the suite was started, before any test changed it
_SCRUBBED = frozenset({
    "XDG_RUNTIME_DIR", "XDG_STATE_HOME", "XDG_DATA_HOME",  # paths.py's defaults
    "RUNTIME_DIRECTORY", "STATE_DIRECTORY", "CACHE_DIRECTORY", "LOGS_DIRECTORY",
    "CONFIGURATION_DIRECTORY", "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "WATCHDOG_USEC",
    "WATCHDOG_PID", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "JOURNAL_STREAM",
    "INVOCATION_ID",  # systemd's, when the suite runs in a unit
})


@pytest.fixture(scope="session")
def outer_decoys() -> Iterator[Decoy]:
    """Decoys on the outer environment's daemon sockets, for the whole session. A path where
    a live daemon already listens is left alone (`occupied`)."""
    where = outer_daemon_sockets(OUTER_ENV, OUTER_ENV.get("CALM_TEST_DECOY_SOCKETS", ""))
    with Decoy(where) as decoy:
        yield decoy


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch: pytest.MonkeyPatch, outer_decoys: Decoy) -> Iterator[Path]:
    """This test's environment: the outer CALM_EDGE_* and systemd variables removed,
    XDG_RUNTIME_DIR (0700, short enough for a socket path), XDG_STATE_HOME and XDG_DATA_HOME
    its own. Yields the runtime dir. Fails the test if its client reached a decoy."""
    for name in list(os.environ):
        if name.startswith("CALM_EDGE_") or name in _SCRUBBED:
            monkeypatch.delenv(name)
    runtime = Path(tempfile.mkdtemp(prefix="ce-rt-", dir="/tmp"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("XDG_STATE_HOME", str(runtime / "state"))
    monkeypatch.setenv("XDG_DATA_HOME", str(runtime / "data"))
    seen = len(outer_decoys.visits)
    yield runtime
    shutil.rmtree(runtime, ignore_errors=True)
    visits = outer_decoys.visits[seen:]
    if visits:
        pytest.fail("a client reached a daemon this test did not start (give it the socket "
                    "of the daemon the test started: make_settings, --socket, or an explicit "
                    "env):\n" + "\n".join(v.describe() for v in visits), pytrace=False)


def fleet_models_dir() -> Path:
    """Where `calm-edge models pull` put the default fleet (scripts/test.sh pulls it with the
    outer environment): read-only input for the integration tests."""
    return models_dir(OUTER_ENV.get("CALM_EDGE_MODELS_DIR", ""), OUTER_ENV)


def bundled_profile(name: str) -> str:
    """A bundled profile's file, never an operator's override in /etc/calm-edge/profiles."""
    return str(bundled_dir("profiles") / f"{name}.toml")


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture(scope="session")
def tiny_base_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-base.gguf",
                           chat_template=None, seed=1)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def model_entry(name: str, file: str, path: Path, fmt: str = "chat", n_ctx: int = 512,
                quality: str = "{ code = 0.5, factual = 0.5 }", extra: str = "") -> str:
    return f"""
[[model]]
name = "{name}"
file = "{file}"
sha256 = "{sha256(path)}"
size_bytes = {path.stat().st_size}
n_ctx = {n_ctx}
format = "{fmt}"
quality = {quality}
{extra}
"""


@pytest.fixture
def tiny_fleet(tmp_path: Path, tiny_gguf: Path, tiny_base_gguf: Path) -> tuple[Path, Path]:
    """(fleet.toml, models_dir) with a chat model and a base completion model, verified."""
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tiny_gguf, models / "tiny-chat.gguf")
    shutil.copy(tiny_base_gguf, models / "tiny-base.gguf")
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(
        'version = 1\ndefault_model = "tiny-chat"\n'
        + model_entry("tiny-chat", "tiny-chat.gguf", models / "tiny-chat.gguf",
                      quality="{ code = 0.6, factual = 0.6 }")
        + model_entry("tiny-base", "tiny-base.gguf", models / "tiny-base.gguf",
                      fmt="completion", quality="{ code = 0.2, factual = 0.4 }",
                      extra='prompt_template = "Question: {prompt}\\nAnswer:"\n'
                            'stop = ["\\nQuestion:"]'))
    for spec in load_fleet(fleet).models:
        verify(models, spec)
    return fleet, models


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory for Unix sockets (sun_path holds at most 107 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="ce-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def write_profile(path: Path, body: str = "") -> Path:
    path.write_text("""
[device]
name = "test"
[memory]
ram_budget = "256M"
[runtime]
n_threads = 1
n_batch = 64
[server]
socket_group = ""
drain_timeout_s = 10.0
[calibration]
auto = false
""" + body)
    return path


@pytest.fixture
def make_settings(tmp_path: Path, tiny_fleet: tuple[Path, Path], short_tmp: Path,
                  ) -> Callable[..., Settings]:
    fleet, models = tiny_fleet

    def make(profile_extra: str = "", **cli: dict[str, Any]) -> Settings:
        prof = write_profile(tmp_path / "profile.toml", profile_extra)
        overrides: dict[str, dict[str, Any]] = {
            "server": {"socket": str(short_tmp / "calm.sock")},
            "paths": {"models_dir": str(models), "state_dir": str(tmp_path / "state"),
                      "fleet": str(fleet)},
        }
        for sec, vals in cli.items():
            overrides.setdefault(sec, {}).update(vals)
        return load_settings(str(prof), env={"HOME": str(tmp_path)}, cli=overrides)

    return make


@contextlib.contextmanager
def run_daemon(settings: Settings, factory: BackendFactory | None = None,
               **kwargs: Any) -> Iterator[Any]:
    """Run a Daemon on its own loop in a thread; yield it once it serves; stop and join.
    Unless `sysfs_root` is given, it sees an empty one: no power sensor (energy is
    estimated), thermal zone or GPU of the machine the suite runs on."""
    with tempfile.TemporaryDirectory(prefix="ce-sysfs-") as no_sensors:
        kwargs.setdefault("sysfs_root", Path(no_sensors))
        with _run_daemon(settings, factory, **kwargs) as daemon:
            yield daemon


@contextlib.contextmanager
def _run_daemon(settings: Settings, factory: BackendFactory | None,
                **kwargs: Any) -> Iterator[Any]:
    from calm_edge.backends.llama_cpp import llama_cpp_factory
    from calm_edge.daemon import Daemon

    ready = threading.Event()
    daemon = Daemon(settings, factory or llama_cpp_factory, handle_signals=False,
                    on_ready=ready.set, env={}, **kwargs)
    result: dict[str, Any] = {}

    def main() -> None:
        try:
            result["rc"] = asyncio.run(daemon.run())
        except BaseException as e:  # surfaced to the test below
            result["error"] = e
            ready.set()

    t = threading.Thread(target=main, name="daemon", daemon=True)
    t.start()
    assert ready.wait(30), "daemon did not become ready"
    if "error" in result:
        raise result["error"]
    try:
        yield daemon
    finally:
        daemon.stop()
        t.join(30)
        assert not t.is_alive(), "daemon did not stop"
        if "error" in result:
            raise result["error"]
        assert result.get("rc") == 0


def uds_client(settings: Settings, timeout_s: float = 60.0) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(settings.socket_path)),
                        base_url="http://calm", timeout=timeout_s)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """llama-cpp-python opens os.devnull twice at import and never closes it; close it here
    so `filterwarnings = error` does not turn its ResourceWarning into a failure."""
    import sys

    utils = sys.modules.get("llama_cpp._utils")
    for name in ("outnull_file", "errnull_file"):
        fh = getattr(utils, name, None)
        if fh is not None:
            fh.close()


_GROWTH = r"""
import json, sys
from pathlib import Path
from calm_edge.backends.base import ChatMessage, GenerationRequest, SamplingParams
from calm_edge.backends.llama_cpp import LlamaCppBackend
from calm_edge.config import RuntimeConfig
from calm_edge.fleet import ModelSpec
from calm_edge.memory import process_rss_bytes

import llama_cpp, llama_cpp.llama_chat_format  # a daemon imports these once, at its first load

spec = ModelSpec(**json.loads(sys.argv[2]))
rt = RuntimeConfig(**json.loads(sys.argv[3]))
rss0 = process_rss_bytes()
b = LlamaCppBackend(spec, Path(sys.argv[1]), rt)
req = GenerationRequest(SamplingParams(max_tokens=16, temperature=0.0),
                        messages=(ChatMessage("user", "Write a haiku about the sea " * 4),))
list(b.generate(req, lambda: False))
print(process_rss_bytes() - rss0)
"""


def measured_growth_bytes(path: Path, spec: dict[str, Any], runtime: dict[str, Any]) -> int:
    """RSS growth of a fresh process from loading `path` with the real backend and answering
    one request: what the residency manager's measurement sees (no other model, no noise
    from this test process's allocator)."""
    import json
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _GROWTH, str(path), json.dumps(spec),
                        json.dumps(runtime)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return int(r.stdout.strip().splitlines()[-1])
