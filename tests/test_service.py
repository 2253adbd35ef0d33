"""systemd integration: sd_notify, the watchdog, socket activation, the unit files, the
install script and the offline bundle. Real sockets, real subprocesses, real scripts."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from calm_edge.config import Settings
from calm_edge.service import (
    ActivationError,
    Notifier,
    format_status,
    heartbeat,
    listen_fds,
    watchdog_interval_s,
)

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
UNITS = SCRIPTS / "systemd"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None,
    reason="systemd-analyze not installed (apt-get install systemd; CI installs it)")
needs_shadow_tools = pytest.mark.skipif(
    shutil.which("useradd") is None, reason="useradd/groupadd (passwd package) not installed")
VENV = str(Path(sys.executable).parent.parent)  # the venv running the tests has calm_edge
JETSON = "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super\0"


# -- helpers ------------------------------------------------------------------------------

class NotifyReceiver:
    """What systemd's notification socket sees: every datagram with its arrival time and
    the sender's pid (SCM_CREDENTIALS, which NotifyAccess=main checks)."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(address)
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, int, str]] = []
        self._cond = threading.Condition()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        size = socket.CMSG_SPACE(struct.calcsize("iII"))
        while not self._done.is_set():
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, size)
            except TimeoutError:
                continue
            pid = 0
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", payload[:12])[0]
            with self._cond:
                self.messages.append((time.monotonic(), pid, data.decode()))
                self._cond.notify_all()

    def wait_for(self, pred: Callable[[str], bool], timeout_s: float = 30.0,
                 ) -> tuple[float, int, str]:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for m in self.messages:
                    if pred(m[2]):
                        return m
                left = deadline - time.monotonic()
                assert left > 0, f"no matching notification; got {self.texts()}"
                self._cond.wait(left)

    def texts(self) -> list[str]:
        with self._cond:
            return [m[2] for m in self.messages]

    def close(self) -> None:
        self._done.set()
        self._thread.join(5)
        self.sock.close()


@contextlib.contextmanager
def notify_receiver(address: str | bytes) -> Iterator[NotifyReceiver]:
    r = NotifyReceiver(address)
    try:
        yield r
    finally:
        r.close()


def serve_env(s: Settings, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_PID",
                        "LISTEN_FDS", "LISTEN_FDNAMES")}
    return {**env, "CALM_EDGE_MODELS_DIR": str(s.models_dir),
            "CALM_EDGE_FLEET": str(s.fleet_path), "HOME": str(home), **extra}


def serve_args(s: Settings, socket_path: Path | None = None) -> list[str]:
    return ["-m", "calm_edge.cli", "serve", "--profile", s.profile_source, "--socket",
            str(socket_path or s.socket_path), "--state-dir", str(s.state_dir)]


def spawn(cmd: list[str], env: dict[str, str],
          pass_fds: tuple[int, ...] = ()) -> subprocess.Popen[str]:
    """Start `cmd` in its own process group, so stop() can reap everything it started."""
    return subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, pass_fds=pass_fds)


def stop(proc: subprocess.Popen[str], pid: int | None = None, timeout_s: float = 30) -> int:
    """SIGTERM the daemon (`pid`, when `proc` is a wrapper like strace), wait for the exit
    status; whatever is left of the process group afterwards is killed."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid or proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout_s)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def chat(s: Settings, path: Path | None = None) -> str:
    import httpx

    with httpx.Client(transport=httpx.HTTPTransport(uds=str(path or s.socket_path)),
                      base_url="http://calm", timeout=60) as c:
        assert c.get("/health").status_code == 200
        r = c.post("/v1/chat/completions", json={
            "model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 4, "temperature": 0})
        assert r.status_code == 200, r.text
        model: str = r.json()["calm"]["model"]
        return model


# -- Notifier -----------------------------------------------------------------------------

def test_notifier_sends_one_datagram_to_an_abstract_socket() -> None:
    name = f"calm-edge-test-{uuid.uuid4().hex}"
    with notify_receiver(b"\0" + name.encode()) as rx:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.enabled
        assert n.ready("line one\nline two")
        assert n.watchdog()
        _, pid, text = rx.wait_for(lambda t: t.startswith("READY=1"))
        assert text == "READY=1\nSTATUS=line one line two"  # a newline would split STATUS
        assert pid == os.getpid()
        rx.wait_for(lambda t: t == "WATCHDOG=1")
        n.close()


def test_notifier_to_a_path_and_reloading_carries_monotonic_usec(short_tmp: Path) -> None:
    with notify_receiver(str(short_tmp / "notify")) as rx:
        n = Notifier({"NOTIFY_SOCKET": str(short_tmp / "notify")}, clock_ns=lambda: 5_000_123_456)
        assert n.reloading("reloading profile")
        assert n.stopping()
        assert rx.wait_for(lambda t: t.startswith("RELOADING"))[2] == \
            "RELOADING=1\nMONOTONIC_USEC=5000123\nSTATUS=reloading profile"
        rx.wait_for(lambda t: t == "STOPPING=1")
        n.close()


def test_notifier_without_notify_socket_is_a_no_op() -> None:
    n = Notifier({})
    assert not n.enabled
    assert not n.ready("x") and not n.status("x") and not n.watchdog()
    assert not n.stopping() and not n.reloading()
    n.close()


def test_notifier_failures_never_raise_and_warn_once(short_tmp: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "calm_edge.service")
    n = Notifier({"NOTIFY_SOCKET": str(short_tmp / "nobody-listens")})
    assert n.enabled
    assert [n.watchdog() for _ in range(3)] == [False, False, False]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "sd_notify" in warnings[0].getMessage()
    n.close()


def test_notifier_unsupported_address_is_disabled(caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not n.enabled and not n.ready()
    assert "not a supported address" in caplog.text


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({"WATCHDOG_USEC": "400000"}, 0.4),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # another process's
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
])
def test_watchdog_interval_from_env(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval_s(env, 4242) == expected


@pytest.mark.parametrize(("args", "kwargs", "expected"), [
    (([], None), {}, "serving, 0 in flight; resident: none"),
    ((["a", "b"], {"chosen": "a", "domain": "code", "reason": "best utility"}),
     {"in_flight": 2}, "serving, 2 in flight; resident: a, b; last: a for code (best utility)"),
    ((["a"], None), {"in_flight": 1, "stopping": True}, "draining 1 in flight; resident: a"),
])
def test_format_status(args: tuple[list[str], dict[str, str] | None],
                       kwargs: dict[str, object], expected: str) -> None:
    assert format_status(*args, **kwargs) == expected  # type: ignore[arg-type]


def test_heartbeat_pings_only_while_the_loop_runs(short_tmp: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    texts = iter(["one", "one", "two"])

    def status() -> str:
        text = next(texts, None)
        if text is None:
            raise RuntimeError("status broke")
        return text

    async def main(n: Notifier) -> None:
        beat = asyncio.create_task(heartbeat(n, status, watchdog_s=0.1, status_every_s=10))
        await asyncio.sleep(0.3)
        time.sleep(0.6)  # noqa: ASYNC251 - a blocked loop, which the watchdog must notice
        await asyncio.sleep(0.3)
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat

    with notify_receiver(str(short_tmp / "notify")) as rx:
        n = Notifier({"NOTIFY_SOCKET": str(short_tmp / "notify")})
        asyncio.run(main(n))
        n.close()
        time.sleep(0.1)
        pings = [t for t, _, text in rx.messages if "WATCHDOG=1" in text]
        statuses = [text.split("STATUS=")[1] for _, _, text in rx.messages if "STATUS=" in text]
    assert len(pings) >= 6
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert max(gaps) >= 0.55  # the blocked stretch
    assert sorted(gaps)[-2] < 0.5  # every other gap is about 0.05 s
    assert statuses == ["one", "two"]  # sent when it changes, not at every ping
    assert caplog.text.count("building the service status failed") == 1


# -- listen_fds ---------------------------------------------------------------------------

@pytest.fixture
def listening(short_tmp: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(short_tmp / "act.sock"))
    sock.listen(8)
    yield sock
    sock.close()


def test_listen_fds_adopts_the_passed_socket_and_clears_the_env(
        listening: socket.socket) -> None:
    fd = os.dup(listening.fileno())  # the daemon gets its own descriptor, as after exec
    env = {"LISTEN_PID": "77", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "calm-edge.socket"}
    unset = dict(env, OTHER="kept")
    passed = listen_fds(env, 77, unset_env=unset, first_fd=fd)
    assert unset == {"OTHER": "kept"}
    assert [p.name for p in passed] == ["calm-edge.socket"]
    sock = passed[0].sock
    assert sock.fileno() == fd and sock.family == socket.AF_UNIX
    assert not sock.getblocking() and not sock.get_inheritable()
    sock.close()


def test_listen_fds_ignores_variables_for_another_process(listening: socket.socket) -> None:
    unset = {"LISTEN_PID": "1", "LISTEN_FDS": "1"}
    assert listen_fds(dict(unset), 77, unset_env=unset, first_fd=listening.fileno()) == []
    assert unset == {}  # removed anyway, like sd_listen_fds(unset_environment=1)
    assert listen_fds({}, 77) == []


def test_listen_fds_names_must_match_the_count(listening: socket.socket,
                                               caplog: pytest.LogCaptureFixture) -> None:
    fd = os.dup(listening.fileno())
    passed = listen_fds({"LISTEN_PID": "7", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "a:b"}, 7,
                        first_fd=fd)
    assert [p.name for p in passed] == ["unknown"]
    assert "LISTEN_FDNAMES names 2 sockets" in caplog.text
    passed[0].sock.close()


def test_listen_fds_refuses_what_it_cannot_serve() -> None:
    env = {"LISTEN_PID": "7", "LISTEN_FDS": "1"}
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(1)
        with pytest.raises(ActivationError, match=r"AF_INET.*listening Unix stream socket"):
            listen_fds(env, 7, first_fd=os.dup(tcp.fileno()))
    a, b = socket.socketpair()  # a connection, as Accept=yes would pass
    with a, b, pytest.raises(ActivationError, match="not listening"):
        listen_fds(env, 7, first_fd=os.dup(a.fileno()))
    r, w = os.pipe()
    try:
        with pytest.raises(ActivationError, match="not a socket"):
            listen_fds(env, 7, first_fd=r)
    finally:
        os.close(r)
        os.close(w)
    with pytest.raises(ActivationError, match="LISTEN_FDS"):
        listen_fds({"LISTEN_PID": "7", "LISTEN_FDS": "x"}, 7)


# -- the real daemon ----------------------------------------------------------------------

def test_service_repeated_sigterm_while_stopping_never_kills_the_daemon(
        make_settings: Callable[..., Settings], short_tmp: Path, tmp_path: Path) -> None:
    """An impatient operator (or a supervisor) sends SIGTERM again and again while the
    daemon drains and closes its models and store: it still exits cleanly, status 0. The
    handlers used to be restored before the closers ran, and a late SIGTERM then killed
    the process with the default action (status -15)."""
    s = make_settings()
    with notify_receiver(str(short_tmp / "notify")) as rx:
        proc = spawn([sys.executable, *serve_args(s)],
                     serve_env(s, tmp_path, NOTIFY_SOCKET=str(short_tmp / "notify")))
        try:
            rx.wait_for(lambda t: "READY=1" in t.split("\n"))
            assert chat(s) == "tiny-chat"  # a model is loaded: closing has work to do
            sent = 0
            while proc.poll() is None and sent < 2000:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
                sent += 1
                time.sleep(0.002)
        finally:
            rc = stop(proc)
            assert proc.stderr is not None
            err = proc.stderr.read()
            proc.stderr.close()
        assert sent > 2 and rc == 0, err

def test_service_daemon_notifies_ready_status_watchdog_and_stopping(
        make_settings: Callable[..., Settings], short_tmp: Path, tmp_path: Path) -> None:
    s = make_settings()
    with notify_receiver(str(short_tmp / "notify")) as rx:
        proc = spawn([sys.executable, *serve_args(s)],
                     serve_env(s, tmp_path, NOTIFY_SOCKET=str(short_tmp / "notify"),
                               WATCHDOG_USEC="400000"))
        try:
            t_ready, pid, ready = rx.wait_for(lambda t: "READY=1" in t.split("\n"))
            assert pid == proc.pid  # what NotifyAccess=main accepts
            assert "STATUS=serving, 0 in flight; resident: none" in ready
            assert rx.texts()[0].startswith("STATUS=starting")
            assert chat(s) == "tiny-chat"
            rx.wait_for(lambda t: "last: tiny-chat for" in t and "resident: tiny-chat" in t)
            time.sleep(1.0)
            pings = [t for t, _, text in rx.messages
                     if "WATCHDOG=1" in text.split("\n") and t >= t_ready]
            assert len(pings) >= 4  # every 0.2 s: half of WATCHDOG_USEC
            # Regular pings (a loaded CI box may delay one; systemd itself is not involved).
            assert max(b - a for a, b in itertools.pairwise(pings)) < 1.0
            os.kill(proc.pid, signal.SIGTERM)
            rx.wait_for(lambda t: t.startswith("STOPPING=1\nSTATUS=draining"))
        finally:
            rc = stop(proc)
            assert proc.stderr is not None
            err = proc.stderr.read()
            proc.stderr.close()
        assert rc == 0, err
        assert "sd_notify" not in err  # no send failed


# Socket activation the way systemd does it: the listening socket is fd 3 of the process
# and LISTEN_PID is that process's pid. A child's pid is unknown before fork, so a small
# wrapper sets LISTEN_PID to its own pid, moves the socket to fd 3 and exec()s the daemon:
# exec keeps the pid (what systemd-socket-activate does too). preexec_fn could not set the
# variables: Popen computes the child's environment before fork.
ACTIVATE = ("import os, sys; fd = int(sys.argv[1]); os.dup2(fd, 3); fd != 3 and os.close(fd); "
            "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1', "
            "LISTEN_FDNAMES='calm-edge.socket'); "
            "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])")


def test_service_socket_activation_serves_the_passed_socket_across_restarts(
        make_settings: Callable[..., Settings], short_tmp: Path, tmp_path: Path) -> None:
    s = make_settings()
    path = short_tmp / "activated.sock"
    own = short_tmp / "own.sock"  # where the daemon would bind if it ignored the passed fd
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)

    def start() -> subprocess.Popen[str]:
        fd = listener.fileno()
        return spawn([sys.executable, "-c", ACTIVATE, str(fd), *serve_args(s, own)],
                     serve_env(s, tmp_path), pass_fds=(fd,))

    procs: list[subprocess.Popen[str]] = []
    try:
        procs.append(start())
        assert chat(s, path) == "tiny-chat"
        assert not own.exists()
        assert stop(procs[0]) == 0
        assert path.exists()  # the daemon never unlinks a socket it did not bind
        # While no daemon runs, a client's connection waits in the socket's backlog (as
        # with calm-edge.socket between restarts) and the next daemon answers it.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.settimeout(60)
            c.connect(str(path))
            c.sendall(b"GET /health HTTP/1.1\r\nHost: calm\r\nConnection: close\r\n\r\n")
            procs.append(start())
            reply = b""
            while chunk := c.recv(4096):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200")
        assert not own.exists()
        assert stop(procs[1]) == 0
    finally:
        errs = []
        for p in procs:
            stop(p)
            assert p.stderr is not None
            errs.append(p.stderr.read())
            p.stderr.close()
        listener.close()
    assert all("using the socket passed by systemd (fd 3, calm-edge.socket)" in e
               for e in errs), errs


def _mdwe_supported() -> bool:
    """Whether prctl(PR_SET_MDWE) exists (Linux >= 6.3): the kernel's version of
    MemoryDenyWriteExecute=. Probed in a child, since it cannot be undone."""
    code = "import ctypes, sys; sys.exit(ctypes.CDLL(None).prctl(66, 0, 0, 0, 0) < 0)"
    return subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN) then exec: no W+X mappings from here on,
# across exec, as under MemoryDenyWriteExecute=yes.
DENY_WX = ("import ctypes, os, sys; assert ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) == 0; "
           "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")


def _unit_syscall_allowlist() -> set[str]:
    """System calls calm-edge.service allows: its SystemCallFilter= lines, expanded with
    systemd-analyze's own group tables."""
    assert SYSTEMD_ANALYZE is not None
    out = subprocess.run([SYSTEMD_ANALYZE, "syscall-filter", "--no-pager"], check=True,
                         capture_output=True, text=True).stdout
    groups: dict[str, set[str]] = {}
    current = ""
    for line in out.splitlines():
        if line.startswith("@"):
            current = line.strip()
            groups[current] = set()
        elif line.strip() and not line.strip().startswith("#") and current:
            groups[current].add(line.strip())

    def expand(item: str) -> set[str]:
        if not item.startswith("@"):
            return {item}
        return set().union(*(expand(m) for m in groups[item]))

    allowed: set[str] = set()
    denied: set[str] = set()
    for line in (UNITS / "calm-edge.service").read_text().splitlines():
        if line.startswith("SystemCallFilter="):
            value = line.split("=", 1)[1]
            target = denied if value.startswith("~") else allowed
            for item in value.lstrip("~").split():
                target |= expand(item)
    return allowed - denied


@pytest.mark.skipif(not _mdwe_supported(), reason="kernel without PR_SET_MDWE (< 6.3)")
def test_service_daemon_serves_under_the_units_memory_and_syscall_filters(
        make_settings: Callable[..., Settings], short_tmp: Path, tmp_path: Path) -> None:
    """MemoryDenyWriteExecute=yes and SystemCallFilter= of calm-edge.service hold for the
    daemon loading the classifier and llama.cpp and answering a chat completion. The W^X
    part always runs; the system call check needs strace and systemd-analyze."""
    s = make_settings()
    trace = tmp_path / "strace.out"
    cmd = [sys.executable, "-c", DENY_WX, *serve_args(s)]
    strace = shutil.which("strace")
    traced = strace is not None and SYSTEMD_ANALYZE is not None
    if traced:
        assert strace is not None
        cmd = [strace, "-f", "-qq", "-o", str(trace), *cmd]
    with notify_receiver(str(short_tmp / "notify")) as rx:
        proc = spawn(cmd, serve_env(s, tmp_path, NOTIFY_SOCKET=str(short_tmp / "notify")))
        try:
            _, pid, _ = rx.wait_for(lambda t: "READY=1" in t.split("\n"), timeout_s=60)
            assert chat(s) == "tiny-chat"
            rc = stop(proc, pid=pid, timeout_s=60)  # the daemon, not strace
        finally:
            stop(proc)
            assert proc.stderr is not None
            err = proc.stderr.read()
            proc.stderr.close()
    assert rc == 0, err
    if not traced:
        pytest.skip("W^X checked; strace or systemd-analyze missing for the system call check")
    used = {m.group(1) for line in trace.read_text().splitlines()
            if (m := re.match(r"\d+ +([a-z0-9_]+)\(", line))}
    # SQLite chowns its journal to the database's owner only when running as root; the
    # service runs as calm-edge, the tests (in CI) as root.
    root_only = {"fchown"} if os.geteuid() == 0 else set()
    assert used, "strace recorded nothing"
    assert sorted(used - _unit_syscall_allowlist() - root_only) == []


# -- unit files ---------------------------------------------------------------------------

def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run([SYSTEMD_ANALYZE, *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "SYSTEMD_LOG_COLOR": "0"})


def _exposure(unit: Path) -> float:
    r = _analyze("security", "--offline=yes", "--no-pager", str(unit))
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert m, r.stdout + r.stderr
    return float(m.group(1))


@needs_systemd_analyze
def test_units_pass_systemd_analyze_verify_and_security(tmp_path: Path) -> None:
    units = tmp_path / "units"
    shutil.copytree(UNITS, units)
    stub = tmp_path / "calm-edge"  # verify checks that ExecStart= is an executable
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    service = units / "calm-edge.service"
    service.write_text(service.read_text().replace("/opt/calm-edge/venv/bin/calm-edge",
                                                   str(stub)))
    r = _analyze("verify", "--man=no", str(units / "calm-edge.socket"), str(service))
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert _exposure(service) <= 1.0


@needs_systemd_analyze
@needs_shadow_tools
def test_units_installed_for_a_jetson_verify_with_their_drop_ins(fake_root: Path) -> None:
    install(fake_root, "--venv", VENV)
    units = fake_root / "etc/systemd/system"
    assert (units / "calm-edge.service.d/20-jetson.conf").exists()
    r = _analyze("verify", "--man=no", str(units / "calm-edge.socket"),
                 str(units / "calm-edge.service"))
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    exposure = _exposure(units / "calm-edge.service")
    assert 0 < exposure <= 2.0


# -- install-service.sh -------------------------------------------------------------------



@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    """A filesystem tree for --root: a Jetson's device-tree model and account files."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_text(JETSON)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/group").write_text("root:x:0:\nvideo:x:44:\n")
    for f in ("shadow", "gshadow"):
        (root / "etc" / f).write_text("")
        (root / "etc" / f).chmod(0o600)
    return root


def install(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["bash", str(SCRIPTS / "install-service.sh"), "--root", str(root),
                        "--no-systemctl", *args], capture_output=True, text=True, timeout=120)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.endswith("-")}  # shadow tools' backups


@needs_shadow_tools
def test_install_service_into_a_fake_root_is_idempotent(fake_root: Path) -> None:
    r = install(fake_root, "--venv", VENV)
    assert "profile: jetson-orin-nano-8gb (jetson)" in r.stdout
    etc = fake_root / "etc"
    units = etc / "systemd/system"
    assert (units / "calm-edge.service").read_text() == (UNITS / "calm-edge.service").read_text()
    assert (units / "calm-edge.socket").read_text() == (UNITS / "calm-edge.socket").read_text()
    dropins = units / "calm-edge.service.d"
    assert sorted(p.name for p in dropins.iterdir()) == [
        "00-venv.conf", "10-memory.conf", "20-jetson.conf", "21-groups.conf"]
    # ram_budget 4608 MiB + a quarter for the runtime
    assert "MemoryMax=5760M" in (dropins / "10-memory.conf").read_text()
    assert f"ExecStart={VENV}/bin/calm-edge serve" in (dropins / "00-venv.conf").read_text()
    assert "SupplementaryGroups=video\n" in (dropins / "21-groups.conf").read_text()  # no jtop
    assert "no jtop group" in r.stdout
    env = (etc / "calm-edge/calm-edge.env").read_text()
    assert "CALM_EDGE_PROFILE=jetson-orin-nano-8gb\n" in env
    assert re.search(r"^calm-edge:x:\d+:\d+:calm-edge daemon:/var/lib/calm-edge:/usr/sbin/nologin$",
                     (etc / "passwd").read_text(), re.M)
    assert re.search(r"^calm-edge:x:\d+:", (etc / "group").read_text(), re.M)
    before = snapshot(fake_root)
    r = install(fake_root, "--venv", VENV)
    assert "kept" in r.stdout
    assert snapshot(fake_root) == before


@needs_shadow_tools
@pytest.mark.parametrize(("files", "profile"), [
    ({"proc/device-tree/model": "Raspberry Pi 5 Model B Rev 1.0\0"}, "rpi5-8gb"),
    ({"proc/device-tree/model": "NVIDIA Jetson AGX Orin Developer Kit\0"}, "jetson-agx-orin-64gb"),
    ({"etc/nv_tegra_release": "# R36 (release), REVISION: 4.3\n"}, "jetson-orin-nano-8gb"),
    ({}, "x86-dev"),
])
def test_install_service_picks_the_profile_from_the_board(
        fake_root: Path, files: dict[str, str], profile: str) -> None:
    (fake_root / "proc/device-tree/model").unlink()
    for rel, text in files.items():
        (fake_root / rel).write_text(text)
    install(fake_root, "--venv", VENV)
    env = (fake_root / "etc/calm-edge/calm-edge.env").read_text()
    assert f"CALM_EDGE_PROFILE={profile}\n" in env
    jetson = (fake_root / "etc/systemd/system/calm-edge.service.d/20-jetson.conf").exists()
    assert jetson == profile.startswith("jetson")


@needs_shadow_tools
def test_install_service_keeps_operator_settings_and_follows_them(fake_root: Path) -> None:
    install(fake_root, "--venv", VENV)
    env_file = fake_root / "etc/calm-edge/calm-edge.env"
    env_file.write_text(env_file.read_text() + "CALM_EDGE_RAM_BUDGET=2G\n")
    install(fake_root, "--venv", VENV, "--profile", "x86-dev")
    text = env_file.read_text()
    assert "CALM_EDGE_RAM_BUDGET=2G\n" in text and "CALM_EDGE_PROFILE=x86-dev\n" in text
    assert text.count("CALM_EDGE_PROFILE=") == 1
    dropins = fake_root / "etc/systemd/system/calm-edge.service.d"
    assert "MemoryMax=2560M" in (dropins / "10-memory.conf").read_text()  # 2 GiB + 512 MiB
    assert not (dropins / "20-jetson.conf").exists()
    r = install(fake_root, "--venv", VENV, "--profile", "no-such-board", check=False)
    assert r.returncode != 0 and "no such profile" in r.stderr


@needs_shadow_tools
def test_install_service_uninstall_keeps_state_unless_purged(fake_root: Path) -> None:
    install(fake_root, "--venv", VENV)
    state = fake_root / "var/lib/calm-edge"
    state.mkdir(parents=True)
    (state / "knowledge.db").write_bytes(b"learned")
    r = install(fake_root, "--uninstall")
    assert "kept" in r.stdout
    assert not (fake_root / "etc/systemd/system/calm-edge.service").exists()
    assert not (fake_root / "etc/systemd/system/calm-edge.socket").exists()
    assert not (fake_root / "etc/systemd/system/calm-edge.service.d").exists()
    assert "calm-edge:" not in (fake_root / "etc/passwd").read_text()
    assert "calm-edge:" not in (fake_root / "etc/group").read_text()
    assert (state / "knowledge.db").exists()
    assert (fake_root / "etc/calm-edge/calm-edge.env").exists()
    install(fake_root, "--uninstall")  # idempotent
    install(fake_root, "--uninstall", "--purge")
    assert not state.exists() and not (fake_root / "etc/calm-edge").exists()


def fake_runuser(tmp_path: Path) -> tuple[Path, Path]:
    """A runuser stand-in that logs its arguments, runs `test` checks and nothing else."""
    log = tmp_path / "runuser.log"
    tool = tmp_path / "runuser"
    tool.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\n'
                    '[ "$1" = -u ] && [ "$3" = -- ] || exit 2\n'
                    'shift 3\n[ "$1" = test ] && exec "$@"\nexit 0\n')
    tool.chmod(0o755)
    return tool, log


@needs_shadow_tools
def test_install_service_pulls_as_the_service_user(fake_root: Path, tmp_path: Path) -> None:
    tool, log = fake_runuser(tmp_path)
    house = tmp_path / "house"
    house.mkdir()
    r = subprocess.run(["bash", str(SCRIPTS / "install-service.sh"), "--root", str(fake_root),
                        "--no-systemctl", "--venv", VENV, "--pull", "--wheelhouse", str(house)],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "CALM_INSTALL_RUNUSER": str(tool)})
    assert r.returncode == 0, r.stdout + r.stderr
    models = fake_root / "var/lib/calm-edge/models"
    venv = Path(VENV).resolve()
    assert log.read_text().splitlines() == [
        f"-u calm-edge -- test -r {house} -a -x {house}",
        f"-u calm-edge -- env PIP_NO_CACHE_DIR=1 {venv}/bin/calm-edge models pull --profile "
        f"jetson-orin-nano-8gb --models-dir {models} --wheelhouse {house}"]
    if os.geteuid() == 0:
        ids = next(line.split(":")[2:4] for line in (fake_root / "etc/passwd").read_text()
                   .splitlines() if line.startswith("calm-edge:"))
        for d in (models, models.parent):
            assert [str(d.stat().st_uid), str(d.stat().st_gid)] == ids


@needs_shadow_tools
def test_install_service_calibrates_the_model_files_there_quickly_by_default(
        fake_root: Path, tiny_fleet: tuple[Path, Path]) -> None:
    """Without model files there is nothing to calibrate; with them, a quick calibration
    into the service's state directory before the service starts; --no-calibrate skips."""
    r = install(fake_root, "--venv", VENV, "--profile", "x86-dev")
    assert "no model files in" in r.stdout and "calibrating" not in r.stdout
    fleet, models = tiny_fleet
    dest = fake_root / "var/lib/calm-edge/models"
    dest.mkdir(parents=True, exist_ok=True)
    for f in models.glob("*.gguf"):
        shutil.copy(f, dest / f.name)
    r = subprocess.run(["bash", str(SCRIPTS / "install-service.sh"), "--root", str(fake_root),
                        "--no-systemctl", "--venv", VENV, "--profile", "x86-dev"],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "CALM_EDGE_FLEET": str(fleet)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "calibrating the models on this device (quick" in r.stdout
    db = fake_root / "var/lib/calm-edge/knowledge.db"
    with contextlib.closing(sqlite3.connect(db)) as con:
        done = {row[0]: json.loads(row[1]) for row in con.execute(
            "SELECT model, result FROM calibration WHERE item = 'done'")}
    assert set(done) == {"tiny-chat", "tiny-base"}
    assert all(d["quick"] for d in done.values())
    r = install(fake_root, "--venv", VENV, "--profile", "x86-dev", "--no-calibrate")
    assert "calibrating" not in r.stdout and "not calibrated" not in r.stdout


def test_install_service_refuses_a_venv_without_calm_edge(fake_root: Path) -> None:
    r = install(fake_root, "--venv", str(fake_root / "nothing"), check=False)
    assert r.returncode == 1 and "no calm-edge installed" in r.stderr


# -- the offline bundle -------------------------------------------------------------------

def make_wheel(house: Path, dist: str, version: str, files: dict[str, bytes],
               requires: str = "", tag: str = "py3-none-any") -> Path:
    pkg = dist.replace("-", "_")
    path = house / f"{pkg}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        info = f"{pkg}-{version}.dist-info"
        zf.writestr(f"{info}/METADATA",
                    f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
                    + "".join(f"Requires-Dist: {r}\n" for r in requires.split(",") if r))
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\n"
                    f"Root-Is-Purelib: true\nTag: {tag}\n")
        zf.writestr(f"{info}/RECORD", "")
    return path


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """A bundle built offline: a stand-in calm-edge wheel (the real one needs hatchling
    from PyPI), no dependencies, and one fleet model from a local index of test wheels."""
    house = tmp_path / "house"
    house.mkdir()
    part1, part2 = b"GGUF" + bytes(range(256)) * 8, bytes(range(255, -1, -1)) * 8
    make_wheel(house, "fake-model-part1", "1.0", {"fake_model_part1/data/part01.bin": part1})
    make_wheel(house, "fake-model-part2", "1.0", {"fake_model_part2/data/part02.bin": part2})
    make_wheel(house, "other-model", "2.0", {"other_model/x.bin": b"x"})
    project = make_wheel(tmp_path, "calm-edge", "0.1.0",
                         {"calm_edge_stub/__init__.py": b"", "calm_edge_stub/x.py": b"X = 1\n"})
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(f"""version = 1
default_model = "fake"
[[model]]
name = "fake"
file = "fake.gguf"
sha256 = "{hashlib.sha256(part1 + part2).hexdigest()}"
size_bytes = {len(part1 + part2)}
n_ctx = 512
format = "chat"
quality = {{ code = 0.5 }}
[model.source]
packages = ["fake-model-part1==1.0", "fake-model-part2==1.0"]
members = ["fake_model_part1/data/part01.bin", "fake_model_part2/data/part02.bin"]

[[model]]
name = "other"
file = "other.gguf"
sha256 = "{'0' * 64}"
size_bytes = 1
n_ctx = 512
format = "chat"
quality = {{ code = 0.5 }}
[model.source]
packages = ["other-model==2.0"]
members = ["other_model/x.bin"]
""")
    out = tmp_path / "bundle"
    r = subprocess.run(
        ["bash", str(SCRIPTS / "build-bundle.sh"), "--out", str(out), "--python", sys.executable,
         "--project-wheel", str(project), "--no-deps", "--extras", "", "--fleet", str(fleet),
         "--models", "fake", "--no-index", "--find-links", str(house)],
        capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def offline(bundle: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(bundle / "scripts/install-offline.sh"), str(bundle), *args],
                          capture_output=True, text=True, timeout=300)


def test_bundle_manifest_lists_and_verifies_every_file(bundle: Path) -> None:
    lines = (bundle / "SHA256SUMS").read_text().splitlines()
    listed = {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in lines}
    on_disk = {str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()}
    assert set(listed) == on_disk - {"SHA256SUMS"}
    assert {"wheels/calm_edge-0.1.0-py3-none-any.whl",
            "wheels/fake_model_part1-1.0-py3-none-any.whl",
            "wheels/fake_model_part2-1.0-py3-none-any.whl", "fleet.toml", "BUNDLE-INFO",
            "scripts/install-offline.sh", "scripts/install-service.sh",
            "scripts/systemd/calm-edge.service", "scripts/systemd/calm-edge.socket",
            "scripts/systemd/jetson.conf"} <= set(listed)
    assert not any("other_model" in p for p in listed)  # --models fake
    for rel, digest in listed.items():
        assert hashlib.sha256((bundle / rel).read_bytes()).hexdigest() == digest
    info = (bundle / "BUNDLE-INFO").read_text()
    assert "models=fake\n" in info and "llama_cpp_python_wheel=no\n" in info
    r = offline(bundle, "--verify-only")
    assert r.returncode == 0 and f"{len(lines)} files match" in r.stdout, r.stderr


def test_bundle_installs_offline_into_a_venv_and_assembles_models(bundle: Path,
                                                                  tmp_path: Path) -> None:
    venv, models = tmp_path / "venv", tmp_path / "models"
    r = offline(bundle, "--venv", str(venv), "--python", sys.executable, "--no-models")
    assert r.returncode == 0, r.stdout + r.stderr
    assert list((venv / "lib").glob("python3*/site-packages/calm_edge_stub/x.py"))
    # The models step, with the real calm-edge (the venv above holds the stand-in).
    pull = subprocess.run(
        [sys.executable, "-m", "calm_edge.cli", "models", "pull", "-q", "--wheelhouse",
         str(bundle / "wheels"), "--fleet", str(bundle / "fleet.toml"), "--models-dir",
         str(models), "fake"], capture_output=True, text=True, timeout=120)
    assert pull.returncode == 0, pull.stderr
    assert (models / "fake.gguf").read_bytes()[:4] == b"GGUF"


@pytest.mark.skipif(os.geteuid() != 0, reason="the runuser step is for root")
def test_bundle_install_pulls_models_as_the_service_user(bundle: Path, tmp_path: Path) -> None:
    tool, log = fake_runuser(tmp_path)
    venv, models = tmp_path / "venv", tmp_path / "state" / "models"
    r = subprocess.run(["bash", str(bundle / "scripts/install-offline.sh"), str(bundle),
                        "--venv", str(venv), "--python", sys.executable, "--models-dir",
                        str(models), "--user", "nobody"],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "CALM_INSTALL_RUNUSER": str(tool)})
    assert r.returncode == 0, r.stdout + r.stderr
    wheels = bundle / "wheels"
    assert log.read_text().splitlines() == [
        f"-u nobody -- test -r {wheels} -a -x {wheels}",
        f"-u nobody -- env PIP_NO_CACHE_DIR=1 {venv}/bin/calm-edge models pull --wheelhouse "
        f"{wheels} --fleet {bundle}/fleet.toml --models-dir {models} fake"]
    nobody = pwd.getpwnam("nobody")
    assert (models.stat().st_uid, models.stat().st_gid) == (nobody.pw_uid, nobody.pw_gid)


def test_bundle_install_refuses_a_tampered_file(bundle: Path, tmp_path: Path) -> None:
    wheel = bundle / "wheels/fake_model_part2-1.0-py3-none-any.whl"
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0x01
    wheel.write_bytes(bytes(data))
    r = offline(bundle, "--venv", str(tmp_path / "venv"), "--python", sys.executable)
    assert r.returncode != 0
    assert "checksum mismatch" in r.stderr and "refusing to install" in r.stderr
    assert "wheels/fake_model_part2-1.0-py3-none-any.whl: FAILED" in r.stderr
    assert not (tmp_path / "venv").exists()


def test_bundle_install_refuses_missing_and_unlisted_files(bundle: Path) -> None:
    extra = bundle / "wheels/evil-1.0-py3-none-any.whl"
    extra.write_bytes(b"not listed")
    r = offline(bundle, "--verify-only")
    assert r.returncode != 0 and "not in the manifest" in r.stderr and extra.name in r.stderr
    extra.unlink()
    (bundle / "fleet.toml").unlink()
    r = offline(bundle, "--verify-only")
    assert r.returncode != 0 and "missing: fleet.toml" in r.stderr
    (bundle / "SHA256SUMS").write_text(f"{'0' * 64}  ../outside\n")
    r = offline(bundle, "--verify-only")
    assert r.returncode != 0 and "outside the bundle" in r.stderr


def test_bundle_carries_added_models_and_installs_them_as_the_service_user(
        tmp_path: Path, tiny_gguf: Path) -> None:
    """build-bundle.sh --added: the added GGUF files and their local manifest travel in
    added/ (listed in SHA256SUMS); install-offline.sh imports them with `models import`
    (as the service user when root); the import checks each file's SHA-256."""
    from calm_edge.config import load_settings
    from calm_edge.fleet import load_fleet, read_local_models
    from calm_edge.models_add import AddOptions, add_model

    here = tmp_path / "here-models"
    s = load_settings("x86-dev", env={"HOME": str(tmp_path)},
                      cli={"paths": {"models_dir": str(here)}})
    add_model(tiny_gguf, here, load_fleet(s.fleet_path), s.local_fleet_path,
              [("x86-dev", s.profile)], AddOptions(name="mine", domains=("code",)))
    project = make_wheel(tmp_path, "calm-edge", "0.1.0", {"calm_edge_stub/__init__.py": b""})
    out = tmp_path / "bundle"
    r = subprocess.run(
        ["bash", str(SCRIPTS / "build-bundle.sh"), "--out", str(out), "--python", sys.executable,
         "--project-wheel", str(project), "--no-deps", "--extras", "", "--no-models",
         "--added", "mine", "--added-from", str(here), "--no-index"],
        capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    listed = {line.split("  ", 1)[1] for line in (out / "SHA256SUMS").read_text().splitlines()}
    assert {"added/fleet.local.toml", "added/tiny.gguf"} <= listed
    assert "added_models=mine\n" in (out / "BUNDLE-INFO").read_text()
    assert (out / "added/tiny.gguf").read_bytes() == tiny_gguf.read_bytes()

    venv, device = tmp_path / "venv", tmp_path / "state" / "models"
    if os.geteuid() == 0:
        tool, log = fake_runuser(tmp_path)
        r = subprocess.run(["bash", str(out / "scripts/install-offline.sh"), str(out),
                            "--venv", str(venv), "--python", sys.executable, "--models-dir",
                            str(device), "--user", "nobody"],
                           capture_output=True, text=True, timeout=300,
                           env={**os.environ, "CALM_INSTALL_RUNUSER": str(tool)})
        assert r.returncode == 0, r.stdout + r.stderr
        assert log.read_text().splitlines() == [
            f"-u nobody -- test -r {out}/added -a -x {out}/added",
            f"-u nobody -- env PIP_NO_CACHE_DIR=1 {venv}/bin/calm-edge models import "
            f"{out}/added --fleet {out}/fleet.toml --models-dir {device}"]
    # The import step, with the real calm-edge (the venv holds the stand-in).
    imp = subprocess.run(
        [sys.executable, "-m", "calm_edge.cli", "models", "import", str(out / "added"),
         "--profile", "x86-dev", "--models-dir", str(tmp_path / "dev2")],
        capture_output=True, text=True, timeout=120)
    assert imp.returncode == 0, imp.stderr
    (spec,) = read_local_models(tmp_path / "dev2" / "fleet.local.toml")
    assert spec.name == "mine" and spec.added is not None and spec.added.domains == ("code",)
    assert (tmp_path / "dev2" / "tiny.gguf").read_bytes() == tiny_gguf.read_bytes()


def test_bundle_for_another_platform_takes_the_device_built_llama_wheel(tmp_path: Path) -> None:
    """Cross-target resolution, offline: a manylinux_2_31 target accepts older manylinux
    wheels and the linux_aarch64 wheel `pip wheel` makes on the device; without that wheel
    the build fails and says what to do."""
    house = tmp_path / "house"
    house.mkdir()
    make_wheel(house, "numpy", "2.2.6", {"numpy/__init__.py": b""},
               tag="cp310-cp310-manylinux_2_17_aarch64.manylinux2014_aarch64")
    make_wheel(house, "numpy", "2.2.6", {"numpy/__init__.py": b""},
               tag="cp311-cp311-manylinux_2_17_x86_64")  # wrong target: never picked
    llama = make_wheel(tmp_path, "llama-cpp-python", "0.3.36", {"llama_cpp/__init__.py": b""},
                       requires="numpy>=1.20", tag="cp310-cp310-linux_aarch64")
    project = make_wheel(tmp_path, "calm-edge", "0.1.0", {"calm_edge_stub/__init__.py": b""},
                         requires="llama-cpp-python>=0.3.7,numpy>=1.23")

    def build(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(SCRIPTS / "build-bundle.sh"), "--out", str(tmp_path / "b"), "--force",
             "--python", sys.executable, "--project-wheel", str(project), "--extras", "",
             "--no-models", "--no-index", "--find-links", str(house),
             "--platform", "manylinux_2_31_aarch64", "--python-version", "3.10", *extra],
            capture_output=True, text=True, timeout=300)

    r = build()
    assert r.returncode != 0
    assert "--extra-wheel" in r.stderr and "llama-cpp-python" in r.stderr
    r = build("--extra-wheel", str(llama))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "b/wheels").iterdir()) == [
        "calm_edge-0.1.0-py3-none-any.whl",
        "llama_cpp_python-0.3.36-cp310-cp310-linux_aarch64.whl",
        "numpy-2.2.6-cp310-cp310-manylinux_2_17_aarch64.manylinux2014_aarch64.whl"]
    info = (tmp_path / "b/BUNDLE-INFO").read_text()
    assert "llama_cpp_python_wheel=yes\n" in info and "python_version=3.10\n" in info
