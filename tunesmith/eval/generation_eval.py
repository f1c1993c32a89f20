"""Side-by-side evaluation of a fine-tuned run and its base model on the same held-out data.

For each model: loss and perplexity on the assistant tokens (what training optimised), then
greedy generations scored with ROUGE-L, BLEU and — where records carry a ``final_answer`` —
exact match of the final answer. A few samples are kept beside their references.
For a LoRA run the base model is the same weights with the adapter switched off, so both
sides are computed from one loaded model. The prompt-engineering baseline is the base model
again, with a few training conversations placed before each test conversation.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from tunesmith.config import load_config
from tunesmith.data.formats import SFT_FORMATS, split_prompt_and_reference, to_messages
from tunesmith.data.validate import validate_file
from tunesmith.errors import ConfigError, DataError
from tunesmith.eval import metrics, paired
from tunesmith.models import engine
from tunesmith.models.chat import encode_chat
from tunesmith.models.store import resolve_model
from tunesmith.runs import Run, find_run, is_run_ref
from tunesmith.training.dataset import encode_records
from tunesmith.training.recipes import recipe_of
from tunesmith.workspace import Workspace


@dataclass(frozen=True)
class EvalItem:
    conversation: list[dict[str, str]]  # up to the last assistant turn
    reference: str
    final_answer: str | None


def evaluate_run(run: Run, data: str | Path, workspace: Workspace, max_examples: int | None = None,
                 max_new_tokens: int | None = None, batch_size: int = 8, n_samples: int = 3,
                 few_shot: int = 3, log: Callable[[str], None] = print, against: Sequence[str] = ()) -> dict[str, Any]:
    """Evaluate ``run`` beside its base model, plain and with a ``few_shot`` prompt (0: skip), and
    beside each run or model of ``against``, on ``data``; returns the report, its ``paired``
    section the fine-tune against each of them example by example (eval/paired.py)."""
    report = _read_chat_data(data, max_examples)
    check_against(against, workspace)
    loaded = engine.load_run(run, workspace)
    base_loaded = loaded if loaded.is_adapter else engine.load(run.info()["base_model"], workspace)
    config = load_config(run.config_path)
    examples = encode_records(report, loaded.tokenizer, max_length=config.data.max_length).examples
    items = [_item(r.value, report.format) for r in report.records]
    max_new = max_new_tokens or max_new_tokens_for(loaded.tokenizer, items)
    shots = pick_shot_conversations(config, few_shot, log) if few_shot else []

    results: dict[str, Any] = {}
    outputs: dict[str, list[str]] = {}
    each: dict[str, dict[str, list[float]]] = {}
    sides = [("base", base_loaded, examples, items)]
    if shots:
        shot_examples, shot_items = _with_shots(shots, report, loaded.tokenizer, config.data.max_length)
        sides.append(("few_shot", base_loaded, shot_examples, shot_items))
    sides.append(("tuned", loaded, examples, items))
    for side, model, side_examples, side_items in sides:
        title = {"base": "base model", "few_shot": f"base model with a {len(shots)}-shot prompt", "tuned": "fine-tuned model"}[side]
        log(f"evaluating the {title} on {len(items)} examples (loss, then generation of up to {max_new} tokens)")
        with (model.base_context() if side != "tuned" and model.is_adapter else contextlib.nullcontext()):
            results[side], outputs[side], each[side] = _score(model, side_examples, side_items, max_new, batch_size)
    for target in against:  # one more system on the same examples, its own tokenizer and template
        other = engine.load(target, workspace)
        log(f"evaluating {target} (--against) on {len(items)} examples")
        other_examples = encode_records(report, other.tokenizer, max_length=config.data.max_length).examples
        key = against_key(target)
        results[key], outputs[key], each[key] = _score(other, other_examples, items, max_new, batch_size)
        results[key]["name"] = target
    return {
        "run_id": run.id,
        "base_model": run.info().get("base_model"),
        "data": str(data),
        "examples": len(items),
        "max_new_tokens": max_new,
        "metrics": results,
        "few_shot": {"shots": len(shots)} if shots else None,
        "samples": [
            {"prompt": it.conversation[-1]["content"], "reference": it.reference,
             **{side: outputs[side][i] for side in outputs}}
            for i, it in enumerate(items[:n_samples])
        ],
        "per_example": each,
        "paired": paired_section(items, outputs, each, {k: v.get("name") for k, v in results.items()}),
        "created_at": time.time(),
    }


def check_against(against: Sequence[str], workspace: Workspace) -> None:
    """Every ``--against`` system is a run or model that generates, said before any model is loaded."""
    for target in against:
        if is_run_ref(target, workspace):
            other = find_run(target, workspace)
            if not recipe_of(other).generates:
                raise ConfigError(f"--against {target}: a {other.info().get('recipe')} run does not generate text; "
                                  "give a chat run or model")
        else:
            resolve_model(target, workspace)  # an unknown name is a ModelNotFound naming what exists


def against_key(target: str) -> str:
    """The report's key of an ``--against`` system (beside "base", "few_shot", "tuned")."""
    return f"against:{target}"


SIDE_NAMES = {"base": "base", "few_shot": "base, few-shot", "tuned": "fine-tuned"}


def paired_section(items: list[EvalItem], outputs: dict[str, list[str]], each: dict[str, dict[str, list[float]]],
                   names: dict[str, str | None]) -> dict[str, Any]:
    """The fine-tune against every other system, example by example: exact match (McNemar) where
    every record has a final answer, else ROUGE-L (bootstrap); the other metrics' paired tests beside."""
    primary = "exact_match" if all(it.final_answer is not None for it in items) else "rouge_l"
    comparisons = []
    for key in [k for k in outputs if k != "tuned"]:
        def describe(i: int, key: str = key) -> dict[str, Any]:
            return {"prompt": items[i].conversation[-1]["content"], "reference": items[i].reference,
                    "system_output": outputs["tuned"][i], "other_output": outputs[key][i]}

        name = SIDE_NAMES.get(key) or names.get(key) or key
        row = paired.compare("fine-tuned", name, METRIC_TITLES[primary], each["tuned"][primary], each[key][primary],
                             binary=primary == "exact_match", describe=describe, warn_on_any_loss=key == "base")
        row["key"], row["other_key"] = "tuned", key
        row["also"] = [_also(metric, each["tuned"], each[key]) for metric in ("rouge_l", "loss")
                       if metric != primary and _comparable(metric, each["tuned"], each[key])]
        comparisons.append(row)
    return paired.section(comparisons)


METRIC_TITLES = {"exact_match": "exact match", "rouge_l": "ROUGE-L", "loss": "loss"}


def _comparable(metric: str, a: dict[str, list[float]], b: dict[str, list[float]]) -> bool:
    """Per-example losses compare only over the same tokens (another tokenizer counts others)."""
    return metric != "loss" or a["loss_tokens"] == b["loss_tokens"]


def _also(metric: str, a: dict[str, list[float]], b: dict[str, list[float]]) -> dict[str, Any]:
    """A secondary metric's paired bootstrap, on the examples both systems have a value for."""
    kept = [i for i, (x, y) in enumerate(zip(a[metric], b[metric])) if not (math.isnan(x) or math.isnan(y))]
    higher = metric != "loss"
    found = paired.outcomes([a[metric][i] for i in kept], [b[metric][i] for i in kept], higher)
    boot = paired.paired_bootstrap([a[metric][i] for i in kept], [b[metric][i] for i in kept])
    return {"metric": METRIC_TITLES[metric], "higher_is_better": higher, "examples": len(kept), "won": len(found.won),
            "lost": len(found.lost), "tied": len(found.tied), "test": "bootstrap", **boot}


def read_items(data: str | Path, max_examples: int | None = None) -> list[EvalItem]:
    """The conversations of a chat data file, each up to its last reply, with that reply."""
    report = _read_chat_data(data, max_examples)
    return [_item(r.value, report.format) for r in report.records]


def max_new_tokens_for(tokenizer, items: list[EvalItem]) -> int:
    """Enough for the longest reference plus slack, so generation cost is bounded by the data."""
    longest = max(len(tokenizer(it.reference, add_special_tokens=False)["input_ids"]) for it in items)
    return min(512, int(longest * 1.25) + 8)


def _read_chat_data(data: str | Path, max_examples: int | None):
    report = validate_file(data, min_examples=1)
    if not report.ok:
        raise DataError(report.summary(), report)
    if report.format not in SFT_FORMATS:
        raise DataError(f"{data}: {report.format.value} records cannot evaluate a chat model; "
                        "give chat, prompt/completion or instruction records")
    if max_examples:
        report.records = report.records[:max_examples]
    return report


def _score(loaded, examples, items: list[EvalItem], max_new: int,
           batch_size: int) -> tuple[dict[str, Any], list[str], dict[str, list[float]]]:
    """One system's aggregate scores, its outputs, and its scores per example (for paired tests).
    The loss is summed per example (``sequence_logprobs``) and pooled over tokens: the same
    token-weighted mean as the model's own loss, with each example's share kept."""
    started = time.time()
    logprobs = engine.sequence_logprobs(loaded, examples, batch_size)
    tokens = sum(n for _, n in logprobs)
    nll = -sum(lp for lp, _ in logprobs) / tokens if tokens else float("nan")
    outputs = engine.generate(loaded, [it.conversation for it in items], max_new, batch_size)
    references = [it.reference for it in items]
    each: dict[str, list[float]] = {"loss": [-lp / n if n else float("nan") for lp, n in logprobs],
                                    "loss_tokens": [n for _, n in logprobs],
                                    "rouge_l": metrics.rouge_l_scores(outputs, references)}
    scores: dict[str, Any] = {
        "loss": nll,
        "perplexity": metrics.perplexity(nll) if not math.isnan(nll) else None,
        "loss_tokens": tokens,
        "rouge_l": sum(each["rouge_l"]) / len(each["rouge_l"]) if each["rouge_l"] else 0.0,
        "bleu": metrics.bleu(outputs, references),
    }
    answered = [(o, it.final_answer) for o, it in zip(outputs, items) if it.final_answer is not None]
    if answered:
        scores["exact_match"] = metrics.exact_match(*zip(*answered))
        scores["exact_match_examples"] = len(answered)
        if len(answered) == len(items):
            each["exact_match"] = metrics.exact_matches(outputs, [it.final_answer for it in items])
    scores["seconds"] = round(time.time() - started, 1)
    return scores, outputs, each


def pick_shot_conversations(config, count: int, log: Callable[[str], None] = print) -> list[list[dict[str, Any]]]:
    """``count`` random training conversations (fixed seed), the demonstrations of the few-shot baseline."""
    import random

    report = validate_file(config.data.train, min_examples=1)
    if not report.ok or report.format not in SFT_FORMATS:
        log(f"few-shot baseline skipped: the training file {config.data.train} cannot be read "
            f"({report.summary(limit=1) if not report.ok else report.format.value})")
        return []
    picked = random.Random(config.training.seed).sample(report.records, min(count, len(report.records)))
    return [to_messages(r.value, report.format) for r in picked]


def _with_shots(shots, report, tokenizer, max_length: int):
    """Each test conversation after the demonstrations (their answers carry no loss: weight 0)."""
    prefix = [dict(m, weight=0) if m["role"] == "assistant" else dict(m)
              for shot in shots for m in shot if m["role"] != "system"]
    examples, items = [], []
    for record in report.records:
        messages = to_messages(record.value, report.format)
        system = [m for m in messages[:1] if m["role"] == "system"]
        combined = system + prefix + messages[len(system):]
        encoded = encode_chat(tokenizer, combined, max_length * (len(shots) + 1))
        examples.append({"input_ids": encoded.input_ids, "labels": encoded.labels})
        item = _item(record.value, report.format)
        items.append(EvalItem(system + prefix + item.conversation[len(system):], item.reference, item.final_answer))
    return examples, items


def _item(record: dict[str, Any], fmt) -> EvalItem:
    conversation, reference = split_prompt_and_reference(to_messages(record, fmt))
    answer = record.get("final_answer")
    return EvalItem(conversation, reference, None if answer is None else str(answer))
