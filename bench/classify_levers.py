"""The lever table for a classify recipe: each trained run's test accuracy, macro-F1 and training
minutes, alone and with a TF-IDF + logistic regression member mixed in (weight chosen on the
run's own validation split), beside TF-IDF alone, all measured in this run on the same test file.

    python bench/classify_levers.py RUN [RUN ...] [--data TEST.csv] [-o docs/results/x.json]

A run trained with ``ensemble: tfidf`` already carries its lexical member; for the others it is
fitted here exactly as training fits it (same split, same settings), which is what the lever
"add the lexical member" costs: its fit seconds are reported and added to the training minutes.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from tunesmith.config import load_config
from tunesmith.confusion import confusion, scores
from tunesmith.models import lexical
from tunesmith.models.engine import load_classifier
from tunesmith.runs import find_run
from tunesmith.training.classify import read_examples, read_splits
from tunesmith.workspace import Workspace


def measure(ref: str, data: str | None, workspace: Workspace) -> dict:
    run = find_run(ref, workspace)
    config = load_config(run.config_path)
    summary = json.loads((run.dir / "summary.json").read_text()) if (run.dir / "summary.json").exists() else {}
    classifier = load_classifier(run, workspace)
    labels = classifier.labels
    test = read_examples(data or config.data.test)
    splits = read_splits(config)
    y_test = np.array([labels.index(e.label) for e in test])
    y_val = [labels.index(e.label) for e in splits.validation]
    neural_test = classifier.neural_proba([e.text for e in test])
    neural_val = classifier.neural_proba([e.text for e in splits.validation])
    started = time.time()
    member = classifier.lexical or lexical.fit([e.text for e in splits.train], [e.label for e in splits.train], labels,
                                               seed=config.training.seed)
    fit_seconds = time.time() - started if classifier.lexical is None else summary.get("lexical_fit_seconds", 0.0)
    lexical_test, lexical_val = member.predict_proba([e.text for e in test]), member.predict_proba(
        [e.text for e in splits.validation])
    weight, curve = lexical.mixture_weight(neural_val, lexical_val, y_val)

    def row(probabilities: np.ndarray) -> dict:
        result = scores(confusion(y_test, probabilities.argmax(1), len(labels)), labels)
        return {"accuracy": round(result["accuracy"], 4), "macro_f1": round(result["macro_f1"], 4)}

    train_seconds = summary.get("train_seconds")
    return {"run": run.id, "seed": config.training.seed, "model": run.info().get("base_model"),
            "train_minutes": round(train_seconds / 60, 1) if train_seconds else None,
            "encoder": row(neural_test), "tfidf": row(lexical_test),
            "mixed": row((1 - weight) * neural_test + weight * lexical_test) | {
                "weight": weight, "validation_accuracy": curve,
                "minutes_with_fit": round(((train_seconds or 0) + fit_seconds) / 60, 1)},
            "lexical_fit_seconds": round(fit_seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--data", help="test file (default: each run's data.test)")
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()
    workspace = Workspace.default()
    rows = [measure(ref, args.data, workspace) for ref in args.runs]
    for r in rows:
        print(f"{r['run']}  seed {r['seed']}  {r['train_minutes']} min  encoder {r['encoder']['accuracy']:.2%} "
              f"(F1 {r['encoder']['macro_f1']:.3f})  tfidf {r['tfidf']['accuracy']:.2%}  "
              f"mixed w={r['mixed']['weight']} {r['mixed']['accuracy']:.2%} (F1 {r['mixed']['macro_f1']:.3f}, "
              f"{r['mixed']['minutes_with_fit']} min)")
    if len(rows) > 1:
        for key in ("encoder", "mixed"):
            values = [100 * r[key]["accuracy"] for r in rows]
            print(f"{key}: mean {statistics.mean(values):.2f} % ± {statistics.stdev(values):.2f} (sd, {len(rows)} runs)")
    if args.output:
        args.output.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
