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

import math
import re
import textwrap
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any

from calm_edge.bench import sandbox
from calm_edge.instructions import CHECKS, check_all

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

INSTRUCTION_CHECKS = CHECKS


def grade_instructions(reply: str, args: Mapping[str, Any]) -> Grade:
    if not reply.strip():
        return False, "empty reply"
    ok, details = check_all(reply, args["checks"])
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
