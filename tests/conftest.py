"""Shared fixtures: a tiny real GGUF, a fleet of it, settings, and a running daemon."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
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
from calm_edge.testing.tiny_gguf import write_tiny_gguf


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
    """Run a Daemon on its own loop in a thread; yield it once it serves; stop and join."""
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
