"""Capital-city questions: "what is the capital of X" and "which country has C as its
capital", from the `countryinfo` package's data (MIT) and the curated country table in
data/capitals.json, graded by normalized match with aliases and a reject list.

The bench workload and the outcome corpus share the table and every rule (display names,
renamed capitals, aliases, which names a reply must not contain); each asks in its own
wording (`QuestionStyle`). The classifier corpus asks its own country questions
(`CLASSIFIER_COUNTRIES_*`, `CLASSIFIER_RELATIONS`), ungraded.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calm_edge.bench.gen.common import R, pick, user
from calm_edge.bench.gen.common import seeds as _seeds
from calm_edge.bench.graders import normalize
from calm_edge.bench.workload import Query

_SEEDS = _seeds("capitals")
# countryinfo key -> (name in the question, None: countryinfo's own; capital aliases;
# country aliases). Sovereign states only: countryinfo also lists territories, and some
# entries are stale or disputed.
COUNTRIES: dict[str, tuple[str | None, list[str], list[str]]] = {
    key: (display, caps, names) for key, (display, caps, names) in _SEEDS["countries"].items()}
# countryinfo's file names where they differ from our keys (some are misspelt there)
FILE_STEMS: dict[str, str] = _SEEDS["file_stems"]
# capitals renamed since countryinfo's data: the current name first, the old one an alias
CAPITAL_NOW: dict[str, str] = _SEEDS["capital_now"]
# capital names shared with well-known non-capital or sub-national capitals: never asked
# as "which country has X as its capital"
AMBIGUOUS_CAPITALS: frozenset[str] = frozenset(_SEEDS["ambiguous_capitals"])
CLASSIFIER_COUNTRIES_COMMON: list[str] = _SEEDS["classifier"]["common"]
CLASSIFIER_COUNTRIES_OBSCURE: list[str] = _SEEDS["classifier"]["obscure"]
CLASSIFIER_RELATIONS: list[str] = _SEEDS["classifier"]["relations"]  # "... of {x}?"

FACT_MAX_TOKENS = 48
LICENCE = "MIT (countryinfo data); question text Apache-2.0"

Row = tuple[str, str, list[str], list[str]]  # key, display name, capitals, country names


@dataclass(frozen=True)
class QuestionStyle:
    """A corpus's wordings: capital questions take {x} (the name) or {X} (capitalized),
    country questions {c} (the capital)."""

    capital_questions: tuple[str, ...]
    country_questions: tuple[str, ...]

    @classmethod
    def of(cls, corpus: str) -> QuestionStyle:
        """"bench" or "outcome"."""
        d = _SEEDS[corpus]
        return cls(tuple(d["capital_questions"]), tuple(d["country_questions"]))


def countryinfo_version() -> str:
    return importlib.metadata.version("countryinfo")


def stem(key: str) -> str:
    """countryinfo's file stem for a country key."""
    return FILE_STEMS.get(key, key)


def strip_the(name: str) -> str:
    return name[4:] if name.lower().startswith("the ") else name


@functools.cache
def _countryinfo_dir() -> Path:
    pkg = importlib.import_module("countryinfo")
    return Path(str(pkg.__file__)).resolve().parent / "data"


def _load_country(key: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (_countryinfo_dir() / f"{stem(key)}.json").read_text(encoding="utf-8"))
    return data


def country_rows() -> list[Row]:
    """Every country of the table with its accepted capitals and names: the display name,
    CAPITAL_NOW, the aliases, countryinfo's altSpellings (longer than 3 characters, ASCII
    once normalized, not the demonym) and "Saint" for "St.". Reads countryinfo."""
    rows: list[Row] = []
    for key, (display, cap_alias, country_alias) in COUNTRIES.items():
        d = _load_country(key)
        name, capital = display or str(d["name"]), str(d["capital"])
        aliases = list(cap_alias)
        if key in CAPITAL_NOW:
            capital, aliases = CAPITAL_NOW[key], [capital, *aliases]
        demonym = normalize(str(d.get("demonym") or ""))
        alts = [a.strip() for a in d.get("altSpellings") or [] if len(a.strip()) > 3
                and normalize(a) and normalize(a).isascii() and normalize(a) != demonym]
        names = list(dict.fromkeys([strip_the(name), str(d["name"]), *country_alias, *alts]))
        capitals = list(dict.fromkeys([capital, *aliases]))
        if capital.startswith("St. "):
            capitals.append("Saint " + capital[4:])
        rows.append((key, name, capitals, names))
    return rows


def name_tables(rows: list[Row]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(key -> normalized country names, key -> normalized capitals): `rejects`' input."""
    return ({key: [normalize(c) for c in names] for key, _, _, names in rows},
            {key: [normalize(c) for c in caps] for key, _, caps, _ in rows})


def rejects(key: str, table: dict[str, list[str]]) -> list[str]:
    """Names of other countries (or capitals) that contain this one's as whole words: a
    reply naming them must fail ("Nigeria" for Niger, "Equatorial Guinea" for Guinea)."""
    mine = table[key]
    out: list[str] = []
    for other, names in table.items():
        if other == key:
            continue
        for o in names:
            if any(f" {m} " in f" {o} " for m in mine) and o not in mine:
                out.append(o)
    return sorted(set(out))


def echoes(row: Row) -> bool:
    """The capital's name contains the country's (Mexico City, Kuwait City): an answer
    echoing the question would pass, so neither kind of question is asked."""
    return any(f" {normalize(strip_the(row[1]))} " in f" {normalize(c)} " for c in row[2])


def capital_of(rng: R, row: Row, style: QuestionStyle, capital_table: dict[str, list[str]],
               version: str, id_prefix: str = "") -> Query:
    """"What is the capital of <country>?" in one of `style`'s wordings (one draw)."""
    key, name, capitals, _ = row
    text = pick(rng, style.capital_questions).format(x=name, X=name[0].upper() + name[1:])
    return Query(
        id=f"{id_prefix}factual-capital-{key}", domain="factual", messages=user(text),
        prompt=None, grader="match",
        grader_args={"answers": capitals, "reject": rejects(key, capital_table)},
        max_tokens=FACT_MAX_TOKENS, source=f"countryinfo {version}: {stem(key)}.json",
        licence=LICENCE, reference=capitals[0], tags={"kind": "capital_of"})


def country_of(rng: R, row: Row, style: QuestionStyle, name_table: dict[str, list[str]],
               version: str, id_prefix: str = "") -> Query:
    """"Which country has <capital> as its capital?" in one of `style`'s wordings (one
    draw)."""
    key, name, capitals, names = row
    text = pick(rng, style.country_questions).format(c=capitals[0])
    return Query(
        id=f"{id_prefix}factual-country-{key}", domain="factual", messages=user(text),
        prompt=None, grader="match",
        grader_args={"answers": names, "reject": rejects(key, name_table)},
        max_tokens=FACT_MAX_TOKENS, source=f"countryinfo {version}: {stem(key)}.json",
        licence=LICENCE, reference=strip_the(name), tags={"kind": "country_of"})
