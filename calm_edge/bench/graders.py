"""Graders: did a reply answer a workload query correctly?

Every grader has the signature `(reply: str, args: Mapping[str, Any]) -> (passed, detail)`,
where `args` is the query's `grader_args` from the workload and `detail` says in a few words
why it passed or failed (it goes into the results file). All graders are pure functions of
their inputs except `code`, which runs the candidate program in a sandboxed subprocess
(calm_edge.bench.sandbox; blocking, up to its timeout).

- `code` (args `prompt`, `test`, `entry_point`, optional `timeout_s`): the code extracted
  from the reply, completed with the prompt, passes the HumanEval `check(entry_point)` tests.
- `number` (`answer`, optional `tol`): the reply's final number (`final_number`) equals
  `answer` within `tol` (default 1e-6).
- `match` (`answers`, optional `reject`): a normalized answer occurs as whole words among
  the reply's first 30 words, and no `reject` phrase does.
- `instructions` (`checks`: a list of `{"kind": ..., ...}`): every check passes
  (`INSTRUCTION_CHECKS` lists the kinds).
"""

from __future__ import annotations

import json
import math
import re
import textwrap
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any

from calm_edge.bench import sandbox

Grade = tuple[bool, str]
Grader = Callable[[str, Mapping[str, Any]], Grade]


# -- text normalization -----------------------------------------------------------------------

def normalize(text: str) -> str:
    """Casefold, strip accents, drop apostrophes and periods inside words ("D.C." -> "dc",
    "Sana'a" -> "sanaa"), turn other punctuation into spaces, collapse whitespace."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    plain = re.sub(r"['’`.]", "", plain)
    plain = re.sub(r"[^\w]+|_", " ", plain)
    return " ".join(plain.split())


def _contains_phrase(haystack: str, phrase: str) -> bool:
    """Whole-word containment of two normalized strings."""
    return bool(phrase) and f" {phrase} " in f" {haystack} "


# -- code -------------------------------------------------------------------------------------

_FENCE_RE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(reply: str, entry_point: str) -> str | None:
    """The Python code in a reply: the first fenced block that defines `entry_point`, else
    the first Python (or untagged) fenced block, else the reply from the line that defines
    `entry_point` on; None if there is no code. An unclosed fence (a reply cut at max_tokens)
    counts up to the end of the reply."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE_RE.findall(reply)]
    pythonic = [b for lang, b in blocks if lang in ("", "python", "py", "python3")]
    define = re.compile(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", re.M)
    for body in pythonic:
        if define.search(body):
            return str(body)
    if pythonic:
        return str(pythonic[0])
    m = define.search(reply)
    if m:
        return reply[m.start():]
    return None


def build_program(prompt: str, code: str, test: str, entry_point: str) -> str:
    """The program the sandbox runs: the HumanEval prompt (its imports and helpers; its
    function has only a docstring, so it is valid on its own), then the candidate (a full
    definition that replaces it, or a bare body, which is appended to the prompt's
    function), then the tests and `check(entry_point)`."""
    define = re.compile(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", re.M)
    if define.search(code):
        program = prompt.rstrip() + "\n\n" + textwrap.dedent(code)
    else:
        body = textwrap.dedent(code).strip("\n")
        program = prompt.rstrip() + "\n" + textwrap.indent(body, "    ")
    return f"{program}\n\n{test}\n\ncheck({entry_point})\n"


def grade_code(reply: str, args: Mapping[str, Any]) -> Grade:
    entry_point = str(args["entry_point"])
    code = extract_code(reply, entry_point)
    if code is None or not code.strip():
        return False, "no code in the reply"
    program = build_program(str(args["prompt"]), code, str(args["test"]), entry_point)
    timeout_s = float(args.get("timeout_s", sandbox.DEFAULT_TIMEOUT_S))
    r = sandbox.run_python(program, timeout_s=timeout_s)
    if r.ok:
        return True, f"tests passed ({r.duration_s:.2f} s)"
    if r.timed_out:
        return False, f"timeout after {timeout_s:g} s"
    if r.violation is not None:
        return False, f"sandbox violation: {r.violation}"
    lines = [ln for ln in r.stderr_tail.strip().splitlines() if ln.strip()]
    return False, (lines[-1][:200] if lines else f"exit status {r.returncode}")


# -- number -----------------------------------------------------------------------------------

_NUMBER_RE = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\d])")
_ANSWER_MARK_RE = re.compile(r"answer\s*(?:is|:|=)|\\boxed\{", re.IGNORECASE)


def numbers_in(text: str) -> list[float]:
    """Numbers in text, in order: thousands separators ("1,234") and signs understood;
    "$12.50" -> 12.5; "3." at the end of a sentence -> 3."""
    return [float(m.group(0).replace(",", "")) for m in _NUMBER_RE.finditer(text)]


def final_number(reply: str) -> float | None:
    """The answer a reply gives: the first number after its last "answer is" / "Answer:" /
    "\\boxed{" marker when there is one with a number after it, else its last number."""
    marks = list(_ANSWER_MARK_RE.finditer(reply))
    for m in reversed(marks):
        after = numbers_in(reply[m.end():])
        if after:
            return after[0]
    found = numbers_in(reply)
    return found[-1] if found else None


def grade_number(reply: str, args: Mapping[str, Any]) -> Grade:
    expected = float(args["answer"])
    tol = float(args.get("tol", 1e-6))
    got = final_number(reply)
    if got is None:
        return False, "no number in the reply"
    ok = math.isclose(got, expected, rel_tol=0.0, abs_tol=tol)
    return ok, f"final number {got:g}, expected {expected:g}"


# -- match (short factual answers) ------------------------------------------------------------

MATCH_WINDOW_WORDS = 30


def grade_match(reply: str, args: Mapping[str, Any]) -> Grade:
    window = " ".join(normalize(reply).split()[:MATCH_WINDOW_WORDS])
    if not window:
        return False, "empty reply"
    for phrase in args.get("reject", ()):
        if _contains_phrase(window, normalize(str(phrase))):
            return False, f"names {phrase!r}"
    for answer in args["answers"]:
        if _contains_phrase(window, normalize(str(answer))):
            return True, f"matched {answer!r}"
    return False, f"expected {args['answers'][0]!r}"


# -- instructions (IFEval-style verifiable constraints) ---------------------------------------

_WORD_RE = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
_BULLET_RE = re.compile(r"^\s*(?:[*•]|-)\s+\S", re.M)
_NUMBERED_RE = re.compile(r"^\s*\d+[.)]\s+\S", re.M)
_FENCED_JSON_RE = re.compile(r"^```[ \t]*(?:json)?[^\n]*\n(.*?)\n?```$", re.DOTALL | re.I)


def count_words(text: str) -> int:
    return len(_WORD_RE.findall(text))


def _strip_wrapping(text: str) -> str:
    return text.strip().strip("\"'“”*_ ").strip()


def _check_lowercase(reply: str, a: Mapping[str, Any]) -> Grade:
    if not any(c.isalpha() for c in reply):
        return False, "no letters"
    upper = [c for c in reply if c.isupper()]
    return not upper, "all lowercase" if not upper else f"{len(upper)} capital letters"


def _check_uppercase(reply: str, a: Mapping[str, Any]) -> Grade:
    if not any(c.isalpha() for c in reply):
        return False, "no letters"
    lower = [c for c in reply if c.islower()]
    return not lower, "all capitals" if not lower else f"{len(lower)} lowercase letters"


def _check_bullets(reply: str, a: Mapping[str, Any]) -> Grade:
    n = len(_BULLET_RE.findall(reply))
    return n == int(a["n"]), f"{n} bullet points, wanted {a['n']}"


def _check_numbered(reply: str, a: Mapping[str, Any]) -> Grade:
    n = len(_NUMBERED_RE.findall(reply))
    return n == int(a["n"]), f"{n} numbered items, wanted {a['n']}"


def _has_word(reply: str, word: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(word)}(?![\w])", reply, re.IGNORECASE) is not None


def _check_include_words(reply: str, a: Mapping[str, Any]) -> Grade:
    missing = [w for w in a["words"] if not _has_word(reply, str(w))]
    return not missing, "all words present" if not missing else f"missing {missing}"


def _check_exclude_words(reply: str, a: Mapping[str, Any]) -> Grade:
    used = [w for w in a["words"] if _has_word(reply, str(w))]
    return not used, "no forbidden word" if not used else f"uses {used}"


def _check_max_words(reply: str, a: Mapping[str, Any]) -> Grade:
    n = count_words(reply)
    return 0 < n <= int(a["n"]), f"{n} words, at most {a['n']}"


def _check_min_words(reply: str, a: Mapping[str, Any]) -> Grade:
    n = count_words(reply)
    return n >= int(a["n"]), f"{n} words, at least {a['n']}"


def _check_ends_with(reply: str, a: Mapping[str, Any]) -> Grade:
    phrase = str(a["phrase"])
    end = reply.strip().strip("\"”*_ ").strip()
    ok = end.casefold().endswith(phrase.casefold())
    return ok, "ends with the phrase" if ok else f"ends with {end[-40:]!r}"


def _check_starts_with(reply: str, a: Mapping[str, Any]) -> Grade:
    words = _WORD_RE.findall(_strip_wrapping(reply)[:200])
    first = words[0] if words else ""
    ok = first.casefold() == str(a["word"]).casefold()
    return ok, f"starts with {first!r}"


def _check_json_key(reply: str, a: Mapping[str, Any]) -> Grade:
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


def _check_no_commas(reply: str, a: Mapping[str, Any]) -> Grade:
    n = reply.count(",") + reply.count("，")
    return n == 0, "no commas" if n == 0 else f"{n} commas"


def _check_postscript(reply: str, a: Mapping[str, Any]) -> Grade:
    ok = re.search(r"^\s*[*_]*p\.\s?s\.", reply, re.I | re.M) is not None
    return ok, "has a P.S." if ok else "no line starting with P.S."


def _check_title(reply: str, a: Mapping[str, Any]) -> Grade:
    ok = re.search(r"<<[^\n<>]+>>", reply) is not None
    return ok, "has a <<title>>" if ok else "no <<title>>"


def _check_quoted(reply: str, a: Mapping[str, Any]) -> Grade:
    s = reply.strip()
    ok = len(s) >= 2 and s[0] in "\"“" and s[-1] in "\"”"
    return ok, "wrapped in quotes" if ok else "not wrapped in double quotes"


INSTRUCTION_CHECKS: dict[str, Grader] = {
    "lowercase": _check_lowercase,
    "uppercase": _check_uppercase,
    "bullets": _check_bullets,
    "numbered": _check_numbered,
    "include_words": _check_include_words,
    "exclude_words": _check_exclude_words,
    "max_words": _check_max_words,
    "min_words": _check_min_words,
    "ends_with": _check_ends_with,
    "starts_with": _check_starts_with,
    "json_key": _check_json_key,
    "no_commas": _check_no_commas,
    "postscript": _check_postscript,
    "title": _check_title,
    "quoted": _check_quoted,
}


def grade_instructions(reply: str, args: Mapping[str, Any]) -> Grade:
    if not reply.strip():
        return False, "empty reply"
    details, ok = [], True
    for check in args["checks"]:
        passed, detail = INSTRUCTION_CHECKS[check["kind"]](reply, check)
        ok = ok and passed
        details.append(f"{check['kind']}: {'ok' if passed else detail}")
    return ok, "; ".join(details)


# -- registry ---------------------------------------------------------------------------------

GRADERS: dict[str, Grader] = {
    "code": grade_code,
    "number": grade_number,
    "match": grade_match,
    "instructions": grade_instructions,
}


def grade(name: str, reply: str, args: Mapping[str, Any]) -> Grade:
    """Grade with the grader called `name`. Raises KeyError for an unknown grader name."""
    return GRADERS[name](reply, args)
