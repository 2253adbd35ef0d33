"""calm_edge: a QoS-aware, self-adaptive runtime for a fleet of small language models."""

from __future__ import annotations

__version__ = "0.1.0"
