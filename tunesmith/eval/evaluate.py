"""Evaluating a run: the one entry point, whatever its recipe.

``evaluate(run, data)`` finds the run's recipe (training/recipes.py) and hands it to that
recipe's evaluation — generation runs (sft) beside the base model plain and few-shot
(eval/generation_eval.py), classifiers beside majority / TF-IDF / prompted-LLM baselines
(eval/classify_eval.py), preference runs by reward accuracy and win rate against their
starting point (eval/preference_eval.py) — then optionally measures forgetting, writes
``runs/<id>/eval/report.{json,md,html}`` and records the evaluation in the tracking store.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from tunesmith.config import load_config
from tunesmith.errors import ConfigError
from tunesmith.eval import report as report_files
from tunesmith.eval.classify_eval import DEFAULT_LLM, evaluate_classifier
from tunesmith.eval.forgetting import general_files, measure_forgetting
from tunesmith.eval.generation_eval import evaluate_run
from tunesmith.eval.judge import JudgeSpec, judge_evaluation, load_rubric
from tunesmith.eval.preference_eval import evaluate_preference
from tunesmith.eval.tracking import log_evaluation
from tunesmith.models.card import write_model_card
from tunesmith.runs import Run, find_run
from tunesmith.training.recipes import CLASSIFY, DPO, SFT, Recipe, recipe_of
from tunesmith.workspace import Workspace

Log = Callable[[str], None]


@dataclass(frozen=True)
class EvalOptions:
    """What every recipe's evaluation may use (each reads the fields that apply to it)."""

    max_examples: int | None = None
    max_new_tokens: int | None = None
    batch_size: int = 8
    samples: int = 3
    few_shot: int = 3
    baselines: bool = True
    llm: str | None = None
    llm_examples: int = 200
    against: tuple[str, ...] = ()  # other runs or models evaluated on the same examples, one more system each
    judge: JudgeSpec | None = None  # an LLM judge of the fine-tune's outputs against the others' (eval/judge.py)


def _generation(run: Run, data: str | Path, workspace: Workspace, o: EvalOptions, log: Log) -> dict[str, Any]:
    return evaluate_run(run, data, workspace, o.max_examples, o.max_new_tokens, o.batch_size, o.samples,
                        o.few_shot if o.baselines else 0, log, against=o.against)


def _classification(run: Run, data: str | Path, workspace: Workspace, o: EvalOptions, log: Log) -> dict[str, Any]:
    return evaluate_classifier(run, data, workspace, o.max_examples, o.baselines, o.llm or DEFAULT_LLM,
                               o.llm_examples, max(o.batch_size, 32), log=log, against=o.against)


def _preference(run: Run, data: str | Path, workspace: Workspace, o: EvalOptions, log: Log) -> dict[str, Any]:
    return evaluate_preference(run, data, workspace, o.max_examples, o.batch_size, o.samples, o.max_new_tokens, log,
                               against=o.against)


EVALUATIONS: dict[Recipe, Callable[..., dict[str, Any]]] = {SFT: _generation, CLASSIFY: _classification,
                                                            DPO: _preference}


def evaluate(run: str, workspace: Workspace, data: str | Path | None = None, options: EvalOptions = EvalOptions(),
             log: Log = print, forgetting: bool = False, general_data: str | Path | None = None) -> dict[str, Any]:
    """Evaluate a run beside its baselines on held-out data (default: its config's ``data.test``)."""
    found = find_run(run, workspace)
    data = data or load_config(found.config_path).data.test
    if not data:
        raise ConfigError(f"give the held-out data to evaluate {found.id} on (--data FILE); its config has no data.test")
    recipe = recipe_of(found)
    if forgetting and not recipe.generates:
        raise ConfigError("--forgetting measures what a language model lost on general text and questions; "
                          f"{found.id} is a classifier")
    if forgetting:  # the general files are checked before the task evaluation, not after it
        general_files(general_data)
    if options.judge:
        check_judge(found, recipe, options.judge)
        result = EVALUATIONS[recipe](found, data, workspace, replace(options, samples=ALL_SAMPLES), log)
        result["judge"] = judge_evaluation(result, options.judge, workspace, log)
        result["samples"] = result["samples"][:options.samples]  # every output was kept for the judge only
    else:
        result = EVALUATIONS[recipe](found, data, workspace, options, log)
    if forgetting:
        result["forgetting"] = measure_forgetting(found, workspace, general_data, options.batch_size, log)
    result["report_files"] = report_files.write(result, found.eval_dir)
    refresh_card(found, workspace, log)
    log_evaluation(found, result, result["report_files"], workspace, warn=lambda message: log(f"warning: {message}"))
    return result


ALL_SAMPLES = 10**9  # samples=every example: the judge reads each one's outputs


def check_judge(run: Run, recipe: Recipe, judge: JudgeSpec) -> None:
    """The judge compares generated answers of an sft run; its rubric is read before any model loads."""
    if recipe is not SFT:
        raise ConfigError(f"--judge compares the generated answers of a chat (sft) run; {run.id} is a "
                          f"{recipe.name} run")
    if judge.rubric:
        load_rubric(judge.rubric)


def refresh_card(run: Run, workspace: Workspace, log: Log = print) -> None:
    """Rewrite the model card beside the run's weights so its evaluation table is this one. The
    evaluation is done and its reports written: a card that cannot be written is only a warning."""
    if not run.final_dir.is_dir():
        return
    try:
        write_model_card(run.final_dir, run, workspace)
    except Exception as e:  # noqa: BLE001 - whatever went wrong, the evaluation stands
        log(f"warning: the model card in {run.final_dir.name}/ was not updated: {type(e).__name__}: {e}")


def headline(report: dict[str, Any]) -> tuple[str, float, bool]:
    """(metric, value, higher is better) of an evaluation report: what decides between two models."""
    if report.get("kind") == "classification":
        return "accuracy", report["systems"][0]["accuracy"], True
    if report.get("kind") == "preference":
        return "reward_accuracy", report["rewards"]["accuracy"], True
    tuned = report["metrics"]["tuned"]
    if tuned.get("exact_match") is not None:
        return "exact_match", tuned["exact_match"], True
    return "loss", tuned["loss"], False
