from __future__ import annotations

import pytest

from calm_edge.backends.base import ChatMessage
from calm_edge.prompting import StopMatcher, render_completion_prompt


@pytest.mark.parametrize(("stops", "pieces", "expected", "stopped"), [
    ((), ["a", "b"], "ab", False),
    (("END",), ["hello ", "E", "N", "D", " more"], "hello ", True),
    (("END",), ["hello E", "N", "x"], "hello ENx", False),
    (("\n\n",), ["line\n", "\nnext"], "line", True),
    (("b", "ab"), ["xab"], "x", True),       # the earliest match wins, in any order
    (("stop",), ["sto"], "sto", False),      # held back, released at the end
    (("<|end|>",), ["a<|e", "nd|>b"], "a", True),
])
def test_prompting_stop_matcher(stops: tuple[str, ...], pieces: list[str], expected: str,
                                stopped: bool) -> None:
    m = StopMatcher(stops)
    out, hit = "", False
    for p in pieces:
        text, hit = m.feed(p)
        out += text
        if hit:
            break
    if not hit:
        out += m.flush()
    assert (out, hit) == (expected, stopped)


def test_prompting_render_completion_prompt() -> None:
    t = "Question: {prompt}\nAnswer:"
    msgs = (ChatMessage("system", "Be brief."), ChatMessage("user", "Capital of France?"),
            ChatMessage("assistant", "Paris."), ChatMessage("user", "And Spain?"))
    assert render_completion_prompt(t, msgs) == (
        "Be brief.\nQuestion: Capital of France?\nAnswer: Paris.\nQuestion: And Spain?\nAnswer:")
    assert render_completion_prompt(t, (ChatMessage("user", " hi "),)) == "Question: hi\nAnswer:"
