"""Plan: choose the model for a request. Pure: a frozen snapshot in, a decision out.

Interim rule (until the QoS-aware planner lands), in this order:
1. a request naming a model gets that model, no fallbacks;
2. `auto` gets the fleet's `default_model` if it can be loaded;
3. else the loadable model with the best mean prior quality, resident ones first.
Fallbacks are the other loadable models, best mean prior quality first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    name: str
    available: bool          # file verified/verifiable and not in failure back-off
    resident: bool
    prior_quality: float     # mean prior quality over domains, in [0, 1]


@dataclass(frozen=True)
class Plan:
    model: str
    fallbacks: tuple[str, ...]
    reason: str


class NoModelAvailable(RuntimeError):
    pass


def plan_route(requested: str, candidates: Sequence[Candidate], default_model: str) -> Plan:
    """Pick a model for `requested` ("auto" or a model name known to the fleet)."""
    if requested != "auto":
        return Plan(requested, (), "pinned by the request")
    usable = [c for c in candidates if c.available]
    if not usable:
        raise NoModelAvailable("no model of the fleet can be loaded (run `calm-edge models "
                               "list` to see why)")
    ranked = sorted(usable, key=lambda c: (-c.prior_quality, c.name))
    default = next((c for c in usable if c.name == default_model), None)
    if default is not None:
        chosen, reason = default, "auto: the fleet's default model"
    else:
        chosen = min(usable, key=lambda c: (not c.resident, -c.prior_quality, c.name))
        reason = (f"auto: default model {default_model} unavailable; best prior quality"
                  f"{' among resident models' if chosen.resident else ''}")
    return Plan(chosen.name, tuple(c.name for c in ranked if c is not chosen), reason)
