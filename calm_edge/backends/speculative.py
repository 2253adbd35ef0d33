"""Greedy speculative decoding on a `llama_cpp.Llama` without logits_all (issue 17 item 4).

llama-cpp-python's own `draft_model=` path forces `logits_all=True`, which keeps n_ctx x
n_vocab floats (~1.2 GB for a Qwen model at n_ctx 2048). Here the target asks for logits
only for the positions of the one batch it verifies: [last, d1..dk] evaluated at once, one
row per position, read with `llama_get_logits_ith`. The output buffer llama.cpp grows for
that is (k + 1) x n_vocab floats (5.5 MB for Qwen at k = 8).

Greedy only: every emitted token is the target's argmax at its position, so a drafter
only changes how many target evaluations it takes, never which tokens come out, up to one
thing: llama.cpp's CPU kernels for a batch of several tokens round differently from the
single-token ones (Qwen 1.5B Q4_K: logits up to ~0.45 apart), so where the top two logits
are nearly tied the verified batch can pick a different token from one-at-a-time decoding.
`scripts/bench_speculative.py` counts how often that happens on real models.

State contract: these functions own `llm`'s KV cache, `n_tokens` and `input_ids` while they
run and leave them consistent (the KV holds exactly input_ids[:n_tokens]); the last emitted
token is not evaluated. Blocking; not thread-safe; one generation per `Llama` at a time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from llama_cpp import Llama


@dataclass(frozen=True)
class GreedyRun:
    """One greedy generation. `tokens` excludes the end-of-generation token. Seconds come
    from time.perf_counter: `prompt_s` is the prompt pass (and the drafter's `begin`) up to
    the first token; `decode_s` is everything after the first token."""

    tokens: list[int]
    finish: str  # "stop" (an end-of-generation token) or "length"
    prompt_s: float
    decode_s: float
    target_evals: int = 0  # target decodes after the prompt (one per batch)
    drafted: int = 0  # draft tokens sent to the target for verification
    accepted: int = 0  # of those, the ones the target agreed with

    @property
    def decode_tok_s(self) -> float:
        """Tokens after the first per second after the first (prompt time excluded)."""
        n = len(self.tokens) - 1
        return n / self.decode_s if n > 0 and self.decode_s > 0 else 0.0

    @property
    def acceptance(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


class Drafter(Protocol):
    """Proposes tokens that likely follow a history. Any answer is safe (the target
    verifies); a wrong one only costs time. Drafts must be valid ids of the target's
    vocabulary."""

    def begin(self, prompt: Sequence[int]) -> None:
        """A new generation starts from `prompt` (timed with the prompt pass)."""

    def draft(self, history: Sequence[int], n_max: int) -> list[int]:
        """At most n_max (>= 1) tokens to follow `history` (prompt + tokens emitted so far,
        the last one not yet evaluated by the target)."""
        ...


# -- low-level target helpers -----------------------------------------------------------

def _argmax_at(llm: Llama, i: int) -> int:
    """Argmax of the logits of output row i of the last decode (-1: the last row)."""
    import llama_cpp

    row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, i),
                                shape=(llm.n_vocab(),))
    return int(row.argmax())


def _is_eog(llm: Llama, token: int) -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(llm.model), token))


def decode_batch(llm: Llama, tokens: Sequence[int]) -> None:
    """Evaluate `tokens` after llm.n_tokens as one batch with logits for every position
    (row i = the distribution after tokens[i]). Appends them to input_ids/n_tokens."""
    n_past = llm.n_tokens
    llm._ctx.kv_cache_seq_rm(-1, n_past, -1)
    llm._batch.set_batch(batch=tokens, n_past=n_past, logits_all=True)
    llm._ctx.decode(llm._batch)
    llm.input_ids[n_past:n_past + len(tokens)] = tokens
    llm.n_tokens = n_past + len(tokens)


def _ctx_len(llm: Llama) -> int:
    """Usable context: llama.cpp pads n_ctx up to a multiple of 256 and `Llama.n_ctx()`
    reports the padded size, but `input_ids` has the requested size."""
    return min(llm.n_ctx(), len(llm.input_ids))


def truncate(llm: Llama, n_tokens: int) -> None:
    """Forget everything after the first n_tokens (KV cells and bookkeeping)."""
    llm._ctx.kv_cache_seq_rm(-1, n_tokens, -1)
    llm.n_tokens = n_tokens


def _start(llm: Llama, prompt: Sequence[int], max_tokens: int) -> int:
    """Evaluate the prompt from an empty cache (logits for its last position only) and
    return the generation budget that fits the context."""
    if not prompt or max_tokens < 1:
        raise ValueError("need a prompt and max_tokens >= 1")
    n_ctx = _ctx_len(llm)
    if len(prompt) + 1 > n_ctx:
        raise ValueError(f"prompt of {len(prompt)} tokens does not fit n_ctx {n_ctx}")
    truncate(llm, 0)
    llm.eval(prompt)
    return min(max_tokens, n_ctx - len(prompt))


# -- generation -------------------------------------------------------------------------

def greedy(llm: Llama, prompt: Sequence[int], max_tokens: int) -> GreedyRun:
    """Plain greedy decoding, one token per target decode: the baseline, on the same
    low-level path as `speculative`. Blocking."""
    t0 = time.perf_counter()
    budget = _start(llm, prompt, max_tokens)
    out = [_argmax_at(llm, -1)]
    t1 = time.perf_counter()
    evals = 0
    finish = "length"
    while True:
        if _is_eog(llm, out[-1]):
            out.pop()
            finish = "stop"
            break
        if len(out) >= budget:
            break
        llm.eval([out[-1]])
        evals += 1
        out.append(_argmax_at(llm, -1))
    return GreedyRun(out, finish, t1 - t0, time.perf_counter() - t1, target_evals=evals)


def speculative(llm: Llama, prompt: Sequence[int], max_tokens: int,
                drafter: Drafter) -> GreedyRun:
    """Greedy decoding that verifies the drafter's proposals in one target batch per step:
    emits the target's argmax at each batch position while it equals the next draft, then
    the target's own token at the first disagreement (so >= 1 token per step). The tokens
    of `greedy` but for near-ties (module doc). Blocking."""
    t0 = time.perf_counter()
    budget = _start(llm, prompt, max_tokens)
    drafter.begin(prompt)
    out = [_argmax_at(llm, -1)]
    t1 = time.perf_counter()
    history = [*prompt, out[0]]
    evals = drafted = accepted = 0
    finish = "length"
    if _is_eog(llm, out[0]):
        return GreedyRun([], "stop", t1 - t0, 0.0)
    while len(out) < budget:
        n_past = llm.n_tokens  # history[:-1] is in the KV; history[-1] is not
        # Room for the drafts: the budget (the bonus token counts too), the context, the
        # batch.
        room = min(budget - len(out) - 1, _ctx_len(llm) - n_past - 1, llm.n_batch - 1)
        drafts = drafter.draft(history, room)[:room] if room > 0 else []
        decode_batch(llm, [history[-1], *drafts])
        evals += 1
        drafted += len(drafts)
        for i in range(len(drafts) + 1):
            tok = _argmax_at(llm, i)  # the target's token after [last, d1..di]
            hit = i < len(drafts) and tok == drafts[i]
            accepted += hit
            if _is_eog(llm, tok):
                finish = "stop"
                break
            out.append(tok)
            history.append(tok)
            if not hit or len(out) >= budget:
                break
        # The KV keeps last and d1..di (the drafts the emitted tokens confirmed); the
        # token emitted last is not evaluated.
        truncate(llm, n_past + 1 + i)
        if finish == "stop":
            break
    return GreedyRun(out, finish, t1 - t0, time.perf_counter() - t1, target_evals=evals,
                     drafted=drafted, accepted=accepted)


# -- drafters ---------------------------------------------------------------------------

class PromptLookup:
    """Drafts by n-gram lookup in the history (prompt lookup decoding): the tokens that
    followed the most recent earlier occurrence of the history's last n tokens, trying
    n = max_ngram down to min_ngram. Pure, no model; O(len(history)) numpy per call."""

    def __init__(self, max_ngram: int = 3, k: int = 8, min_ngram: int = 1) -> None:
        if not 1 <= min_ngram <= max_ngram or k < 1:
            raise ValueError("need 1 <= min_ngram <= max_ngram and k >= 1")
        self.max_ngram, self.min_ngram, self.k = max_ngram, min_ngram, k

    def begin(self, prompt: Sequence[int]) -> None:
        pass

    def draft(self, history: Sequence[int], n_max: int) -> list[int]:
        return lookup(history, self.max_ngram, min(self.k, n_max), self.min_ngram)


def lookup(history: Sequence[int], max_ngram: int, k: int, min_ngram: int = 1) -> list[int]:
    """The up-to-k tokens after the latest earlier match of the history's last n tokens,
    longest n first; [] when nothing matches. Pure."""
    arr = np.asarray(history, dtype=np.int64)
    for n in range(min(max_ngram, len(arr) - 1), min_ngram - 1, -1):
        # Windows that end before the last token, so a continuation exists (this excludes
        # the suffix itself).
        windows = np.lib.stride_tricks.sliding_window_view(arr[:-1], n)
        hits = np.flatnonzero((windows == arr[-n:]).all(axis=1))
        if hits.size:
            start = int(hits[-1]) + n
            return [int(t) for t in arr[start:start + k]]
    return []


class DraftModel:
    """Drafts with a second, smaller `Llama` sharing the target's tokenizer (the caller
    checks: same vocabulary). Greedy, k tokens per call, stopping early at an
    end-of-generation token. Keeps its own KV cache in step with the history: each call
    keeps the longest common prefix of what it evaluated and the history, drops the rest,
    and evaluates the missing tail (usually the target's correction token), then k - 1
    single-token decodes. Owns nothing: the caller closes `llm`."""

    def __init__(self, llm: Llama, k: int = 4) -> None:
        if k < 1:
            raise ValueError("k >= 1")
        self.llm, self.k = llm, k

    def begin(self, prompt: Sequence[int]) -> None:
        self._sync(prompt, keep_last=False)

    def draft(self, history: Sequence[int], n_max: int) -> list[int]:
        llm = self.llm
        n = min(self.k, n_max, _ctx_len(llm) - len(history))
        if n <= 0 or not history:
            return []
        self._sync(history, keep_last=True)
        drafts = [_argmax_at(llm, -1)]
        while len(drafts) < n and not _is_eog(llm, drafts[-1]):
            llm.eval([drafts[-1]])
            drafts.append(_argmax_at(llm, -1))
        return drafts

    def _sync(self, tokens: Sequence[int], keep_last: bool) -> None:
        """Make the KV hold `tokens`; keep_last: re-evaluate at least the last token, so
        that the last decode's logits are the ones after `tokens`."""
        llm = self.llm
        have = llm.input_ids[:llm.n_tokens]
        want = np.asarray(tokens, dtype=have.dtype)
        m = min(len(have), len(want))
        diff = np.flatnonzero(have[:m] != want[:m])
        common = int(diff[0]) if diff.size else m
        if keep_last:
            common = min(common, len(want) - 1)
        truncate(llm, common)
        if common < len(want):
            llm.eval(list(tokens[common:]))
