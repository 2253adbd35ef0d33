"""llama.cpp backend (llama-cpp-python): mmap'd GGUF models on CPU or CUDA.

Generation drives `Llama.generate` token by token instead of `create_completion`, so that
each token is detokenized once (create_completion re-detokenizes the whole completion per
token), stop strings are matched incrementally, cancellation is checked after every token,
and token counts and time to first token are exact. The KV cache keeps the longest common
prompt prefix between requests (llama-cpp-python's prefix reuse).
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import io
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from calm_edge.backends.base import (
    ContextOverflowError,
    FinishReason,
    GenerationRequest,
    GenerationStats,
    TokenConfidence,
)
from calm_edge.events import Delta, Final
from calm_edge.memory import release_free_heap
from calm_edge.prompting import StopMatcher, render_completion_prompt

if TYPE_CHECKING:
    from calm_edge.config import RuntimeConfig
    from calm_edge.fleet import ModelSpec

log = logging.getLogger("calm_edge.llama_cpp")
_native_log = logging.getLogger("calm_edge.llama_cpp.native")
_log_callback: Any = None


def _route_native_logs() -> None:
    """Send llama.cpp's own log lines to Python logging: its errors as WARNING, the rest
    (including its load-time warnings about model quirks) as DEBUG. ggml levels: 1 debug,
    2 info, 3 warn, 4 error, 5 continuation."""
    global _log_callback
    if _log_callback is not None:
        return
    import llama_cpp

    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
    def _cb(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
        msg = text.decode("utf-8", errors="replace").rstrip()
        if msg:
            _native_log.log(logging.WARNING if level == 4 else logging.DEBUG, "%s", msg)

    _log_callback = _cb
    llama_cpp.llama_log_set(_cb, ctypes.c_void_p(0))


def build_info() -> str:
    """The llama-cpp-python build: its version and the CPU/GPU features it was compiled
    with (a native build picks different kernels on another CPU, so answers may differ)."""
    import llama_cpp

    system = llama_cpp.llama_print_system_info()
    text = system.decode(errors="replace") if isinstance(system, bytes) else str(system)
    return f"llama-cpp-python {llama_cpp.__version__}; {' '.join(text.split())}"


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


class LlamaCppBackend:
    """One GGUF model loaded with llama.cpp. Construct in a worker thread (blocking)."""

    supports_confidence = True

    def __init__(self, spec: ModelSpec, path: Path, runtime: RuntimeConfig) -> None:
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        _route_native_logs()
        self.spec = spec
        self._stack = contextlib.ExitStack()
        n_threads = runtime.n_threads or usable_cpus()
        # verbose=True keeps llama-cpp-python from dup2()ing /dev/null over fds 1 and 2
        # (which would swallow the daemon's own logs from other threads); its Python-level
        # prints are captured here and native logs go through _route_native_logs.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            self._llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=spec.n_ctx,
                n_batch=runtime.n_batch,
                n_ubatch=runtime.micro_batch,
                n_threads=n_threads,
                n_threads_batch=runtime.n_threads_batch or n_threads,
                n_gpu_layers=runtime.n_gpu_layers,
                use_mmap=runtime.use_mmap,
                use_mlock=runtime.use_mlock,
                flash_attn=runtime.flash_attn,
                verbose=True,
            )
        self._stack.callback(self._llm.close)
        self._llm.verbose = False  # no per-request prints ("Llama.generate: prefix-match hit")
        # llama.cpp rounds the context up (to a multiple of 256) while llama-cpp-python's
        # token buffer keeps the size asked for: the smaller one bounds a request.
        self.n_ctx = min(self._llm.n_ctx(), len(self._llm.input_ids))
        self._n_vocab = self._llm.n_vocab()
        self._get_logits = llama_cpp.llama_get_logits_ith
        self._vocab = llama_cpp.llama_model_get_vocab(self._llm.model)
        self._is_eog: Callable[[Any, int], bool] = llama_cpp.llama_vocab_is_eog
        self._formatter: Jinja2ChatFormatter | None = None
        if spec.format == "chat":
            template = self._llm.metadata.get("tokenizer.chat_template")
            if not template:
                self.close()
                raise ValueError(f"{spec.name}: format is 'chat' but {path.name} has no "
                                 "tokenizer.chat_template; use format = 'completion'")
            eos, bos = self._llm.token_eos(), self._llm.token_bos()
            model = self._llm._model
            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=model.token_get_text(eos) if eos != -1 else "",
                bos_token=model.token_get_text(bos) if bos != -1 else "",
            )

    def count_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def _prompt_tokens(self, request: GenerationRequest) -> tuple[list[int], tuple[str, ...]]:
        """Tokens of the rendered prompt and the extra stop strings the format implies."""
        if request.messages is not None:
            if self._formatter is not None:
                msgs: Any = [{"role": m.role, "content": m.content} for m in request.messages]
                rendered = self._formatter(messages=msgs)
                # The template writes BOS itself when the model wants one.
                tokens = self._llm.tokenize(rendered.prompt.encode("utf-8"), add_bos=False,
                                            special=True)
                stops = tuple(s for s in (rendered.stop or []) if isinstance(s, str) and s)
                return tokens, stops
            text = render_completion_prompt(self.spec.prompt_template, request.messages)
        else:
            text = request.prompt or ""
        # add_bos=True lets llama.cpp add BOS when (and only when) the vocab asks for it.
        return self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=False), ()

    def generate(self, request: GenerationRequest,
                 should_stop: Callable[[], bool]) -> Iterator[Delta | Final[GenerationStats]]:
        t0 = time.monotonic()
        p = request.params
        tokens, format_stops = self._prompt_tokens(request)
        n_prompt = len(tokens)
        if n_prompt + 1 > self.n_ctx:
            raise ContextOverflowError(n_prompt, self.n_ctx)
        max_tokens = min(p.max_tokens, self.n_ctx - n_prompt)
        stops = StopMatcher((*p.stop, *self.spec.stop, *format_stops))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        if p.seed is not None:
            self._llm.set_seed(p.seed)
        strip_leading = request.messages is not None and self._formatter is None
        n_gen, ttft_s = 0, 0.0
        finish: FinishReason = "length"
        gen = self._llm.generate(tokens, top_k=p.top_k, top_p=p.top_p, min_p=p.min_p,
                                 temp=p.temperature, repeat_penalty=p.repeat_penalty,
                                 frequency_penalty=p.frequency_penalty,
                                 presence_penalty=p.presence_penalty, reset=True)
        stopped = False
        logprobs: list[float] | None = [] if request.confidence else None
        try:
            for token in gen:
                if n_gen == 0:
                    ttft_s = time.monotonic() - t0
                if logprobs is not None:
                    logprobs.append(self._chosen_logprob(token))
                if self._is_eog(self._vocab, token):
                    finish = "stop"
                    break
                n_gen += 1
                piece = decoder.decode(self._llm.detokenize([token]))
                if strip_leading:
                    piece = piece.lstrip()
                    strip_leading = not piece
                out, stopped = stops.feed(piece)
                if out:
                    yield Delta(out)
                if stopped:
                    finish = "stop"
                    break
                if n_gen >= max_tokens:
                    break
                if should_stop():
                    finish = "cancelled"
                    break
        finally:
            gen.close()
        if not stopped:
            tail, _ = stops.feed(decoder.decode(b"", final=True))
            tail += stops.flush()
            if tail:
                yield Delta(tail)
        yield Final(GenerationStats(
            prompt_tokens=n_prompt, completion_tokens=n_gen, finish_reason=finish,
            ttft_s=ttft_s, total_s=time.monotonic() - t0,
            confidence=TokenConfidence.of(logprobs) if logprobs is not None else None))

    def _chosen_logprob(self, token: int) -> float:
        """log P(token) under the logits that chose it (the last position's): one
        log-softmax over the vocabulary, ~0.2 ms for 152k entries. Not logits_all, which
        keeps n_ctx x n_vocab floats (DESIGN: ~1.2 GB for a Qwen model)."""
        row = np.ctypeslib.as_array(self._get_logits(self._llm.ctx, -1),
                                    shape=(self._n_vocab,))
        top = float(row.max())
        return float(row[token]) - top - math.log(float(np.exp(row - top).sum()))

    def close(self) -> None:
        self._stack.close()
        release_free_heap()


def llama_cpp_factory(spec: ModelSpec, path: Path, runtime: RuntimeConfig) -> LlamaCppBackend:
    return LlamaCppBackend(spec, path, runtime)
