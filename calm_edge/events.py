"""The one stream protocol, from a backend to the HTTP layer: text deltas, then one final.

A backend's `generate` yields `Delta`s and ends with `Final(GenerationStats)`; the executor
relays them with the generation's window (`Final(Generation)`); the orchestrator's `serve`
yields the same deltas and ends with `Final(Answer)`. Consumers tell the two apart with one
`isinstance(item, Delta)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Delta:
    """A piece of the answer's text, in order."""

    text: str


@dataclass(frozen=True)
class Final(Generic[T]):
    """The last item of a stream: what the whole of it came to."""

    value: T


Event = Delta | Final[T]
