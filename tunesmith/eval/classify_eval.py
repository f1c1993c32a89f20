"""Evaluating a classify run against its baselines, all on the same test data.

Systems, each scored with the same metrics (eval/classification.py):
- the fine-tuned classifier (every example; per-class table, confusions, calibration);
- the majority class and TF-IDF + logistic regression, trained on the run's own training split
  (re-derived exactly as training split it: same file, seed and fraction);
- the base LLM prompted zero-shot and few-shot, answers constrained to the label set. These
  generate, so they are ~100x slower per example than the classifier: they run on a stratified
  sample of the test data (``llm_examples``), and the report puts the fine-tuned model's score
  on that same sample beside them.
Latency is measured one example per call (what a request costs), throughput on the whole set.
"""
from __future__ import annotations

import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from tunesmith import confusion as cm
from tunesmith.config import load_config
from tunesmith.errors import ConfigError, DataError, TunesmithError
from tunesmith.eval import out_of_scope, paired
from tunesmith.eval.baselines import SystemOutput, majority, tfidf_logistic_regression, time_one_at_a_time
from tunesmith.eval.prompted import pick_shots, prompted_baseline
from tunesmith.files import sha256_file
from tunesmith.models import engine
from tunesmith.models.engine import load_classifier
from tunesmith.runs import Run, find_run, is_run_ref
from tunesmith.training.classify import Example, is_causal_lm, read_examples, read_splits
from tunesmith.training.recipes import recipe_of
from tunesmith.workspace import Workspace

DEFAULT_LLM = "smollm2-135m-instruct"


def evaluate_classifier(run: Run, data: str | Path, workspace: Workspace, max_examples: int | None = None,
                        baselines: bool = True, llm: str | None = DEFAULT_LLM, llm_examples: int = 200,
                        batch_size: int = 64, latency_examples: int = 100,
                        log: Callable[[str], None] = print, against: Sequence[str] = ()) -> dict[str, Any]:
    classifier = load_classifier(run, workspace)
    labels = classifier.labels
    test = _test_examples(data, labels, max_examples)
    others = [_against_classifier(target, labels, workspace) for target in against]
    texts, y_true = [e.text for e in test], [labels.index(e.label) for e in test]

    log(f"fine-tuned classifier on {len(test)} examples")
    started = time.time()
    probabilities = classifier.predict_proba(texts, batch_size)
    tuned = SystemOutput("fine-tuned", "fine-tuned", probabilities.argmax(1).tolist(), probabilities,
                         time.time() - started,
                         time_one_at_a_time(lambda t: classifier.predict_proba([t], 1), texts, latency_examples))
    systems = [tuned]
    notes: list[str] = []
    if baselines:
        train = _training_split(run, notes)
        systems += _classic_baselines(train, labels, texts, latency_examples, log)
        sample = stratified_sample(y_true, llm_examples)
        systems += _llm_baselines(run, train, labels, [texts[i] for i in sample], llm, workspace, notes, log)
    else:
        sample = []
    systems += [_against_system(target, other, texts, batch_size, log) for target, other in zip(against, others)]

    report = {
        "kind": "classification",
        "run_id": run.id,
        "base_model": run.info().get("base_model"),
        "data": str(data),
        "examples": len(test),
        "labels": labels,
        "systems": [_system_row(s, y_true, sample, tuned, len(labels)) for s in systems],
        "fine_tuned": _details(tuned, y_true, labels),
        "errors": _errors(test, tuned, labels),
        "per_example": {s.name: {"predicted": [labels[p] for p in s.predictions]} for s in systems},
        "paired": paired_section(test, y_true, labels, systems, sample, run.info().get("base_model")),
        "out_of_scope": _out_of_scope(run, classifier, labels, probabilities, y_true, batch_size, notes),
        "notes": notes,
        "created_at": time.time(),
    }
    return report


def _out_of_scope(run: Run, classifier, labels: list[str], test_p: np.ndarray, y_true: list[int], batch_size: int,
                  notes: list[str]) -> dict[str, Any] | None:
    """With ``data.out_of_scope_label``: the threshold chosen on the run's validation split (re-derived
    as training split it) and the test figures at it (eval/out_of_scope.py)."""
    config = load_config(run.config_path)
    label = config.data.out_of_scope_label
    if not label:
        return None
    if label not in labels:
        notes.append(f"data.out_of_scope_label {label!r} is not one of the run's labels: no out-of-scope section")
        return None
    validation = read_splits(config).validation
    validation_p = classifier.predict_proba([e.text for e in validation], batch_size) if validation else np.zeros((0, len(labels)))
    return out_of_scope.section(labels, label, validation_p, [labels.index(e.label) for e in validation], test_p, y_true)


def paired_section(test: list[Example], y_true: list[int], labels: list[str], systems: list[SystemOutput],
                   sample: list[int], base_model: str | None) -> dict[str, Any]:
    """The fine-tuned classifier against every other system, example by example (McNemar on
    correct / wrong), on the examples that system saw (the stratified sample for prompted LLMs).
    Any example lost to the base model prompted is a regression to warn about."""
    tuned, comparisons = systems[0], []
    for other in systems[1:]:
        positions = sample if len(other.predictions) != len(y_true) else list(range(len(y_true)))
        other_at = dict(zip(positions, other.predictions))

        def describe(i: int, other_at: dict[int, int] = other_at) -> dict[str, Any]:
            return {"line": test[i].line, "prompt": test[i].text, "reference": test[i].label,
                    "system_output": labels[tuned.predictions[i]], "other_output": labels[other_at[i]]}

        comparisons.append(paired.compare(
            tuned.name, other.name, "accuracy", [int(tuned.predictions[i] == y_true[i]) for i in positions],
            [int(p == y_true[i]) for i, p in zip(positions, other.predictions)], binary=True, describe=describe,
            indices=positions, warn_on_any_loss=bool(base_model) and other.details.get("model") == base_model))
    return paired.section(comparisons)


def _against_classifier(target: str, labels: list[str], workspace: Workspace):
    """Another classify run with the same labels (checked before any system is scored)."""
    if not is_run_ref(target, workspace):
        raise ConfigError(f"--against {target}: a classifier is compared with another classify run; "
                          f"{target!r} is not a run in this home")
    other = find_run(target, workspace)
    if recipe_of(other).generates:
        raise ConfigError(f"--against {target}: a {other.info().get('recipe')} run generates text; "
                          "give a classify run with the same labels")
    classifier = load_classifier(other, workspace)
    if list(classifier.labels) != list(labels):
        raise ConfigError(f"--against {target}: its labels ({', '.join(classifier.labels)}) are not this run's "
                          f"({', '.join(labels)})")
    return classifier


def _against_system(target: str, classifier, texts: list[str], batch_size: int,
                    log: Callable[[str], None]) -> SystemOutput:
    log(f"--against {target} on {len(texts)} examples")
    started = time.time()
    probabilities = classifier.predict_proba(texts, batch_size)
    return SystemOutput(target, "against", probabilities.argmax(1).tolist(), probabilities, time.time() - started,
                        details={"run": target})


def _test_examples(data: str | Path, labels: list[str], max_examples: int | None) -> list[Example]:
    test = read_examples(data)
    if max_examples:
        test = test[:max_examples]
    unknown = [e for e in test if e.label not in set(labels)]
    if unknown:
        raise DataError(f"{data}: label(s) the model was not trained on (it can never predict them): "
                        + ", ".join(f"line {e.line}: {e.label!r}" for e in unknown[:10])
                        + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""))
    return test


def stratified_sample(y: Sequence[int], size: int, seed: int = 0) -> list[int]:
    """Up to ``size`` indices, labels taking turns (so every label is represented), in order.

    >>> y = [0, 0, 0, 1, 1, 2]
    >>> picked = stratified_sample(y, 4)
    >>> len(picked), sorted({y[i] for i in picked}), picked == sorted(picked)
    (4, [0, 1, 2], True)
    """
    if size >= len(y):
        return list(range(len(y)))
    rng = random.Random(seed)
    by_label: dict[int, list[int]] = defaultdict(list)
    for i, label in enumerate(y):
        by_label[label].append(i)
    queues = []
    for label in sorted(by_label):
        members = by_label[label][:]
        rng.shuffle(members)
        queues.append(members)
    chosen: list[int] = []
    while len(chosen) < size:
        for queue in queues:
            if queue and len(chosen) < size:
                chosen.append(queue.pop())
    return sorted(chosen)


def _training_split(run: Run, notes: list[str]) -> list[Example]:
    """The examples the run trained on, re-derived as training split them (same file, seed, fraction)."""
    config = load_config(run.config_path)
    if sha256_file(config.data.train) != run.info().get("data", {}).get("train"):
        notes.append(f"{config.data.train} changed since the run trained: the baselines learn from its current content")
    return read_splits(config).train


def _classic_baselines(train: list[Example], labels: list[str], texts: list[str], latency_examples: int,
                       log: Callable[[str], None]) -> list[SystemOutput]:
    train_texts, train_labels = [e.text for e in train], [e.label for e in train]
    log(f"baselines: majority class, TF-IDF + logistic regression (trained on the run's {len(train_texts)} "
        "training examples)")
    return [majority(train_labels, labels, len(texts)),
            tfidf_logistic_regression(train_texts, train_labels, labels, texts, latency_examples=latency_examples)]


def _llm_baselines(run: Run, train: list[Example], labels: list[str], texts: list[str], llm: str | None,
                   workspace: Workspace, notes: list[str], log: Callable[[str], None]) -> list[SystemOutput]:
    info = run.info()
    name = info["base_model"] if is_causal_lm(info["base_model_path"]) else llm
    if not name:
        return []
    try:
        loaded = engine.load(name, workspace)
    except TunesmithError as e:
        notes.append(f"prompted LLM baselines skipped: {e}")
        return []
    shots = pick_shots([(e.text, e.label) for e in train], labels)
    out = []
    for title, demos in (("zero-shot", []), ("few-shot", shots)):
        log(f"baseline: {name} prompted {title} with the {len(labels)} labels, on {len(texts)} sampled examples")
        system = prompted_baseline(loaded.model, loaded.tokenizer, labels, texts, demos,
                                   f"{name} prompted {title}", log=log)
        system.details["model"] = name
        out.append(system)
    return out


def _system_row(system: SystemOutput, y_true: list[int], sample: list[int], tuned: SystemOutput,
                n_labels: int) -> dict[str, Any]:
    on_sample = len(system.predictions) != len(y_true)
    truth = [y_true[i] for i in sample] if on_sample else y_true
    result = cm.scores(cm.confusion(truth, system.predictions, n_labels), [str(i) for i in range(n_labels)])
    row: dict[str, Any] = {"name": system.name, "kind": system.kind, "examples": len(truth),
                           **{k: v for k, v in result.items() if k != "per_class"}}
    if system.probabilities is not None:
        row["ece"] = cm.calibration(truth, system.probabilities)["ece"]
    if system.latencies:
        row["latency"] = cm.latency_summary(system.latencies)
    row["examples_per_second"] = round(len(truth) / system.seconds, 1) if system.seconds else None
    if on_sample:
        tuned_on_sample = [tuned.predictions[i] for i in sample]
        row["fine_tuned_accuracy_same_examples"] = float(np.mean(np.array(tuned_on_sample) == np.array(truth)))
    row["details"] = system.details
    return row


def _details(tuned: SystemOutput, y_true: list[int], labels: list[str]) -> dict[str, Any]:
    matrix = cm.confusion(y_true, tuned.predictions, len(labels))
    return {"per_class": cm.scores(matrix, labels)["per_class"], "confusion_matrix": matrix.tolist(),
            "top_confusions": cm.top_confusions(matrix, labels), "calibration": cm.calibration(y_true, tuned.probabilities)}


def _errors(test: list[Example], tuned: SystemOutput, labels: list[str], limit: int = 15) -> list[dict[str, Any]]:
    """The most confident mistakes: where the model is surely wrong, the data is often wrong too."""
    wrong = [i for i, e in enumerate(test) if labels[tuned.predictions[i]] != e.label]
    wrong.sort(key=lambda i: -float(tuned.probabilities[i].max()))
    return [{"line": test[i].line, "text": test[i].text, "label": test[i].label,
             "predicted": labels[tuned.predictions[i]], "confidence": round(float(tuned.probabilities[i].max()), 4)}
            for i in wrong[:limit]]
