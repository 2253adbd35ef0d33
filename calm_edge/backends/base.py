"""The `Backend` seam: what the runtime needs from an inference engine, and no more.

A backend instance is one loaded model. Constructing it loads the model (blocking; runs in
a worker thread); `close()` frees its memory deterministically. A backend is not
thread-safe: the executor runs at most one `generate` per instance at a time.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from calm_edge.events import Delta, Final

if TYPE_CHECKING:
    from calm_edge.config import RuntimeConfig
    from calm_edge.fleet import ModelSpec

FinishReason = Literal["stop", "length", "cancelled"]
Role = Literal["system", "user", "assistant"]


class ModelState(enum.Enum):
    """Lifecycle of one fleet model in the daemon (owned by the residency manager).

    UNLOADED -> LOADING -> READY -> UNLOADING -> UNLOADED; LOADING -> FAILED on a load
    error; FAILED -> LOADING on the next retry after its back-off.
    """

    UNLOADED = "unloaded"
    LOADING = "loading"
    READY = "ready"
    UNLOADING = "unloading"
    FAILED = "failed"


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class GenerationRequest:
    """Exactly one of `messages` (chat) or `prompt` (raw completion) is set. `confidence`
    asks for the chosen tokens' log-probabilities (GenerationStats.confidence)."""

    params: SamplingParams
    messages: tuple[ChatMessage, ...] | None = None
    prompt: str | None = None
    confidence: bool = False


@dataclass(frozen=True)
class TokenConfidence:
    """How sure the model was of the tokens it chose: log-probabilities (natural log) of
    each chosen token under the model's distribution at that step."""

    tokens: int
    mean_logprob: float
    min_logprob: float
    p10_logprob: float   # the 10% quantile: a few unsure tokens in a long, sure answer

    @classmethod
    def of(cls, logprobs: list[float]) -> TokenConfidence | None:
        if not logprobs:
            return None
        ordered = sorted(logprobs)
        return cls(len(logprobs), sum(logprobs) / len(logprobs), ordered[0],
                   ordered[min(len(ordered) - 1, len(ordered) // 10)])


@dataclass(frozen=True)
class GenerationStats:
    """The last item every `generate` yields. Times are seconds from the call."""

    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    ttft_s: float
    total_s: float
    confidence: TokenConfidence | None = None  # when the request asked and the backend can

    @property
    def decode_tokens_per_s(self) -> float:
        decode_s = self.total_s - self.ttft_s
        if self.completion_tokens <= 1 or decode_s <= 0:
            return 0.0
        return (self.completion_tokens - 1) / decode_s


class ContextOverflowError(ValueError):
    """The prompt does not fit the model's context window."""

    def __init__(self, prompt_tokens: int, n_ctx: int) -> None:
        self.prompt_tokens, self.n_ctx = prompt_tokens, n_ctx
        super().__init__(f"prompt is {prompt_tokens} tokens; the model's context holds {n_ctx}")


class Backend(Protocol):
    """One loaded model."""

    # Whether generate() can report TokenConfidence (cascades need it).
    supports_confidence: bool

    def generate(self, request: GenerationRequest,
                 should_stop: Callable[[], bool]) -> Iterator[Delta | Final[GenerationStats]]:
        """Yield text deltas, then one Final(GenerationStats). Blocking; call from a worker
        thread.

        `should_stop` is polled after every token; when it returns True generation ends
        with finish_reason "cancelled". Raises ContextOverflowError before any output.
        """
        ...

    def count_tokens(self, text: str) -> int:
        ...

    def close(self) -> None:
        """Free the model's memory now. Idempotent."""
        ...


BackendFactory = Callable[["ModelSpec", Path, "RuntimeConfig"], Backend]
