"""What specialisation cost: the base model and the tuned run on general data, side by side.

Two measures, both on the general set under examples/general (or ``--general-data DIR`` with
the same file names):
- loss and perplexity on the assistant turns of held-out general conversations (``heldout.jsonl``);
- the share of general questions with a known short answer that the model answers correctly
  (``questions.jsonl``; greedy decoding; correct when the reply contains the answer as a word).
For an adapter run the base model is the same weights with the adapter switched off.
"""
from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path
from typing import Any, Callable

from tunesmith.data.general import GENERAL_DIR
from tunesmith.data.io import read_rows
from tunesmith.data.validate import validate_file
from tunesmith.errors import DataError
from tunesmith.eval import metrics
from tunesmith.models import engine
from tunesmith.runs import Run
from tunesmith.training.dataset import encode_records
from tunesmith.workspace import Workspace

ANSWER_TOKENS = 32  # the known answers are a word or a number


def measure_forgetting(run: Run, workspace: Workspace, general_dir: str | Path | None = None, batch_size: int = 8,
                       log: Callable[[str], None] = print) -> dict[str, Any]:
    conversations, questions = general_files(general_dir)
    tuned = engine.load_run(run, workspace)
    base = tuned if tuned.is_adapter else engine.load_start(run, workspace)
    report = validate_file(conversations, min_examples=1)
    if not report.ok:
        raise DataError(report.summary(), report)
    examples = encode_records(report, tuned.tokenizer, max_length=2048).examples
    items = list(_questions(questions))
    sides: dict[str, Any] = {}
    for side, loaded in (("base", base), ("tuned", tuned)):
        log(f"forgetting: the {'base' if side == 'base' else 'tuned'} model on {len(examples)} general conversations "
            f"and {len(items)} general questions")
        with loaded.base_context() if side == "base" and loaded.is_adapter else contextlib.nullcontext():
            sides[side] = _score(loaded, examples, items, batch_size)
    change = {key: sides["tuned"][key] - sides["base"][key] for key in ("loss", "perplexity", "question_accuracy")}
    return {"data": {"conversations": str(conversations), "questions": str(questions)},
            "base": sides["base"], "tuned": sides["tuned"], "change": change, "created_at": time.time()}


def _score(loaded, examples, items: list[tuple[str, list[str]]], batch_size: int) -> dict[str, Any]:
    started = time.time()
    nll, tokens = engine.mean_nll(loaded, examples, batch_size)
    replies = engine.generate(loaded, [[{"role": "user", "content": q}] for q, _ in items], ANSWER_TOKENS, batch_size)
    correct = [answered(reply, answers) for reply, (_, answers) in zip(replies, items)]
    return {"loss": nll, "perplexity": metrics.perplexity(nll), "loss_tokens": tokens,
            "question_accuracy": sum(correct) / len(correct), "questions": len(correct),
            "wrong": [q for (q, _), ok in zip(items, correct) if not ok], "seconds": round(time.time() - started, 1)}


def answered(reply: str, answers: list[str]) -> bool:
    """Whether a reply contains one of the known answers as a whole word (case-insensitive).

    >>> answered("The capital of France is Paris.", ["Paris"])
    True
    >>> answered("It is 120.", ["12"]), answered("Seven days.", ["seven", "7"])
    (False, True)
    """
    return any(re.search(rf"(?<!\w){re.escape(a)}(?!\w)", reply, re.IGNORECASE) for a in answers)


def _questions(path: Path):
    for row in read_rows(path):
        value = row.value
        if not isinstance(value, dict) or not value.get("question") or not value.get("answer"):
            raise DataError(f"{path}:{row.line}: a general question needs `question` and `answer`")
        yield value["question"], [a.strip() for a in str(value["answer"]).split("|")]


def general_files(general_dir: str | Path | None = None) -> tuple[Path, Path]:
    """The general conversations and questions (default: the shipped set); a clear error when absent."""
    directory = Path(general_dir) if general_dir else GENERAL_DIR
    files = directory / "heldout.jsonl", directory / "questions.jsonl"
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DataError(f"general data not found: {', '.join(missing)} (give --general-data DIR holding "
                        "heldout.jsonl and questions.jsonl; the set ships in the repository's examples/general)")
    return files

