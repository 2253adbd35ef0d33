"""OpenAI-compatible request validation and response bodies. Pure functions.

Unknown fields are ignored (as OpenAI-compatible servers commonly do, so newer clients
keep working); fields we know but cannot honour (n > 1, tools, logprobs, non-text
response formats, non-text content) are rejected with 400 naming the parameter.
Extensions live under `calm`: {"mode", "slo_ms", "domain", "cache"}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from calm_edge.backends.base import ChatMessage, GenerationRequest, GenerationStats, SamplingParams
from calm_edge.config import MODES, Mode
from calm_edge.domains import DOMAINS, Domain


class ApiError(Exception):
    """A request the API refuses; rendered as an OpenAI-style error body."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, type_: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type_, self.headers = type_, headers or {}


@dataclass(frozen=True)
class ApiLimits:
    default_max_tokens: int = 256
    max_tokens_limit: int = 4096
    max_messages: int = 256
    max_stop: int = 16


@dataclass(frozen=True)
class CalmOptions:
    mode: Mode | None = None
    slo_ms: float | None = None
    domain: Domain | None = None
    cache: bool = True
    priority: int | None = None  # admission order: higher first (-10..10); None: not given


@dataclass(frozen=True)
class CompletionCall:
    kind: Literal["chat", "completion"]
    model: str
    request: GenerationRequest
    stream: bool
    include_usage: bool
    calm: CalmOptions


def parse_json_body(body: bytes) -> dict[str, Any]:
    if not body:
        raise ApiError(400, "request body is empty; expected a JSON object")
    try:
        data = json.loads(body)
    except UnicodeDecodeError:
        raise ApiError(400, "request body is not valid UTF-8") from None
    except RecursionError:
        raise ApiError(400, "request body nests too deeply") from None
    except ValueError as e:
        raise ApiError(400, f"request body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    return data


def _text(value: Any, param: str, *, allow_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise ApiError(400, f"'{param}' must be a string", param=param)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, f"'{param}' is not valid Unicode (lone surrogate)",
                       param=param) from None
    if "\x00" in value:
        raise ApiError(400, f"'{param}' contains a NUL character", param=param)
    if not allow_empty and not value:
        raise ApiError(400, f"'{param}' must not be empty", param=param)
    return value


def _number(body: dict[str, Any], key: str, lo: float, hi: float, default: float | None,
            *, integer: bool = False, param: str | None = None) -> Any:
    value = body.get(key)
    name = param or key
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            integer and not isinstance(value, int)):
        kind = "an integer" if integer else "a number"
        raise ApiError(400, f"'{name}' must be {kind}", param=name)
    if not lo <= value <= hi:
        raise ApiError(400, f"'{name}' must be between {lo:g} and {hi:g}, got {value}",
                       param=name)
    return value


def _content(value: Any, param: str) -> str:
    if isinstance(value, str):
        return _text(value, param)
    if isinstance(value, list):
        texts = []
        for i, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise ApiError(400, f"'{param}[{i}]': only text content parts are supported",
                               param=f"{param}[{i}]")
            texts.append(_text(part.get("text"), f"{param}[{i}].text"))
        return "".join(texts)
    raise ApiError(400, f"'{param}' must be a string or a list of text parts", param=param)


def _messages(value: Any, limits: ApiLimits) -> tuple[ChatMessage, ...]:
    if not isinstance(value, list) or not value:
        raise ApiError(400, "'messages' must be a non-empty list", param="messages")
    if len(value) > limits.max_messages:
        raise ApiError(400, f"'messages' has {len(value)} entries; the limit is "
                       f"{limits.max_messages}", param="messages")
    out = []
    for i, m in enumerate(value):
        p = f"messages[{i}]"
        if not isinstance(m, dict):
            raise ApiError(400, f"'{p}' must be an object", param=p)
        role = m.get("role")
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant"):
            raise ApiError(400, f"'{p}.role' must be system, developer, user or assistant",
                           param=f"{p}.role")
        content = m.get("content")
        if content is None and role == "assistant":
            content = ""
        out.append(ChatMessage(role, _content(content, f"{p}.content")))
    return tuple(out)


def _stop(value: Any, limits: ApiLimits) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or len(items) > limits.max_stop:
        raise ApiError(400, f"'stop' must be a string or a list of at most {limits.max_stop} "
                       "strings", param="stop")
    return tuple(_text(s, "stop", allow_empty=False) for s in items)


def _calm(value: Any) -> CalmOptions:
    if value is None:
        return CalmOptions()
    if not isinstance(value, dict):
        raise ApiError(400, "'calm' must be an object", param="calm")
    mode = value.get("mode")
    if mode is not None and mode not in MODES:
        raise ApiError(400, f"'calm.mode' must be one of {', '.join(MODES)}", param="calm.mode")
    domain = value.get("domain")
    if domain is not None and domain not in DOMAINS:
        raise ApiError(400, f"'calm.domain' must be one of {', '.join(DOMAINS)}",
                       param="calm.domain")
    slo = value.get("slo_ms")
    if slo is not None:
        slo = float(_number(value, "slo_ms", 1, 3.6e6, 0, param="calm.slo_ms"))
    cache = value.get("cache", True)
    if not isinstance(cache, bool):
        raise ApiError(400, "'calm.cache' must be true or false", param="calm.cache")
    priority = _number(value, "priority", -10, 10, None, integer=True,
                       param="calm.priority")
    return CalmOptions(mode=mode, slo_ms=slo, domain=domain, cache=cache, priority=priority)


def _common(body: dict[str, Any], limits: ApiLimits) -> tuple[str, SamplingParams, bool, bool,
                                                               CalmOptions]:
    model = body.get("model", "auto")
    model = "auto" if model in (None, "") else _text(model, "model")
    if body.get("n") not in (None, 1):
        raise ApiError(400, "only n = 1 is supported", param="n")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise ApiError(400, "logprobs are not supported", param="logprobs")
    for key in ("tools", "functions"):
        if body.get(key):
            raise ApiError(400, f"'{key}' (function calling) is not supported", param=key)
    rf = body.get("response_format")
    if rf is not None and (not isinstance(rf, dict) or rf.get("type", "text") != "text"):
        raise ApiError(400, "only response_format {'type': 'text'} is supported",
                       param="response_format")
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None \
        else "max_tokens"
    max_tokens = _number(body, key, 1, limits.max_tokens_limit, limits.default_max_tokens,
                         integer=True)
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                             or not 0 <= seed < 2**32):
        raise ApiError(400, "'seed' must be an integer in [0, 2^32)", param="seed")
    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=float(_number(body, "temperature", 0, 2, 0.7)),
        top_p=float(_number(body, "top_p", 0, 1, 0.95)),
        top_k=_number(body, "top_k", 0, 100000, 40, integer=True),
        min_p=float(_number(body, "min_p", 0, 1, 0.05)),
        repeat_penalty=float(_number(body, "repeat_penalty", 0.5, 2, 1.0)),
        frequency_penalty=float(_number(body, "frequency_penalty", -2, 2, 0.0)),
        presence_penalty=float(_number(body, "presence_penalty", -2, 2, 0.0)),
        seed=seed,
        stop=_stop(body.get("stop"), limits),
    )
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be true or false", param="stream")
    opts = body.get("stream_options") or {}
    if not isinstance(opts, dict):
        raise ApiError(400, "'stream_options' must be an object", param="stream_options")
    include_usage = bool(opts.get("include_usage", False))
    return model, params, stream, include_usage, _calm(body.get("calm"))


def parse_chat(body: dict[str, Any], limits: ApiLimits) -> CompletionCall:
    model, params, stream, usage, calm = _common(body, limits)
    messages = _messages(body.get("messages"), limits)
    if messages[-1].role == "assistant":
        raise ApiError(400, "the last message must not be from the assistant",
                       param="messages")
    return CompletionCall("chat", model, GenerationRequest(params, messages=messages), stream,
                          usage, calm)


def parse_completion(body: dict[str, Any], limits: ApiLimits) -> CompletionCall:
    model, params, stream, usage, calm = _common(body, limits)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ApiError(400, "'prompt' must be a string (token arrays and batches are not "
                       "supported)", param="prompt")
    prompt = _text(prompt, "prompt", allow_empty=False)
    if body.get("echo") or body.get("suffix"):
        raise ApiError(400, "'echo' and 'suffix' are not supported", param="echo")
    return CompletionCall("completion", model, GenerationRequest(params, prompt=prompt), stream,
                          usage, calm)


def usage(stats: GenerationStats) -> dict[str, int]:
    return {"prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.completion_tokens,
            "total_tokens": stats.prompt_tokens + stats.completion_tokens}


def _finish(stats: GenerationStats) -> str:
    return "length" if stats.finish_reason == "length" else "stop"


def full_response(call: CompletionCall, rid: str, created: int, model: str, text: str,
                  stats: GenerationStats, calm: dict[str, Any]) -> dict[str, Any]:
    if call.kind == "chat":
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                  "logprobs": None, "finish_reason": _finish(stats)}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": _finish(stats)}
        obj = "text_completion"
    return {"id": rid, "object": obj, "created": created, "model": model, "choices": [choice],
            "usage": usage(stats), "calm": calm}


def stream_chunk(call: CompletionCall, rid: str, created: int, model: str, *,
                 text: str | None = None, first: bool = False,
                 stats: GenerationStats | None = None) -> dict[str, Any]:
    """One SSE data object. `stats` marks the final chunk (finish_reason set)."""
    finish = _finish(stats) if stats is not None else None
    if call.kind == "chat":
        delta: dict[str, Any] = {}
        if first:
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None,
                                  "finish_reason": finish}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        obj = "text_completion"
    return {"id": rid, "object": obj, "created": created, "model": model, "choices": [choice]}
