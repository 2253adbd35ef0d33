"""HTTP routes: OpenAI-compatible completions and models, health and status.

Handlers validate input (server.api), ask the orchestrator, and shape responses. Every
error is an OpenAI-style JSON body with a fitting status; nothing here can stop the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from calm_edge import __version__
from calm_edge.admission import Admission, Overloaded
from calm_edge.backends.base import ContextOverflowError, ModelState
from calm_edge.calibration import Calibrator
from calm_edge.config import Settings
from calm_edge.execute import Abort, AllCandidatesFailed
from calm_edge.monitor import DeviceMonitor, DeviceObservation
from calm_edge.orchestrator import Answer, FeedbackError, Orchestrator
from calm_edge.plan import NoModelAvailable
from calm_edge.residency import ModelUnavailable
from calm_edge.server.access import AccessPolicy, Peer, group_ids
from calm_edge.server.api import (
    ApiError,
    ApiLimits,
    CompletionCall,
    full_response,
    parse_chat,
    parse_completion,
    parse_json_body,
    stream_chunk,
    usage,
)
from calm_edge.server.http import Request, Response, error_response
from calm_edge.units import parse_size_bytes

log = logging.getLogger("calm_edge.app")

Route = Callable[[Request], Awaitable[Response]]
# Routes that change the daemon or what it learns: restricted to admins (server.access).
_ADMIN_ROUTES = frozenset({"/calm/models/{name}/{action}", "/calm/budget", "/calm/feedback",
                           "/calm/reload"})
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "localhost.localdomain"})


def _sse(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() \
        + b"\n\n"


def calm_info(rid: str, a: Answer) -> dict[str, Any]:
    """The `calm` object of a response: what was chosen, why, and what it cost."""
    s, q = a.stats, a.query
    info: dict[str, Any] = {
        "request_id": rid,
        "model": a.model,
        "reason": a.reason,
        "mode": a.mode,
        "domain": q.domain,
        "domain_source": q.domain_source,
        "difficulty": None if q.difficulty is None else round(q.difficulty, 3),
        "explored": a.explored,
        "candidates": list(a.candidates),
        "failed": [{"model": f.model, "error": f.error} for f in a.failed_attempts],
        "latency_ms": round(a.latency_s * 1000, 1),
        "wait_ms": round(a.wait_s * 1000, 1),
        "ttft_ms": round((a.wait_s + s.ttft_s) * 1000, 1),
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.completion_tokens,
        "decode_tokens_per_s": round(s.decode_tokens_per_s, 2),
        "finish_reason": s.finish_reason,
        "cache": a.cache,
        "energy_j": None, "energy": None,
    }
    if a.energy is not None:
        info["energy_j"] = round(a.energy.energy_j, 4)
        info["energy"] = "measured" if a.energy.measured else "estimated"
        info["energy_source"] = a.energy.source
    return info


class App:
    def __init__(self, settings: Settings, orchestrator: Orchestrator,
                 device_monitor: DeviceMonitor, in_flight: Callable[[], int] = lambda: 0,
                 reload: Callable[[], Awaitable[dict[str, Any]]] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 calibrator: Calibrator | None = None) -> None:
        self.orch, self._clock, self.calibrator = orchestrator, clock, calibrator
        self.device_monitor, self.in_flight, self._reload = device_monitor, in_flight, reload
        self.admission = Admission(settings.profile.runtime.max_parallel,
                                   settings.profile.server.max_queue)
        self.apply(settings)
        self.started_s = clock()
        self.requests_total = 0
        self.routes: dict[tuple[str, str], Route] = {
            ("GET", "/health"): self.health,
            ("GET", "/v1/models"): self.models,
            ("POST", "/v1/chat/completions"): self.chat,
            ("POST", "/v1/completions"): self.completions,
            ("GET", "/calm/status"): self.status,
            ("GET", "/metrics"): self.metrics,
            ("POST", "/calm/feedback"): self.feedback,
            ("POST", "/calm/budget"): self.budget,
            ("POST", "/calm/reload"): self.reload,
        }

    def apply(self, settings: Settings) -> None:
        """(Re)configure from settings: at start and on reload. Raises AccessError when an
        allow-list names nobody who exists (before anything changed)."""
        srv = settings.profile.server
        access = AccessPolicy.from_names(srv.allow_users, srv.allow_groups, srv.admin_groups,
                                         tcp_unauthenticated=srv.tcp_allow_unauthenticated)
        self.settings, self.access = settings, access
        self.limits = ApiLimits(default_max_tokens=srv.default_max_tokens,
                                max_tokens_limit=srv.max_tokens_limit)
        self.admission.capacity = srv.max_queue
        self._shared_gids = group_ids("cache.shared_groups",
                                      settings.profile.cache.shared_groups)
        self._tcp_host = srv.tcp.rpartition(":")[0].strip("[]").lower()
        self._tcp_any_ip = srv.tcp_allow_remote  # exposed on purpose: any IP as Host

    # -- the gate (server.http.Gate): refusals before a peer costs anything ----------------

    def connection(self, peer: Peer | None, tcp: bool) -> Response | None:
        """At accept: peers the allow-lists refuse never get to send a request."""
        refused = self.access.refuse(peer, admin=False)
        if refused is None:
            return None
        self.orch.metrics.requests.inc(1, route="connection", status="403")
        return error_response(403, refused, code="forbidden", type_="permission_error")

    def head(self, request: Request) -> Response | None:
        """After the head, before the body: admin routes for non-admins, and over TCP
        what a web page could send (Origin, a foreign Host, a non-JSON POST)."""
        route, path = self._route(request)
        path = path if route is not None else "other"
        refused = self._refusal(request, path)
        if refused is not None:
            self.orch.metrics.requests.inc(1, route=path, status=str(refused.status))
        return refused

    def _refusal(self, request: Request, path: str) -> Response | None:
        """A browser can reach a loopback TCP port: over TCP, refuse what only a web page
        sends (an Origin header; a Host that is not this machine, i.e. DNS rebinding) and
        POSTs that are not JSON (a cross-site form or text/plain POST needs no preflight).
        Then who may do what (server.access)."""
        h = request.headers
        forbidden: str | None = None
        if request.tcp and "origin" in h:
            forbidden = "requests from web pages (an Origin header) are refused over TCP"
        elif request.tcp and not self._loopback_host(h.get("host", "")):
            forbidden = "the Host header must name this machine (localhost or a loopback " \
                        "address)"
        else:
            forbidden = self.access.refuse(request.peer, admin=path in _ADMIN_ROUTES)
        if forbidden is not None:
            return error_response(403, forbidden, code="forbidden", type_="permission_error")
        media = h.get("content-type", "").split(";")[0].strip().lower()
        if request.tcp and request.method == "POST" and media != "application/json":
            return error_response(415, "POST bodies must be Content-Type: application/json",
                                  code="unsupported_media_type")
        return None

    def _loopback_host(self, host: str) -> bool:
        """Whether a Host header names this machine: localhost, a loopback address, the
        address TCP is bound to, or (with tcp_allow_remote) any address literal."""
        name = host.strip().lower()
        if name.startswith("["):
            name = name[1:].partition("]")[0]
        elif name.count(":") == 1:
            name = name.partition(":")[0]
        if not name:
            return False
        if name in _LOOPBACK_NAMES or name == self._tcp_host:
            return True
        try:  # DNS rebinding needs a name: an address literal is never a foreign site
            return ipaddress.ip_address(name).is_loopback or self._tcp_any_ip
        except ValueError:
            return False

    def cache_scope(self, peer: Peer | None) -> str:
        """Whose cached answers a peer may be given: those of a shared group it is in
        (cache.shared_groups, in their order), else its own uid's. TCP peers, who have no
        credentials, share one scope."""
        if peer is None:
            return "tcp"
        for gid in self._shared_gids:
            if gid in peer.groups:
                return f"gid:{gid}"
        return f"uid:{peer.uid}"

    def _route(self, request: Request) -> tuple[Route | None, str]:
        """The route for a request and its label (the path pattern, for metrics)."""
        path = request.path.rstrip("/") or "/"
        route = self.routes.get((request.method, path))
        if route is None and path.startswith("/calm/models/"):
            route, path = self.model_action, "/calm/models/{name}/{action}"
        return route, path

    async def __call__(self, request: Request) -> Response:
        route, path = self._route(request)
        if route is None:
            if any(p == path for _, p in self.routes):
                response = error_response(405, f"method {request.method} not allowed on "
                                          f"{request.path}")
            else:
                response = error_response(404, f"no route {request.method} {request.path}",
                                          code="not_found")
            path = "other"
        else:
            try:
                refused = self.access.refuse(request.peer, admin=path in _ADMIN_ROUTES)
                if refused is not None:
                    raise ApiError(403, refused, code="forbidden", type_="permission_error")
                response = await route(request)
            except ApiError as e:
                response = error_response(e.status, e.message, type_=e.type_, code=e.code,
                                          param=e.param, headers=e.headers)
        self.orch.metrics.requests.inc(1, route=path, status=str(response.status))
        return response

    # -- routes ---------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return Response.json(200, {"status": "ok", "version": __version__})

    async def models(self, request: Request) -> Response:
        now = int(time.time())
        data: list[dict[str, Any]] = [{"id": "auto", "object": "model", "created": now,
                                       "owned_by": "calm-edge"}]
        for name, slot in self.orch.residency.slots.items():
            data.append({"id": name, "object": "model", "created": now,
                         "owned_by": "calm-edge",
                         "calm": {"state": slot.state.value,
                                  "file": slot.file_status.value,
                                  "format": slot.spec.format, "tags": list(slot.spec.tags)}})
        return Response.json(200, {"object": "list", "data": data})

    async def metrics(self, request: Request) -> Response:
        self._refresh_gauges()
        return Response(200, self.orch.metrics.render().encode(),
                        content_type="text/plain; version=0.0.4; charset=utf-8")

    def _refresh_gauges(self) -> None:
        m, res, orch = self.orch.metrics, self.orch.residency, self.orch
        m.budget.set(res.budget_bytes)
        m.budget_used.set(res.used_bytes())
        m.in_flight.set(self.in_flight())
        for name, slot in res.slots.items():
            m.resident.set(float(slot.state is ModelState.READY), model=name)
            m.model_bytes.set(slot.charged_bytes, model=name)
            m.degraded.set(float(orch.knowledge.health_of(name).degraded), model=name)
            m.loads.set_total(slot.loads, model=name)
            m.unloads.set_total(slot.unloads, model=name)
            m.evictions.set_total(slot.evictions, model=name)
            m.load_seconds.set_total(slot.load_seconds_total, model=name)
        if orch.cache is not None:
            m.cache_entries.set(orch.cache.status()["entries"])  # type: ignore[arg-type]
        dev = self.device()
        m.rss.set(dev.rss_bytes)
        if dev.max_temp_c is not None:
            m.temperature.set(dev.max_temp_c)
        m.power.clear()
        for rail, mw in dev.power_rails_mw.items():
            m.power.set(mw, rail=rail)
        if dev.power_mw is not None:
            m.power.set(dev.power_mw, rail="total")
        if orch.energy is not None:
            total = orch.energy.total_energy()
            m.board_energy.set_total(total.energy_mj / 1000.0,
                                     kind="measured" if total.measured else "estimated")

    def device(self) -> DeviceObservation:
        res = self.orch.residency
        return self.device_monitor.observe(
            budget_bytes=res.budget_bytes, used_bytes=res.used_bytes(),
            resident=tuple(res.resident()), in_flight=self.in_flight())

    async def model_action(self, request: Request) -> Response:
        """POST /calm/models/{name}/{load|unload|pin|unpin}."""
        parts = request.path.strip("/").split("/")
        if len(parts) != 4 or parts[3] not in ("load", "unload", "pin", "unpin"):
            raise ApiError(404, f"no route {request.method} {request.path} (actions: load, "
                           "unload, pin, unpin)", code="not_found")
        if request.method != "POST":
            raise ApiError(405, f"method {request.method} not allowed on {request.path}")
        name, action = parts[2], parts[3]
        res = self.orch.residency
        if name not in res.slots:  # only fleet names: a request never names a file
            raise ApiError(404, f"model {name!r} does not exist", param="name",
                           code="model_not_found")
        try:
            if action in ("load", "pin"):
                await res.ensure_ready(name)
            if action == "pin":
                res.pin(name, True)
            elif action == "unpin":
                res.pin(name, False)
            elif action == "unload" and not await res.unload(name):
                slot = res.slots[name]
                if slot.state is ModelState.READY:
                    raise ApiError(409, f"model {name!r} is in use; retry when it is idle",
                                   code="model_busy", headers={"Retry-After": "1"})
        except ModelUnavailable as e:
            raise ApiError(503, str(e), code="model_unavailable",
                           headers={"Retry-After": str(max(1, round(e.retry_after_s or 5)))}
                           ) from None
        slot = res.slots[name]
        return Response.json(200, {"model": name, "action": action, "state": slot.state.value,
                                   "pinned": slot.pinned, "used_bytes": res.used_bytes(),
                                   "budget_bytes": res.budget_bytes})

    async def reload(self, request: Request) -> Response:
        """POST /calm/reload: what SIGHUP does (re-read the profile and the fleet)."""
        if self._reload is None:
            raise ApiError(501, "reload is not available in this daemon", code="unsupported")
        result = await self._reload()
        return Response.json(200 if result.get("ok") else 400, result)

    async def budget(self, request: Request) -> Response:
        """POST /calm/budget {"ram_budget": "1G" | bytes}: change the RAM budget now."""
        body = parse_json_body(request.body)
        raw = body.get("ram_budget")
        try:
            if isinstance(raw, bool) or not isinstance(raw, (int, str)):
                raise ValueError("give a size like '1G' or a number of bytes")
            value = raw if isinstance(raw, int) else parse_size_bytes(raw)
            if value < 16 << 20:
                raise ValueError("must be at least 16 MiB")
        except ValueError as e:
            raise ApiError(400, f"'ram_budget': {e}", param="ram_budget") from None
        evicted = await self.orch.residency.set_budget(value)
        res = self.orch.residency
        return Response.json(200, {"budget_bytes": res.budget_bytes,
                                   "used_bytes": res.used_bytes(), "evicted": evicted,
                                   "resident": res.resident()})

    async def feedback(self, request: Request) -> Response:
        body = parse_json_body(request.body)
        rid = body.get("request_id")
        if not isinstance(rid, str) or not rid:
            raise ApiError(400, "'request_id' must be the id of an answered request",
                           param="request_id")
        if "score" in body:
            score = body["score"]
            if isinstance(score, bool) or not isinstance(score, (int, float)) \
                    or not 0 <= score <= 1:
                raise ApiError(400, "'score' must be a number in [0, 1]", param="score")
        elif isinstance(body.get("pass"), bool):
            score = 1.0 if body["pass"] else 0.0
        else:
            raise ApiError(400, "give 'score' (0..1) or 'pass' (true/false)", param="score")
        try:
            result = await self.orch.feedback(rid, float(score))
        except FeedbackError as e:
            raise ApiError(e.status, str(e), param="request_id") from None
        return Response.json(200, result)

    async def status(self, request: Request) -> Response:
        res = self.orch.residency
        now = self._clock()
        models = []
        for name, slot in res.slots.items():
            models.append({
                "name": name, "state": slot.state.value, "file": slot.file_status.value,
                "unavailable": slot.unavailable_reason(now),
                "estimated_bytes": slot.estimated_bytes, "measured_bytes": slot.measured_bytes,
                "charged_bytes": slot.charged_bytes, "memory_source": slot.memory_source,
                "pinned": slot.pinned,
                "in_use": slot.in_use, "loads": slot.loads, "unloads": slot.unloads,
                "evictions": slot.evictions, "prefetch_loads": slot.prefetch_loads,
                "prefetch_warms": slot.prefetch_warms, "last_load_s": slot.last_load_s,
                "load_seconds_total": round(slot.load_seconds_total, 3),
                "forecast_share": round(res.forecast.get(name, 0.0), 3),
                "last_error": slot.last_error,
            })
        p = self.settings.profile
        # Other users' request ids, domains and latencies are for admins only.
        recent = self.orch.recent_decisions() if self.access.is_admin(request.peer) else \
            self.orch.recent_decisions_of(None if request.peer is None else request.peer.uid)
        return Response.json(200, {
            "version": __version__,
            "uptime_s": round(now - self.started_s, 1),
            "profile": {"name": p.device.name, "source": self.settings.profile_source},
            "socket": str(self.settings.socket_path),
            "fleet": str(self.orch.fleet.source),
            "default_model": self.orch.fleet.default_model,
            "memory": {"budget_bytes": res.budget_bytes, "used_bytes": res.used_bytes(),
                       "resident": res.resident()},
            "requests_total": self.requests_total,
            "models": models,
            "classifier": {"runtime": self.orch.classifier.runtime},
            "cache": self.orch.cache.status() if self.orch.cache else None,
            "domain_mix": {d: round(v, 3) for d, v in self.orch.domain_mix.items()},
            "device": dataclasses.asdict(self.device()),
            "energy": self.energy_status(),
            "knowledge": self.orch.store.status() if self.orch.store else None,
            "estimates": self.orch.estimates_table(),
            "health": self.orch.health_table(),
            "calibration": self.calibration_status(),
            "recent_decisions": recent[:10],
        })

    def calibration_status(self) -> dict[str, Any] | None:
        if self.calibrator is None:
            return None
        cur = self.calibrator.current
        return {"device": self.calibrator.identity.to_status(),
                "auto": self.settings.profile.calibration.auto,
                "running": None if cur is None else {
                    "model": cur.model, "phase": cur.phase, "done": cur.done,
                    "total": cur.total, "detail": cur.detail},
                "models": self.orch.calibration_table()}

    def energy_status(self) -> dict[str, Any] | None:
        integ = self.orch.energy
        if integ is None:
            return None
        from calm_edge.energy import describe_reader

        total = integ.total_energy()
        return {**describe_reader(integ.reader), "total_j": round(total.energy_mj / 1000, 3),
                "sample_hz": integ.sample_hz, "samples": integ.samples_taken}

    async def chat(self, request: Request) -> Response:
        return await self._complete(parse_chat(parse_json_body(request.body), self.limits),
                                    "chatcmpl", request)

    async def completions(self, request: Request) -> Response:
        return await self._complete(
            parse_completion(parse_json_body(request.body), self.limits), "cmpl", request)

    # -- generation -----------------------------------------------------------------------

    async def _complete(self, call: CompletionCall, prefix: str, request: Request,
                        ) -> Response:
        if call.model == "default":
            call = dataclasses.replace(call, model=self.orch.fleet.default_model)
        if call.model != "auto" and self.orch.fleet.get(call.model) is None:
            raise ApiError(404, f"model {call.model!r} does not exist (GET /v1/models lists "
                           "them)", param="model", code="model_not_found")
        self.requests_total += 1
        rid = f"{prefix}-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        owner = None if request.peer is None else request.peer.uid
        scope = self.cache_scope(request.peer)
        hit = self.orch.cached(call.model, call.request, call.calm.mode, call.kind, rid,
                               owner=owner, cache_scope=scope) if call.calm.cache else None
        if hit is not None:  # answered from memory: no queue, no deadline
            return await self._respond(call, rid, created, hit.model, _replay(hit), None,
                                       request)
        # Admission: wait for a place (bounded queue, by priority) within the deadline.
        deadline_s = (call.calm.slo_ms / 1000.0 if call.calm.slo_ms is not None
                      else self.settings.profile.server.request_timeout_s)
        work = _Work(Abort(), contextlib.AsyncExitStack(), time.monotonic() + deadline_s)
        try:
            await self._admit(work, call.calm.priority, request.peer_gone)
            try:
                route = self.orch.route(call.model, call.request, call.calm.mode,
                                        call.calm.slo_ms, call.calm.domain, call.calm.cache,
                                        owner=owner, cache_scope=scope)
            except NoModelAvailable as e:
                raise ApiError(503, str(e), code="model_unavailable") from None
            work.watcher = asyncio.get_running_loop().create_task(
                _watch(request, work.abort, work.deadline_s - time.monotonic()))
            gen = self.orch.run(route, call.request, rid, call.kind, work.abort)
            return await self._respond(call, rid, created, route.plan.model, gen, work,
                                       request)
        except BaseException:
            await work.close()
            raise

    async def _admit(self, work: _Work, priority: int, peer_gone: asyncio.Event) -> None:
        """Take a place in the admission queue, or fail with 429 (full), 504 (deadline)."""
        enter = asyncio.ensure_future(work.stack.enter_async_context(
            self.admission.admit(priority)))
        gone = asyncio.ensure_future(peer_gone.wait())
        try:
            done, _ = await asyncio.wait({enter, gone}, timeout=max(
                work.deadline_s - time.monotonic(), 0), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if enter in done:
            failure = enter.exception()
            if isinstance(failure, Overloaded):
                raise ApiError(429, str(failure), code="overloaded",
                               headers={"Retry-After": str(round(failure.retry_after_s))})
            if failure is not None:
                raise failure
            return
        enter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await enter
        if peer_gone.is_set():
            raise ApiError(499, "client closed the request while it was queued",
                           code="client_closed")
        raise ApiError(504, "deadline exceeded while waiting in the request queue",
                       code="deadline_exceeded")

    async def _respond(self, call: CompletionCall, rid: str, created: int, planned: str,
                       gen: AsyncGenerator[str | Answer, None], work: _Work | None,
                       request: Request) -> Response:
        try:
            first = await _first(gen)
        except BaseException:
            await gen.aclose()
            raise
        if call.stream:  # the deadline also bounds the time the stream's writes wait
            return Response(200, content_type="text/event-stream", stream=self._sse_stream(
                call, rid, created, planned, first, gen, work, request),
                deadline_s=None if work is None else work.deadline_s)
        try:
            parts: list[str] = []
            item = first
            while not isinstance(item, Answer):
                parts.append(item)
                item = await _first(gen)
        finally:
            await gen.aclose()
            if work is not None:
                await work.close()
        if work is not None and work.abort.reason == "deadline":
            raise ApiError(504, f"deadline exceeded: generation stopped after "
                           f"{item.stats.completion_tokens} tokens", code="deadline_exceeded")
        self._log(rid, item)
        return Response.json(200, full_response(call, rid, created, item.model, "".join(parts),
                                                item.stats, calm_info(rid, item)))

    async def _sse_stream(self, call: CompletionCall, rid: str, created: int, planned: str,
                          first: str | Answer, gen: AsyncGenerator[str | Answer, None],
                          work: _Work | None, request: Request) -> AsyncIterator[bytes]:
        """Closed early (aclose) when the client goes or is dropped: the generation then
        stops, is recorded with why (work.abort), and its places are released."""
        model = first.model if isinstance(first, Answer) else planned
        try:
            if call.kind == "chat":
                yield _sse(stream_chunk(call, rid, created, model, first=True))
            item = first
            while not isinstance(item, Answer):
                yield _sse(stream_chunk(call, rid, created, model, text=item))
                item = await _first(gen)
            if work is not None and work.abort.reason == "deadline":
                yield _sse({"error": {"message": "deadline exceeded: generation stopped "
                                      f"after {item.stats.completion_tokens} tokens",
                                      "type": "server_error", "code": "deadline_exceeded"}})
                return
            self._log(rid, item)
            final = stream_chunk(call, rid, created, item.model, stats=item.stats)
            final["calm"] = calm_info(rid, item)
            if call.include_usage:
                final["usage"] = usage(item.stats)
            yield _sse(final)
            yield b"data: [DONE]\n\n"
        except Exception as e:  # mid-stream failure: tell the client in-band
            err = e if isinstance(e, ApiError) else _to_api_error(e)
            if err.status >= 500:
                log.error("%s failed mid-stream: %s", rid, err.message)
            yield _sse({"error": {"message": err.message, "type": "server_error",
                                  "code": err.code}})
        finally:
            if work is not None and request.dropped is not None:
                work.abort.set(request.dropped)  # before the close records the request
            await gen.aclose()
            if work is not None:
                await work.close()

    def _log(self, rid: str, a: Answer) -> None:
        s = a.stats
        log.info("%s model=%s prompt=%d completion=%d latency=%.0fms ttft=%.0fms tok/s=%.1f "
                 "finish=%s", rid, a.model, s.prompt_tokens, s.completion_tokens,
                 a.latency_s * 1000, (a.wait_s + s.ttft_s) * 1000, s.decode_tokens_per_s,
                 s.finish_reason)


@dataclass
class _Work:
    """One admitted generation: its stop signal, its admission place, its deadline."""

    abort: Abort
    stack: contextlib.AsyncExitStack
    deadline_s: float  # time.monotonic()
    watcher: asyncio.Task[None] | None = None

    async def close(self) -> None:
        if self.watcher is not None:
            self.watcher.cancel()
        await self.stack.aclose()


async def _watch(request: Request, abort: Abort, timeout_s: float) -> None:
    """Stop the generation when the client goes away (or was dropped) or the deadline
    passes."""
    try:
        await asyncio.wait_for(request.peer_gone.wait(), max(timeout_s, 0.0))
        abort.set(request.dropped or "disconnected")
    except (asyncio.TimeoutError, TimeoutError):
        abort.set("deadline")


async def _replay(answer: Answer) -> AsyncGenerator[str | Answer, None]:
    """A cache hit, shaped like a generation: the whole text, then the Answer."""
    if answer.text:
        yield answer.text
    yield answer


async def _first(gen: AsyncGenerator[str | Answer, None]) -> str | Answer:
    """Next item, with generation errors mapped to ApiError."""
    try:
        return await gen.__anext__()
    except StopAsyncIteration:
        raise ApiError(500, "generation ended without a result") from None
    except ApiError:
        raise
    except Exception as e:
        raise _to_api_error(e) from e


def _to_api_error(e: BaseException) -> ApiError:
    if isinstance(e, ContextOverflowError):
        return ApiError(400, f"This model's maximum context length is {e.n_ctx} tokens; the "
                        f"prompt has {e.prompt_tokens}.", code="context_length_exceeded",
                        param="messages")
    if isinstance(e, AllCandidatesFailed):
        return ApiError(503, str(e), code="model_unavailable", headers={"Retry-After": "5"})
    log.error("generation failed: %s: %s", type(e).__name__, e)
    return ApiError(500, f"generation failed: {type(e).__name__}: {e}")
