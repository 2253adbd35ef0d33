"""Turning requests into model prompts, and stop-string handling for streamed text. Pure."""

from __future__ import annotations

from collections.abc import Sequence

from calm_edge.backends.base import ChatMessage


def render_completion_prompt(template: str, messages: Sequence[ChatMessage]) -> str:
    """Chat messages -> one completion prompt for a base model with `template`.

    System messages lead as plain text; earlier turns are rendered with the template and
    their answers; the last user message fills `{prompt}` and the model continues.
    """
    head = [m.content.strip() for m in messages if m.role == "system"]
    turns = [m for m in messages if m.role != "system"]
    parts: list[str] = ["\n".join(head)] if head else []
    pending_user: str | None = None
    for m in turns:
        if m.role == "user":
            if pending_user is not None:
                parts.append(template.replace("{prompt}", pending_user))
            pending_user = m.content.strip()
        else:
            q = template.replace("{prompt}", pending_user or "")
            parts.append(f"{q} {m.content.strip()}")
            pending_user = None
    parts.append(template.replace("{prompt}", pending_user or ""))
    return "\n".join(parts)


class StopMatcher:
    """Incremental stop-string detection over streamed text.

    `feed(text)` returns (safe_text, stopped): the text that can be emitted now, and
    whether a stop string was seen (the stop string and anything after it are dropped).
    Text that might be the start of a stop string is held back until it is decided.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        if not self.stops:
            return text, False
        buf = self._pending + text
        first = -1
        for s in self.stops:
            i = buf.find(s)
            if i != -1 and (first == -1 or i < first):
                first = i
        if first != -1:
            self._pending = ""
            return buf[:first], True
        keep = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(buf)), keep, -1):
                if buf.endswith(s[:k]):
                    keep = k
                    break
        self._pending = buf[len(buf) - keep:] if keep else ""
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        """Text held back at the end of generation (no stop string followed)."""
        out, self._pending = self._pending, ""
        return out
