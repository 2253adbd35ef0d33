"""The official openai client talks to the daemon over the Unix socket."""

from __future__ import annotations

from collections.abc import Callable

import openai

try:  # openai >= 3 is built on httpx2 (the same API as httpx); older releases on httpx
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx  # type: ignore[no-redef]

from calm_edge.config import Settings
from tests.conftest import run_daemon


def client_for(s: Settings) -> openai.OpenAI:
    http = httpx.Client(transport=httpx.HTTPTransport(uds=str(s.socket_path)))
    return openai.OpenAI(base_url="http://calm/v1", api_key="unused", http_client=http)


def test_openai_client_chat_plain_and_stream(make_settings: Callable[..., Settings]) -> None:
    s = make_settings()
    with run_daemon(s):
        client = client_for(s)
        r = client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "hello"}], max_tokens=5,
            temperature=0, extra_body={"calm": {"mode": "fast"}})
        assert r.model == "tiny-chat"
        assert r.choices[0].message.role == "assistant"
        assert r.usage is not None and r.usage.completion_tokens <= 5
        calm = (r.model_extra or {})["calm"]
        assert calm["model"] == "tiny-chat"

        stream = client.chat.completions.create(
            model="tiny-chat", messages=[{"role": "user", "content": "hello"}], max_tokens=5,
            temperature=0, stream=True)
        text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
        assert text == r.choices[0].message.content

        models = [m.id for m in client.models.list()]
        assert "tiny-base" in models

        comp = client.completions.create(model="tiny-base", prompt="Question: x", max_tokens=3,
                                         temperature=0)
        assert comp.choices[0].finish_reason in ("stop", "length")

        try:
            client.chat.completions.create(model="missing",
                                           messages=[{"role": "user", "content": "x"}])
        except openai.NotFoundError as e:
            assert "does not exist" in str(e)
        else:
            raise AssertionError("expected NotFoundError")
        client.close()
