"""The query classifier's labeled corpus: items in five domains with a heuristic difficulty
label, and the wrappers that keep chat framing from carrying domain signal. Code items are
in `classifier_code`; math, country and verifiable-instruction items use the shared
`word_problems`, `capitals` and `instructions` generators; the seed lists are in
data/classifier.json.

Difficulty rules (recorded in each item's `rule`): math, two or more arithmetic operations;
factual, an obscure entity (the second tier of each list) or a multi-hop question;
instruct, two or more verifiable constraints or a long multi-part request; writing, a long
source text (>= LONG_PASSAGE_CHARS), two or more added requirements, or a long-form piece.
Pure functions of the rng: the order of its calls is part of the built corpus.
"""

from __future__ import annotations

from dataclasses import dataclass

from calm_edge.bench.gen.capitals import (
    CLASSIFIER_COUNTRIES_COMMON as COUNTRIES_COMMON,
)
from calm_edge.bench.gen.capitals import (
    CLASSIFIER_COUNTRIES_OBSCURE as COUNTRIES_OBSCURE,
)
from calm_edge.bench.gen.capitals import CLASSIFIER_RELATIONS as COUNTRY_RELATIONS
from calm_edge.bench.gen.common import R, pick, seeds
from calm_edge.bench.gen.instructions import CLASSIFIER_BASES as IF_BASES
from calm_edge.bench.gen.instructions import CLASSIFIER_CONSTRAINTS as IF_CONSTRAINTS
from calm_edge.bench.gen.word_problems import CLASSIFIER_PREFIXES as MATH_PREFIX
from calm_edge.bench.gen.word_problems import CLASSIFIER_SUFFIXES as MATH_SUFFIX
from calm_edge.bench.gen.word_problems import CLASSIFIER_TEMPLATES as MATH_TEMPLATES


@dataclass(frozen=True)
class Item:
    """One labeled query before it becomes a record."""

    text: str
    domain: str
    hard: bool
    rule: str  # why hard/easy, recorded in difficulty_source
    source: str
    group: str  # split unit: every item of a group lands in the same split


_SEEDS = seeds("classifier")
# Generic wrappers, applied in every domain so that politeness carries no domain signal.
PREFIXES: list[str] = _SEEDS["wrap_prefixes"]
SUFFIXES: list[str] = _SEEDS["wrap_suffixes"]
# factual
FACT_ENTITIES: dict[str, tuple[list[str], list[str], list[str]]] = {
    rel: (d["templates"], d["common"], d["obscure"])
    for rel, d in _SEEDS["fact_entities"].items()}  # relation: (templates, common, obscure)
FACTUAL_HANDWRITTEN: list[tuple[str, bool]] = [(q, h) for q, h in _SEEDS["factual_handwritten"]]
FACT_FRAMES: list[str] = _SEEDS["fact_frames"]
# instruct
CHAT: list[str] = _SEEDS["chat"]
ADVICE: list[str] = _SEEDS["advice"]
ADVICE_PHRASINGS: list[str] = _SEEDS["advice_phrasings"]
HOWTO: list[str] = _SEEDS["howto"]
DECISIONS: list[str] = _SEEDS["decisions"]
RECOMMEND_THINGS: list[str] = _SEEDS["recommend_things"]
RECOMMEND_PHRASINGS: list[str] = _SEEDS["recommend_phrasings"]
ROLEPLAY: list[str] = _SEEDS["roleplay"]
SITUATIONS: list[str] = _SEEDS["situations"]
YES_NO: list[str] = _SEEDS["yes_no"]
# writing
PASSAGES: list[str] = _SEEDS["passages"]
LONG_PASSAGE_CHARS = 400
SUMMARIZE: list[str] = _SEEDS["summarize"]
REWRITE: list[str] = _SEEDS["rewrite"]
ERRORFUL: list[str] = _SEEDS["errorful"]
PROOFREAD: list[str] = _SEEDS["proofread"]
TRANSLATE_SRC: list[str] = _SEEDS["translate_sources"]
TRANSLATE: list[str] = _SEEDS["translate"]
COMPOSE_FORMS: dict[str, tuple[list[str], list[str], bool]] = {
    form: (d["templates"], d["topics"], d["long_form"])
    for form, d in _SEEDS["compose_forms"].items()}  # form: (templates, topics, long-form?)
COMPOSE_EXTRAS: list[str] = _SEEDS["compose_extras"]


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



# -- math ---------------------------------------------------------------------------------

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



# -- factual ------------------------------------------------------------------------------

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


# -- instruct -----------------------------------------------------------------------------

def _copies(rng: R, texts: list[str], n: int, p: float, rule: str, kind: str,
            group: str) -> list[Item]:
    """`n` easy instruct items per hand-written text: the text itself, then `n - 1` wrapped
    versions (`wrap` with probability `p`)."""
    return [Item(t if k == 0 else wrap(rng, t, p), "instruct", False, rule,
                 f"hand:instruct:{kind}", f"instruct:{group}:{i}")
            for i, t in enumerate(texts) for k in range(n)]


def gen_instruct(rng: R) -> list[Item]:
    items: list[Item] = []

    def add(text: str, hard: bool, rule: str, source: str, group: str) -> None:
        items.append(Item(text, "instruct", hard, rule, source, group))

    items += _copies(rng, CHAT, 4, 0.5, "instruct_plain", "chat", "chat")
    for i, x in enumerate(ADVICE):
        for tmpl in rng.sample(ADVICE_PHRASINGS, 8):
            long_plan = len(tmpl) > 80
            add(wrap(rng, tmpl.format(x=x)), long_plan,
                "instruct_multi_part" if long_plan else "instruct_plain",
                "gen:instruct:advice", f"instruct:advice:{i}")
    items += _copies(rng, HOWTO, 4, 0.6, "instruct_plain", "howto", "howto")
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
    items += _copies(rng, ROLEPLAY, 4, 0.6, "instruct_plain", "roleplay", "roleplay")
    items += _copies(rng, SITUATIONS, 4, 0.6, "instruct_plain", "situation", "situation")
    items += _copies(rng, YES_NO, 3, 0.6, "instruct_1_constraint", "short_answer", "yesno")
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



# -- writing ------------------------------------------------------------------------------

def gen_writing(rng: R) -> list[Item]:
    items: list[Item] = []

    def add(text: str, hard: bool, rule: str, source: str, group: str) -> None:
        items.append(Item(text, "writing", hard, rule, source, group))

    for pi, p in enumerate(PASSAGES):
        long = len(p) >= LONG_PASSAGE_CHARS
        for tmpl in rng.sample(SUMMARIZE, 12):
            add(wrap(rng, tmpl.format(p=p), 0.15), long,
                "writing_long_source" if long else "writing_short_source",
                "gen:writing:summarize", f"writing:passage:{pi}")
        for tmpl in rng.sample(REWRITE, 14):
            multi = tmpl.count(",") >= 2 and "keep it under" in tmpl
            hard = long or multi
            add(wrap(rng, tmpl.format(p=p), 0.15), hard,
                "writing_long_source" if long
                else ("writing_reqs>=2" if multi else "writing_short_source"),
                "gen:writing:rewrite", f"writing:passage:{pi}")
        # Two passages glued: a longer, harder source.
        q = PASSAGES[(pi + 7) % len(PASSAGES)]
        lead = pick(rng, ["Summarize these two paragraphs together:", "Combine and summarize:",
                          "Merge these into one coherent paragraph:"])
        add(f"{lead}\n\n{p}\n\n{q}",
            True, "writing_long_source", "gen:writing:merge", f"writing:passage:{pi}")
    for ei, p in enumerate(ERRORFUL):
        for tmpl in rng.sample(PROOFREAD, 5):
            add(wrap(rng, tmpl.format(p=p), 0.15), False, "writing_short_source",
                "gen:writing:proofread",
                f"writing:proofread:{ei}")
    for ti, p in enumerate(TRANSLATE_SRC):
        for tmpl in rng.sample(TRANSLATE, 4):
            add(wrap(rng, tmpl.format(p=p), 0.15), False, "writing_short_source",
                "gen:writing:translate",
                f"writing:translate:{ti}")
    for form, (tmpls, topics, long_form) in COMPOSE_FORMS.items():
        for ti, t in enumerate(topics):
            for tmpl in rng.sample(tmpls, min(len(tmpls), 4)) * 2:
                n_extra = rng.choice([0, 0, 1, 1, 2])
                text = tmpl.format(t=t) + "".join(rng.sample(COMPOSE_EXTRAS, n_extra))
                hard = long_form or n_extra >= 2
                add(wrap(rng, text), hard,
                    "writing_long_form" if long_form
                    else ("writing_reqs>=2" if hard else "writing_short_piece"),
                    f"gen:writing:compose:{form}", f"writing:{form}:{ti}")
    return items
