"""`calm-edge serve`: wire the parts together and run until told to stop.

Lifecycle (like uvicorn's Server): bind the Unix socket (or take the one systemd passed),
check the fleet, serve; on SIGTERM or SIGINT stop accepting, drain in-flight requests for
up to `drain_timeout_s`, unload the models, remove the socket, exit 0. A second signal
during the drain closes the remaining connections at once. Signal handlers are restored
on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import ipaddress
import logging
import os
import random
import signal
import socket
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from calm_edge import paths
from calm_edge.backends.base import BackendFactory
from calm_edge.calibration import Calibrator, Preempted, identify
from calm_edge.classifier import ClassifierError, QueryClassifier, load_classifier
from calm_edge.config import ConfigError, Settings, load_settings
from calm_edge.energy import EnergyIntegrator, PowerReader, select_reader
from calm_edge.execute import Executor
from calm_edge.fleet import Fleet, load_fleet
from calm_edge.knowledge import KnowledgeStore
from calm_edge.lanes import InferenceLanes
from calm_edge.memory import (
    DeviceMemoryReader,
    MemoryProbe,
    process_rss_bytes,
    select_device_memory,
)
from calm_edge.metrics import Metrics
from calm_edge.monitor import DeviceMonitor
from calm_edge.orchestrator import Orchestrator
from calm_edge.outcome import OutcomeModel
from calm_edge.residency import Residency
from calm_edge.server.access import AccessError, userns_limits
from calm_edge.server.app import App
from calm_edge.server.http import HttpServer
from calm_edge.service import (
    ActivationError,
    Notifier,
    format_status,
    heartbeat,
    listen_fds,
    watchdog_interval_s,
)
from calm_edge.units import format_bytes

log = logging.getLogger("calm_edge.daemon")

_SUN_PATH_MAX = 107


class DaemonError(RuntimeError):
    """The daemon cannot start; the message says why and what to do."""


def bind_unix_socket(path: Path, mode: int, group: str) -> socket.socket:
    """Bind a listening Unix socket at `path` with `mode`, owned by `group` if it exists.

    A stale socket file (nobody listening) is replaced; a live one is an error. In the
    fallback directory under /tmp, only a private one (made 0700 by us, owned by us) is
    used. The mode comes from the umask at bind; nothing is changed through a link.
    """
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        raise DaemonError(f"socket path too long ({len(os.fsencode(path))} bytes, max "
                          f"{_SUN_PATH_MAX}): {path}")
    if path.parent == paths.fallback_socket_dir():
        try:
            paths.make_private_dir(path.parent)
        except paths.UnsafeDirectory as e:
            raise DaemonError(f"refusing to serve: {e}") from None
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise DaemonError(f"{path} exists and is not a socket; remove it or choose another "
                              "--socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale: left behind by a daemon that died
        else:
            raise DaemonError(f"another daemon is already listening on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o777 & ~mode)  # no window where the socket is wider than `mode`
    try:
        sock.bind(str(path))
    except OSError as e:
        sock.close()
        raise DaemonError(f"cannot bind {path}: {e.strerror}") from None
    finally:
        os.umask(old_umask)
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            log.debug("group %s does not exist; socket keeps our group", group)
        else:
            with contextlib.suppress(PermissionError):
                os.chown(path, -1, gid, follow_symlinks=False)
    sock.listen(128)
    return sock


@contextlib.contextmanager
def capture_signals(loop: asyncio.AbstractEventLoop, handler: Callable[[int], None],
                    on_hup: Callable[[], object] | None = None) -> Iterator[None]:
    """SIGTERM/SIGINT call `handler`, SIGHUP calls `on_hup`; restored on exit."""
    sigs = (signal.SIGTERM, signal.SIGINT)
    for sig in sigs:
        loop.add_signal_handler(sig, handler, sig)
    if on_hup is not None:
        loop.add_signal_handler(signal.SIGHUP, on_hup)
    try:
        yield
    finally:
        for sig in sigs:
            loop.remove_signal_handler(sig)
        if on_hup is not None:
            loop.remove_signal_handler(signal.SIGHUP)


def bind_tcp(spec: str, allow_remote: bool) -> socket.socket:
    """A listening TCP socket for "host:port". Only loopback addresses unless allow_remote
    (the API has no authentication of its own)."""
    host, sep, port_text = spec.rpartition(":")
    host = host.strip("[]")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536 or not host:
        raise DaemonError(f"server.tcp: expected host:port, got {spec!r}")
    try:
        infos = socket.getaddrinfo(host, int(port_text), type=socket.SOCK_STREAM,
                                   flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        raise DaemonError(f"server.tcp: {host!r} is not a numeric IP address") from None
    family, _, _, _, addr = infos[0]
    if not ipaddress.ip_address(addr[0]).is_loopback and not allow_remote:
        raise DaemonError(f"server.tcp: {host} is not a loopback address; the API has no "
                          "authentication over TCP. Set server.tcp_allow_remote = true "
                          "(or --tcp-allow-remote) if you really mean to expose it")
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise DaemonError(f"cannot bind TCP {spec}: {e.strerror}") from None
    sock.listen(128)
    return sock


class Daemon:
    # sd_notify client of the current run(); None outside run(). Owned by the loop thread.
    _notifier: Notifier | None = None

    def __init__(self, settings: Settings, factory: BackendFactory, *,
                 fleet: Fleet | None = None, memory_probe: MemoryProbe = process_rss_bytes,
                 classifier: QueryClassifier | None = None,
                 power_reader: PowerReader | None = None, sysfs_root: Path = Path("/"),
                 rng: random.Random | None = None,
                 env: Mapping[str, str] | None = None, handle_signals: bool = True,
                 on_ready: Callable[[], None] | None = None,
                 housekeeping_interval_s: float = 10.0,
                 settings_loader: Callable[[], Settings] | None = None,
                 outcome_model: OutcomeModel | Literal["profile"] | None = "profile",
                 backend_build: str = "unknown",
                 ) -> None:
        """Environment seams are injectable: the backend factory, the classifier, the power
        reader, the memory probe, the sysfs root and the random source. `handle_signals`
        and `on_ready` serve tests that run the daemon on a thread. `settings_loader`
        re-resolves the settings (profile file, environment, flags) on reload; without it
        a reload re-reads the same profile file. `backend_build` names the backend build
        (calm_edge.backends.llama_cpp.build_info): calibrations are valid per build."""
        self.settings = settings
        self._settings_loader = settings_loader
        self._handle_signals, self._on_ready = handle_signals, on_ready
        self._tick_s = housekeeping_interval_s
        self.fleet = fleet if fleet is not None else load_fleet(settings.fleet_path)
        self._factory, self._probe = factory, memory_probe
        self._classifier, self._power_reader = classifier, power_reader
        self._sysfs_root, self._rng = sysfs_root, rng
        self._outcome_model = outcome_model
        self._backend_build = backend_build
        self._env = dict(os.environ if env is None else env)
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._signals = 0
        self.http: HttpServer | None = None
        self.orchestrator: Orchestrator | None = None

    def request_stop(self, sig: int = signal.SIGTERM) -> None:
        """Begin a graceful stop. Call on the loop thread (signal handler) or via stop()."""
        self._signals += 1
        if self._signals == 1:
            log.info("received %s: draining", signal.Signals(sig).name)
            if self._notifier is not None:
                in_flight = self.http.in_flight if self.http is not None else 0
                self._notifier.stopping(f"draining {in_flight} in flight")
            if self._stop is not None:
                self._stop.set()
        elif self.http is not None:
            log.warning("second signal: closing connections now")
            self.http.close_all()

    def stop(self) -> None:
        """Thread-safe graceful stop (what SIGTERM does)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.request_stop, signal.SIGTERM)

    def _load_classifier(self) -> QueryClassifier:
        if self._classifier is not None:
            return self._classifier
        cfg = self.settings.profile.classifier
        try:
            return load_classifier(Path(cfg.model_dir) if cfg.model_dir else None,
                                   prefer=cfg.runtime)
        except ClassifierError as e:
            raise DaemonError(f"query classifier: {e}") from None

    def _load_outcome_model(self) -> OutcomeModel | None:
        if not isinstance(self._outcome_model, str):  # injected (a model, or None: off)
            return self._outcome_model
        cfg = self.settings.profile.loop
        if not cfg.per_query_quality:
            return None
        try:
            model = OutcomeModel.load(Path(cfg.outcome_model_dir) if cfg.outcome_model_dir
                                      else None)
        except ValueError as e:
            raise DaemonError(f"outcome model: {e}") from None
        if model is not None:
            log.info("per-query quality from the outcome model (%s)",
                     ", ".join(model.models))
        return model

    async def run(self) -> int:
        s, p = self.settings, self.settings.profile
        loop = self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with contextlib.AsyncExitStack() as stack:
            notifier = self._notifier = Notifier(self._env)
            stack.callback(setattr, self, "_notifier", None)
            stack.callback(notifier.close)
            notifier.status("starting: loading the classifier, checking model files")
            pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="calm-io")
            stack.callback(pool.shutdown, wait=True, cancel_futures=True)
            classifier = await loop.run_in_executor(pool, self._load_classifier)
            log.info("query classifier: %s runtime", classifier.runtime)
            store = KnowledgeStore(s.state_dir / "knowledge.db",
                                   retention_days=p.knowledge.retention_days,
                                   max_requests=p.knowledge.max_requests,
                                   max_db_bytes=p.knowledge.max_db_bytes)
            stack.callback(store.close)
            knowledge = await store.open()
            if self._power_reader is not None:
                reader = self._power_reader
            else:
                reader = await loop.run_in_executor(
                    pool, lambda: select_reader(p.power, sysfs_root=self._sysfs_root))
            stack.callback(reader.close)
            integrator = EnergyIntegrator(reader, p.power.sample_hz, history_s=p.power.history_s)
            integrator.start()
            stack.callback(integrator.stop)
            log.info("power: %s (%s), rails %s", reader.source,
                     "measured" if reader.measured else "estimated",
                     ", ".join(reader.rails) or "-")
            lanes = InferenceLanes(p.runtime.max_parallel)
            stack.callback(lanes.shutdown)
            residency = Residency(self.fleet, s.models_dir, p.runtime,
                                  p.memory.ram_budget_bytes, self._factory, pool, lanes,
                                  memory_probe=self._probe, device_memory=self._device_memory(),
                                  drop_page_cache_on_evict=p.memory.drop_page_cache_on_evict)
            outcome = await loop.run_in_executor(pool, self._load_outcome_model)
            executor = Executor(residency, lanes)
            self.orchestrator = orchestrator = Orchestrator(
                s, self.fleet, residency, executor, classifier, store=store,
                knowledge=knowledge, energy=integrator, metrics=Metrics(), rng=self._rng,
                outcome=outcome)
            calibrator = Calibrator(
                residency, executor, store, identify(
                    self._sysfs_root, self._backend_build, p.runtime,
                    p.runtime.n_threads or _usable_cpus()), pool,
                canary_timeout_s=p.calibration.canary_timeout_s,
                busy=lambda: orchestrator.busy())
            orchestrator.apply_calibration(await calibrator.results())
            log.info("device %s: %d of %d models calibrated here", calibrator.identity.key,
                     len(orchestrator.calibration), len(self.fleet.models))
            reload_lock = asyncio.Lock()

            async def reload() -> dict[str, Any]:
                """SIGHUP / POST /calm/reload: re-read the profile and the fleet and apply
                them without dropping requests; a bad file keeps the running config."""
                async with reload_lock:
                    notifier.reloading()
                    try:
                        result = await self._reload(residency, orchestrator, app, http)
                    finally:
                        notifier.ready(describe())
                    return result

            try:
                app = App(s, orchestrator,
                          DeviceMonitor(self._probe, self._sysfs_root, integrator),
                          in_flight=lambda: self.http.in_flight if self.http else 0,
                          reload=reload, calibrator=calibrator)
            except AccessError as e:
                raise DaemonError(str(e)) from None
            self._check_access(app)
            orchestrator.busy = lambda: app.admission.active + app.admission.waiting > 0
            srv = p.server
            self.http = http = HttpServer(
                app, max_header_bytes=srv.max_header_bytes, max_body_bytes=srv.max_body_bytes,
                keepalive_timeout_s=srv.keepalive_timeout_s,
                write_timeout_s=srv.write_timeout_s, max_connections=srv.max_connections,
                max_connections_per_uid=srv.max_connections_per_uid, gate=app)
            try:
                # os.environ: LISTEN_* must not reach child processes (sd_listen_fds(1)).
                passed = listen_fds(self._env, os.getpid(), unset_env=os.environ)
            except ActivationError as e:
                raise DaemonError(str(e)) from None
            if passed:
                sock = passed[0].sock
                log.info("using the socket passed by systemd (fd %d, %s)", sock.fileno(),
                         passed[0].name)
                if len(passed) > 1:
                    log.warning("systemd passed %d sockets; serving on the first only",
                                len(passed))
            else:
                sock = bind_unix_socket(s.socket_path, p.server.socket_mode,
                                        p.server.socket_group)
                stack.callback(_unlink_quietly, s.socket_path)
            stack.callback(sock.close)  # the server owns it once started; harmless twice
            await residency.scan()
            server = await http.start(sock)
            tcp_server = None
            if p.server.tcp:
                tcp_sock = bind_tcp(p.server.tcp, p.server.tcp_allow_remote)
                stack.callback(tcp_sock.close)
                tcp_server = await http.start(tcp_sock)
                log.warning("also listening on TCP %s (no peer credentials over TCP: admin "
                            "routes are refused there)", p.server.tcp)
            ok = [n for n, sl in residency.slots.items() if sl.unavailable_reason(0) is None]
            log.info("calm-edge serving on %s (profile %s, budget %s, models available: %s)",
                     s.socket_path if not passed else "the passed socket", p.device.name,
                     format_bytes(p.memory.ram_budget_bytes), ", ".join(ok) or "none")

            def describe() -> str:
                recent = orchestrator.recent_decisions()
                return format_status(residency.resident(), recent[0] if recent else None,
                                     in_flight=http.in_flight, stopping=self._signals > 0)

            # READY=1: the socket is listening and the fleet has been checked.
            notifier.ready(describe())
            if self._on_ready is not None:
                self._on_ready()
            signals = capture_signals(loop, self.request_stop,
                                      on_hup=lambda: loop.create_task(reload())) \
                if self._handle_signals else contextlib.nullcontext()
            housekeeping = asyncio.create_task(self._housekeeping(residency, store))
            calibrating = asyncio.create_task(self._calibrate_when_idle(
                calibrator, orchestrator, residency))
            # Watchdog pings and STATUS= refreshes run on this loop until after the drain and
            # the unloads: a stalled loop stops them. (A SIGHUP reload hook, when added,
            # brackets its work with notifier.reloading() ... notifier.ready().)
            beat = asyncio.create_task(heartbeat(
                notifier, describe, watchdog_s=watchdog_interval_s(self._env, os.getpid()),
                status_every_s=self._tick_s))
            stack.callback(beat.cancel)
            with signals:
                await self._stop.wait()
                housekeeping.cancel()
                calibrating.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await calibrating
                server.close()
                if tcp_server is not None:
                    tcp_server.close()
                drained = await http.drain(p.server.drain_timeout_s)
                if not drained:
                    log.warning("drain timed out after %.0fs with %d requests in flight",
                                p.server.drain_timeout_s, http.in_flight)
                    http.close_all()
                # Still under the handlers: a second SIGTERM while models unload must not
                # kill the process with the default action.
                await orchestrator.aclose()
                await residency.close_all()
        log.info("stopped")
        return 0

    def _check_access(self, app: App) -> None:
        """Refuse TCP that the allow-lists cannot cover; warn when the allow-lists cannot
        see real peer ids (a user namespace, e.g. systemd PrivateUsers=yes)."""
        srv = self.settings.profile.server
        access = app.access
        if srv.tcp and access.restricted and not srv.tcp_allow_unauthenticated:
            raise DaemonError("server.tcp with allow_users/allow_groups: TCP peers have no "
                              "credentials, so the allow-lists cannot apply to them. Set "
                              "server.tcp_allow_unauthenticated = true to serve TCP anyway")
        if access.restricted or access.admin_gids:
            why = userns_limits(self._sysfs_root / "proc")
            if why is not None:
                log.warning("access lists may not work: %s", why)

    async def _reload(self, residency: Residency, orchestrator: Orchestrator, app: App,
                      http: HttpServer) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        old = self.settings
        try:
            new = await loop.run_in_executor(None, self._load_settings)
            fleet = await loop.run_in_executor(None, load_fleet, new.fleet_path)
            app.apply(new)  # first: it may refuse (AccessError) before anything changed
        except (ConfigError, OSError, AccessError) as e:
            log.error("reload failed; keeping the running configuration: %s", e)
            return {"ok": False, "error": str(e)}
        restart = [what for what, a, b in (
            ("socket", old.socket_path, new.socket_path),
            ("state_dir", old.state_dir, new.state_dir),
            ("power", old.profile.power, new.profile.power),
            ("classifier", old.profile.classifier, new.profile.classifier),
            ("knowledge", old.profile.knowledge, new.profile.knowledge),
            ("runtime.max_parallel", old.profile.runtime.max_parallel,
             new.profile.runtime.max_parallel),
            ("server socket/TCP", (old.profile.server.socket_mode, old.profile.server.tcp),
             (new.profile.server.socket_mode, new.profile.server.tcp))) if a != b]
        if restart:
            log.warning("reload: changes to %s take effect after a restart", ", ".join(restart))
        fleet_changes = await residency.apply_fleet(fleet, new.models_dir, new.profile.runtime)
        evicted = await residency.set_budget(new.profile.memory.ram_budget_bytes)
        orchestrator.apply(new, fleet)
        if app.calibrator is not None:  # `calm-edge calibrate` may have run meanwhile
            orchestrator.apply_calibration(await app.calibrator.results())
        srv = new.profile.server
        http.max_body_bytes, http.keepalive_timeout_s = srv.max_body_bytes, srv.keepalive_timeout_s
        http.write_timeout_s = srv.write_timeout_s
        http.max_connections, http.max_connections_per_uid = (srv.max_connections,
                                                              srv.max_connections_per_uid)
        self.settings, self.fleet = new, fleet
        log.info("reloaded %s and %s: models added %s, removed %s, changed %s; budget %s",
                 new.profile_source, new.fleet_path, fleet_changes["added"] or "none",
                 fleet_changes["removed"] or "none", fleet_changes["changed"] or "none",
                 format_bytes(new.profile.memory.ram_budget_bytes))
        return {"ok": True, "profile": new.profile_source, "fleet": str(new.fleet_path),
                **fleet_changes, "evicted": evicted, "needs_restart": restart,
                "budget_bytes": new.profile.memory.ram_budget_bytes}

    def _load_settings(self) -> Settings:
        if self._settings_loader is not None:
            return self._settings_loader()
        s = self.settings
        return load_settings(s.profile_source, env=self._env, cli={
            "server": {"socket": str(s.socket_path)},
            "paths": {"state_dir": str(s.state_dir), "models_dir": str(s.models_dir),
                      "fleet": str(s.fleet_path)}})

    def _device_memory(self) -> DeviceMemoryReader | None:
        """The reader of memory RSS misses, where layers are offloaded to a GPU."""
        p = self.settings.profile
        if p.runtime.n_gpu_layers == 0:
            return None
        return select_device_memory(p.memory.gpu_memory_source,
                                    unified_board=p.device.board == "jetson",
                                    root=self._sysfs_root)

    async def _calibrate_when_idle(self, calibrator: Calibrator, orchestrator: Orchestrator,
                                   residency: Residency) -> None:
        """Calibrate, one model at a time, every available model not yet calibrated on this
        device, whenever no request has come for `calibration.idle_s`. A request preempts
        it within a token; it resumes at the next idle spell. A model whose calibration
        fails is not retried until the daemon restarts or reloads."""
        failed: set[str] = set()
        while True:
            cfg = self.settings.profile.calibration
            await asyncio.sleep(min(1.0, max(cfg.idle_s / 4, 0.05)))
            if not cfg.auto or orchestrator.busy() or \
                    orchestrator.idle_s() < cfg.idle_s:
                continue
            now = time.monotonic()
            todo = [n for n, sl in residency.slots.items()
                    if n not in failed and sl.unavailable_reason(now) is None
                    and not (n in orchestrator.calibration
                             and orchestrator.calibration[n].complete)]
            if not todo:
                continue
            log.info("idle: calibrating %s on this device", todo[0])
            try:
                await calibrator.run(todo[:1], cfg.canaries_per_domain, quick=False)
            except Preempted:
                log.info("calibration of %s paused: a request arrived", todo[0])
            except Exception as e:
                failed.add(todo[0])
                log.error("calibration of %s failed: %s: %s", todo[0], type(e).__name__, e)
            orchestrator.apply_calibration(await calibrator.results())

    async def _housekeeping(self, residency: Residency, store: KnowledgeStore) -> None:
        """Periodic upkeep on the loop: pick up model files installed after start; apply the
        knowledge store's retention about once an hour."""
        ticks = 0
        while True:
            await asyncio.sleep(self._tick_s)
            ticks += 1
            try:
                await residency.rescan_unavailable()
                if ticks % max(1, round(3600 / self._tick_s)) == 1:
                    pruned = await store.prune()
                    if pruned:
                        log.info("knowledge retention: pruned %d request rows", pruned)
            except Exception:
                log.exception("housekeeping failed")


def _usable_cpus() -> int:
    from calm_edge.backends.llama_cpp import usable_cpus

    return usable_cpus()


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
