"""Multiple-choice items scored by log-likelihood, tunesmith's own way (no lm-eval involved).

An item is ``{"question": str, "choices": [str, ...], "answer": int | str}`` (the answer: the right
choice's index, or its text). Each choice is scored by the summed log-probability of its tokens
after the question (``models/engine.py:sequence_logprobs``, what preference evaluation uses); the
prediction is the likeliest choice. ``acc`` is lm-evaluation-harness's ``acc`` for a
``multiple_choice`` task with the same text: ``doc_to_text`` = ``PROMPT`` (``Question: ...\\nAnswer:``),
each choice the continuation ``" " + choice``, tokenised as lm-eval tokenises a (context,
continuation) pair (the whole text encoded, the context's tokens cut off; no special tokens), so
the two can be compared item by item (``examples/lm-eval/``).
"""
from __future__ import annotations

from pathlib import Path

from tunesmith.data.io import json_lines
from tunesmith.errors import DataError
from tunesmith.models import engine

PROMPT = "Question: {question}\nAnswer:"


def read_items(path: Path) -> list[dict]:
    """The items of a JSONL file, checked: a bad line is a DataError naming it."""
    items = [_checked(item, where) for where, item in json_lines(path)]
    if not items:
        raise DataError(f"{path}: no multiple-choice items")
    return items


def _checked(item, where: str) -> dict:
    if not isinstance(item, dict) or not isinstance(item.get("question"), str):
        raise DataError(f"{where}: an item needs a 'question' (text), 'choices' (a list of texts) and an 'answer'")
    choices = item.get("choices")
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
        raise DataError(f"{where}: 'choices' must be a list of two or more non-empty texts")
    answer = item.get("answer")
    if isinstance(answer, str) and answer in choices:
        answer = choices.index(answer)
    if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(choices):
        raise DataError(f"{where}: 'answer' must be the right choice's index (0-{len(choices) - 1}) or its text")
    return {**item, "answer": answer}


def pair_ids(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context tokens, continuation tokens) as lm-eval's ``TemplateAPI._encode_pair`` makes them:
    trailing spaces of the context moved to the continuation, the whole encoded once."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    start = len(tokenizer(context, add_special_tokens=False)["input_ids"])
    return whole[:start], whole[start:]


def score(loaded: engine.Loaded, items: list[dict], batch_size: int = 8) -> dict:
    """Accuracy of the likeliest choice (summed logprob), and each item's prediction and scores."""
    examples, owners = [], []
    for index, item in enumerate(items):
        context = PROMPT.format(question=item["question"])
        for choice in item["choices"]:
            context_ids, choice_ids = pair_ids(loaded.tokenizer, context, " " + choice)
            examples.append({"input_ids": context_ids + choice_ids,
                             "labels": [-100] * len(context_ids) + choice_ids})
            owners.append(index)
    logprobs = engine.sequence_logprobs(loaded, examples, batch_size)
    rows = [{"index": i, "answer": item["answer"], "logprobs": []} for i, item in enumerate(items)]
    for owner, (total, _) in zip(owners, logprobs):
        rows[owner]["logprobs"].append(total)
    for row in rows:
        row["predicted"] = max(range(len(row["logprobs"])), key=row["logprobs"].__getitem__)
        row["correct"] = row["predicted"] == row["answer"]
    return {"acc": sum(r["correct"] for r in rows) / len(rows), "n": len(rows), "items": rows}
