from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from calm_edge.backends.base import (
    ChatMessage,
    ContextOverflowError,
    GenerationRequest,
    GenerationStats,
    SamplingParams,
)
from calm_edge.backends.llama_cpp import LlamaCppBackend
from calm_edge.config import RuntimeConfig
from calm_edge.events import Delta, Final
from calm_edge.fleet import ModelSpec
from calm_edge.memory import process_rss_bytes

RT = RuntimeConfig(n_threads=1, n_batch=64)


def spec(fmt: str = "chat", **kw: object) -> ModelSpec:
    base: dict[str, object] = dict(name="tiny", file="tiny.gguf", sha256="0" * 64, size_bytes=1,
                                   n_ctx=256, format=fmt, stop=(), quality={})
    base.update(kw)
    return ModelSpec(**base)  # type: ignore[arg-type]


def chat(text: str, **params: object) -> GenerationRequest:
    p: dict[str, object] = {"max_tokens": 12, "temperature": 0.0}
    p.update(params)
    return GenerationRequest(SamplingParams(**p),  # type: ignore[arg-type]
                             messages=(ChatMessage("user", text),))


def run(backend: LlamaCppBackend, req: GenerationRequest) -> tuple[list[str], GenerationStats]:
    items = list(backend.generate(req, lambda: False))
    final = items[-1]
    assert isinstance(final, Final) and isinstance(final.value, GenerationStats)
    assert all(isinstance(x, Delta) for x in items[:-1])
    return [x.text for x in items[:-1] if isinstance(x, Delta)], final.value


def test_backend_llama_chat_stream_and_counts(tiny_gguf: Path) -> None:
    b = LlamaCppBackend(spec(), tiny_gguf, RT)
    try:
        pieces, stats = run(b, chat("What is the capital of France?"))
        assert stats.completion_tokens <= 12
        assert stats.prompt_tokens > 5
        assert 0 < stats.ttft_s <= stats.total_s
        if stats.finish_reason == "length":
            assert stats.completion_tokens == 12
        # Greedy decoding is deterministic: same prompt, same text (KV prefix reuse too).
        again, stats2 = run(b, chat("What is the capital of France?"))
        assert "".join(again) == "".join(pieces)
        assert stats2.completion_tokens == stats.completion_tokens
        assert b.count_tokens("the capital of France") >= 3
    finally:
        b.close()


def test_backend_llama_completion_format_uses_template(tiny_base_gguf: Path) -> None:
    b = LlamaCppBackend(spec("completion", prompt_template="Q: {prompt}\nA:"), tiny_base_gguf, RT)
    try:
        _, s_chat = run(b, chat("hi"))
        raw = GenerationRequest(SamplingParams(max_tokens=5, temperature=0.0), prompt="Q: hi\nA:")
        _, s_raw = run(b, raw)
        assert s_chat.prompt_tokens == s_raw.prompt_tokens  # same rendered prompt
    finally:
        b.close()


def test_backend_llama_chat_format_needs_template(tiny_base_gguf: Path) -> None:
    with pytest.raises(ValueError, match=r"no tokenizer\.chat_template"):
        LlamaCppBackend(spec("chat"), tiny_base_gguf, RT)


def test_backend_llama_max_tokens_and_cancel(tiny_gguf: Path) -> None:
    b = LlamaCppBackend(spec(), tiny_gguf, RT)
    try:
        # min_p=0/top_k=0 at high temperature rarely hits EOS in 3 tokens; assert the bound.
        _, stats = run(b, chat("count", max_tokens=3, temperature=1.0, seed=1))
        assert stats.completion_tokens <= 3
        calls = 0

        def stop_after_two() -> bool:
            nonlocal calls
            calls += 1
            return calls >= 2

        items = list(b.generate(chat("go on", max_tokens=50, temperature=1.5, seed=3,
                                     min_p=0.0, top_k=0), stop_after_two))
        final = items[-1]
        assert isinstance(final, Final) and isinstance(final.value, GenerationStats)
        last = final.value
        if last.finish_reason == "cancelled":
            assert last.completion_tokens == 2
        else:  # the model chose EOS before we asked it to stop
            assert last.finish_reason == "stop" and last.completion_tokens < 2
    finally:
        b.close()


def test_backend_llama_context_overflow(tiny_gguf: Path) -> None:
    b = LlamaCppBackend(spec(n_ctx=64), tiny_gguf, RT)
    try:
        with pytest.raises(ContextOverflowError) as ei:
            list(b.generate(chat("the " * 200), lambda: False))
        # llama.cpp pads its context to a multiple of 256; llama-cpp-python's token buffer
        # keeps the 64 asked for, and that bounds a request.
        assert ei.value.n_ctx == b.n_ctx == 64 and ei.value.prompt_tokens > b.n_ctx
    finally:
        b.close()


def test_backend_llama_answer_stops_at_the_context_asked_for(tiny_gguf: Path) -> None:
    """A context that is not a multiple of 256: the answer ends where the manifest's n_ctx
    ends (it used to run on to llama.cpp's padded size, past llama-cpp-python's token
    buffer of n_ctx entries)."""
    b = LlamaCppBackend(spec(n_ctx=64), tiny_gguf, RT)
    try:
        req = chat("hi", max_tokens=200)
        *_, last = b.generate(req, lambda: False)
        assert isinstance(last, Final)
        s = last.value
        assert 0 < s.prompt_tokens < 64 and s.prompt_tokens + s.completion_tokens <= 64
    finally:
        b.close()


def test_backend_llama_close_is_idempotent_and_frees(tiny_gguf: Path) -> None:
    LlamaCppBackend(spec(), tiny_gguf, RT).close()  # one-time backend initialisation
    before = process_rss_bytes()
    # 16k context: each model's f16 KV cache is 2 x 2 layers x 16384 x 64 x 2 B = 8 MiB.
    backends = [LlamaCppBackend(spec(n_ctx=16384), tiny_gguf, RT) for _ in range(4)]
    for b in backends:
        run(b, chat("hi", max_tokens=2))
    loaded = process_rss_bytes()
    for b in backends:
        b.close()
        b.close()
    after = process_rss_bytes()
    assert loaded > before
    # Closing returns (most of) what loading took; the allocator may keep a little.
    assert after - before < (loaded - before) * 0.6


@pytest.mark.parametrize("mmap", [True, False])
def test_backend_llama_footprint_estimate_bounds_measured_rss(tiny_gguf: Path,
                                                              mmap: bool) -> None:
    """The estimate the budget charges before a load is measured covers what the load and a
    first answer really take, in both mmap modes, without overcharging wildly."""
    from calm_edge.fleet import model_footprint
    from calm_edge.gguf_meta import read_gguf
    from tests.conftest import measured_growth_bytes

    rt: dict[str, Any] = {"n_threads": 1, "n_batch": 64, "n_ubatch": 32, "use_mmap": mmap}
    s = {"name": "tiny", "file": tiny_gguf.name, "sha256": "0" * 64, "size_bytes": 1,
         "n_ctx": 256, "format": "chat", "stop": [], "quality": {}}
    est = model_footprint(read_gguf(tiny_gguf), spec(n_ctx=256), RuntimeConfig(**rt))
    grown = measured_growth_bytes(tiny_gguf, s, rt)
    assert 0 < grown <= est.total_bytes, (grown, est)
    assert est.total_bytes <= 3 * grown + (16 << 20), (grown, est)


# -- the lean decode loop gives what llama-cpp-python's Llama.generate gives ---------------

def _reference(path: Path, req: GenerationRequest, rendered: list[int]) -> tuple[str, int]:
    """Text and token count from llama-cpp-python's own loop (`Llama.generate` +
    `detokenize`), the path the backend used before it drove llama.cpp directly."""
    import contextlib
    import io

    import llama_cpp

    p = req.params
    with contextlib.redirect_stderr(io.StringIO()):
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, n_batch=64, n_threads=1,
                              verbose=False)
    try:
        if p.seed is not None:
            llm.set_seed(p.seed)
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        out, n = b"", 0
        for tok in llm.generate(rendered, top_k=p.top_k, top_p=p.top_p, min_p=p.min_p,
                                temp=p.temperature, repeat_penalty=p.repeat_penalty,
                                frequency_penalty=p.frequency_penalty,
                                presence_penalty=p.presence_penalty, reset=True):
            if llama_cpp.llama_vocab_is_eog(vocab, tok):
                break
            out += llm.detokenize([tok])
            n += 1
            if n >= p.max_tokens:
                break
        return out.decode("utf-8", errors="replace"), n
    finally:
        llm.close()


@pytest.mark.parametrize("params", [
    {"temperature": 0.0},                                   # greedy: argmax in place
    {"temperature": 0.0, "repeat_penalty": 1.3},            # greedy after penalties: chain
    {"temperature": 0.9, "seed": 7, "top_k": 20},           # a seeded draw: chain
    {"temperature": 0.8, "seed": 11, "frequency_penalty": 0.5, "presence_penalty": 0.2},
])
def test_backend_llama_tokens_match_llama_cpp_python_generate(
        tiny_base_gguf: Path, params: dict[str, Any]) -> None:
    """Same tokens, same text as llama-cpp-python's own generation loop with the same
    sampling: the lean loop changes the cost of a token, never which token."""
    b = LlamaCppBackend(spec("completion", prompt_template="{prompt}"), tiny_base_gguf, RT)
    try:
        for text in ("the cat sat on the", "once upon a time there", "the cat sat on a mat"):
            req = GenerationRequest(SamplingParams(max_tokens=24, **params), prompt=text)
            pieces, stats = run(b, req)
            prompt = b._llm.tokenize(text.encode(), add_bos=True, special=False)
            want, n = _reference(tiny_base_gguf, req, prompt)
            assert ("".join(pieces), stats.completion_tokens) == (want, n), (text, params)
    finally:
        b.close()


def test_backend_llama_prefix_reuse_keeps_answers(tiny_base_gguf: Path) -> None:
    """Requests that share a prefix with what the KV cache holds (longer, shorter, equal,
    diverging) answer as a fresh backend does."""
    prompts = ["the cat sat on the mat and", "the cat sat on", "the cat sat on",
               "the cat sat on the mat and then", "a dog ran", "the cat sat on the mat and"]

    def answer(b: LlamaCppBackend, text: str) -> tuple[str, int]:
        pieces, stats = run(b, GenerationRequest(SamplingParams(max_tokens=16,
                                                                temperature=0.0), prompt=text))
        return "".join(pieces), stats.completion_tokens

    warm = LlamaCppBackend(spec("completion"), tiny_base_gguf, RT)
    try:
        got = [answer(warm, t) for t in prompts]
    finally:
        warm.close()
    for text, have in zip(prompts, got, strict=True):
        fresh = LlamaCppBackend(spec("completion"), tiny_base_gguf, RT)
        try:
            assert answer(fresh, text) == have, text
        finally:
            fresh.close()


def test_backend_llama_confidence_is_the_chosen_tokens_log_probability(
        tiny_base_gguf: Path) -> None:
    """Greedy: each chosen token is the argmax, so its log-probability is the largest and
    at most 0; the summary matches a float64 log-softmax of the same logits."""
    import numpy as np

    b = LlamaCppBackend(spec("completion"), tiny_base_gguf, RT)
    try:
        req = GenerationRequest(SamplingParams(max_tokens=6, temperature=0.0),
                                prompt="the cat", confidence=True)
        _, stats = run(b, req)
        c = stats.confidence
        assert c is not None and c.tokens >= 1
        assert c.min_logprob <= c.p10_logprob <= c.mean_logprob <= 0.0
        row = b._last_logits().astype(np.float64)
        want = float(row.max() - row.max() - np.log(np.exp(row - row.max()).sum()))
        tok = int(row.argmax())
        assert b._chosen_logprob(tok) == pytest.approx(want, abs=1e-5)
    finally:
        b.close()
