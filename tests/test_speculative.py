"""Greedy speculative decoding on the tiny random GGUF: the same tokens as plain greedy
whatever the drafter proposes, and a KV cache left consistent after rejected drafts."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from calm_edge.backends.speculative import (
    DraftModel,
    GreedyRun,
    PromptLookup,
    greedy,
    lookup,
    speculative,
)

PROMPTS = (
    "the capital of France is Paris and the capital of",
    "def add(a, b): return a + b\ndef sub(a, b): return",
    "one two one two one two one",
    "I",
)
MAX_TOKENS = (1, 2, 7, 40)


def load(path: Path, n_ctx: int = 512) -> Any:
    import llama_cpp

    # verbose=True keeps llama-cpp-python from dup2()ing over fds 1 and 2 (as the backend).
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=64, n_threads=1,
                              verbose=True)
    llm.verbose = False
    return llm


@pytest.fixture(scope="module")
def target(tiny_gguf: Path) -> Iterator[Any]:
    llm = load(tiny_gguf)
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def draft_same(tiny_gguf: Path) -> Iterator[Any]:
    llm = load(tiny_gguf)
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def draft_other(tiny_base_gguf: Path) -> Iterator[Any]:
    llm = load(tiny_base_gguf)  # same vocabulary, other weights: some drafts wrong
    yield llm
    llm.close()


def tokens_of(llm: Any, text: str) -> list[int]:
    return list(llm.tokenize(text.encode(), add_bos=True, special=False))


class Oracle:
    """Always right: drafts the known greedy continuation."""

    def __init__(self, prompt: Sequence[int], expected: Sequence[int], k: int) -> None:
        self.full, self.k = [*prompt, *expected], k
        self.calls = 0

    def begin(self, prompt: Sequence[int]) -> None:
        pass

    def draft(self, history: Sequence[int], n_max: int) -> list[int]:
        self.calls += 1
        assert list(history) == self.full[:len(history)], "history is not prompt + output"
        return self.full[len(history):len(history) + min(self.k, n_max)]


class Junk:
    """Always wrong at the first draft: the true next token plus one (mod vocabulary),
    then random tokens."""

    def __init__(self, prompt: Sequence[int], expected: Sequence[int], k: int,
                 n_vocab: int) -> None:
        self.full, self.k, self.n_vocab = [*prompt, *expected], k, n_vocab
        self.rng = np.random.default_rng(0)

    def begin(self, prompt: Sequence[int]) -> None:
        pass

    def draft(self, history: Sequence[int], n_max: int) -> list[int]:
        n = min(self.k, n_max)
        true_next = self.full[len(history)] if len(history) < len(self.full) else 0
        rest = self.rng.integers(0, self.n_vocab, size=n - 1).tolist()
        return [(true_next + 1) % self.n_vocab, *rest]


def reference(llm: Any, prompt: list[int], max_tokens: int) -> list[int]:
    """llama-cpp-python's own greedy sampler, independent of our low-level path."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    out: list[int] = []
    for tok in llm.generate(prompt, temp=0.0, reset=True):
        if llama_cpp.llama_vocab_is_eog(vocab, tok) or len(out) >= max_tokens:
            break
        out.append(int(tok))
    return out


@pytest.mark.parametrize("text", PROMPTS)
def test_speculative_greedy_matches_llama_generate(target: Any, text: str) -> None:
    prompt = tokens_of(target, text)
    run = greedy(target, prompt, 40)
    assert run.target_evals == len(run.tokens) - 1
    if run.finish == "length":
        assert len(run.tokens) == 40
        assert target.n_tokens == len(prompt) + 39  # the last token is not evaluated
    assert run.tokens == reference(target, prompt, 40)


@pytest.mark.parametrize("max_tokens", MAX_TOKENS)
@pytest.mark.parametrize("text", PROMPTS)
def test_speculative_any_drafter_gives_greedy_tokens(target: Any, draft_same: Any,
                                                     draft_other: Any, text: str,
                                                     max_tokens: int) -> None:
    prompt = tokens_of(target, text)
    base = greedy(target, prompt, max_tokens)
    assert base.tokens, "the tiny model should not stop at once on these prompts"
    drafters: list[Any] = [
        PromptLookup(max_ngram=3, k=4), PromptLookup(max_ngram=2, k=8),
        DraftModel(draft_same, k=2), DraftModel(draft_other, k=4),
        Oracle(prompt, base.tokens, 3), Junk(prompt, base.tokens, 5, target.n_vocab()),
    ]
    for d in drafters:
        run = speculative(target, prompt, max_tokens, d)
        assert run.tokens == base.tokens, type(d).__name__
        assert run.finish == base.finish
        assert 0 <= run.accepted <= run.drafted
        # Every step emits one target token plus the drafts it accepted.
        assert run.target_evals + run.accepted >= len(run.tokens) - 1
        if run.finish == "length":
            assert target.n_tokens == len(prompt) + len(run.tokens) - 1
            assert list(target.input_ids[:target.n_tokens]) == [*prompt, *run.tokens[:-1]]


@pytest.mark.parametrize("k", [1, 3, 8])
def test_speculative_oracle_accepts_all_and_saves_evals(target: Any, k: int) -> None:
    prompt = tokens_of(target, PROMPTS[0])
    base = greedy(target, prompt, 40)
    assert base.finish == "length"
    oracle = Oracle(prompt, base.tokens, k)
    run = speculative(target, prompt, 40, oracle)
    assert run.tokens == base.tokens
    assert run.accepted == run.drafted > 0
    assert run.acceptance == 1.0
    # 39 tokens after the first, k + 1 per target decode.
    assert run.target_evals == -(-39 // (k + 1))
    # No draft is asked for when one token is left (it would not fit the budget).
    assert oracle.calls == run.target_evals - (39 % (k + 1) == 1)


def test_speculative_junk_accepts_nothing_and_costs_one_eval_per_token(target: Any) -> None:
    prompt = tokens_of(target, PROMPTS[1])
    base = greedy(target, prompt, 30)
    run = speculative(target, prompt, 30, Junk(prompt, base.tokens, 6, target.n_vocab()))
    assert run.tokens == base.tokens
    assert run.accepted == 0 and run.drafted > 0
    assert run.target_evals == base.target_evals == len(base.tokens) - 1


def test_speculative_same_draft_model_is_always_right(target: Any, draft_same: Any) -> None:
    prompt = tokens_of(target, PROMPTS[2])
    run = speculative(target, prompt, 40, DraftModel(draft_same, k=4))
    assert run.tokens == greedy(target, prompt, 40).tokens
    assert run.acceptance == 1.0
    assert run.target_evals == -(-39 // 5)
    # The draft model's KV follows the history: what it evaluated is a prefix of it.
    n = draft_same.n_tokens
    assert list(draft_same.input_ids[:n]) == [*prompt, *run.tokens][:n]


def test_speculative_rejected_drafts_leave_no_trace_in_the_kv(target: Any) -> None:
    """After junk drafts were evaluated and rejected, continuing from the KV by hand gives
    greedy's next token: no stale cells."""
    import llama_cpp

    prompt = tokens_of(target, PROMPTS[0])
    longer = greedy(target, prompt, 21).tokens
    run = speculative(target, prompt, 20, Junk(prompt, longer, 7, target.n_vocab()))
    assert run.tokens == longer[:20]
    target.eval([run.tokens[-1]])
    row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(target.ctx, -1),
                                shape=(target.n_vocab(),))
    assert int(row.argmax()) == longer[20]


def test_speculative_budget_capped_by_context(tiny_gguf: Path) -> None:
    llm = load(tiny_gguf, n_ctx=64)
    try:
        prompt = tokens_of(llm, PROMPTS[0])
        assert 40 < len(prompt) < 63
        base = greedy(llm, prompt, 100)
        run = speculative(llm, prompt, 100, PromptLookup(max_ngram=2, k=8))
        assert run.tokens == base.tokens
        assert len(run.tokens) <= 64 - len(prompt)
        with pytest.raises(ValueError, match="does not fit"):
            greedy(llm, list(range(3, 70)), 4)
    finally:
        llm.close()


@pytest.mark.parametrize(("history", "max_ngram", "k", "want"), [
    ([1, 2, 3, 4, 1, 2], 3, 4, [3, 4, 1, 2]),  # 2-gram [1, 2] seen at 0
    ([1, 2, 3, 9, 2, 3, 7, 2, 3], 2, 2, [7, 2]),  # the latest match wins
    ([5, 6, 7, 8], 3, 4, []),  # nothing repeats
    ([1, 2, 3, 2], 3, 1, [3]),  # falls back to a 1-gram
    ([4], 3, 4, []),  # too short
    ([1, 2, 1, 2, 1, 2], 3, 8, [1, 2]),  # continuation ends at the history's end
])
def test_speculative_lookup_table(history: list[int], max_ngram: int, k: int,
                                  want: list[int]) -> None:
    assert lookup(history, max_ngram, k) == want


def test_speculative_lookup_min_ngram_and_limits() -> None:
    assert lookup([1, 2, 3, 2], 3, 4, min_ngram=2) == []
    assert PromptLookup(max_ngram=3, k=8).draft([1, 2, 3, 1, 2], n_max=1) == [3]
    with pytest.raises(ValueError):
        PromptLookup(max_ngram=1, min_ngram=2)


def test_speculative_run_rates() -> None:
    run = GreedyRun([1, 2, 3, 4, 5], "length", 0.5, 2.0, drafted=8, accepted=2)
    assert run.decode_tok_s == 2.0
    assert run.acceptance == 0.25
    assert GreedyRun([1], "length", 0.1, 0.0).decode_tok_s == 0.0
