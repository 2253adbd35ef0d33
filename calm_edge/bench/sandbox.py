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
7. **Fewer privileges**: where `setpriv` works (`privilege_drop()`), a child of root runs
   as nobody (uid and gid 65534, no groups, no capabilities) in a temp dir it owns, so the
   files of root and of the bench's user are out of its reach even past layer 4; any
   child runs with no_new_privs.

The hook itself is written so that the candidate cannot run code inside it: it reads only
names bound when it was installed (not builtins or module attributes, which the candidate
may rebind), looks only at arguments whose type is exactly str, bytes or int (an
`os.PathLike`, whose `__fspath__` would run inside the hook and could reach its frame, is
refused unseen), and resolves links with C functions.

What it does not guarantee: the audit hook runs inside the untrusted process, so it is a
tripwire for accidental or naive misbehaviour by a model's code, not a security boundary
against a determined attacker (a bug in the interpreter or an unaudited native call could
get around it; `os.mkfifo`/`os.mknod` and `os.stat` are not audited). There is no mount
namespace or seccomp filter: filesystem confinement is the hook's and the user's alone.
Use a container or VM for hostile code.
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
# The hook never runs code the candidate could have supplied or replaced: it reads names
# only from its closure (builtins and module attributes can be rebound by the candidate),
# looks at an argument only if its type is exactly str, bytes or int (a str subclass, or
# an os.PathLike whose __fspath__ would run inside the hook, is refused unseen), and
# resolves links with os.lstat/os.readlink (C functions) instead of os.path.realpath (whose
# helpers the candidate could rebind).
_PRELUDE = r'''
import os, sys, resource

def _install(cfg):
    import os.path
    for name, value in cfg["limits"]:
        try:
            resource.setrlimit(getattr(resource, name), (value, value))
        except (ValueError, OSError):
            pass
    lstat, readlink, write, exit_now = os.lstat, os.readlink, os.write, os._exit
    getframe, sep, fs_encoding = sys._getframe, os.sep, sys.getfilesystemencoding()
    type_of, len_of, repr_of, decode = type, len, repr, bytes.decode
    str_t, bytes_t, int_t, float_t, bool_t, tuple_t = str, bytes, int, float, bool, tuple
    os_error, value_error, none = OSError, ValueError, None
    importer = "<frozen importlib._bootstrap_external>"
    tmp = os.path.realpath(os.getcwd())
    own_stdlib = os.path.dirname(os.path.realpath(os.__file__))  # this interpreter's
    read_roots = (tmp, own_stdlib) + tuple(os.path.realpath(p) for p in cfg["read_roots"])
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

    def plain(value):  # exactly str or bytes: a path we may look at
        t = type_of(value)
        return t is str_t or t is bytes_t

    def inert(value):  # never a path, and nothing of the candidate runs when it is ignored
        t = type_of(value)
        return value is none or t is int_t or t is bool_t or t is float_t or t is tuple_t

    def show(value):
        return repr_of(value) if plain(value) or type_of(value) is int_t else \
            "an argument that is not str, bytes or int"

    def resolve(path):
        # Like os.path.realpath (not strict) for an exact str, relative to the temp dir;
        # None for a link loop.
        if not path.startswith(sep):
            path = tmp + sep + path
        done, todo, links = "", path.split(sep), 0
        todo.reverse()
        while todo:
            part = todo.pop()
            if part == "" or part == ".":
                continue
            if part == "..":
                done = done[:done.rfind(sep)] if done else done
                continue
            here = done + sep + part
            try:
                mode = lstat(here).st_mode
            except os_error:
                done = here
                continue
            if mode & 0o170000 != 0o120000:
                done = here
                continue
            links += 1
            if links > 40:
                return none
            target = readlink(here)
            if target.startswith(sep):
                done = ""
            more = target.split(sep)
            more.reverse()
            todo.extend(more)
        return done or sep

    def real(path):  # an exact str or bytes path, resolved; None if it cannot be
        if type_of(path) is bytes_t:
            path = decode(path, fs_encoding, "surrogateescape")
        try:
            return resolve(path)
        except (os_error, value_error):
            return none

    def within(path, roots):
        if type_of(path) is int_t:  # an already-open descriptor
            return True
        if not plain(path):
            return False
        full = real(path)
        if full is none:
            return False
        for r in roots:
            if full == r or full.startswith(r + sep):
                return True
        return False

    def readable(path):
        if plain(path) and real(path) in read_files:
            return True
        return within(path, read_roots)

    def hook(event, args):
        if event == "open":
            if len_of(args) != 3:
                deny("open with unexpected arguments")
            path, mode, flags = args
            if type_of(mode) is str_t:
                writing = "w" in mode or "a" in mode or "x" in mode or "+" in mode
            elif mode is none and type_of(flags) is int_t:
                writing = flags & write_flags != 0
            else:
                writing = True
            if writing and not within(path, (tmp,)):
                deny("open %s for writing" % show(path))
            if not writing and not readable(path):
                deny("open %s for reading" % show(path))
        elif event == "import":
            name = args[0] if len_of(args) else none
            if type_of(name) is not str_t:
                deny("import of a name that is not a str")
            top = name.split(".")[0]
            if top in blocked_modules or top.startswith(blocked_module_prefixes):
                deny("import " + name)
        elif event.startswith(blocked_prefixes):
            deny(event)
        elif event == "marshal.loads" or event == "marshal.load":
            if getframe(1).f_code.co_filename != importer:  # only the import system's .pyc
                deny(event)
        elif event in write_events:
            for a in args:
                if not inert(a) and not within(a, (tmp,)):
                    deny(event + " " + show(a))
        elif event in read_events:
            for a in args[:1]:
                if not inert(a) and not within(a, (tmp,) if event == "os.chdir" else read_roots):
                    deny(event + " " + show(a))
        elif (event == "object.__setattr__" or event == "object.__delattr__") \
                and len_of(args) and args[0] is hook:
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


_NOBODY = 65534


@functools.lru_cache(maxsize=4)
def privilege_drop(python: str) -> tuple[str, ...] | None:
    """The `setpriv` prefix that runs a child with fewer privileges: as root, as nobody
    (uid and gid 65534, no supplementary groups, no capabilities) with no_new_privs; as
    anyone else, no_new_privs only. None where setpriv is missing or the prefix cannot
    start `python` here. Probed once per interpreter."""
    exe = shutil.which("setpriv")
    if exe is None:
        return None
    prefix: tuple[str, ...] = (exe, "--no-new-privs")
    if os.geteuid() == 0:
        prefix = (exe, f"--reuid={_NOBODY}", f"--regid={_NOBODY}", "--clear-groups",
                  "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs")
    try:
        r = subprocess.run([*prefix, python, "-I", "-S", "-c", "pass"], cwd="/",
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return prefix if r.returncode == 0 else None


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
               isolate_network: bool = True, drop_privileges: bool = True) -> SandboxResult:
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
        python = python or sys.executable
        cmd = [python, "-I", "-S", "-B", "_prelude.py"]
        drop = privilege_drop(python) if drop_privileges else None
        if drop is not None:
            cmd = [*drop, *cmd]
            if os.geteuid() == 0:
                os.chown(tmp, _NOBODY, _NOBODY)  # its working directory is its own
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
