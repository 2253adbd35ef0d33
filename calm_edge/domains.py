"""The query domains the classifier predicts and the fleet's quality priors are keyed by."""

from __future__ import annotations

from typing import Literal

Domain = Literal["code", "math", "factual", "instruct", "writing"]
DOMAINS: tuple[Domain, ...] = ("code", "math", "factual", "instruct", "writing")
