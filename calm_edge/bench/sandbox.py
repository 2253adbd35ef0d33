"""Run untrusted Python (a model's code answer plus its unit tests) in a throwaway process.

What the sandbox does, in layers:

1. **A fresh temporary directory** is the working directory; the program, its stdout and its
   stderr live there, and the directory is deleted afterwards.
2. **A separate interpreter** (`python -I -S -B`): isolated mode (no environment variables,
   no user site), no site-packages (stdlib only), no bytecode writes; a minimal environment
   (`HOME` and `TMPDIR` point into the temp dir); stdin is /dev/null.
3. **Resource limits**, set by the prelude before any candidate code runs: address space
   (`RLIMIT_AS`, 1 GiB), CPU time (`RLIMIT_CPU`, the timeout + 1 s), file size
   (`RLIMIT_FSIZE`, 16 MiB: also caps what stdout/stderr can write), open files
   (`RLIMIT_NOFILE`), no core dumps, and `RLIMIT_NPROC` = 0. The limits are set in the
   child's prelude rather than through `subprocess`'s `preexec_fn`, which Python documents
   as unsafe when the parent has threads (the bench runner samples RSS in one; the tests
   run a daemon in others). Note that Linux does not enforce `RLIMIT_NPROC` for root, which
   is why layer 4 also refuses to fork.
4. **An audit hook** (`sys.addaudithook`, PEP 578), installed before the candidate's code is
   compiled. On the first forbidden event it writes `sandbox violation: ...` to stderr and
   ends the process at once (`os._exit(86)`), so a program cannot catch the error and go on
   to pass its tests. Forbidden: every `socket.*` event (create, connect, bind,
   getaddrinfo, ...); `open`/`os.open` for writing outside the temp dir, and for reading
   outside the temp dir and the standard library; deleting, renaming, creating
   directories, chmod/chown/utime/truncate outside the temp dir; listing or `chdir` outside
   it; links and symlinks anywhere; fork/exec/spawn/system/`subprocess`/kill; changing
   rlimits; `sys.settrace`/`setprofile`, `gc.get_*`, building code objects or unmarshalling
   them (except the import system reading the stdlib's cached bytecode), and re-binding
   attributes of the hook itself; importing `ctypes`/`cffi` (native calls bypass audit
   hooks), `_posixsubprocess`, `multiprocessing`, subinterpreters, CPython's `_test*`
   modules, `sqlite3`/`dbm` (their C code opens files unaudited), `readline`, `syslog`,
   `_tkinter`, `_curses`.
5. **A new, empty network namespace**: where `unshare --net` works (as root, or with
   `--map-root-user` where unprivileged user namespaces are allowed) the interpreter runs in
   a new network namespace whose only interface is a down loopback, so even a bypass of
   layer 4 cannot reach a network. `network_isolation()` says which form is in use, or
   None when only the audit hook guards the network.
6. **A wall-clock timeout**: the child leads its own process group (session), and on timeout
   the whole group gets SIGKILL.

What it does not guarantee: the audit hook runs inside the untrusted process, so it is a
tripwire for accidental or naive misbehaviour by a model's code, not a security boundary
against a determined attacker (a bug in the interpreter or an unaudited native call could
get around it; `os.mkfifo`/`os.mknod` and `os.stat` are not audited). There is no mount
namespace or seccomp filter: filesystem confinement is the hook's alone. Use a container
or VM for hostile code.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SANDBOX_EXIT = 86           # exit status of a process the audit hook stopped
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MEMORY_BYTES = 1 << 30
_OUTPUT_LIMIT_BYTES = 16 << 20  # RLIMIT_FSIZE: stdout/stderr go to files in the temp dir
_TAIL_BYTES = 4000

# The child's first code. Everything it needs is bound to locals of `_install`, so the
# candidate (run in a separate globals dict) holds no reference to the hook or its state.
_PRELUDE = r'''
import os, sys, resource

def _install(cfg):
    import os.path
    for name, value in cfg["limits"]:
        try:
            resource.setrlimit(getattr(resource, name), (value, value))
        except (ValueError, OSError):
            pass
    realpath, join, fsdecode = os.path.realpath, os.path.join, os.fsdecode
    write, exit_now, sep, getframe = os.write, os._exit, os.sep, sys._getframe
    importer = "<frozen importlib._bootstrap_external>"
    tmp = realpath(os.getcwd())
    read_roots = (tmp,) + tuple(realpath(p) for p in cfg["read_roots"])
    read_files = frozenset(cfg["read_files"])
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    blocked_prefixes = ("socket.", "subprocess.", "os.fork", "os.exec", "os.spawn",
                        "os.posix_spawn", "os.system", "os.kill", "os.killpg", "os.symlink",
                        "os.link", "ctypes.", "gc.get_", "resource.setrlimit",
                        "resource.prlimit", "sys.settrace", "sys.setprofile", "code.__new__",
                        "sqlite3.", "pty.", "webbrowser.", "os.startfile",
                        "_winapi.", "winreg.", "os.add_dll_directory")
    write_events = frozenset(("os.remove", "os.rmdir", "os.mkdir", "os.rename", "os.truncate",
                              "os.utime", "os.chmod", "os.chown", "os.chflags", "os.lchflags",
                              "os.setxattr", "os.removexattr", "shutil.rmtree",
                              "shutil.copyfile", "shutil.copymode", "shutil.copystat",
                              "shutil.copytree", "shutil.move", "shutil.chown", "os.mkfifo",
                              "os.mknod", "tempfile.mkstemp", "tempfile.mkdtemp"))
    read_events = frozenset(("os.listdir", "os.scandir", "os.chdir", "os.getxattr",
                             "os.listxattr", "glob.glob", "glob.glob/2", "os.fwalk"))
    blocked_modules = frozenset(cfg["blocked_modules"])
    blocked_module_prefixes = ("_test", "_xxsub", "_xxinterp", "_interp")

    def deny(what):
        try:
            write(2, ("sandbox violation: " + what + "\n").encode("utf-8", "replace"))
        finally:
            exit_now(86)

    def within(path, roots):
        if isinstance(path, int):  # an already-open descriptor
            return True
        try:
            full = realpath(join(tmp, fsdecode(path)))
        except (TypeError, ValueError):
            return False
        return any(full == r or full.startswith(r + sep) for r in roots)

    def readable(path):
        if isinstance(path, (str, bytes)) and realpath(join(tmp, fsdecode(path))) in read_files:
            return True
        return within(path, read_roots)

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                mode is None and isinstance(flags, int) and flags & write_flags)
            if writing and not within(path, (tmp,)):
                deny("open %r for writing" % (path,))
            if not writing and not readable(path):
                deny("open %r for reading" % (path,))
        elif event == "import":
            top = args[0].split(".")[0]
            if top in blocked_modules or top.startswith(blocked_module_prefixes):
                deny("import " + args[0])
        elif event.startswith(blocked_prefixes):
            deny(event)
        elif event in ("marshal.loads", "marshal.load"):
            if getframe(1).f_code.co_filename != importer:  # only the import system's .pyc
                deny(event)
        elif event in write_events:
            for a in args:
                if isinstance(a, (str, bytes, os.PathLike)) and not within(a, (tmp,)):
                    deny("%s %r" % (event, a))
        elif event in read_events:
            for a in args[:1]:
                if a is not None and isinstance(a, (str, bytes, os.PathLike)) \
                        and not within(a, (tmp,) if event == "os.chdir" else read_roots):
                    deny("%s %r" % (event, a))
        elif event in ("object.__setattr__", "object.__delattr__") and args[0] is hook:
            deny("modify the audit hook")

    sys.addaudithook(hook)

def _main():
    import json
    with open("sandbox.json") as f:
        cfg = json.load(f)
    with open(cfg["program"], encoding="utf-8") as f:
        source = f.read()
    _install(cfg)
    code = compile(source, cfg["program"], "exec")
    exec(code, {"__name__": "candidate", "__builtins__": __builtins__})

_main()
del _main, _install
'''

_BLOCKED_MODULES = (
    "ctypes", "_ctypes", "cffi", "_cffi_backend", "_posixsubprocess", "subprocess",
    "multiprocessing", "_multiprocessing", "_posixshmem", "sqlite3", "_sqlite3",
    "dbm", "_dbm", "_gdbm", "readline", "syslog", "_tkinter", "tkinter", "_curses",
    "curses", "pty",
)


@dataclass(frozen=True)
class SandboxResult:
    returncode: int | None      # None when it was killed on timeout
    timed_out: bool
    violation: str | None       # the audit hook's message, if it stopped the program
    stdout_tail: str
    stderr_tail: str
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and self.violation is None


@functools.lru_cache(maxsize=1)
def network_isolation() -> tuple[str, ...] | None:
    """The `unshare` prefix that puts a child in a new, empty network namespace here, or
    None when no form works (then only the audit hook guards the network). Probed once."""
    exe = shutil.which("unshare")
    if exe is None:
        return None
    for prefix in ((exe, "--net"), (exe, "--net", "--map-root-user")):
        try:
            r = subprocess.run([*prefix, "--", "true"], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            continue
        if r.returncode == 0:
            return prefix
    return None


def _stdlib_dirs() -> list[str]:
    import sysconfig

    dirs = {str(Path(os.__file__).parent)}
    for key in ("stdlib", "platstdlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            dirs.add(path)
    return sorted(dirs)


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - _TAIL_BYTES))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def run_python(source: str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
               memory_bytes: int = DEFAULT_MEMORY_BYTES, python: str | None = None,
               isolate_network: bool = True) -> SandboxResult:
    """Run `source` as a program in the sandbox (module docstring); blocking.

    Returns when the program exits or after `timeout_s` (then its process group is killed).
    Never raises for anything the program does; raises OSError only if the interpreter
    cannot be started at all.
    """
    tmp = Path(tempfile.mkdtemp(prefix="calm-bench-sbx-"))
    try:
        (tmp / "candidate.py").write_text(source, encoding="utf-8")
        (tmp / "_prelude.py").write_text(_PRELUDE, encoding="utf-8")
        cfg = {
            "program": "candidate.py",
            "limits": [["RLIMIT_AS", memory_bytes], ["RLIMIT_CPU", int(timeout_s) + 1],
                       ["RLIMIT_FSIZE", _OUTPUT_LIMIT_BYTES], ["RLIMIT_NOFILE", 64],
                       ["RLIMIT_CORE", 0], ["RLIMIT_NPROC", 0]],
            "read_roots": _stdlib_dirs(),
            "read_files": ["/dev/null", "/dev/urandom", "/dev/zero"],
            "blocked_modules": list(_BLOCKED_MODULES),
        }
        (tmp / "sandbox.json").write_text(json.dumps(cfg), encoding="utf-8")
        cmd = [python or sys.executable, "-I", "-S", "-B", "_prelude.py"]
        prefix = network_isolation() if isolate_network else None
        if prefix is not None:
            cmd = [*prefix, "--", *cmd]
        env = {"PATH": os.defpath, "LANG": "C.UTF-8", "HOME": str(tmp), "TMPDIR": str(tmp),
               "PYTHONHASHSEED": "0"}
        out_path, err_path = tmp / "stdout.txt", tmp / "stderr.txt"
        t0 = time.monotonic()
        timed_out = False
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=err, start_new_session=True)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc)
        duration = time.monotonic() - t0
        stderr = _tail(err_path)
        violation = None
        if proc.returncode == SANDBOX_EXIT:
            lines = [ln for ln in stderr.splitlines() if ln.startswith("sandbox violation:")]
            violation = lines[-1][len("sandbox violation:"):].strip() if lines else "unknown"
        return SandboxResult(None if timed_out else proc.returncode, timed_out, violation,
                             _tail(out_path), stderr, duration)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group of a child that has not been reaped yet (its id cannot
    have been reused while it is alive or a zombie)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
