"""Format instructions recognized in prompts and checked against replies, without running
anything (calm_edge.instructions): the signal a cascade uses on instruction-following."""

from __future__ import annotations

from typing import Any

import pytest

from calm_edge.instructions import format_met, parse_constraints


@pytest.mark.parametrize(("prompt", "checks"), [
    ("Describe a harbor. Write it without a single comma.", [{"kind": "no_commas"}]),
    ("Do not use any commas in your response.", [{"kind": "no_commas"}]),
    ("Respond in all capital letters.", [{"kind": "uppercase"}]),
    ("Use no capital letters anywhere: the whole reply must be in lowercase.",
     [{"kind": "lowercase"}]),
    ("Answer with exactly 3 bullet points, using markdown bullets like * this.",
     [{"kind": "bullets", "n": 3}]),
    ("Give exactly four numbered points (1., 2., and so on).",
     [{"kind": "numbered", "n": 4}]),
    ("Use no more than 25 words.", [{"kind": "max_words", "n": 25}]),
    ("Make the reply 90 words or longer.", [{"kind": "min_words", "n": 90}]),
    ("The first word of the reply must be 'Alright'.",
     [{"kind": "starts_with", "word": "Alright"}]),
    ("End your response with the exact phrase 'Is there anything else I can help with?'",
     [{"kind": "ends_with", "phrase": "Is there anything else I can help with?"}]),
    ('Answer with nothing but a JSON object containing one key, "text", whose value is '
     'your answer as text.', [{"kind": "json_key", "key": "text"}]),
    ("Close with a separate line beginning with 'P.S.'", [{"kind": "postscript"}]),
    ("Include a title wrapped in double angular brackets, such as <<my title>>.",
     [{"kind": "title"}]),
    ("Wrap your entire response in double quotation marks.", [{"kind": "quoted"}]),
    ("Include the keywords 'sunshine' and 'balance' in your response.",
     [{"kind": "include_words", "words": ["sunshine", "balance"]}]),
    ("Do not include the words 'good' or 'very' in your response.",
     [{"kind": "exclude_words", "words": ["good", "very"]}]),
    ("What is the capital of France?", []),               # nothing to check
    ("Respond only in Spanish.", []),                     # a kind not recognized
])
def test_instructions_recognized_in_prompts(prompt: str, checks: list[dict[str, Any]]) -> None:
    assert parse_constraints(prompt) == checks


def test_instructions_format_met_checks_every_recognized_constraint() -> None:
    prompt = "Explain tides. Type the entire reply in UPPERCASE. Use no more than 8 words."
    assert format_met(prompt, "THE MOON PULLS THE SEA.") is True
    assert format_met(prompt, "The moon pulls the sea.") is False          # not capitals
    assert format_met(prompt, "THE MOON PULLS THE SEA TWICE EACH DAY, ALWAYS.") is False
    assert format_met(prompt, "   ") is False                               # empty reply
    assert format_met("What is 2+2?", "4") is None                          # nothing stated
