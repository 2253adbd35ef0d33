from __future__ import annotations

import json
from typing import Any

import pytest

from calm_edge.server.api import ApiError, ApiLimits, parse_chat, parse_completion, parse_json_body

LIMITS = ApiLimits(default_max_tokens=32, max_tokens_limit=100, max_messages=4)


def chat(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}]}
    body.update(over)
    return body


def test_api_chat_defaults_and_extensions() -> None:
    call = parse_chat(chat(calm={"mode": "eco", "slo_ms": 500, "domain": "code"},
                           stop="END", seed=7, stream=True,
                           stream_options={"include_usage": True}), LIMITS)
    assert call.model == "auto" and call.kind == "chat" and call.stream and call.include_usage
    assert call.request.params.max_tokens == 32
    assert call.request.params.stop == ("END",)
    assert call.request.params.seed == 7
    assert (call.calm.mode, call.calm.slo_ms, call.calm.domain) == ("eco", 500.0, "code")
    assert parse_chat(chat(model="m", unknown_field=1), LIMITS).model == "m"  # ignored


def test_api_content_parts_and_developer_role() -> None:
    call = parse_chat({"messages": [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
    ]}, LIMITS)
    assert call.request.messages is not None
    assert [(m.role, m.content) for m in call.request.messages] == [("system", "be brief"),
                                                                     ("user", "ab")]


@pytest.mark.parametrize(("body", "param"), [
    (chat(messages=[]), "messages"),
    (chat(messages="hi"), "messages"),
    (chat(messages=[{"role": "user"}] * 5), "messages"),
    (chat(messages=[{"role": "tool", "content": "x"}]), "messages[0].role"),
    (chat(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
    (chat(messages=[{"role": "user", "content": "a\x00b"}]), "messages[0].content"),
    (chat(messages=[{"role": "user", "content": "\ud800"}]), "messages[0].content"),
    (chat(messages=[{"role": "user", "content": [{"type": "image_url"}]}]),
     "messages[0].content[0]"),
    (chat(max_tokens=0), "max_tokens"),
    (chat(max_tokens=101), "max_tokens"),
    (chat(max_tokens=1.5), "max_tokens"),
    (chat(temperature=3), "temperature"),
    (chat(temperature="hot"), "temperature"),
    (chat(n=2), "n"),
    (chat(tools=[{"type": "function"}]), "tools"),
    (chat(logprobs=True), "logprobs"),
    (chat(stop=["a"] * 17), "stop"),
    (chat(stop=[""]), "stop"),
    (chat(stream="yes"), "stream"),
    (chat(seed=-1), "seed"),
    (chat(calm={"mode": "turbo"}), "calm.mode"),
    (chat(calm={"domain": "poetry"}), "calm.domain"),
    (chat(calm={"slo_ms": 0}), "calm.slo_ms"),
    (chat(calm=[]), "calm"),
    (chat(response_format={"type": "json_object"}), "response_format"),
])
def test_api_chat_rejects_bad_parameters(body: dict[str, Any], param: str) -> None:
    with pytest.raises(ApiError) as ei:
        parse_chat(body, LIMITS)
    assert ei.value.status == 400
    assert ei.value.param == param


def test_api_completion_prompt_forms() -> None:
    assert parse_completion({"prompt": "x"}, LIMITS).request.prompt == "x"
    assert parse_completion({"prompt": ["x"]}, LIMITS).request.prompt == "x"
    for bad in ({"prompt": [1, 2]}, {"prompt": ""}, {}, {"prompt": "x", "echo": True}):
        with pytest.raises(ApiError):
            parse_completion(bad, LIMITS)


@pytest.mark.parametrize("raw", [b"", b"{bad", b"[1,2]", b"\xff\xfe", b"[" * 100000])
def test_api_json_body_errors(raw: bytes) -> None:
    with pytest.raises(ApiError) as ei:
        parse_json_body(raw)
    assert ei.value.status == 400


def test_api_json_body_ok() -> None:
    assert parse_json_body(json.dumps({"a": 1}).encode()) == {"a": 1}
