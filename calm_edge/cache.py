"""Response cache: exact and near-duplicate matches of repeated queries.

Every entry belongs to a scope (the asking peer's uid, or a group that shares): a lookup
only sees its own scope's entries, so one user can neither plant an answer for another
nor learn whether another asked. Exact: the key is the scope, the request kind, the
requested model (or "auto" + mode), every sampling parameter that changes the output, and
the prompt normalized (case-folded, whitespace collapsed). Near-duplicate (single-turn
questions of at most `near_max_chars` only): cosine similarity of hashed character 3-gram
vectors of the question at or above a threshold that rises with length (a few differing
3-grams at most, so an appended sentence never matches), among entries with the same key
otherwise, lengths within 10% of each other, and only if both texts contain the same
numbers ("What is 2+3?" never matches "What is 2+4?").

Only deterministic requests are cached by default (temperature 0, or a fixed seed); with
`sampled = true` sampled answers are cached too (a repeated question then gets the same
sample). Bounded by entries, bytes and a TTL, evicting least recently used first; cleared
when the fleet changes. Owned by the event loop; no locking.
"""

from __future__ import annotations

import collections
import hashlib
import json
import re
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from calm_edge.backends.base import GenerationRequest, GenerationStats

_DIM = 1024
_NUMBER_RE = re.compile(r"\d+(?:[.,]\d+)*")
_SPACE_RE = re.compile(r"\s+")
_NEAR_MAX_DIFF = 6.0      # ~ differing 3-grams a near-duplicate may have, at any length
_NEAR_LENGTH_RATIO = 1.1  # the longer question at most this much longer ("length class")


def normalize(text: str) -> str:
    return _SPACE_RE.sub(" ", text).strip().casefold()


def near_threshold(floor: float, length: int) -> float:
    """The cosine a question of `length` characters needs for a near-duplicate hit: the
    floor, or more for long ones (cosine ~ 1 - differing 3-grams / length)."""
    return max(floor, 1.0 - _NEAR_MAX_DIFF / max(length, 1))


def _vector(text: str) -> npt.NDArray[np.float32]:
    """L2-normalized hashed character 3-gram counts (crc32 buckets). A Python loop per
    character: callers bound the length (near_max_chars)."""
    v = np.zeros(_DIM, dtype=np.float32)
    padded = f" {text} "
    for i in range(len(padded) - 2):
        v[zlib.crc32(padded[i:i + 3].encode()) % _DIM] += 1.0
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


@dataclass(frozen=True)
class CachedAnswer:
    text: str
    model: str
    domain: str
    stats: GenerationStats
    created_s: float


@dataclass
class _Entry:
    answer: CachedAnswer
    params_key: str
    text: str                # the normalized question (near-duplicate matching)
    numbers: tuple[str, ...]
    length: int              # of the normalized question, in characters
    vector: npt.NDArray[np.float32] | None
    size_bytes: int


class ResponseCache:
    def __init__(self, *, max_entries: int = 1000, max_bytes: int = 16 << 20,
                 ttl_s: float = 3600.0, near_duplicate: bool = True,
                 near_threshold: float = 0.97, near_max_chars: int = 1024,
                 sampled: bool = False, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries, self.max_bytes, self.ttl_s = max_entries, max_bytes, ttl_s
        self.near_duplicate, self.near_threshold, self.sampled = (
            near_duplicate, near_threshold, sampled)
        self.near_max_chars = near_max_chars
        self._clock = clock
        self._entries: collections.OrderedDict[str, _Entry] = collections.OrderedDict()  # LRU
        self._by_age: collections.deque[tuple[float, str]] = collections.deque()
        self.bytes = 0
        self.fingerprint = ""
        self.hits_exact = self.hits_near = self.misses = self.evictions = 0

    # -- keys ----------------------------------------------------------------------------------

    def cacheable(self, request: GenerationRequest) -> bool:
        p = request.params
        return p.temperature == 0 or p.seed is not None or self.sampled

    @staticmethod
    def _params_key(kind: str, model: str, mode: str, request: GenerationRequest,
                    context: str, scope: str) -> str:
        p = request.params
        blob = json.dumps([scope, kind, model, mode if model == "auto" else "", p.max_tokens,
                           p.temperature, p.top_p, p.top_k, p.min_p, p.repeat_penalty,
                           p.frequency_penalty, p.presence_penalty, p.seed, list(p.stop),
                           context], separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def _near_eligible(self, question: str, single: bool) -> bool:
        return self.near_duplicate and single and len(question) <= self.near_max_chars

    @staticmethod
    def _split(request: GenerationRequest) -> tuple[str, str, bool]:
        """(context, question, single_turn): the question is the last user message (or the
        prompt); the context is everything before it."""
        if request.messages is None:
            return "", normalize(request.prompt or ""), True
        msgs = list(request.messages)
        last = msgs[-1]
        ctx = json.dumps([[m.role, normalize(m.content)] for m in msgs[:-1]],
                         separators=(",", ":"))
        single = all(m.role == "system" for m in msgs[:-1])
        return ctx, normalize(last.content), single

    # -- API -----------------------------------------------------------------------------------

    def set_fingerprint(self, fingerprint: str) -> None:
        """Answers came from a given fleet; a different fleet invalidates them all."""
        if fingerprint != self.fingerprint:
            self.clear()
            self.fingerprint = fingerprint

    def clear(self) -> None:
        self._entries.clear()
        self._by_age.clear()
        self.bytes = 0

    def _expire(self, now: float) -> None:
        """Drop expired entries (oldest first), then least recently used ones over bounds."""
        while self._by_age and now - self._by_age[0][0] > self.ttl_s:
            created, key = self._by_age.popleft()
            e = self._entries.get(key)
            if e is not None and e.answer.created_s == created:
                self._drop(key)
        while self._entries and (len(self._entries) > self.max_entries
                                 or self.bytes > self.max_bytes):
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        e = self._entries.pop(key)
        self.bytes -= e.size_bytes
        self.evictions += 1

    def get(self, kind: str, model: str, mode: str, request: GenerationRequest, *,
            scope: str = "") -> tuple[CachedAnswer, str] | None:
        """The cached answer and "exact" or "near" from `scope`'s entries, or None."""
        if not self.cacheable(request):
            return None
        now = self._clock()
        self._expire(now)
        ctx, question, single = self._split(request)
        pk = self._params_key(kind, model, mode, request, ctx, scope)
        key = pk + ":" + hashlib.sha256(question.encode()).hexdigest()
        e = self._entries.get(key)
        if e is not None:
            self._entries.move_to_end(key)
            self.hits_exact += 1
            return e.answer, "exact"
        if self._near_eligible(question, single) and self._entries:
            found = self._near(pk, question)
            if found is not None:
                self._entries.move_to_end(found)
                self.hits_near += 1
                return self._entries[found].answer, "near"
        self.misses += 1
        return None

    def _near(self, params_key: str, question: str) -> str | None:
        numbers = tuple(_NUMBER_RE.findall(question))
        n = len(question)
        pool = [(k, e) for k, e in self._entries.items()
                if e.params_key == params_key and e.vector is not None and e.numbers == numbers
                and max(n, e.length) <= _NEAR_LENGTH_RATIO * min(n, e.length)]
        if not pool:
            return None
        q = _vector(question)
        sims = np.stack([e.vector for _, e in pool]) @ q  # type: ignore[misc]
        best = int(np.argmax(sims))
        need = near_threshold(self.near_threshold, max(n, pool[best][1].length))
        return pool[best][0] if float(sims[best]) >= need else None

    def put(self, kind: str, model: str, mode: str, request: GenerationRequest,
            answer: CachedAnswer, *, scope: str = "") -> None:
        if not self.cacheable(request):
            return
        ctx, question, single = self._split(request)
        pk = self._params_key(kind, model, mode, request, ctx, scope)
        key = pk + ":" + hashlib.sha256(question.encode()).hexdigest()
        vec = _vector(question) if self._near_eligible(question, single) else None
        size = len(answer.text.encode()) + len(question.encode()) + len(key) + \
            (vec.nbytes if vec is not None else 0) + 200
        if size > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
            self.evictions -= 1
        self._entries[key] = _Entry(answer, pk, question, tuple(_NUMBER_RE.findall(question)),
                                    len(question), vec, size)
        self._by_age.append((answer.created_s, key))
        self.bytes += size
        self._expire(self._clock())

    def status(self) -> dict[str, object]:
        return {"entries": len(self._entries), "bytes": self.bytes,
                "hits_exact": self.hits_exact, "hits_near": self.hits_near,
                "misses": self.misses, "evictions": self.evictions,
                "near_duplicate": self.near_duplicate, "ttl_s": self.ttl_s}
