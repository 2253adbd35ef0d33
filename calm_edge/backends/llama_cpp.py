"""llama.cpp backend (llama-cpp-python): mmap'd GGUF models on CPU or CUDA.

llama-cpp-python loads the model, owns its context and tokenizes; the decode loop is ours,
on llama.cpp's C API, so that little but llama.cpp's own compute is left per token
(scripts/bench_pertoken.py: 0.98-1.15x the speed of bare llama_decode calls on a 2-core
CPU; where a token is cheap, as on a GPU, llama-cpp-python's loop costs more):
- one `llama_decode` per token on a reused one-token batch; prompts go in n_batch chunks
  with logits for their last position only;
- greedy decoding (temperature 0, no penalties) takes the argmax of the last logits row in
  place (numpy, no copy); any other sampling runs llama.cpp's sampler chain, built once
  per request;
- the chosen token's log-probability (cascades) is computed only when the request asks,
  with a scratch buffer instead of a vocabulary-sized allocation per token;
- each token is turned into bytes once (`llama_token_to_piece`), stop strings are matched
  incrementally, cancellation is checked after every token;
- the KV cache keeps the longest common prompt prefix between requests.
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
    SamplingParams,
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
        self._n_batch = runtime.n_batch
        self._ctx = self._llm.ctx
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._vocab = llama_cpp.llama_model_get_vocab(self._llm.model)
        self._is_eog: Callable[[Any, int], bool] = llama_cpp.llama_vocab_is_eog
        # The tokens whose KV cells the context holds, in order (prefix reuse).
        self._kv: list[int] = []
        self._one = (llama_cpp.llama_token * 1)()
        self._piece_buf = ctypes.create_string_buffer(256)
        self._scratch = np.empty(self._n_vocab, dtype=np.float32)
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
        if not tokens:  # nothing to condition on; the API refuses empty prompts before this
            raise ValueError(f"{self.spec.name}: the prompt has no tokens")
        if n_prompt + 1 > self.n_ctx:
            raise ContextOverflowError(n_prompt, self.n_ctx)
        max_tokens = min(p.max_tokens, self.n_ctx - n_prompt)
        stops = StopMatcher((*p.stop, *self.spec.stop, *format_stops))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        strip_leading = request.messages is not None and self._formatter is None
        logprobs: list[float] | None = [] if request.confidence else None
        chain = _sampler_chain(p, self._n_vocab)
        n_gen, ttft_s = 0, 0.0
        finish: FinishReason = "length"
        stopped = False
        try:
            self._feed_prompt(tokens)
            while True:
                token = self._sample(chain)
                if n_gen == 0:
                    ttft_s = time.monotonic() - t0
                if logprobs is not None:
                    logprobs.append(self._chosen_logprob(token))
                if self._is_eog(self._vocab, token):
                    finish = "stop"
                    break
                n_gen += 1
                piece = decoder.decode(self._piece(token))
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
                self._decode_one(token)
        finally:
            if chain is not None:
                _llama().llama_sampler_free(chain)
        if not stopped:
            tail, _ = stops.feed(decoder.decode(b"", final=True))
            tail += stops.flush()
            if tail:
                yield Delta(tail)
        yield Final(GenerationStats(
            prompt_tokens=n_prompt, completion_tokens=n_gen, finish_reason=finish,
            ttft_s=ttft_s, total_s=time.monotonic() - t0,
            confidence=TokenConfidence.of(logprobs) if logprobs is not None else None))

    # -- the decode loop's steps (blocking; the caller holds the backend) ------------------

    def _feed_prompt(self, tokens: list[int]) -> None:
        """Make the KV cache hold `tokens` with the last one's logits fresh: keep the
        longest prefix shared with what it holds (never the whole prompt: the last token
        is always evaluated, so its logits are this prompt's), evaluate the rest."""
        llama_cpp = _llama()
        kv = self._kv
        keep = 0
        for a, b in zip(kv, tokens[:-1], strict=False):
            if a != b:
                break
            keep += 1
        if keep < len(kv):
            # Recurrent and hybrid models cannot drop a tail: start over.
            if not llama_cpp.llama_memory_seq_rm(self._mem, -1, keep, -1):
                llama_cpp.llama_memory_clear(self._mem, True)
                keep = 0
            del kv[keep:]
        rest = tokens[keep:]
        for i in range(0, len(rest), self._n_batch):
            chunk = rest[i:i + self._n_batch]
            self._decode((llama_cpp.llama_token * len(chunk))(*chunk), len(chunk))
            kv.extend(chunk)

    def _decode_one(self, token: int) -> None:
        self._one[0] = token
        self._decode(self._one, 1)
        self._kv.append(token)

    def _decode(self, arr: Any, n: int) -> None:
        """One llama_decode of `n` tokens after the KV cache (positions follow on); logits
        for the last one only."""
        llama_cpp = _llama()
        rc = llama_cpp.llama_decode(self._ctx, llama_cpp.llama_batch_get_one(arr, n))
        if rc != 0:
            # The KV cache may hold part of the batch: forget it rather than guess.
            llama_cpp.llama_memory_clear(self._mem, True)
            self._kv.clear()
            raise RuntimeError(f"{self.spec.name}: llama_decode failed ({rc})")

    def _last_logits(self) -> np.ndarray[Any, np.dtype[np.float32]]:
        """The last position's logits, in place in llama.cpp's buffer (valid until the
        next decode)."""
        return np.ctypeslib.as_array(_llama().llama_get_logits_ith(self._ctx, -1),
                                     shape=(self._n_vocab,))

    def _sample(self, chain: Any) -> int:
        if chain is None:  # greedy: the first maximum, as llama.cpp's greedy sampler picks
            return int(self._last_logits().argmax())
        return int(_llama().llama_sampler_sample(chain, self._ctx, -1))

    def _piece(self, token: int) -> bytes:
        """The token's bytes (special tokens render as nothing, as in detokenize)."""
        llama_cpp = _llama()
        buf = self._piece_buf
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        if n < 0:  # longer than the buffer: -n is the size it needs
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    def _chosen_logprob(self, token: int) -> float:
        """log P(token) under the logits that chose it (the last position's): one
        log-softmax over the vocabulary in a reused buffer. Not logits_all, which keeps
        n_ctx x n_vocab floats (DESIGN: ~1.2 GB for a Qwen model)."""
        row, buf = self._last_logits(), self._scratch
        top = float(row.max())
        np.subtract(row, top, out=buf)
        np.exp(buf, out=buf)
        return float(row[token]) - top - math.log(float(buf.sum(dtype=np.float64)))

    def close(self) -> None:
        self._stack.close()
        release_free_heap()


def _llama() -> Any:
    import llama_cpp

    return llama_cpp


def _sampler_chain(p: SamplingParams, n_vocab: int) -> Any:
    """llama.cpp's sampler chain for `p`, the one llama-cpp-python's `Llama.generate`
    builds (penalties over the generated tokens, then greedy, or top-k, typical (off),
    top-p, min-p, temperature and a seeded draw); None for plain greedy decoding, which
    `_sample` does on the logits directly. The caller frees it (llama_sampler_free)."""
    llama_cpp = _llama()
    penalties = (p.repeat_penalty != 1.0 or p.frequency_penalty != 0.0
                 or p.presence_penalty != 0.0)
    if p.temperature == 0.0 and not penalties:
        return None
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())

    def add(sampler: Any) -> None:
        llama_cpp.llama_sampler_chain_add(chain, sampler)

    if penalties:
        add(llama_cpp.llama_sampler_init_penalties(n_vocab, _PENALTY_LAST_N, p.repeat_penalty,
                                                   p.frequency_penalty, p.presence_penalty))
    if p.temperature == 0.0:
        add(llama_cpp.llama_sampler_init_greedy())
        return chain
    seed = llama_cpp.LLAMA_DEFAULT_SEED if p.seed is None else p.seed & 0xFFFFFFFF
    if p.temperature < 0.0:
        add(llama_cpp.llama_sampler_init_dist(seed))
        return chain
    add(llama_cpp.llama_sampler_init_top_k(p.top_k))
    add(llama_cpp.llama_sampler_init_top_p(p.top_p, 1))
    add(llama_cpp.llama_sampler_init_min_p(p.min_p, 1))
    add(llama_cpp.llama_sampler_init_temp(p.temperature))
    add(llama_cpp.llama_sampler_init_dist(seed))
    return chain


# llama-cpp-python's default window for repetition penalties (Llama(last_n_tokens_size=64)).
_PENALTY_LAST_N = 64


def llama_cpp_factory(spec: ModelSpec, path: Path, runtime: RuntimeConfig) -> LlamaCppBackend:
    return LlamaCppBackend(spec, path, runtime)
