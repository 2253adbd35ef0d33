"""`calm-edge serve`: build the parts, serve until told to stop, shut down in order.

Phases (like uvicorn's startup, main loop and shutdown):

1. `build`: the composition root: classifier, knowledge store, power reader and energy
   integrator, the loop's core (calm_edge.runtime), the HTTP app and server, in one
   `Runtime` value;
2. `_start`: bind the Unix socket (or take the one systemd passed) and TCP if configured,
   check the model files, start listening, install the signal handlers, and only then
   tell systemd READY=1: "ready" means signals handled, socket listening, fleet checked;
3. serve until SIGTERM or SIGINT (SIGHUP reloads the profile and the fleet);
4. shutdown: stop accepting, drain in-flight requests for up to `drain_timeout_s`, unload
   the models, remove the socket, exit 0. A second signal during the drain closes the
   remaining connections at once; handlers stay installed until the models are unloaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from calm_edge import __version__
from calm_edge.backends.base import BackendFactory
from calm_edge.classifier import ClassifierError, QueryClassifier, load_classifier
from calm_edge.confidence import Acceptor, default_cascade_path, load_acceptors
from calm_edge.config import ConfigError, Settings, load_settings
from calm_edge.energy import (
    EnergyIntegrator,
    PowerReader,
    describe_reader,
    energy_kind,
    select_reader,
)
from calm_edge.field import FieldMonitor, run_nvpmodel_query
from calm_edge.fleet import Fleet, fleet_for
from calm_edge.knowledge import KnowledgeStore
from calm_edge.memory import MemoryProbe, process_rss_bytes
from calm_edge.metrics import Metrics
from calm_edge.monitor import DeviceMonitor
from calm_edge.orchestrator import Orchestrator
from calm_edge.outcome import OutcomeModel
from calm_edge.runtime import Core, build_core, close_core, device_memory_for
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
from calm_edge.sockets import DaemonError, bind_tcp, bind_unix_socket, capture_signals
from calm_edge.status import StatusView
from calm_edge.units import format_bytes

# Stack size of the threads the daemon starts (see Daemon.run).
WORKER_STACK_BYTES = 64 << 20

log = logging.getLogger("calm_edge.daemon")

__all__ = ["Daemon", "DaemonError", "Runtime", "bind_unix_socket"]


@dataclass
class Runtime:
    """Everything one run of the daemon is made of (the composition root's result)."""

    settings: Settings
    core: Core
    store: KnowledgeStore
    integrator: EnergyIntegrator
    reader: PowerReader
    device_monitor: DeviceMonitor
    app: App
    http: HttpServer
    budget_override: int | None = None  # set by POST /calm/budget; kept across reloads
    servers: list[asyncio.Server] = field(default_factory=list)

    def status_view(self) -> StatusView:
        """The parts' snapshots, together."""
        c, s = self.core, self.settings
        res = c.residency.snapshot()
        device = self.device_monitor.observe(
            budget_bytes=res.budget_bytes, used_bytes=res.used_bytes, resident=res.resident,
            in_flight=self.http.in_flight)
        total = self.integrator.total_energy()
        energy = {**describe_reader(self.reader), "total_j": round(total.energy_mj / 1000, 3),
                  "sample_hz": self.integrator.sample_hz,
                  "samples": self.integrator.samples_taken}
        loop = c.orchestrator.snapshot()
        calibration = None
        if c.calibrator is not None:
            cur = c.calibrator.current
            calibration = {"device": c.calibrator.identity.to_status(),
                           "auto": s.profile.calibration.auto,
                           "under_load": s.profile.calibration.under_load,
                           "under_load_items": c.background.under_load_items
                           if c.background is not None else 0,
                           "running": None if cur is None else {
                               "model": cur.model, "phase": cur.phase, "done": cur.done,
                               "total": cur.total, "detail": cur.detail},
                           "models": loop.calibration}
        return StatusView(s.profile.device.name, s.profile_source, str(s.socket_path),
                          str(c.fleet.source), c.fleet.default_model, res,
                          c.scheduler.snapshot(), loop, device, energy, calibration,
                          self.http.in_flight)

    def describe(self, stopping: bool) -> str:
        """The one-line STATUS= for systemd."""
        decisions = self.core.orchestrator.snapshot().decisions
        return format_status(self.core.residency.resident(),
                             decisions[0] if decisions else None,
                             in_flight=self.http.in_flight, stopping=stopping)


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
                 acceptors: Mapping[tuple[str, str], Acceptor] | Literal["profile"]
                 = "profile",
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
        self.fleet = fleet if fleet is not None else fleet_for(settings)
        self._factory, self._probe = factory, memory_probe
        self._classifier, self._power_reader = classifier, power_reader
        self._sysfs_root, self._rng = sysfs_root, rng
        self._outcome_model = outcome_model
        self._acceptors = acceptors
        self._backend_build = backend_build
        self._env = dict(os.environ if env is None else env)
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._signals = 0
        self._reload_lock = asyncio.Lock()
        self.runtime: Runtime | None = None

    @property
    def http(self) -> HttpServer | None:
        return self.runtime.http if self.runtime is not None else None

    @property
    def orchestrator(self) -> Orchestrator | None:
        return self.runtime.core.orchestrator if self.runtime is not None else None

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

    # -- phase 1: build ----------------------------------------------------------------------

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

    def _load_acceptors(self) -> Mapping[tuple[str, str], Acceptor]:
        """The cascade acceptors for models of this fleet (none when cascades are off or
        the artifact is absent)."""
        if not isinstance(self._acceptors, str):  # injected
            return self._acceptors
        cfg = self.settings.profile.loop
        if not cfg.cascades:
            return {}
        path = Path(cfg.cascade_file) if cfg.cascade_file else default_cascade_path()
        if not path.exists():
            if cfg.cascade_file:
                raise DaemonError(f"loop.cascade_file: {path} does not exist")
            log.info("cascades: no %s; every query goes to one model", path)
            return {}
        try:
            acceptors = load_acceptors(path)
        except ValueError as e:
            raise DaemonError(f"cascades: {e}") from None
        names = set(self.fleet.by_name)
        usable = {k: a for k, a in acceptors.items()
                  if a.model in names and a.escalate_to in names}
        log.info("cascades: %s", ", ".join(f"{m}/{d} -> {a.escalate_to} (AUROC {a.auroc:.2f})"
                                           for (m, d), a in sorted(usable.items())) or "none "
                 "for this fleet")
        return usable

    async def build(self, stack: contextlib.AsyncExitStack) -> Runtime:
        """The composition root: every part made and wired; nothing listens yet. What
        needs closing is pushed onto `stack` (closed in reverse order)."""
        s, p = self.settings, self.settings.profile
        loop = asyncio.get_running_loop()
        classifier = await loop.run_in_executor(None, self._load_classifier)
        log.info("query classifier: %s runtime", classifier.runtime)
        store = KnowledgeStore(s.state_dir / "knowledge.db",
                               retention_days=p.knowledge.retention_days,
                               max_requests=p.knowledge.max_requests,
                               max_db_bytes=p.knowledge.max_db_bytes)
        stack.callback(store.close)
        knowledge = await store.open()
        reader = self._power_reader if self._power_reader is not None else \
            await loop.run_in_executor(
                None, lambda: select_reader(p.power, sysfs_root=self._sysfs_root))
        stack.callback(reader.close)
        integrator = EnergyIntegrator(reader, p.power.sample_hz, history_s=p.power.history_s)
        integrator.start()
        stack.callback(integrator.stop)
        log.info("power: %s (%s), rails %s", reader.source, energy_kind(reader.measured),
                 ", ".join(reader.rails) or "-")
        outcome = await loop.run_in_executor(None, self._load_outcome_model)
        acceptors = await loop.run_in_executor(None, self._load_acceptors)
        field = FieldMonitor(
            p.field, p.energy, sysfs_root=self._sysfs_root,
            use_gpu=p.runtime.n_gpu_layers != 0,
            board_energy_wh=lambda: integrator.total_energy().energy_mj / 3.6e6,
            nvpmodel_query=run_nvpmodel_query if p.field.nvpmodel_query else None)
        core = build_core(s, self.fleet, self._factory, classifier, store=store,
                          knowledge=knowledge, energy=integrator, metrics=Metrics(),
                          outcome=outcome, acceptors=acceptors, memory_probe=self._probe,
                          device_memory=device_memory_for(s, self._sysfs_root), rng=self._rng,
                          backend_build=self._backend_build, sysfs_root=self._sysfs_root,
                          field=field)
        core.orchestrator.observe_field()  # the power state calibrations are read for
        stack.push_async_callback(close_core, core)
        if core.calibrator is not None:
            core.orchestrator.apply_calibration(await core.calibrator.results())
            log.info("device %s: %d of %d models calibrated here",
                     core.calibrator.identity.key, len(core.orchestrator.calibration),
                     len(self.fleet.models))
        runtime_box: list[Runtime] = []
        try:
            app = App(s, core.orchestrator, core.scheduler,
                      status_view=lambda: runtime_box[0].status_view(),
                      reload=self.reload, set_budget=self._set_budget)
        except AccessError as e:
            raise DaemonError(str(e)) from None
        srv = p.server
        http = HttpServer(
            app, max_header_bytes=srv.max_header_bytes, max_body_bytes=srv.max_body_bytes,
            keepalive_timeout_s=srv.keepalive_timeout_s, write_timeout_s=srv.write_timeout_s,
            max_connections=srv.max_connections,
            max_connections_per_uid=srv.max_connections_per_uid, gate=app.gate)
        runtime = Runtime(s, core, store, integrator, reader,
                          DeviceMonitor(self._probe, self._sysfs_root, integrator), app, http)
        runtime_box.append(runtime)
        self._check_access(runtime)
        return runtime

    def _check_access(self, rt: Runtime) -> None:
        """Refuse TCP that the allow-lists cannot cover; warn when the allow-lists cannot
        see real peer ids (a user namespace, e.g. systemd PrivateUsers=yes)."""
        srv = self.settings.profile.server
        access = rt.app.gate.access
        if srv.tcp and access.restricted and not srv.tcp_allow_unauthenticated:
            raise DaemonError("server.tcp with allow_users/allow_groups: TCP peers have no "
                              "credentials, so the allow-lists cannot apply to them. Set "
                              "server.tcp_allow_unauthenticated = true to serve TCP anyway")
        if access.restricted or access.admin_gids:
            why = userns_limits(self._sysfs_root / "proc")
            if why is not None:
                log.warning("access lists may not work: %s", why)
        if rt.app.gate.quotas.names_peers:
            why = userns_limits(self._sysfs_root / "proc")
            if why is not None:
                log.warning("quota entries for users and groups may not match: %s", why)

    # -- phase 2: start ----------------------------------------------------------------------

    async def _listen(self, rt: Runtime, stack: contextlib.AsyncExitStack) -> bool:
        """Bind (or take) the sockets, check the model files, start serving. True when
        systemd passed the socket."""
        s, p = self.settings, self.settings.profile
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
            sock = bind_unix_socket(s.socket_path, p.server.socket_mode, p.server.socket_group)
            stack.callback(_unlink_quietly, s.socket_path)
        stack.callback(sock.close)  # the server owns it once started; harmless twice
        await rt.core.residency.scan()
        rt.servers.append(await rt.http.start(sock))
        if p.server.tcp:
            tcp_sock = bind_tcp(p.server.tcp, p.server.tcp_allow_remote)
            stack.callback(tcp_sock.close)
            rt.servers.append(await rt.http.start(tcp_sock))
            log.warning("also listening on TCP %s (no peer credentials over TCP: admin "
                        "routes are refused there)", p.server.tcp)
        res = rt.core.residency
        ok = [n for n, sl in res.slots.items() if sl.unavailable_reason(0) is None]
        log.info("calm-edge %s serving on %s (profile %s, budget %s, models available: %s)",
                 __version__, s.socket_path if not passed else "the passed socket",
                 p.device.name, format_bytes(res.budget_bytes), ", ".join(ok) or "none")
        return bool(passed)

    # -- the run -------------------------------------------------------------------------

    async def run(self) -> int:
        # Models load and generate in worker threads. On the H200 check (issue 23) a CUDA
        # model load segfaulted in a worker thread with the default 8 MiB stack while the
        # same load ran in the main thread. A thread's static TLS comes out of its stack
        # and CUDA's libraries bring much of it; a larger stack is the likely cure (not yet
        # confirmed on a GPU). Stacks are reserved, not committed, so this is cheap.
        threading.stack_size(max(threading.stack_size(), WORKER_STACK_BYTES))
        loop = self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with contextlib.AsyncExitStack() as stack:
            notifier = self._notifier = Notifier(self._env)
            stack.callback(setattr, self, "_notifier", None)
            stack.callback(notifier.close)
            if self._handle_signals:
                # Entered before anything that needs closing, so restored only after every
                # closer ran: a second SIGTERM while the models and the store close must not
                # kill the process. A SIGTERM during the build stops right after it.
                stack.enter_context(capture_signals(
                    loop, self.request_stop,
                    on_hup=lambda: loop.create_task(self.reload())
                    if self.runtime is not None else None))
            notifier.status("starting: loading the classifier, checking model files")
            rt = self.runtime = await self.build(stack)
            await self._listen(rt, stack)
            # READY=1 only now: signals handled, socket listening, fleet checked.
            notifier.ready(rt.describe(stopping=False))
            if self._on_ready is not None:
                self._on_ready()
            tasks = [asyncio.create_task(self._housekeeping(rt))]
            if rt.core.background is not None:  # calibration of uncalibrated models
                tasks.append(asyncio.create_task(rt.core.background.run()))
            # Watchdog pings and STATUS= refreshes run on this loop until after the drain and
            # the unloads: a stalled loop stops them.
            beat = asyncio.create_task(heartbeat(
                notifier, lambda: rt.describe(stopping=self._signals > 0),
                watchdog_s=watchdog_interval_s(self._env, os.getpid()),
                status_every_s=self._tick_s))
            stack.callback(beat.cancel)
            await self._stop.wait()
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            await self._shutdown(rt)
        log.info("stopped")
        return 0

    async def _shutdown(self, rt: Runtime) -> None:
        """Stop accepting, drain, and unload every model, under the signal handlers: a
        second SIGTERM while models unload must not kill the process."""
        for server in rt.servers:
            server.close()
        drain_s = self.settings.profile.server.drain_timeout_s
        if not await rt.http.drain(drain_s):
            log.warning("drain timed out after %.0fs with %d requests in flight", drain_s,
                        rt.http.in_flight)
            rt.http.close_all()
        await rt.core.scheduler.aclose()
        await rt.core.orchestrator.aclose()
        await rt.core.residency.close_all()

    # -- reload and the budget -------------------------------------------------------------

    async def reload(self) -> dict[str, Any]:
        """SIGHUP / POST /calm/reload: re-read the profile and the fleet and apply them
        without dropping requests; a bad file keeps the running configuration."""
        async with self._reload_lock:
            if self._notifier is not None:
                self._notifier.reloading()
            try:
                return await self._reload()
            finally:
                if self._notifier is not None and self.runtime is not None:
                    self._notifier.ready(self.runtime.describe(stopping=self._signals > 0))

    async def _reload(self) -> dict[str, Any]:
        rt = self.runtime
        assert rt is not None
        loop = asyncio.get_running_loop()
        old = self.settings
        try:
            new = await loop.run_in_executor(None, self._load_settings)
            fleet = await loop.run_in_executor(None, fleet_for, new)
            rt.app.apply(new)  # first: it may refuse (AccessError) before anything changed
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
        core = rt.core
        fleet_changes = await core.residency.apply_fleet(fleet, new.models_dir,
                                                         new.profile.runtime)
        if core.background is not None:  # new and changed model files: calibrated first
            for name in [*fleet_changes["changed"], *fleet_changes["added"]]:
                core.background.calibrate_first(name)
        # A budget set at run time stays unless the profile's own budget changed.
        profile_budget = new.profile.memory.ram_budget_bytes
        if profile_budget != old.profile.memory.ram_budget_bytes:
            rt.budget_override = None
        budget = rt.budget_override if rt.budget_override is not None else profile_budget
        evicted = await core.scheduler.set_budget(budget)
        core.orchestrator.apply(new, fleet)
        if core.calibrator is not None:  # `calm-edge calibrate` may have run meanwhile
            core.orchestrator.apply_calibration(await core.calibrator.results())
        srv = new.profile.server
        http = rt.http
        http.max_body_bytes, http.keepalive_timeout_s = srv.max_body_bytes, srv.keepalive_timeout_s
        http.write_timeout_s = srv.write_timeout_s
        http.max_connections, http.max_connections_per_uid = (srv.max_connections,
                                                              srv.max_connections_per_uid)
        core.scheduler.capacity = srv.max_queue
        core.scheduler.fair = new.profile.quotas.enabled
        self.settings, self.fleet, rt.settings, core.settings, core.fleet = \
            new, fleet, new, new, fleet
        log.info("reloaded %s and %s%s: models added %s, removed %s, changed %s; budget %s%s",
                 new.profile_source, new.fleet_path,
                 f" + {fleet.local_source}" if fleet.local_source else "",
                 fleet_changes["added"] or "none",
                 fleet_changes["removed"] or "none", fleet_changes["changed"] or "none",
                 format_bytes(budget), " (set at run time)" if rt.budget_override else "")
        return {"ok": True, "profile": new.profile_source, "fleet": str(new.fleet_path),
                "local_fleet": str(fleet.local_source) if fleet.local_source else None,
                **fleet_changes, "evicted": evicted, "needs_restart": restart,
                "budget_bytes": budget}

    async def _set_budget(self, budget_bytes: int) -> list[str]:
        """POST /calm/budget: the new budget holds until the profile's own one changes."""
        assert self.runtime is not None
        self.runtime.budget_override = budget_bytes
        return await self.runtime.core.scheduler.set_budget(budget_bytes)

    def _load_settings(self) -> Settings:
        if self._settings_loader is not None:
            return self._settings_loader()
        s = self.settings
        return load_settings(s.profile_source, env=self._env, cli={
            "server": {"socket": str(s.socket_path)},
            "paths": {"state_dir": str(s.state_dir), "models_dir": str(s.models_dir),
                      "fleet": str(s.fleet_path), "local_fleet": str(s.local_fleet_path)}})

    # -- background work -------------------------------------------------------------------

    async def _housekeeping(self, rt: Runtime) -> None:
        """Periodic upkeep on the loop: read the field conditions (so that a power mode
        change or the energy pacing takes effect while no request comes); pick up model
        files installed after start; apply the knowledge store's retention about once an
        hour."""
        ticks = 0
        while True:
            await asyncio.sleep(self._tick_s)
            ticks += 1
            try:
                rt.core.orchestrator.observe_field()  # power state, thermals, energy pacing
                await rt.core.residency.rescan_unavailable()
                await rt.core.residency.refresh_tiers()
                if ticks % max(1, round(3600 / self._tick_s)) == 1:
                    pruned = await rt.store.prune()
                    if pruned:
                        log.info("knowledge retention: pruned %d request rows", pruned)
            except Exception:
                log.exception("housekeeping failed")


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
