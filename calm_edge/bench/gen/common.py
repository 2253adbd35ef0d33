"""What every generator shares: the seeded choice helper, the one-message chat, and the seed
data loader."""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

DATA_DIR = Path(__file__).resolve().parent / "data"
OWN_LICENCE = "Apache-2.0"  # text written for this project

R = random.Random  # alias for annotations
T = TypeVar("T")


def pick(rng: R, seq: Sequence[T]) -> T:
    """One element of `seq`, drawn with one `randrange` (the generators' choice helper:
    changing how it draws would change every built file)."""
    return seq[rng.randrange(len(seq))]


def user(content: str) -> tuple[dict[str, str], ...]:
    """A chat of one user message."""
    return ({"role": "user", "content": content},)


@functools.cache
def seeds(name: str) -> dict[str, Any]:
    """The seed data `data/<name>.json` (read once). Callers own the shapes; each data file's
    "about" field says them."""
    data: dict[str, Any] = json.loads((DATA_DIR / f"{name}.json").read_text(encoding="utf-8"))
    return data
