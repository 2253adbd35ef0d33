"""HTTP routes: OpenAI-compatible completions and models, health and status.

Handlers validate input (server.api), ask the orchestrator, and shape responses. Every
error is an OpenAI-style JSON body with a fitting status; nothing here can stop the daemon.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

from calm_edge import __version__
from calm_edge.backends.base import ContextOverflowError
from calm_edge.config import Settings
from calm_edge.execute import AllCandidatesFailed
from calm_edge.orchestrator import Answer, Orchestrator
from calm_edge.plan import NoModelAvailable
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

log = logging.getLogger("calm_edge.app")

Route = Callable[[Request], Awaitable[Response]]


def _sse(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() \
        + b"\n\n"


def calm_info(rid: str, answer: Answer) -> dict[str, Any]:
    s = answer.stats
    return {
        "request_id": rid,
        "model": answer.model,
        "reason": answer.reason,
        "failed": [{"model": a.model, "error": a.error} for a in answer.failed_attempts],
        "latency_ms": round(answer.latency_s * 1000, 1),
        "wait_ms": round(answer.wait_s * 1000, 1),
        "ttft_ms": round((answer.wait_s + s.ttft_s) * 1000, 1),
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.completion_tokens,
        "decode_tokens_per_s": round(s.decode_tokens_per_s, 2),
        "finish_reason": s.finish_reason,
    }


class App:
    def __init__(self, settings: Settings, orchestrator: Orchestrator,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings, self.orch, self._clock = settings, orchestrator, clock
        srv = settings.profile.server
        self.limits = ApiLimits(default_max_tokens=srv.default_max_tokens,
                                max_tokens_limit=srv.max_tokens_limit)
        self.started_s = clock()
        self.requests_total = 0
        self.routes: dict[tuple[str, str], Route] = {
            ("GET", "/health"): self.health,
            ("GET", "/v1/models"): self.models,
            ("POST", "/v1/chat/completions"): self.chat,
            ("POST", "/v1/completions"): self.completions,
            ("GET", "/calm/status"): self.status,
        }

    async def __call__(self, request: Request) -> Response:
        route = self.routes.get((request.method, request.path.rstrip("/") or "/"))
        if route is None:
            if any(path == request.path for _, path in self.routes):
                return error_response(405, f"method {request.method} not allowed on "
                                      f"{request.path}")
            return error_response(404, f"no route {request.method} {request.path}",
                                  code="not_found")
        try:
            return await route(request)
        except ApiError as e:
            return error_response(e.status, e.message, type_=e.type_, code=e.code,
                                  param=e.param, headers=e.headers)

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

    async def status(self, request: Request) -> Response:
        res = self.orch.residency
        now = self._clock()
        models = []
        for name, slot in res.slots.items():
            models.append({
                "name": name, "state": slot.state.value, "file": slot.file_status.value,
                "unavailable": slot.unavailable_reason(now),
                "estimated_bytes": slot.estimated_bytes, "measured_bytes": slot.measured_bytes,
                "in_use": slot.in_use, "loads": slot.loads, "unloads": slot.unloads,
                "last_load_s": slot.last_load_s, "last_error": slot.last_error,
            })
        p = self.settings.profile
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
        })

    async def chat(self, request: Request) -> Response:
        return await self._complete(parse_chat(parse_json_body(request.body), self.limits),
                                    "chatcmpl")

    async def completions(self, request: Request) -> Response:
        return await self._complete(
            parse_completion(parse_json_body(request.body), self.limits), "cmpl")

    # -- generation -----------------------------------------------------------------------

    async def _complete(self, call: CompletionCall, prefix: str) -> Response:
        if call.model != "auto" and self.orch.fleet.get(call.model) is None:
            raise ApiError(404, f"model {call.model!r} does not exist (GET /v1/models lists "
                           "them)", param="model", code="model_not_found")
        self.requests_total += 1
        rid = f"{prefix}-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        try:
            plan = self.orch.plan(call.model)
        except NoModelAvailable as e:
            raise ApiError(503, str(e), code="model_unavailable") from None
        gen = self.orch.run(plan, call.request)
        try:
            first = await _first(gen)
        except BaseException:
            await gen.aclose()
            raise
        if not call.stream:
            try:
                parts: list[str] = []
                item = first
                while not isinstance(item, Answer):
                    parts.append(item)
                    item = await _first(gen)
            finally:
                await gen.aclose()
            self._log(rid, item)
            return Response.json(200, full_response(call, rid, created, item.model,
                                                    "".join(parts), item.stats,
                                                    calm_info(rid, item)))
        return Response(200, content_type="text/event-stream",
                        stream=self._sse_stream(call, rid, created, plan.model, first, gen))

    async def _sse_stream(self, call: CompletionCall, rid: str, created: int, planned: str,
                          first: str | Answer, gen: AsyncGenerator[str | Answer, None],
                          ) -> AsyncIterator[bytes]:
        model = first.model if isinstance(first, Answer) else planned
        try:
            if call.kind == "chat":
                yield _sse(stream_chunk(call, rid, created, model, first=True))
            item = first
            while not isinstance(item, Answer):
                yield _sse(stream_chunk(call, rid, created, model, text=item))
                item = await _first(gen)
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
            await gen.aclose()

    def _log(self, rid: str, a: Answer) -> None:
        s = a.stats
        log.info("%s model=%s prompt=%d completion=%d latency=%.0fms ttft=%.0fms tok/s=%.1f "
                 "finish=%s", rid, a.model, s.prompt_tokens, s.completion_tokens,
                 a.latency_s * 1000, (a.wait_s + s.ttft_s) * 1000, s.decode_tokens_per_s,
                 s.finish_reason)


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
