"""Monitor: typed observations of each query, of the device, and of each completion.

Reads only; decisions happen in Plan. Environment seams (classifier, sysfs root, memory
probe, power source) are injected.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calm_edge.backends.base import ChatMessage
from calm_edge.classifier import Classification, QueryClassifier
from calm_edge.domains import DOMAINS

# Characters per token for a prompt-length estimate before a model (and its tokenizer) is
# chosen; English BPE/SentencePiece vocabularies average close to this.
CHARS_PER_TOKEN = 3.8
# The classifier reads at most this many characters from the end of the query (the question
# is at the end of a conversation); a client-side router (the bench's `static`) reads the same.
CLASSIFY_TAIL_CHARS = 2000


@dataclass(frozen=True)
class QueryObservation:
    domain: str
    domain_source: str        # "request" (calm.domain), or the classifier's runtime
    probabilities: dict[str, float]
    difficulty: float | None
    prompt_tokens_est: int
    prompt_chars: int


def query_text(messages: tuple[ChatMessage, ...] | None, prompt: str | None) -> str:
    """What the classifier reads: the last user message (chat) or the prompt."""
    if messages is not None:
        users = [m.content for m in messages if m.role == "user"]
        return users[-1] if users else (messages[-1].content if messages else "")
    return prompt or ""


def observe_query(classifier: QueryClassifier, messages: tuple[ChatMessage, ...] | None,
                  prompt: str | None, requested_domain: str | None) -> QueryObservation:
    """Classify the query (unless the request names its domain) and size the prompt."""
    chars = sum(len(m.content) for m in messages) if messages is not None else len(prompt or "")
    tokens = max(1, round(chars / CHARS_PER_TOKEN))
    if requested_domain is not None:
        return QueryObservation(requested_domain, "request",
                                {d: float(d == requested_domain) for d in DOMAINS}, None,
                                tokens, chars)
    text = query_text(messages, prompt)[-CLASSIFY_TAIL_CHARS:]
    c: Classification = classifier.classify(text)
    return QueryObservation(c.domain, classifier.runtime, dict(c.probabilities), c.difficulty,
                            tokens, chars)


@dataclass(frozen=True)
class DeviceObservation:
    rss_bytes: int
    budget_bytes: int
    used_bytes: int
    resident: tuple[str, ...]
    in_flight: int
    max_temp_c: float | None
    power_mw: float | None
    power_rails_mw: dict[str, float]
    power_source: str | None
    power_measured: bool | None


def read_temperatures_c(sysfs_root: Path = Path("/")) -> dict[str, float]:
    """Thermal zones by type, in degrees C (`<root>/sys/class/thermal/thermal_zone*`)."""
    out: dict[str, float] = {}
    base = sysfs_root / "sys" / "class" / "thermal"
    if not base.is_dir():
        return out
    for zone in sorted(base.glob("thermal_zone*")):
        with contextlib.suppress(OSError, ValueError):
            milli = int((zone / "temp").read_text().strip())
            kind = (zone / "type").read_text().strip() or zone.name
            if -50_000 < milli < 200_000:  # plausible; ignore sensors reporting junk
                out[kind] = milli / 1000.0
    return out


@dataclass
class DeviceMonitor:
    """Samples device state on demand (cheap: a few sysfs reads)."""

    memory_probe: Callable[[], int]
    sysfs_root: Path = Path("/")
    power: Any = None  # an EnergyIntegrator, when one runs

    def observe(self, *, budget_bytes: int, used_bytes: int, resident: tuple[str, ...],
                in_flight: int) -> DeviceObservation:
        temps = read_temperatures_c(self.sysfs_root)
        latest = self.power.latest() if self.power is not None else None
        reader = getattr(self.power, "reader", None)
        return DeviceObservation(
            rss_bytes=self.memory_probe(), budget_bytes=budget_bytes, used_bytes=used_bytes,
            resident=resident, in_flight=in_flight,
            max_temp_c=max(temps.values()) if temps else None,
            power_mw=latest.total_mw if latest is not None else None,
            power_rails_mw=dict(latest.rails_mw) if latest is not None else {},
            power_source=getattr(reader, "source", None),
            power_measured=getattr(reader, "measured", None))
