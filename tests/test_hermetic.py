"""The suite is hermetic: no test's client reaches a daemon the test did not start, and no
test sees the environment the suite was started from (issue 23: with a daemon from the
quickstart on the system socket, a test's client reached it instead of its own)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from calm_edge import paths
from calm_edge.client import Client, ClientError
from calm_edge.testing.decoy import Decoy, outer_daemon_sockets
from tests.conftest import OUTER_ENV

ROOT = Path(__file__).resolve().parent.parent


def test_decoy_records_each_client_and_answers_503(short_tmp: Path) -> None:
    sock = short_tmp / "run" / "calm.sock"
    with Decoy([sock]) as decoy:
        assert decoy.watched == [sock]
        assert stat.S_IMODE(sock.stat().st_mode) == 0o666
        with pytest.raises(ClientError, match="test decoy at") as ei, Client(sock) as c:
            c.get("/health")
        assert ei.value.status == 503
        child = subprocess.run([sys.executable, "-m", "calm_edge.cli", "status", "--socket",
                                str(sock)], capture_output=True, text=True, timeout=60)
        assert child.returncode == 1 and "test decoy" in child.stderr
        with Decoy([sock]) as second:  # a live daemon's path is left alone (one probe)
            assert second.occupied == [sock] and second.watched == []
        mine, childs, probe = decoy.visits
    assert (mine.pid, mine.uid, mine.request_line) == (os.getpid(), os.geteuid(),
                                                       "GET /health HTTP/1.1")
    assert childs.pid != os.getpid() and childs.request_line == "GET /calm/status HTTP/1.1"
    assert "calm_edge.cli status" in childs.command and "connected and sent nothing" in \
        probe.describe()
    assert not sock.exists() and not sock.parent.exists()  # what it made, it removed


def test_decoy_replaces_a_stale_socket_and_leaves_other_files(short_tmp: Path) -> None:
    import socket

    stale = short_tmp / "stale.sock"
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(stale))  # bound, never listening, closed: a daemon that died
    plain = short_tmp / "file.sock"
    plain.write_text("not a socket")
    with Decoy([stale, plain]) as decoy:
        assert decoy.watched == [stale] and decoy.occupied == [plain]
    assert plain.read_text() == "not a socket"


def test_paths_client_finds_the_system_socket_only_where_it_exists(short_tmp: Path) -> None:
    """The system socket is a seam: faked here, with a decoy daemon on it."""
    system = short_tmp / "run" / "calm-edge" / "calm.sock"
    env = {"XDG_RUNTIME_DIR": str(short_tmp / "xdg")}
    own = system if os.geteuid() == 0 else short_tmp / "xdg" / "calm-edge" / "calm.sock"
    assert paths.server_socket_path("", env, system_socket=system) == own
    assert paths.client_socket_path(None, env, system_socket=system) == own
    with Decoy([system]) as decoy:
        assert paths.client_socket_path(None, env, system_socket=system) == system
        assert paths.client_socket_path(None, {**env, "CALM_EDGE_SOCKET": "/x.sock"},
                                        system_socket=system) == Path("/x.sock")
        assert paths.client_socket_path("/y.sock", env, system_socket=system) == Path("/y.sock")
        with pytest.raises(ClientError, match="test decoy"), \
                Client(paths.client_socket_path(None, env, system_socket=system)) as c:
            c.get("/health")
        assert [v.path for v in decoy.visits] == [system]


def test_hermetic_env_is_this_tests_own(hermetic_env: Path) -> None:
    assert not [k for k in os.environ if k.startswith("CALM_EDGE_")]
    for name in ("NOTIFY_SOCKET", "LISTEN_FDS", "RUNTIME_DIRECTORY", "STATE_DIRECTORY"):
        assert name not in os.environ
    assert os.environ["XDG_RUNTIME_DIR"] == str(hermetic_env)
    assert os.environ["XDG_RUNTIME_DIR"] != OUTER_ENV.get("XDG_RUNTIME_DIR")
    st = hermetic_env.lstat()
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_uid == os.geteuid()
    assert Path(os.environ["XDG_STATE_HOME"]).is_relative_to(hermetic_env)
    assert Path(os.environ["XDG_DATA_HOME"]).is_relative_to(hermetic_env)
    # A child inherits this environment, not the suite's.
    child = subprocess.run([sys.executable, "-c", "import json, os; print(json.dumps(dict("
                            "os.environ)))"], capture_output=True, text=True, check=True)
    seen = json.loads(child.stdout)
    assert seen["XDG_RUNTIME_DIR"] == str(hermetic_env)
    assert not [k for k in seen if k.startswith("CALM_EDGE_")]


def test_hermetic_outer_daemon_sockets_from_the_environment() -> None:
    env = {"CALM_EDGE_SOCKET": "/e/calm.sock", "XDG_RUNTIME_DIR": "/run/user/7",
           "RUNTIME_DIRECTORY": "/run/ce:/run/other"}
    assert outer_daemon_sockets(env, "/run/calm-edge/calm.sock::/e/calm.sock") == [
        Path("/e/calm.sock"), Path("/run/user/7/calm-edge/calm.sock"), Path("/run/ce/calm.sock"),
        Path("/run/calm-edge/calm.sock")]
    assert outer_daemon_sockets({}) == []


_LEAKY_TESTS = '''
import os, subprocess, sys
from pathlib import Path
from calm_edge import paths
from calm_edge.client import Client, ClientError

SYSTEM = Path({system!r})


def test_keeps_to_itself(tmp_path):
    assert "CALM_EDGE_SOCKET" not in os.environ
    try:
        with Client(tmp_path / "own.sock", timeout_s=5) as c:
            c.get("/health")
    except ClientError as e:
        assert "no daemon socket" in str(e)


def test_reaches_the_system_daemon():
    # issue 23: a client with no socket of its own found the daemon on the system socket
    try:
        with Client(paths.client_socket_path(None, {{}}, system_socket=SYSTEM),
                    timeout_s=5) as c:
            c.get("/health")
    except ClientError:
        pass


def test_reaches_the_outer_socket_from_a_child():
    subprocess.run([sys.executable, "-m", "calm_edge.cli", "status", "--socket",
                    {outer!r}], capture_output=True, timeout=60)
'''


def test_hermetic_guard_fails_each_test_whose_client_reaches_a_decoy(tmp_path: Path,
                                                                     short_tmp: Path) -> None:
    """A session with decoys on a fake system socket and on the outer $CALM_EDGE_SOCKET: the
    tests whose clients reach one fail (in-process or from a child), naming the client;
    the test that keeps to its own socket passes; the decoys are gone afterwards."""
    system = short_tmp / "run" / "calm-edge" / "calm.sock"
    outer = short_tmp / "outer" / "calm.sock"
    tests = tmp_path / "test_leaky.py"
    tests.write_text(textwrap.dedent(_LEAKY_TESTS.format(system=str(system), outer=str(outer))))
    env = {**os.environ, "CALM_TEST_DECOY_SOCKETS": str(system), "CALM_EDGE_SOCKET": str(outer)}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p",
                        "no:cacheprovider", "-W", "error", "--rootdir", str(tmp_path),
                        str(tests)], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "2 passed" not in out and "3 passed, 2 errors" in out, out
    assert "ERROR" in out and "test_reaches_the_system_daemon" in out
    assert "test_reaches_the_outer_socket_from_a_child" in out
    assert f"{system}: pid " in out and "GET /health HTTP/1.1" in out
    assert f"{outer}: pid " in out and "calm_edge.cli status" in out
    assert "ERROR test_leaky.py::test_keeps_to_itself" not in out
    assert not system.exists() and not system.parent.exists() and not outer.parent.exists()
