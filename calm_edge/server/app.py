"""HTTP routes: a thin adapter between the socket and the daemon's parts.

Each handler parses and validates (server.api), calls one method of the part that owns the
matter (`Orchestrator.serve` for completions, the scheduler for residency by hand, the
orchestrator for feedback), and writes the answer. Status and /metrics render a
`StatusView` the runtime assembles from its parts' snapshots. Every error is an
OpenAI-style JSON body with a fitting status; nothing here can stop the daemon.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

from calm_edge import __version__
from calm_edge.backends.base import ContextOverflowError, ModelState
from calm_edge.config import Settings, parse_budget
from calm_edge.events import Delta, Final
from calm_edge.execute import Abort, AllCandidatesFailed
from calm_edge.orchestrator import Answer, FeedbackError, Orchestrator, ServeRequest
from calm_edge.plan import BudgetExhausted, NoModelAvailable
from calm_edge.quotas import Client, cap_mode
from calm_edge.residency import ModelUnavailable
from calm_edge.scheduler import Cancelled, Overloaded, OverQuota, QueueTimeout, Scheduler
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
from calm_edge.server.gate import RequestGate, route_label
from calm_edge.server.http import Request, Response, error_response
from calm_edge.status import StatusView, refresh_gauges, status_document

log = logging.getLogger("calm_edge.app")

Handler = Callable[[Request], Awaitable[Response]]
Events = AsyncGenerator[Delta | Final[Answer], None]


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
        "cascade": a.cascade,
        "energy_j": None, "energy": None,
    }
    if a.energy is not None:
        info["energy_j"] = round(a.energy.energy_j, 4)
        info["energy"] = a.energy.kind
        info["energy_source"] = a.energy.source
    return info


class App:
    def __init__(self, settings: Settings, orchestrator: Orchestrator, scheduler: Scheduler,
                 status_view: Callable[[], StatusView],
                 reload: Callable[[], Awaitable[dict[str, Any]]] | None = None,
                 set_budget: Callable[[int], Awaitable[list[str]]] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`status_view` assembles the parts' snapshots; `reload` is what SIGHUP does;
        `set_budget` changes the RAM budget (the runtime remembers it across reloads)."""
        self.orch, self.scheduler, self._clock = orchestrator, scheduler, clock
        self._status_view, self._reload = status_view, reload
        self._set_budget = set_budget if set_budget is not None else scheduler.set_budget
        self.started_s = clock()
        self.requests_total = 0
        self.routes: dict[tuple[str, str], Handler] = {
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
        self.gate = RequestGate(settings, self._count, self._label)
        self.apply(settings)

    def apply(self, settings: Settings) -> None:
        """(Re)configure from settings: at start and on reload. Raises AccessError when an
        allow-list names nobody who exists (before anything changed)."""
        self.gate.apply(settings)
        self.settings = settings
        srv = settings.profile.server
        self.limits = ApiLimits(default_max_tokens=srv.default_max_tokens,
                                max_tokens_limit=srv.max_tokens_limit)

    def _count(self, route: str, status: int) -> None:
        self.orch.metrics.requests.inc(1, route=route, status=str(status))

    def _label(self, request: Request) -> str:
        return route_label(request, lambda m, p: (m, p) in self.routes or any(
            q == p for _, q in self.routes))

    async def __call__(self, request: Request) -> Response:
        label = self._label(request)
        path = request.path.rstrip("/") or "/"
        handler = self.routes.get((request.method, path))
        if handler is None and label == "/calm/models/{name}/{action}":
            handler = self.model_action
        if handler is None:
            if label != "other":
                response = error_response(405, f"method {request.method} not allowed on "
                                          f"{request.path}")
            else:
                response = error_response(404, f"no route {request.method} {request.path}",
                                          code="not_found")
            label = "other"
        else:
            try:
                refused = self.gate.refuse(request, label)
                if refused is not None:
                    raise ApiError(403, refused, code="forbidden", type_="permission_error")
                response = await handler(request)
            except ApiError as e:
                response = error_response(e.status, e.message, type_=e.type_, code=e.code,
                                          param=e.param, headers=e.headers)
        self._count(label, response.status)
        return response

    # -- routes ---------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return Response.json(200, {"status": "ok", "version": __version__})

    async def models(self, request: Request) -> Response:
        now = int(time.time())
        data: list[dict[str, Any]] = [{"id": "auto", "object": "model", "created": now,
                                       "owned_by": "calm-edge"}]
        for m in self._status_view().residency.models:
            data.append({"id": m["name"], "object": "model", "created": now,
                         "owned_by": "calm-edge",
                         "calm": {"state": m["state"], "file": m["file"],
                                  "format": m["format"], "tags": m["tags"],
                                  "origin": m["origin"]}})
        return Response.json(200, {"object": "list", "data": data})

    async def metrics(self, request: Request) -> Response:
        refresh_gauges(self.orch.metrics, self._status_view())
        return Response(200, self.orch.metrics.render().encode(),
                        content_type="text/plain; version=0.0.4; charset=utf-8")

    async def status(self, request: Request) -> Response:
        view = self._status_view()
        decisions = list(view.loop.decisions)
        clients = list(view.scheduler.clients)
        if not self.gate.is_admin(request.peer):  # others' requests are for admins only
            uid = None if request.peer is None else request.peer.uid
            decisions = [d for d in decisions if uid is not None and d["uid"] == uid]
            mine = self.gate.client(request.peer, request.remote).key
            clients = [c for c in clients if c["key"] == mine]
        return Response.json(200, status_document(
            view, version=__version__, uptime_s=self._clock() - self.started_s,
            requests_total=self.requests_total, decisions=decisions, clients=clients))

    async def model_action(self, request: Request) -> Response:
        """POST /calm/models/{name}/{load|unload|pin|unpin}."""
        parts = request.path.strip("/").split("/")
        if len(parts) != 4 or parts[3] not in ("load", "unload", "pin", "unpin"):
            raise ApiError(404, f"no route {request.method} {request.path} (actions: load, "
                           "unload, pin, unpin)", code="not_found")
        if request.method != "POST":
            raise ApiError(405, f"method {request.method} not allowed on {request.path}")
        name, action = parts[2], parts[3]
        if self.orch.fleet.get(name) is None:  # only fleet names: a request names no file
            raise ApiError(404, f"model {name!r} does not exist", param="name",
                           code="model_not_found")
        try:
            if action in ("load", "pin"):
                await self.scheduler.load(name)
            if action in ("pin", "unpin"):
                self.scheduler.pin(name, action == "pin")
            elif action == "unload" and not await self.scheduler.unload(name) \
                    and self.scheduler.state(name) is ModelState.READY:
                raise ApiError(409, f"model {name!r} is in use; retry when it is idle",
                               code="model_busy", headers={"Retry-After": "1"})
        except ModelUnavailable as e:
            raise ApiError(503, str(e), code="model_unavailable",
                           headers={"Retry-After": str(max(1, round(e.retry_after_s or 5)))}
                           ) from None
        except Overloaded as e:
            raise _overloaded(e) from None
        view = self._status_view().residency
        row = next(m for m in view.models if m["name"] == name)
        return Response.json(200, {"model": name, "action": action, "state": row["state"],
                                   "pinned": row["pinned"], "used_bytes": view.used_bytes,
                                   "budget_bytes": view.budget_bytes})

    async def reload(self, request: Request) -> Response:
        """POST /calm/reload: what SIGHUP does (re-read the profile and the fleet)."""
        if self._reload is None:
            raise ApiError(501, "reload is not available in this daemon", code="unsupported")
        result = await self._reload()
        return Response.json(200 if result.get("ok") else 400, result)

    async def budget(self, request: Request) -> Response:
        """POST /calm/budget {"ram_budget": "1G" | "60%" | bytes}: change the RAM budget
        now (it stays until the profile's own budget changes)."""
        raw = parse_json_body(request.body).get("ram_budget")
        try:
            if isinstance(raw, bool) or not isinstance(raw, (int, str)):
                raise ValueError("give a size like '1G', a share of memory like '60%', or a "
                                 "number of bytes")
            value = parse_budget(raw)
        except ValueError as e:
            raise ApiError(400, f"'ram_budget': {e}", param="ram_budget") from None
        evicted = await self._set_budget(value)
        view = self._status_view().residency
        return Response.json(200, {"budget_bytes": view.budget_bytes,
                                   "used_bytes": view.used_bytes, "evicted": evicted,
                                   "resident": list(view.resident)})

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
        deadline_s = self._clock() + (call.calm.slo_ms / 1000.0 if call.calm.slo_ms is not None
                                      else self.settings.profile.server.request_timeout_s)
        client = self.gate.client(request.peer, request.remote)
        mode, priority = self._within_quota(call, client)
        req = ServeRequest(
            rid=rid, kind=call.kind, model=call.model, request=call.request,
            mode=mode, slo_ms=call.calm.slo_ms, domain=call.calm.domain,
            use_cache=call.calm.cache, priority=priority, deadline_s=deadline_s,
            owner=None if request.peer is None else request.peer.uid,
            cache_scope=self.gate.cache_scope(request.peer, client, request.remote),
            client=client)
        abort = Abort()
        watcher = asyncio.get_running_loop().create_task(_watch(request, abort))
        events = self.orch.serve(req, abort)
        try:
            first = await _first(events)
        except BaseException:
            watcher.cancel()
            await events.aclose()
            raise
        if call.stream:  # the deadline also bounds the time the stream's writes wait
            return Response(200, content_type="text/event-stream", stream=self._sse_stream(
                call, rid, int(time.time()), first, events, abort, watcher, request),
                deadline_s=None if math.isinf(deadline_s) else deadline_s)
        try:
            parts: list[str] = []
            item = first
            while isinstance(item, Delta):
                parts.append(item.text)
                item = await _first(events)
        finally:
            watcher.cancel()
            await events.aclose()
        answer = item.value
        if abort.reason == "deadline":
            raise ApiError(504, f"deadline exceeded: generation stopped after "
                           f"{answer.stats.completion_tokens} tokens", code="deadline_exceeded")
        _log(rid, answer)
        return Response.json(200, full_response(call, rid, int(time.time()), answer.model,
                                                "".join(parts), answer.stats,
                                                calm_info(rid, answer)))

    def _within_quota(self, call: CompletionCall, client: Client) -> tuple[str | None, int]:
        """The request's mode and priority as its client's quota allows: the mode capped
        at the client's ceiling (the default mode too), the priority the client's, or
        lower if the request asks (never higher)."""
        lim = client.limits
        mode: str | None = call.calm.mode
        if lim.max_mode:
            mode = cap_mode(mode or self.settings.profile.qos.default_mode, lim.max_mode)
        asked = call.calm.priority
        if lim.priority is None:
            return mode, asked or 0
        return mode, lim.priority if asked is None else min(asked, lim.priority)

    async def _sse_stream(self, call: CompletionCall, rid: str, created: int,
                          first: Delta | Final[Answer], events: Events, abort: Abort,
                          watcher: asyncio.Task[None], request: Request,
                          ) -> AsyncIterator[bytes]:
        """Closed early (aclose) when the client goes or is dropped: the generation then
        stops, is recorded with why (abort), and its lease goes back."""
        model = first.value.model if isinstance(first, Final) else "auto"
        try:
            if call.kind == "chat":
                yield _sse(stream_chunk(call, rid, created, model, first=True))
            item = first
            while isinstance(item, Delta):
                yield _sse(stream_chunk(call, rid, created, model, text=item.text))
                item = await _first(events)
            answer = item.value
            if abort.reason == "deadline":
                yield _sse({"error": {"message": "deadline exceeded: generation stopped "
                                      f"after {answer.stats.completion_tokens} tokens",
                                      "type": "server_error", "code": "deadline_exceeded"}})
                return
            _log(rid, answer)
            final = stream_chunk(call, rid, created, answer.model, stats=answer.stats)
            final["calm"] = calm_info(rid, answer)
            if call.include_usage:
                final["usage"] = usage(answer.stats)
            yield _sse(final)
            yield b"data: [DONE]\n\n"
        except Exception as e:  # mid-stream failure: tell the client in-band
            err = e if isinstance(e, ApiError) else _to_api_error(e)
            if err.status >= 500:
                log.error("%s failed mid-stream: %s", rid, err.message)
            yield _sse({"error": {"message": err.message, "type": "server_error",
                                  "code": err.code}})
        finally:
            if request.dropped is not None:
                abort.set(request.dropped)  # before the close records the request
            watcher.cancel()
            await events.aclose()


def _log(rid: str, a: Answer) -> None:
    s = a.stats
    log.info("%s model=%s prompt=%d completion=%d latency=%.0fms ttft=%.0fms tok/s=%.1f "
             "finish=%s", rid, a.model, s.prompt_tokens, s.completion_tokens,
             a.latency_s * 1000, (a.wait_s + s.ttft_s) * 1000, s.decode_tokens_per_s,
             s.finish_reason)


async def _watch(request: Request, abort: Abort) -> None:
    """Stop the request when its client goes away (or was dropped)."""
    await request.peer_gone.wait()
    abort.set(request.dropped or "disconnected")


async def _first(events: Events) -> Delta | Final[Answer]:
    """Next event, with the daemon's errors mapped to ApiError."""
    try:
        return await events.__anext__()
    except StopAsyncIteration:
        raise ApiError(500, "generation ended without a result") from None
    except ApiError:
        raise
    except Exception as e:
        raise _to_api_error(e) from e


def _overloaded(e: Overloaded) -> ApiError:
    retry = {"Retry-After": str(max(1, math.ceil(e.retry_after_s)))}
    if isinstance(e, OverQuota):  # the quota is named in the message and in `param`
        return ApiError(429, str(e), code="quota_exceeded", type_="rate_limit_error",
                        param=e.field, headers=retry)
    return ApiError(429, str(e), code="overloaded", headers=retry)


def _to_api_error(e: BaseException) -> ApiError:
    if isinstance(e, Overloaded):
        return _overloaded(e)
    if isinstance(e, QueueTimeout):
        return ApiError(504, "deadline exceeded while waiting in the request queue",
                        code="deadline_exceeded")
    if isinstance(e, Cancelled):
        return ApiError(499, "client closed the request while it was queued",
                        code="client_closed")
    if isinstance(e, BudgetExhausted):  # [energy] on_exhausted = "refuse"
        retry = e.retry_after_s if e.retry_after_s is not None else 60.0
        return ApiError(503, str(e), code="energy_budget_exhausted",
                        headers={"Retry-After": str(max(1, math.ceil(retry)))})
    if isinstance(e, NoModelAvailable):
        return ApiError(503, str(e), code="model_unavailable")
    if isinstance(e, ContextOverflowError):
        return ApiError(400, f"This model's maximum context length is {e.n_ctx} tokens; the "
                        f"prompt has {e.prompt_tokens}.", code="context_length_exceeded",
                        param="messages")
    if isinstance(e, AllCandidatesFailed):
        return ApiError(503, str(e), code="model_unavailable", headers={"Retry-After": "5"})
    log.error("generation failed: %s: %s", type(e).__name__, e)
    return ApiError(500, f"generation failed: {type(e).__name__}: {e}")

