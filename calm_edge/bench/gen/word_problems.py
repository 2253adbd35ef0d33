"""Arithmetic word problems with random values, in three families of templates: the bench
workload's, the outcome corpus's and the classifier corpus's. The families never share a
wording (the corpora must stay disjoint); they share the helpers, the seed lists' home
(data/word_problems.json) and, for the two gradable sets, `math_queries`.

A bench or outcome template returns (problem text, integer answer); a classifier template
returns (text, number of arithmetic operations), the difficulty label's input. Pure
functions of the rng: the order of its calls is part of every built file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from calm_edge.bench.gen.common import OWN_LICENCE, R, pick, seeds, user
from calm_edge.bench.workload import Query

_SEEDS = seeds("word_problems")
BENCH_PEOPLE: list[str] = _SEEDS["bench"]["people"]
OUTCOME_PEOPLE: list[str] = _SEEDS["outcome"]["people"]
NAMES: list[str] = _SEEDS["classifier"]["names"]
ITEMS: list[str] = _SEEDS["classifier"]["items"]
CONTAINERS: list[str] = _SEEDS["classifier"]["containers"]
CLASSIFIER_PREFIXES: list[str] = _SEEDS["classifier"]["prefixes"]
CLASSIFIER_SUFFIXES: list[str] = _SEEDS["classifier"]["suffixes"]

MathGen = Callable[[R], tuple[str, int]]  # -> (problem text, integer answer)
OpsGen = Callable[[R], tuple[str, int]]   # -> (text, number of arithmetic operations)


# ---------------------------------------------------------------------------------------
# The bench workload's templates (one-step and two-step)
# ---------------------------------------------------------------------------------------
# one-step
def mq_thermometer(rng: R) -> tuple[str, int]:
    a, b = rng.randint(-8, 15), rng.randint(3, 19)
    return pick(rng, [
        f"At dawn the thermometer on the porch read {a} degrees. By noon it had climbed "
        f"{b} degrees. What did it read at noon?",
        f"The morning temperature in a mountain village was {a} degrees, and it rose by "
        f"{b} degrees before lunch. What was the temperature at lunch?",
    ]), a + b


def mq_ribbon(rng: R) -> tuple[str, int]:
    piece, k = rng.randint(6, 25), rng.randint(4, 18)
    return pick(rng, [
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
    return pick(rng, [
        f"{'An' if animal[0] in 'aeiou' else 'A'} {animal} has {per} {part}. How many {part} "
        f"do {n} {plural} have altogether?",
        f"In an aquarium exhibit there are {n} {plural}, and each {animal} has {per} {part}. "
        f"How many {part} are there in total?",
    ]), per * n


def mq_library(rng: R) -> tuple[str, int]:
    a = rng.randint(300, 2500)
    b = rng.randint(20, a // 3)
    return pick(rng, [
        f"The town library owned {a} books. During a clear-out it donated {b} old books to "
        f"a school. How many books does the library own now?",
        f"A used-book shop had {a} paperbacks on its shelves and sold {b} of them at a "
        f"weekend fair. How many paperbacks remain?",
    ]), a - b


def mq_vineyard(rng: R) -> tuple[str, int]:
    r, s = rng.randint(6, 40), rng.randint(8, 45)
    return pick(rng, [
        f"A vineyard has {r} rows with {s} grapevines in every row. How many grapevines "
        f"grow in the vineyard?",
        f"A greenhouse has {r} shelves, and each shelf holds {s} flower pots. How many flower "
        f"pots are in the greenhouse?",
    ]), r * s


def mq_printer(rng: R) -> tuple[str, int]:
    rate, minutes = rng.randint(12, 45), rng.randint(3, 16)
    return pick(rng, [
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
    return pick(rng, [
        f"A piggy bank holds {n} {coin}. How many cents is that?",
        f"{pick(rng, BENCH_PEOPLE)} empties a jar containing {n} {coin}. What is their total "
        f"value in cents?",
    ]), n * cents


# two-step
def mq_bus(rng: R) -> tuple[str, int]:
    a = rng.randint(18, 55)
    b, c = rng.randint(3, a - 5), rng.randint(2, 20)
    return pick(rng, [
        f"A bus leaves the depot with {a} passengers. At the first stop {b} people get off "
        f"and {c} people get on. How many passengers are on the bus now?",
        f"A ferry carries {a} travellers. At an island {b} of them leave and {c} new "
        f"travellers board. How many travellers are on the ferry now?",
    ]), a - b + c


def mq_change(rng: R) -> tuple[str, int]:
    price, k = rng.randint(2, 9), rng.randint(2, 6)
    bill = 50 if price * k < 50 else 100
    name = pick(rng, BENCH_PEOPLE)
    return pick(rng, [
        f"A box of crayons costs ${price}. {name} buys {k} boxes and pays with a ${bill} "
        f"bill. How many dollars of change does {name} get?",
        f"Notebooks cost ${price} each. {name} buys {k} notebooks and hands the cashier "
        f"${bill}. How much change, in dollars, should {name} receive?",
    ]), bill - price * k


def mq_orchard(rng: R) -> tuple[str, int]:
    r, c = rng.randint(4, 15), rng.randint(6, 20)
    d = rng.randint(2, r * c // 4)
    return pick(rng, [
        f"An orchard has {r} rows of {c} cherry trees. A storm knocks down {d} trees. How "
        f"many trees are still standing?",
        f"A parking lot has {r} lanes with {c} spaces in each lane. {d} spaces are closed "
        f"for repairs. How many spaces can still be used?",
    ]), r * c - d


def mq_novel(rng: R) -> tuple[str, int]:
    p, d = rng.randint(12, 40), rng.randint(3, 9)
    n = p * d + rng.randint(30, 300)
    name = pick(rng, BENCH_PEOPLE)
    return pick(rng, [
        f"A novel has {n} pages. {name} reads {p} pages a day for {d} days. How many pages "
        f"are left to read?",
        f"A puzzle has {n} pieces. {name} places {p} pieces every evening for {d} evenings. "
        f"How many pieces have not been placed yet?",
    ]), n - p * d


def mq_train(rng: R) -> tuple[str, int]:
    k, s = rng.randint(4, 12), rng.randint(40, 80)
    o = rng.randint(10, k * s - 10)
    return pick(rng, [
        f"A train has {k} cars with {s} seats in each car. {o} seats are taken. How many "
        f"seats are empty?",
        f"A concert hall has {k} balconies with {s} seats each, and {o} tickets have been "
        f"sold. How many seats are still free?",
    ]), k * s - o


def mq_raffle(rng: R) -> tuple[str, int]:
    n, k, p = rng.randint(5, 30), rng.randint(3, 12), rng.randint(2, 5)
    return pick(rng, [
        f"Each of {n} students sells {k} raffle tickets at ${p} per ticket. How many "
        f"dollars do the students raise in total?",
        f"A club has {n} members, and each member knits {k} scarves that sell for ${p} "
        f"each. How many dollars does the club earn?",
    ]), n * k * p


def mq_crates(rng: R) -> tuple[str, int]:
    k, n = rng.randint(6, 24), rng.randint(3, 12)
    s = rng.randint(5, k * n - 5)
    return pick(rng, [
        f"A crate holds {k} bottles of juice. A cafe orders {n} crates and sells {s} bottles "
        f"by closing time. How many bottles are left?",
        f"A carton holds {k} eggs. A bakery receives {n} cartons and uses {s} eggs in one "
        f"morning. How many eggs does it have left?",
    ]), k * n - s


def mq_share(rng: R) -> tuple[str, int]:
    people, each, extra = rng.randint(2, 6), rng.randint(6, 30), rng.randint(2, 9)
    total = people * each
    return pick(rng, [
        f"{people} friends split a taxi fare of ${total} equally, and each of them also "
        f"pays a ${extra} tip. How many dollars does each friend pay?",
        f"A group of {people} coworkers shares a ${total} lunch bill evenly, then each adds "
        f"${extra} for dessert. How many dollars does each coworker spend?",
    ]), each + extra


BENCH_ONE_STEP: dict[str, MathGen] = {
    "thermometer": mq_thermometer, "ribbon": mq_ribbon, "legs": mq_legs,
    "library": mq_library, "vineyard": mq_vineyard, "printer": mq_printer,
    "elevator": mq_elevator, "coins": mq_coins,
}
BENCH_TWO_STEP: dict[str, MathGen] = {
    "bus": mq_bus, "change": mq_change, "orchard": mq_orchard, "novel": mq_novel,
    "train": mq_train, "raffle": mq_raffle, "crates": mq_crates, "share": mq_share,
}


# ---------------------------------------------------------------------------------------
# The outcome corpus's templates (one-step and two-step), unlike the bench's
# ---------------------------------------------------------------------------------------
# one-step
def mo_score(rng: R) -> tuple[str, int]:
    a, b = rng.randint(12, 70), rng.randint(10, 65)
    return pick(rng, [
        f"A basketball team scored {a} points in the first half and {b} points in the "
        f"second half. What was its final score?",
        f"During a quiz night one team earned {a} points before the break and {b} points "
        f"after it. How many points did the team finish with?",
    ]), a + b


def mo_sunflower(rng: R) -> tuple[str, int]:
    a, b = rng.randint(40, 150), rng.randint(8, 60)
    return pick(rng, [
        f"A sunflower was {a} centimeters tall at the start of July and grew {b} "
        f"centimeters during the month. How tall was it at the end of July, in centimeters?",
        f"A young pine measured {a} centimeters last spring and has grown {b} centimeters "
        f"since. How many centimeters tall is it now?",
    ]), a + b


def mo_battery(rng: R) -> tuple[str, int]:
    a = rng.randint(55, 100)
    b = rng.randint(5, a - 10)
    return pick(rng, [
        f"A phone battery was at {a} percent before a long video call and at {b} percent "
        f"afterwards. By how many percentage points did it drop?",
        f"A laptop showed {a} percent charge in the morning and {b} percent by the evening. "
        f"How many percentage points of charge were used?",
    ]), a - b


def mo_download(rng: R) -> tuple[str, int]:
    total = rng.randint(300, 4000)
    done = rng.randint(50, total - 40)
    return pick(rng, [
        f"A game update is {total} megabytes in size and {done} megabytes have been "
        f"downloaded so far. How many megabytes are still to come?",
        f"A hiking trail is {total} meters long. Kai has already walked {done} meters of it. "
        f"How many meters remain?",
    ]), total - done


def mo_choir(rng: R) -> tuple[str, int]:
    r, s = rng.randint(3, 14), rng.randint(6, 25)
    return pick(rng, [
        f"A choir stands in {r} rows with {s} singers in each row. How many singers are in "
        f"the choir?",
        f"A marching band forms {r} lines of {s} musicians each. How many musicians march?",
    ]), r * s


def mo_stairs(rng: R) -> tuple[str, int]:
    steps, times = rng.randint(12, 48), rng.randint(3, 15)
    name = pick(rng, OUTCOME_PEOPLE)
    return pick(rng, [
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
    return pick(rng, [
        f"A relay race of {k * each} meters is split equally among {k} runners. How many "
        f"meters does each runner cover?",
        f"A road crew has to resurface {k * each} meters of road and shares it equally "
        f"between {k} teams. How many meters does each team resurface?",
    ]), each


def mo_envelopes(rng: R) -> tuple[str, int]:
    per, n = rng.randint(3, 12), rng.randint(8, 60)
    return pick(rng, [
        f"A clerk puts {per} letters into every envelope and has {per * n} letters to send. "
        f"How many envelopes does the clerk fill?",
        f"A florist ties {per} roses into each bouquet and has {per * n} roses. How many "
        f"bouquets can she make?",
    ]), n


def mo_minibus(rng: R) -> tuple[str, int]:
    seats, n = rng.randint(8, 20), rng.randint(3, 12)
    return pick(rng, [
        f"{seats * n} students go on a school trip in minibuses with {seats} seats each, and "
        f"every minibus is full. How many minibuses are used?",
        f"A ski lift carries {seats} people per trip. How many full trips does it take to "
        f"carry {seats * n} skiers up the hill?",
    ]), n


# two-step
def mt_bookcase(rng: R) -> tuple[str, int]:
    s, b, c = rng.randint(3, 8), rng.randint(12, 40), rng.randint(5, 30)
    name = pick(rng, OUTCOME_PEOPLE)
    return pick(rng, [
        f"A bookcase has {s} shelves with {b} books on each shelf. {name} adds {c} more "
        f"books on top. How many books are in the bookcase now?",
        f"A spice rack has {s} tiers holding {b} jars each, and {c} extra jars stand on the "
        f"counter. How many spice jars are there altogether?",
    ]), s * b + c


def mt_training(rng: R) -> tuple[str, int]:
    x, d, y = rng.randint(3, 12), rng.randint(3, 5), rng.randint(8, 30)
    name = pick(rng, OUTCOME_PEOPLE)
    return pick(rng, [
        f"{name} runs {x} kilometers on each of {d} weekdays and then {y} kilometers on "
        f"Saturday. How many kilometers does {name} run that week?",
        f"A swimmer swims {x} laps every morning for {d} mornings and {y} laps in a weekend "
        f"race. How many laps is that in total?",
    ]), x * d + y


def mt_sweets(rng: R) -> tuple[str, int]:
    k, each, eaten = rng.randint(2, 8), rng.randint(3, 15), rng.randint(2, 12)
    name = pick(rng, OUTCOME_PEOPLE)
    return pick(rng, [
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
    return pick(rng, [
        f"{g} classes of {s} pupils each go to the museum, together with {t} teachers. How "
        f"many people go to the museum?",
        f"A wedding has {g} long tables seating {s} guests each, plus a head table for {t} "
        f"people. How many seats are there in all?",
    ]), g * s + t


def mt_seedlings(rng: R) -> tuple[str, int]:
    beds, per = rng.randint(3, 9), rng.randint(4, 15)
    left = rng.randint(3, 40)
    name = pick(rng, OUTCOME_PEOPLE)
    return pick(rng, [
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
    return pick(rng, [
        f"On a hike of {hours} hours, each of {people} hikers drinks {per} liters of water "
        f"per hour. How many liters does the group drink?",
        f"A kennel has {people} dogs, and each dog eats {per} cups of food at each of its "
        f"{hours} meals a week. How many cups of food is that per week?",
    ]), people * hours * per


def mt_allowance(rng: R) -> tuple[str, int]:
    a, s, w = rng.randint(10, 40), rng.randint(2, 9), rng.randint(3, 12)
    name = pick(rng, OUTCOME_PEOPLE)
    return pick(rng, [
        f"{name} gets ${a} of pocket money every week and spends ${s} of it each week. How "
        f"many dollars has {name} saved after {w} weeks?",
        f"A rain barrel gains {a} liters every week from rain, while {s} liters a week are "
        f"used to water plants. How many liters has it gained after {w} weeks?",
    ]), (a - s) * w


def mt_rental(rng: R) -> tuple[str, int]:
    fee, rate, hours = rng.randint(3, 15), rng.randint(4, 18), rng.randint(2, 9)
    return pick(rng, [
        f"Renting a bike costs a ${fee} fee plus ${rate} per hour. How many dollars does it "
        f"cost to rent a bike for {hours} hours?",
        f"A plumber charges ${fee * 5} for the visit plus ${rate} for every hour of work. "
        f"What is the bill, in dollars, for {hours} hours of work?",
    ]), fee + rate * hours


OUTCOME_ONE_STEP: dict[str, MathGen] = {
    "score": mo_score, "sunflower": mo_sunflower, "battery": mo_battery,
    "download": mo_download, "choir": mo_choir, "stairs": mo_stairs, "weeks": mo_weeks,
    "relay": mo_relay, "envelopes": mo_envelopes, "minibus": mo_minibus,
}
OUTCOME_TWO_STEP: dict[str, MathGen] = {
    "bookcase": mt_bookcase, "training": mt_training, "sweets": mt_sweets,
    "evening": mt_evening, "fieldtrip": mt_fieldtrip, "seedlings": mt_seedlings,
    "batteries": mt_batteries, "hike": mt_hike_water, "allowance": mt_allowance,
    "rental": mt_rental,
}


@dataclass(frozen=True)
class MathStyle:
    """How a gradable corpus words and grades its word problems."""

    source_tag: str                 # source "gen:<tag>:<template> (calm-edge)"
    suffix: Callable[[R], str]      # the answer-format request after the problem
    reference_lead: str             # the reference reply's line before "Answer: <n>"
    max_tokens: int = 320


# the bench's one answer-format line (no draw)
BENCH_STYLE = MathStyle("math", lambda rng: str(_SEEDS["bench"]["suffix"]),
                        "Working it out step by step.")
# the outcome corpus's: one of several (one draw per problem)
OUTCOME_STYLE = MathStyle("outcome-math", lambda rng: pick(rng, _SEEDS["outcome"]["suffixes"]),
                          "Let me compute it.")


def math_queries(rng: R, one_step: Mapping[str, MathGen], two_step: Mapping[str, MathGen],
                 per_template: int, style: MathStyle, id_prefix: str = "") -> list[Query]:
    """`per_template` problems of every template, one-step templates first, graded by the
    final number. A problem drawn twice from one template is drawn again."""
    out: list[Query] = []
    for steps, table in ((1, one_step), (2, two_step)):
        for name, fn in table.items():
            seen: set[str] = set()
            i = 0
            while i < per_template:
                text, answer = fn(rng)
                if text in seen:  # same values drawn twice: draw again
                    continue
                seen.add(text)
                out.append(Query(
                    id=f"{id_prefix}math-{name}-{i}", domain="math",
                    messages=user(f"{text} {style.suffix(rng)}"), prompt=None,
                    grader="number", grader_args={"answer": answer},
                    max_tokens=style.max_tokens,
                    source=f"gen:{style.source_tag}:{name} (calm-edge)", licence=OWN_LICENCE,
                    reference=f"{style.reference_lead}\nAnswer: {answer}",
                    tags={"steps": steps, "template": name}))
                i += 1
    return out


# ---------------------------------------------------------------------------------------
# The classifier corpus's templates: (text, operations); hard = two or more operations
# ---------------------------------------------------------------------------------------
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
    return (f"If you invest ${p} at {r}% compounded annually, how much will you have after "
            f"{y} years?"), 4


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
        f"A fish tank measures {a} by {b} by {c} inches. How many cubic inches of water does it "
        f"hold?",
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
        (f"If f(x) = {a}x + {b}, what is f({c})?", 2),
        (f"What is the slope of the line y = {a}x - {b}?", 1),
        (f"Find the slope of the line through ({a}, {b}) and ({c + a}, {d + b}).", 3),
        (f"Solve the inequality {a}x - {b} > {c}.", 2), (f"What is log base 2 of {2 ** a}?", 1),
        (f"Solve {a}^x = {a ** b}.", 1), (f"Evaluate |{a} - {b * 3}| + {c}.", 2),
        (f"What is the inverse of the function f(x) = {a}x + {b}?", 2),
    ])


def m_calculus2(rng: R) -> tuple[str, int]:
    a, b, c = _n(rng, 2, 9), _n(rng, 1, 9), _n(rng, 1, 6)
    return pick(rng, [
        (f"Find dy/dx if y = {a}x^{c + 1} - {b}x.", 2), (f"What is the derivative of e^({a}x)?", 1),
        (f"Compute the integral of {a}/x dx.", 1),
        (f"Evaluate the definite integral of x^{c} from 0 to {b}.", 3),
        (f"Find the second derivative of {a}x^4 - {b}x^2.", 3),
        (f"What is the derivative of ln({a}x + {b})?", 2),
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
        (f"A phone plan costs ${a} a month plus ${b} for setup. What is the cost for {c} "
         f"months?", 2),
        (f"{name} runs {a} laps of a {b * 10} m track. How many kilometers is that?", 2),
        (f"A parking garage has {a} levels with {b * 5} spaces each. If {c} spaces are taken, "
         f"how many are free?", 2),
        (f"There are {a} rows of chairs with {b} chairs in each row. How many chairs are "
         f"there?", 1),
        (f"A book has {a * 10} pages. {name} has read {b}% of it. How many pages are left?", 3),
        (f"{name} earned {a} points in the first game, {b} in the second and {c} in the third. "
         f"What was the average score?", 2),
    ])


CLASSIFIER_TEMPLATES: dict[str, OpsGen] = {
    "add": m_add,
    "ages": m_ages,
    "algebra": m_algebra,
    "avg_speed": m_avg_speed,
    "bakery": m_bakery,
    "box": m_box,
    "calculus": m_calculus,
    "calculus2": m_calculus2,
    "calendar": m_calendar,
    "circle": m_circle,
    "consecutive": m_consecutive,
    "convert": m_convert,
    "discount": m_discount,
    "div": m_div,
    "expr": m_expr,
    "fraction": m_fraction,
    "fuel": m_fuel,
    "gcd": m_gcd,
    "interest": m_interest,
    "linear": m_linear,
    "mul": m_mul,
    "numbers": m_numbers,
    "pages": m_pages,
    "pct_change": m_pct_change,
    "percent": m_percent,
    "percent_of": m_percent_of,
    "pipes": m_pipes,
    "pizza": m_pizza,
    "probability": m_probability,
    "quadratic": m_quadratic,
    "ratio": m_ratio,
    "recipe": m_recipe,
    "rect": m_rect,
    "savings": m_savings,
    "sequence": m_sequence,
    "shopping": m_shopping,
    "speed": m_speed,
    "stats": m_stats,
    "store": m_store,
    "sub": m_sub,
    "system": m_system,
    "tank": m_tank,
    "tip": m_tip,
    "triangle": m_triangle,
    "wage": m_wage,
    "word_misc": m_word_misc,
    "workers": m_workers,
}
