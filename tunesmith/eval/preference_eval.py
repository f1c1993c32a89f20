"""Evaluation of a preference run on held-out pairs, beside its starting point.

Both models score every held-out answer by its log-likelihood given the prompt. From these:
- **reward accuracy and margins**: DPO's implicit reward of an answer is
  ``beta * (log p_tuned - log p_start)``; accuracy is the share of pairs whose chosen answer gets
  the higher reward, the margin the mean reward gap (what TRL logs as ``rewards/*`` in training).
- **preference accuracy** of each model: the share of pairs whose chosen answer is more likely
  than the rejected one, per token (length-normalised, so a long answer is not penalised for
  its length) and in total.
- **win rate** of the tuned model over its starting point: the share of pairs on which the tuned
  model separates chosen from rejected (per-token log-likelihood gap) further than the starting
  point does; ties count half. (The summed gap would be the reward accuracy again.)
- the loss and perplexity of the chosen answers, which shows whether the model still
  puts its mass on good answers or only pushed the rejected ones down.
A few prompts are answered by both models, greedily, beside the chosen reference.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from tunesmith.config import load_config
from tunesmith.errors import ConfigError
from tunesmith.eval import metrics, paired
from tunesmith.eval.generation_eval import against_key, check_against
from tunesmith.models import engine
from tunesmith.models.chat import encode_chat
from tunesmith.runs import Run
from tunesmith.training.preference import Pair, read_pairs
from tunesmith.workspace import Workspace

# ORPO has no reference model or beta of its own in the reward: report DPO's usual beta.
DEFAULT_BETA = 0.1
DEFAULT_MAX_NEW_TOKENS = 128  # the sample answers shown in the report


def evaluate_preference(run: Run, data: str | Path, workspace: Workspace, max_examples: int | None = None,
                        batch_size: int = 8, n_samples: int = 3, max_new_tokens: int | None = None,
                        log: Callable[[str], None] = print, against: Sequence[str] = ()) -> dict[str, Any]:
    config = load_config(run.config_path)
    pairs = read_pairs(str(data), 1)[:max_examples]
    check_against(against, workspace)
    loaded = engine.load_run(run, workspace)
    start = loaded if loaded.is_adapter else engine.load_start(run, workspace)
    chosen, rejected, kept = _encode(pairs, loaded.tokenizer, config.data.max_length)
    log(f"scoring {len(kept)} held-out pairs with the starting point and the tuned model")
    scores = {}
    for side, model in (("base", start), ("tuned", loaded)):
        with model.base_context() if side == "base" and model.is_adapter else contextlib.nullcontext():
            scores[side] = (engine.sequence_logprobs(model, chosen, batch_size),
                            engine.sequence_logprobs(model, rejected, batch_size))
    for target in against:  # another run or model, on the same pairs encoded with its own tokenizer
        other = engine.load(target, workspace)
        other_chosen, other_rejected, other_kept = _encode(pairs, other.tokenizer, config.data.max_length)
        if other_kept != kept:
            raise ConfigError(f"--against {target}: its tokenizer truncates other pairs away than this run's; "
                              "compare on pairs short enough for both (raise data.max_length)")
        log(f"scoring {len(kept)} held-out pairs with {target} (--against)")
        scores[against_key(target)] = (engine.sequence_logprobs(other, other_chosen, batch_size),
                                       engine.sequence_logprobs(other, other_rejected, batch_size))
    beta = DEFAULT_BETA if config.preference.algorithm == "orpo" else config.preference.beta
    report = {
        "kind": "preference",
        "run_id": run.id,
        "base_model": run.info().get("base_model"),
        "algorithm": config.preference.algorithm,
        "data": str(data),
        "examples": len(kept),
        "skipped_examples": len(pairs) - len(kept),
        "max_new_tokens": max_new_tokens or DEFAULT_MAX_NEW_TOKENS,
        "metrics": {side: side_metrics(*scores[side]) for side in scores},
        "rewards": reward_metrics(scores["base"], scores["tuned"], beta),
        "win_rate": win_rate(scores["base"], scores["tuned"]),
        "per_example": {side: {"margin": margins(scores[side])} for side in scores},
        "paired": paired_section([pairs[i] for i in kept], scores),
        "created_at": time.time(),
    }
    report["samples"] = _samples([pairs[i] for i in kept[:n_samples]], start, loaded, max_new_tokens, log)
    return report


def side_metrics(chosen: list[tuple[float, int]], rejected: list[tuple[float, int]]) -> dict[str, Any]:
    """One model's view of the pairs: preference accuracy, and the loss of the chosen answers."""
    tokens = sum(n for _, n in chosen)
    chosen_nll = -sum(lp for lp, _ in chosen) / tokens
    return {
        "preference_accuracy": _share(c[0] / c[1] > r[0] / r[1] for c, r in zip(chosen, rejected)),
        "preference_accuracy_total": _share(c[0] > r[0] for c, r in zip(chosen, rejected)),
        "chosen_loss": chosen_nll,
        "chosen_perplexity": metrics.perplexity(chosen_nll),
        "rejected_loss": -sum(lp for lp, _ in rejected) / sum(n for _, n in rejected),
        "chosen_tokens": tokens,
    }


def reward_metrics(base, tuned, beta: float) -> dict[str, Any]:
    """DPO's implicit rewards of the held-out answers."""
    chosen = [beta * (t[0] - b[0]) for t, b in zip(tuned[0], base[0])]
    rejected = [beta * (t[0] - b[0]) for t, b in zip(tuned[1], base[1])]
    margins = [c - r for c, r in zip(chosen, rejected)]
    return {"beta": beta, "accuracy": _share(m > 0 for m in margins), "margin": _mean(margins),
            "chosen": _mean(chosen), "rejected": _mean(rejected)}


def win_rate(base, tuned) -> float:
    """Share of pairs the tuned model separates further than the start (per-token gap; ties half)."""
    return _mean([1.0 if t > b else 0.5 if t == b else 0.0 for t, b in zip(margins(tuned), margins(base))])


def margins(side) -> list[float]:
    """Per pair, how far a model separates chosen from rejected: the per-token log-likelihood gap."""
    return [c[0] / c[1] - r[0] / r[1] for c, r in zip(*side)]


def paired_section(pairs: list[Pair], scores: dict[str, Any]) -> dict[str, Any]:
    """The tuned model against its starting point (and any ``--against`` system), pair by pair: on
    the margin (paired bootstrap, what the win rate counts), and on whether the chosen answer is
    preferred at all (McNemar) — a pair the start ranked right and the tuned model ranks wrong
    is a regression."""
    def describe(i: int) -> dict[str, Any]:
        return {"prompt": pairs[i]["prompt"][-1]["content"], "reference": pairs[i]["chosen"][-1]["content"],
                "rejected": pairs[i]["rejected"][-1]["content"]}

    tuned, comparisons = margins(scores["tuned"]), []
    for key in [k for k in scores if k != "tuned"]:
        name = "starting point" if key == "base" else key.removeprefix("against:")
        other = margins(scores[key])
        comparisons.append(paired.compare("tuned", name, "margin (chosen − rejected, per token)", tuned, other,
                                          binary=False, describe=describe))
        comparisons.append(paired.compare("tuned", name, "prefers chosen", [int(m > 0) for m in tuned],
                                          [int(m > 0) for m in other], binary=True, describe=describe,
                                          warn_on_any_loss=key == "base"))
    return paired.section(comparisons)


def _encode(pairs: list[Pair], tokenizer, max_length: int):
    """Chosen and rejected examples whose labels are the final answer only; pairs with an answer
    truncated away entirely are skipped."""
    chosen, rejected, kept = [], [], []
    for i, pair in enumerate(pairs):
        prompt = [dict(m, weight=0) for m in pair["prompt"]]
        c = encode_chat(tokenizer, prompt + pair["chosen"], max_length)
        r = encode_chat(tokenizer, prompt + pair["rejected"], max_length)
        if c.loss_tokens and r.loss_tokens:
            chosen.append({"input_ids": c.input_ids, "labels": c.labels})
            rejected.append({"input_ids": r.input_ids, "labels": r.labels})
            kept.append(i)
    return chosen, rejected, kept


def _samples(pairs: list[Pair], start, tuned, max_new_tokens: int | None, log) -> list[dict[str, str]]:
    if not pairs:
        return []
    prompts = [p["prompt"] for p in pairs]
    max_new = max_new_tokens or DEFAULT_MAX_NEW_TOKENS
    log(f"answering {len(prompts)} prompts with both models (up to {max_new} new tokens)")
    with start.base_context() if start.is_adapter else contextlib.nullcontext():
        before = engine.generate(start, prompts, max_new)
    after = engine.generate(tuned, prompts, max_new)
    return [{"prompt": p["prompt"][-1]["content"], "reference": p["chosen"][-1]["content"], "base": b, "tuned": a}
            for p, b, a in zip(pairs, before, after)]


def _share(flags) -> float:
    flags = list(flags)
    return sum(flags) / len(flags) if flags else float("nan")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")
