"""The classifier corpus's code queries: requests over tasks x languages x phrasings,
snippets to fix, explain or convert, error messages, tooling and concept questions, and
signature-plus-docstring prompts whose examples are computed by running a reference
implementation. Seeds in data/classifier_code.json; the reference implementations are code
(`REFERENCES`, by function name).

hard = a multi-part task (several components, an algorithm beyond a loop, or two or more
added requirements); easy = a one-function, one-idea request. Pure functions of the rng.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter, defaultdict
from collections.abc import Callable

from calm_edge.bench.gen.classifier import Item, wrap
from calm_edge.bench.gen.common import R, pick, seeds

_SEEDS = seeds("classifier_code")
LANGS: list[str] = _SEEDS["langs"]
CODE_TASKS: list[tuple[str, bool]] = [(t, h) for t, h in _SEEDS["tasks"]]  # (task, hard?)
CODE_PHRASINGS: list[str] = _SEEDS["phrasings"]
CODE_EXTRAS: list[str] = _SEEDS["extras"]
SNIPPETS: list[tuple[str, str]] = [(lang, code) for lang, code in _SEEDS["snippets"]]
SNIPPET_TASKS: list[tuple[str, bool]] = [(t, h) for t, h in _SEEDS["snippet_tasks"]]
ERRORS: list[str] = _SEEDS["errors"]
ERROR_PHRASINGS: list[str] = _SEEDS["error_phrasings"]
CODE_HANDWRITTEN: list[tuple[str, bool]] = [(t, h) for t, h in _SEEDS["handwritten"]]
CODE_TERMS: list[tuple[str, str]] = [(t, lang) for t, lang in _SEEDS["terms"]]
CODE_TERM_PHRASINGS: list[str] = _SEEDS["term_phrasings"]


def gen_code_requests(rng: R) -> list[Item]:
    items = []
    for ti, (task, hard) in enumerate(CODE_TASKS):
        n_variants = 14 if hard else 11
        for _ in range(n_variants):
            text = pick(rng, CODE_PHRASINGS).format(lang=pick(rng, LANGS), task=task)
            n_extra = rng.choice([0, 0, 0, 1, 1, 2, 3])
            extras = rng.sample(CODE_EXTRAS, n_extra)
            text += "".join(extras)
            is_hard = hard or n_extra >= 2
            rule = "code_multi_part_task" if hard else (
                "code_extra_reqs>=2" if is_hard else "code_single_task")
            items.append(Item(wrap(rng, text), "code", is_hard, rule, "gen:code:request",
                              f"code:task:{ti}"))
    return items


def gen_code_snippets(rng: R) -> list[Item]:
    items = []
    for si, (lang, code) in enumerate(SNIPPETS):
        for tmpl, hard in rng.sample(SNIPPET_TASKS, 9):
            text = tmpl.format(lang=lang, code=code, lang_lower=lang.lower())
            items.append(Item(wrap(rng, text, 0.15), "code", hard,
                              "code_multi_part_task" if hard else "code_single_task",
                              "gen:code:snippet", f"code:snippet:{si}"))
    return items


def gen_code_errors(rng: R) -> list[Item]:
    items = []
    for ei, err in enumerate(ERRORS):
        for tmpl in rng.sample(ERROR_PHRASINGS, 4):
            items.append(Item(wrap(rng, tmpl.format(err=err), 0.2), "code", False,
                              "code_single_task", "gen:code:error", f"code:error:{ei}"))
    return items


def gen_code_terms(rng: R) -> list[Item]:
    items = []
    for i, (t, lang) in enumerate(CODE_TERMS):
        for tmpl in rng.sample(CODE_TERM_PHRASINGS, 5):
            text = tmpl.format(t=f"`{t}`" if rng.random() < 0.3 else t, l=lang)
            items.append(Item(wrap(rng, text), "code", False, "code_single_task",
                              "gen:code:concept", f"code:term:{i}"))
    return items


def gen_code_handwritten(rng: R) -> list[Item]:
    items = []
    for hi, (text, hard) in enumerate(CODE_HANDWRITTEN):
        for k in range(3):
            t = text if k == 0 else wrap(rng, text, 0.6)
            items.append(Item(t, "code", hard,
                              "code_multi_part_task" if hard else "code_single_task",
                              "hand:code", f"code:hand:{hi}"))
    return items


# Signature-plus-docstring prompts. Each spec: name, params, return type, description,
# reference implementation (to compute the docstring examples), example argument lists,
# hard?. Written for this corpus; any name that is also a HumanEval entry point is dropped.
FnSpec = tuple[str, list[tuple[str, str]], str, str, Callable[..., object], list[str], bool]

def _balanced(s: str) -> bool:
    stack: list[str] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for c in s:
        if c in "([{":
            stack.append(c)
        elif c in pairs and (not stack or stack.pop() != pairs[c]):
            return False
    return not stack


def _merge(iv: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(iv):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _spiral(m: list[list[int]]) -> list[int]:
    out: list[int] = []
    while m:
        out += m.pop(0)
        m = [list(r) for r in zip(*m, strict=True)][::-1]
    return out


def _inc_run(xs: list[int]) -> list[int]:
    best: list[int] = []
    cur: list[int] = []
    for x in xs:
        cur = [*cur, x] if cur and x > cur[-1] else [x]
        if len(cur) > len(best):
            best = cur
    return best


def _rpn(ts: list[str]) -> int:
    st: list[int] = []
    for t in ts:
        if t in "+-*/":
            b, a = st.pop(), st.pop()
            st.append({"+": a + b, "-": a - b, "*": a * b, "/": int(a / b)}[t])
        else:
            st.append(int(t))
    return st[0]


def _anagrams(ws: list[str]) -> list[list[str]]:
    groups: dict[str, list[str]] = {}
    for w in ws:
        groups.setdefault("".join(sorted(w)), []).append(w)
    return list(groups.values())


def _lev(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _islands(g: list[list[int]]) -> int:
    seen: set[tuple[int, int]] = set()
    count = 0
    for i, row in enumerate(g):
        for j, v in enumerate(row):
            if v and (i, j) not in seen:
                count += 1
                todo = [(i, j)]
                while todo:
                    a, b = todo.pop()
                    if (a, b) in seen or not (0 <= a < len(g) and 0 <= b < len(row)) or not g[a][b]:
                        continue
                    seen.add((a, b))
                    todo += [(a + 1, b), (a - 1, b), (a, b + 1), (a, b - 1)]
    return count


def _coins(cs: list[int], amount: int) -> int:
    best = [0] + [amount + 1] * amount
    for a in range(1, amount + 1):
        for c in cs:
            if c <= a:
                best[a] = min(best[a], best[a - c] + 1)
    return best[amount] if best[amount] <= amount else -1


def _ipv4(s: str) -> bool:
    parts = s.split(".")
    return len(parts) == 4 and all(
        p.isdigit() and int(p) <= 255 and (p == "0" or not p.startswith("0")) for p in parts)


def _roman(s: str) -> int:
    v = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}
    return sum(-v[c] if i + 1 < len(s) and v[c] < v[s[i + 1]] else v[c] for i, c in enumerate(s))


def _comb(n: int, k: int) -> int:
    out = 1
    for i in range(k):
        out = out * (n - i) // (i + 1)
    return out


def _next_perm(d: list[int]) -> list[int]:
    d = list(d)
    i = len(d) - 2
    while i >= 0 and d[i] >= d[i + 1]:
        i -= 1
    if i < 0:
        return sorted(d)
    j = len(d) - 1
    while d[j] <= d[i]:
        j -= 1
    d[i], d[j] = d[j], d[i]
    return d[: i + 1] + d[i + 1:][::-1]


def _isprime(n: int) -> bool:
    return n > 1 and all(n % k for k in range(2, int(n**0.5) + 1))


def _top_k(words: list[str], k: int) -> list[str]:
    counts: Counter[str] = Counter(words)
    return [w for w, _ in sorted(counts.items(), key=lambda p: (-p[1], p[0]))[:k]]


def _collatz(n: int) -> int:
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


def _kadane(xs: list[int]) -> int:
    best = cur = xs[0]
    for x in xs[1:]:
        cur = max(x, cur + x)
        best = max(best, cur)
    return best


def _fib_like(n: int) -> int:
    a, b = 1, 1
    for _ in range(n - 1):
        a, b = b, a + b
    return b


def _bfs(edges: list[tuple[str, str]], s: str, g: str) -> int:
    adj: dict[str, list[str]] = defaultdict(list)
    for a, b in edges:
        adj[a].append(b)
        adj[b].append(a)
    frontier, dist = [s], {s: 0}
    while frontier:
        nxt = []
        for u in frontier:
            for v in adj[u]:
                if v not in dist:
                    dist[v] = dist[u] + 1
                    nxt.append(v)
        frontier = nxt
    return dist.get(g, -1)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.title() for w in rest)


_JS_TYPES = {"str": "string", "int": "number", "float": "number", "bool": "boolean"}


def _js_type(t: str) -> str:
    if t in _JS_TYPES:
        return _JS_TYPES[t]
    if t.startswith("List["):
        return _js_type(t[5:-1]) + "[]"
    if t.startswith("Dict["):
        return "Object"
    return "*"


def _wrap_words(text: str, width: int, indent: str) -> str:
    lines: list[str] = []
    cur = ""
    for w in text.split():
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}" if cur else w
    lines.append(cur)
    return ("\n" + indent).join(lines)


def render_signature_prompt(rng: R, spec: FnSpec) -> tuple[str, str]:
    """One prompt for a spec, in one of several styles; returns (text, style)."""
    name, params, ret, desc, fn, examples, _ = spec
    shown = [(a, repr(fn(*eval(f"({a},)")))) for a in examples]
    typed = rng.random() < 0.75
    sig = ", ".join(f"{p}: {t}" if typed else p for p, t in params)
    arrow = f" -> {ret}" if typed else ""
    needed = [k for k in ("Dict", "List", "Optional", "Tuple")
              if any(k in t for _, t in params) or k in ret]
    imports = f"from typing import {', '.join(needed)}\n\n\n" if typed and needed else ""
    style = rng.choice(["doctest", "doctest", "example", "google", "comment", "js", "java_like",
                        "instruction"])
    q = '"""' if rng.random() < 0.85 else "'''"
    body_desc = _wrap_words(desc, 72, "    ")
    if style in ("doctest", "instruction"):
        ex = "".join(f"\n    >>> {name}({a})\n    {r}" for a, r in shown)
        lead = " " if rng.random() < 0.5 else ""
        text = f"{imports}def {name}({sig}){arrow}:\n    {q}{lead}{body_desc}{ex}\n    {q}\n"
        if style == "instruction":
            text = pick(rng, ["Complete the following Python function.\n\n",
                              "Implement this function:\n\n", "Fill in the body:\n\n",
                              "Write the implementation for this stub.\n\n"]) + text
    elif style == "example":
        ex = "\n".join(f"        {name}({a}) == {r}" for a, r in shown)
        word = pick(rng, ["Example", "Examples", "For example"])
        text = (f"{imports}def {name}({sig}){arrow}:\n    {q}\n    {body_desc}\n\n"
                f"    {word}:\n{ex}\n    {q}\n")
    elif style == "google":
        args = "\n".join(f"        {p}: the {p.replace('_', ' ')}." for p, _ in params)
        returns = pick(rng, ["The result.", "See above.", "The computed value."])
        text = (f"{imports}def {name}({sig}){arrow}:\n    {q}{body_desc}\n\n    Args:\n{args}\n\n"
                f"    Returns:\n        {returns}\n    {q}\n")
        if rng.random() < 0.5:
            text += "    pass\n"
    elif style == "comment":
        text = f"# {_wrap_words(desc, 76, '# ')}\n" + "".join(
            f"# {name}({a}) -> {r}\n" for a, r in shown) + f"def {name}({sig}){arrow}:\n"
    elif style == "js":
        cname = _camel(name)
        ps = "\n".join(f" * @param {{{_js_type(t)}}} {_camel(p)}" for p, t in params)
        ex = "".join(f"\n * {cname}({a}) // {r}" for a, r in shown)
        text = (f"/**\n * {_wrap_words(desc, 72, ' * ')}\n{ps}\n"
                f" * @returns {{{_js_type(ret)}}}{ex}\n */\n"
                f"function {cname}({', '.join(_camel(p) for p, _ in params)}) {{\n")
    else:  # java_like
        cname = _camel(name)
        jt = {"str": "String", "int": "int", "float": "double", "bool": "boolean"}
        ps = ", ".join(f"{jt.get(t, 'Object')} {_camel(p)}" for p, t in params)
        text = (f"/**\n * {_wrap_words(desc, 72, ' * ')}\n */\n"
                f"public static {jt.get(ret, 'Object')} {cname}({ps}) {{\n    // TODO\n}}\n")
    return text, style


REFERENCES: dict[str, Callable[..., object]] = {
    "count_words": lambda s: len(s.split()),
    "reverse_words": lambda s: " ".join(reversed(s.split())),
    "is_even": lambda n: n % 2 == 0,
    "clamp": lambda v, lo, hi: max(lo, min(hi, v)),
    "sum_of_squares": lambda xs: sum(x * x for x in xs),
    "count_occurrences": lambda xs, t: xs.count(t),
    "celsius_to_fahrenheit": lambda c: c * 9 / 5 + 32,
    "first_repeated_char": lambda s: next((c for i, c in enumerate(s) if c in s[:i]), ""),
    "running_total": lambda xs: [sum(xs[: i + 1]) for i in range(len(xs))],
    "word_lengths": lambda ws: {w: len(w) for w in ws},
    "digits_product": lambda n: eval("*".join(str(n))),
    "count_positives": lambda xs: sum(x > 0 for x in xs),
    "interleave": lambda a, b: [x for p in zip(a, b, strict=True) for x in p],
    "longest_run": lambda s: max((len(m.group()) for m in re.finditer(r"(.)\1*", s)), default=0),
    "to_snake_case": lambda s: re.sub(r"(?<!^)(?=[A-Z])", "_", s).lower(),
    "nth_triangular": lambda n: n * (n + 1) // 2,
    "mirror_string": lambda s: s + s[::-1],
    "safe_divide": lambda a, b: None if b == 0 else a / b,
    "min_max": lambda xs: (min(xs), max(xs)),
    "only_letters": lambda s: "".join(c for c in s if c.isalpha()),
    "rotate_left": lambda xs, k: xs[k % len(xs):] + xs[: k % len(xs)] if xs else [],
    "initials": lambda s: "".join(w[0].upper() for w in s.split()),
    "average_word_length": lambda s: (sum(map(len, s.split())) / len(s.split()) if s.split()
                                      else 0.0),
    "is_pangram": lambda s: set("abcdefghijklmnopqrstuvwxyz") <= set(s.lower()),
    "chunk_list": lambda xs, n: [xs[i: i + n] for i in range(0, len(xs), n)],
    "balanced_brackets": lambda s: _balanced(s),
    "run_length_encode": lambda s: "".join(f"{m.group()[0]}{len(m.group())}"
                                           for m in re.finditer(r"(.)\1*", s)),
    "merge_intervals": lambda iv: _merge(iv),
    "kth_smallest": lambda xs, k: sorted(xs)[k - 1],
    "spiral_order": lambda m: _spiral(m),
    "longest_increasing_run": lambda xs: _inc_run(xs),
    "evaluate_rpn": lambda ts: _rpn(ts),
    "group_anagrams": lambda ws: _anagrams(ws),
    "edit_distance": lambda a, b: _lev(a, b),
    "num_islands": lambda g: _islands(g),
    "coin_change": lambda cs, a: _coins(cs, a),
    "top_k_frequent": lambda ws, k: _top_k(ws, k),
    "valid_ipv4": lambda s: _ipv4(s),
    "roman_to_int": lambda s: _roman(s),
    "pascal_row": lambda n: [_comb(n, k) for k in range(n + 1)],
    "matrix_multiply": lambda a, b: [[sum(x * y for x, y in zip(r, c, strict=True))
                                      for c in zip(*b, strict=True)] for r in a],
    "word_frequencies": lambda s: dict(Counter(re.findall(r"[a-z']+", s.lower()))),
    "next_permutation": lambda d: _next_perm(d),
    "daily_warmer": lambda t: [next((j - i for j in range(i + 1, len(t)) if t[j] > t[i]), 0)
                               for i in range(len(t))],
    "product_except_self": lambda xs: [eval("*".join(map(str, xs[:i] + xs[i + 1:])) or "1")
                                       for i in range(len(xs))],
    "caesar_shift": lambda s, k: "".join(chr((ord(c) - 97 + k) % 26 + 97) if c.islower() else c
                                         for c in s),
    "count_primes_below": lambda n: sum(_isprime(k) for k in range(n)),
    "second_largest": lambda xs: sorted(set(xs))[-2] if len(set(xs)) > 1 else None,
    "title_words": lambda s: [w for w in s.split() if w[:1].isupper()],
    "pairwise_diffs": lambda xs: [b - a for a, b in itertools.pairwise(xs)],
    "is_armstrong": lambda n: n == sum(int(d) ** len(str(n)) for d in str(n)),
    "binary_gap": lambda n: max((len(z) for z in bin(n)[2:].strip("0").split("1")), default=0),
    "format_duration": lambda s: f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}",
    "dedupe_keep_order": lambda xs: list(dict.fromkeys(xs)),
    "max_subarray_sum": lambda xs: _kadane(xs),
    "parse_key_values": lambda s: {k.strip(): v.strip() for k, v in (
        p.split("=", 1) for p in s.split(";") if "=" in p)},
    "stair_paths": lambda n: _fib_like(n),
    "minutes_to_hours": lambda m: f"{m // 60}h {m % 60}m",
    "percent_change": lambda a, b: round((b - a) / a * 100, 1),
    "compound_amount": lambda p, r, y: round(p * (1 + r) ** y, 2),
    "grade_letter": lambda s: ("A" if s >= 90 else "B" if s >= 80 else "C" if s >= 70
                               else "D" if s >= 60 else "F"),
    "digit_sum_until_single": lambda n: 0 if n == 0 else 1 + (n - 1) % 9,
    "weighted_average": lambda v, w: sum(a * b for a, b in zip(v, w, strict=True)) / sum(w),
    "seconds_between": lambda a, b: (
        sum(int(x) * m for x, m in zip(b.split(":"), (3600, 60, 1), strict=True))
        - sum(int(x) * m for x, m in zip(a.split(":"), (3600, 60, 1), strict=True))) % 86400,
    "count_divisible": lambda lo, hi, k: hi // k - (lo - 1) // k,
    "nearest_multiple": lambda n, b: (n + b // 2) // b * b,
    "digits_histogram": lambda n: dict(Counter(int(c) for c in str(n))),
    "largest_prime_below": lambda n: next((k for k in range(n - 1, 1, -1) if _isprime(k)), None),
    "collatz_steps": lambda n: _collatz(n),
    "even_index_sum": lambda xs: sum(xs[::2]) * xs[-1] if xs else 0,
    "perfect_numbers_upto": lambda n: [k for k in range(2, n + 1)
                                       if sum(d for d in range(1, k) if k % d == 0) == k],
    "matrix_trace": lambda m: sum(m[i][i] for i in range(len(m))),
    "shortest_path_len": lambda es, s, g: _bfs(es, s, g),
}
FN_SPECS: list[FnSpec] = [
    (s["name"], [(p, t) for p, t in s["params"]], s["returns"], s["description"],
     REFERENCES[s["name"]], s["examples"], s["hard"]) for s in _SEEDS["fn_specs"]]


def gen_code_signatures(rng: R, reserved_names: set[str]) -> tuple[list[Item], int]:
    items, dropped = [], 0
    for spec in FN_SPECS:
        if spec[0] in reserved_names:
            dropped += 1
            continue
        for _ in range(12):
            text, style = render_signature_prompt(rng, spec)
            items.append(Item(text, "code", spec[6],
                              "code_multi_part_task" if spec[6] else "code_single_task",
                              f"gen:code:signature:{style}", f"code:sig:{spec[0]}"))
    return items, dropped


def gen_code(rng: R, reserved_names: set[str]) -> tuple[list[Item], int]:
    sig, dropped = gen_code_signatures(rng, reserved_names)
    return (gen_code_requests(rng) + gen_code_snippets(rng) + gen_code_errors(rng)
            + gen_code_handwritten(rng) + gen_code_terms(rng) + sig), dropped
