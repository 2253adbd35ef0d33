"""Verifiable format instructions (IFEval-style): recognize them in a prompt and check a
reply against them, without running anything.

`parse_constraints(prompt)` finds the common phrasings of fifteen kinds of constraint
(lowercase, capitals, bullet or numbered counts, words to use or avoid, word limits, a
first word, a last sentence, a JSON key, no commas, a P.S., a <<title>>, quotes) and
returns them as checks; `CHECKS[kind](reply, check)` grades one. The bench grader
(calm_edge.bench.graders) uses the same checks on the workload's stated constraints, and the
cascade's acceptor (calm_edge.confidence) uses `format_met` on the constraints it can
recognize. A phrasing not recognized is simply not checked: `format_met` says None when
nothing was recognized. Pure functions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

Check = tuple[bool, str]

_WORD_RE = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
_BULLET_RE = re.compile(r"^\s*(?:[*•]|-)\s+\S", re.M)
_NUMBERED_RE = re.compile(r"^\s*\d+[.)]\s+\S", re.M)
_FENCED_JSON_RE = re.compile(r"^```[ \t]*(?:json)?[^\n]*\n(.*?)\n?```$", re.DOTALL | re.I)


def count_words(text: str) -> int:
    return len(_WORD_RE.findall(text))


def _strip_wrapping(text: str) -> str:
    return text.strip().strip("\"'“”*_ ").strip()


def _lowercase(reply: str, a: Mapping[str, Any]) -> Check:
    if not any(c.isalpha() for c in reply):
        return False, "no letters"
    upper = [c for c in reply if c.isupper()]
    return not upper, "all lowercase" if not upper else f"{len(upper)} capital letters"


def _uppercase(reply: str, a: Mapping[str, Any]) -> Check:
    if not any(c.isalpha() for c in reply):
        return False, "no letters"
    lower = [c for c in reply if c.islower()]
    return not lower, "all capitals" if not lower else f"{len(lower)} lowercase letters"


def _bullets(reply: str, a: Mapping[str, Any]) -> Check:
    n = len(_BULLET_RE.findall(reply))
    return n == int(a["n"]), f"{n} bullet points, wanted {a['n']}"


def _numbered(reply: str, a: Mapping[str, Any]) -> Check:
    n = len(_NUMBERED_RE.findall(reply))
    return n == int(a["n"]), f"{n} numbered items, wanted {a['n']}"


def _has_word(reply: str, word: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(word)}(?![\w])", reply, re.IGNORECASE) is not None


def _include_words(reply: str, a: Mapping[str, Any]) -> Check:
    missing = [w for w in a["words"] if not _has_word(reply, str(w))]
    return not missing, "all words present" if not missing else f"missing {missing}"


def _exclude_words(reply: str, a: Mapping[str, Any]) -> Check:
    used = [w for w in a["words"] if _has_word(reply, str(w))]
    return not used, "no forbidden word" if not used else f"uses {used}"


def _max_words(reply: str, a: Mapping[str, Any]) -> Check:
    n = count_words(reply)
    return 0 < n <= int(a["n"]), f"{n} words, at most {a['n']}"


def _min_words(reply: str, a: Mapping[str, Any]) -> Check:
    n = count_words(reply)
    return n >= int(a["n"]), f"{n} words, at least {a['n']}"


def _ends_with(reply: str, a: Mapping[str, Any]) -> Check:
    phrase = str(a["phrase"])
    end = reply.strip().strip("\"”*_ ").strip()
    ok = end.casefold().endswith(phrase.casefold())
    return ok, "ends with the phrase" if ok else f"ends with {end[-40:]!r}"


def _starts_with(reply: str, a: Mapping[str, Any]) -> Check:
    words = _WORD_RE.findall(_strip_wrapping(reply)[:200])
    first = words[0] if words else ""
    ok = first.casefold() == str(a["word"]).casefold()
    return ok, f"starts with {first!r}"


def _json_key(reply: str, a: Mapping[str, Any]) -> Check:
    text = reply.strip()
    m = _FENCED_JSON_RE.match(text)
    if m:
        text = m.group(1).strip()
    try:
        obj = json.loads(text)
    except ValueError:
        return False, "not valid JSON"
    key = str(a["key"])
    if not isinstance(obj, dict) or key not in obj:
        return False, f"no key {key!r}"
    value = obj[key]
    ok = (isinstance(value, str) and bool(value.strip())) or (
        isinstance(value, list) and bool(value))
    return ok, f"JSON with key {key!r}" if ok else f"key {key!r} is empty or not text"


def _no_commas(reply: str, a: Mapping[str, Any]) -> Check:
    n = reply.count(",") + reply.count("，")
    return n == 0, "no commas" if n == 0 else f"{n} commas"


def _postscript(reply: str, a: Mapping[str, Any]) -> Check:
    ok = re.search(r"^\s*[*_]*p\.\s?s\.", reply, re.I | re.M) is not None
    return ok, "has a P.S." if ok else "no line starting with P.S."


def _title(reply: str, a: Mapping[str, Any]) -> Check:
    ok = re.search(r"<<[^\n<>]+>>", reply) is not None
    return ok, "has a <<title>>" if ok else "no <<title>>"


def _quoted(reply: str, a: Mapping[str, Any]) -> Check:
    s = reply.strip()
    ok = len(s) >= 2 and s[0] in "\"“" and s[-1] in "\"”"
    return ok, "wrapped in quotes" if ok else "not wrapped in double quotes"


CHECKS: dict[str, Callable[[str, Mapping[str, Any]], Check]] = {
    "lowercase": _lowercase,
    "uppercase": _uppercase,
    "bullets": _bullets,
    "numbered": _numbered,
    "include_words": _include_words,
    "exclude_words": _exclude_words,
    "max_words": _max_words,
    "min_words": _min_words,
    "ends_with": _ends_with,
    "starts_with": _starts_with,
    "json_key": _json_key,
    "no_commas": _no_commas,
    "postscript": _postscript,
    "title": _title,
    "quoted": _quoted,
}


# -- recognizing constraints in a prompt ------------------------------------------------------

_NUM = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
        "eight": 8, "nine": 9, "ten": 10}
_N = r"(\d+|one|two|three|four|five|six|seven|eight|nine|ten)"
_Q = r"['‘\"“]([^'’\"”\n]{1,80})['’\"”]"          # a quoted phrase
_REPLY = r"(?:your |the )?(?:whole |entire |full )?(?:answer|reply|response|output)"
_I = re.I

_LOWER = re.compile(r"\blower[ -]?case\b|\bno capital letters\b|\bno capitals\b", _I)
_UPPER = re.compile(r"\bupper[ -]?case\b|\b(?:all|only|in) capital(?:s| letters)\b|"
                    r"\bcapital letters only\b|\ball caps\b", _I)
_BULLETS = re.compile(rf"\b(?:exactly )?{_N} (?:markdown )?bullet(?:ed)?[ -]?points?\b", _I)
_NUMBERED = re.compile(rf"\b(?:exactly )?{_N} numbered (?:points|items|steps)\b|"
                       rf"\bnumbered list of (?:exactly )?{_N} (?:items|points|steps)\b", _I)
_MAX_WORDS = re.compile(rf"\b(?:at most|no more than|fewer than|less than|under|maximum of|"
                        rf"not exceed) {_N} words\b", _I)
_MIN_WORDS = re.compile(rf"\b(?:at least|no fewer than|no less than|minimum of) {_N} words\b|"
                        rf"\b{_N} words or (?:longer|more)\b", _I)
_STARTS = re.compile(rf"\b(?:begin|start)\w* {_REPLY}? ?with the word {_Q}|"
                     rf"\bfirst word of {_REPLY} (?:must|should) be {_Q}", _I)
_ENDS = re.compile(rf"\b(?:end|finish|close)\w* {_REPLY}? ?with the (?:exact )?"
                   rf"(?:sentence|phrase|words?):? {_Q}|"
                   rf"\blast sentence (?:must|should) be(?: exactly)?:? {_Q}", _I)
_JSON_KEY = re.compile(r"\bJSON\b[^.]*?\bkey,? ['\"“]?(\w+)['\"”]?", _I)
_NO_COMMAS = re.compile(r"\b(?:no|without (?:a single|any)|not use any|avoid(?: using)?) "
                        r"commas?\b", _I)
_PS = re.compile(r"\bP\.\s?S\.|\bpostscript\b", _I)
_TITLE = re.compile(r"<<[^<>]*>>|double angular? brackets", _I)
_QUOTED = re.compile(rf"\b(?:wrap|put|enclose|place)\w* {_REPLY}?[^.]*?\b(?:in|inside|within|"
                     rf"with) double quot", _I)
_WORDS_CLAUSE = re.compile(r"[^.!?\n]*\b(?:key)?words?\b[^.!?\n]*")
_NEGATED = re.compile(r"\b(?:do not|don't|never|avoid|without|not include|not use|exclude)\b",
                      _I)
_INCLUDE = re.compile(r"\b(?:use|include|work|mention|contain|keywords?)\b", _I)


def _n(s: str) -> int:
    return int(s) if s.isdigit() else _NUM[s.lower()]


def _first(m: re.Match[str]) -> str:
    return next(g for g in m.groups() if g is not None)


def parse_constraints(prompt: str) -> list[dict[str, Any]]:
    """The verifiable constraints stated in `prompt`, as checks for `CHECKS`."""
    out: list[dict[str, Any]] = []
    if _LOWER.search(prompt):
        out.append({"kind": "lowercase"})
    elif _UPPER.search(prompt):
        out.append({"kind": "uppercase"})
    for kind, rx in (("bullets", _BULLETS), ("numbered", _NUMBERED),
                     ("max_words", _MAX_WORDS), ("min_words", _MIN_WORDS)):
        if m := rx.search(prompt):
            out.append({"kind": kind, "n": _n(_first(m))})
    if m := _STARTS.search(prompt):
        out.append({"kind": "starts_with", "word": _first(m)})
    if m := _ENDS.search(prompt):
        out.append({"kind": "ends_with", "phrase": _first(m)})
    if m := _JSON_KEY.search(prompt):
        out.append({"kind": "json_key", "key": m.group(1)})
    for kind, rx in (("no_commas", _NO_COMMAS), ("postscript", _PS), ("title", _TITLE),
                     ("quoted", _QUOTED)):
        if rx.search(prompt):
            out.append({"kind": kind})
    for clause in _WORDS_CLAUSE.findall(prompt):
        words = re.findall(r"['‘\"“](\w[\w' -]{0,30}?)['’\"”]", clause)
        if not words or _MAX_WORDS.search(clause) or _MIN_WORDS.search(clause) \
                or _STARTS.search(clause) or _JSON_KEY.search(clause):
            continue
        if _NEGATED.search(clause):
            out.append({"kind": "exclude_words", "words": words})
        elif _INCLUDE.search(clause):
            out.append({"kind": "include_words", "words": words})
    return out


def check_all(reply: str, checks: list[dict[str, Any]]) -> tuple[bool, list[str]]:
    """Every check passes; a detail per check."""
    details, ok = [], True
    for check in checks:
        passed, detail = CHECKS[check["kind"]](reply, check)
        ok = ok and passed
        details.append(f"{check['kind']}: {'ok' if passed else detail}")
    return ok, details


def format_met(prompt: str, reply: str) -> bool | None:
    """The reply meets every constraint recognized in the prompt; None if none was."""
    checks = parse_constraints(prompt)
    if not checks:
        return None
    return bool(reply.strip()) and check_all(reply, checks)[0]
