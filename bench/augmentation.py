"""Does augmentation help a classifier trained on a small slice of BANKING77?

    python bench/augmentation.py [--examples 200] [--n 2] [--methods paraphrase,self-instruct]
                                 [--model smollm2-135m-instruct] [--epochs 10] [--train-seeds 3]
                                 [--batch-size 40] [--out build/augmentation]

The slice is ``--examples`` training texts (stratified by label, seeded). For each method,
``tunesmith data augment`` (the same code as the command) writes the slice plus what the model
generated, after validation and deduplication against the slice and the whole test split. A
minilm-l6 classifier (full fine-tuning, recipe classify, same settings and epochs) is trained
on the slice alone and on each augmented file, and scored on the BANKING77 test split.
Printed and written to results.md / results.json: records, accuracy, macro-F1 and the change
against the slice alone, as the mean and spread over ``--train-seeds`` training seeds (the
generated data is made once, with ``--seed``), so a change can be weighed against the noise
of training itself.
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets" / "banking77"
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--n", type=int, default=2, help="Paraphrases per record / new texts per label.")
    parser.add_argument("--methods", default="paraphrase,self-instruct")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--epochs", type=float, default=10)
    parser.add_argument("--test-examples", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-seeds", type=int, default=3, help="Classifiers trained per dataset (seeds 0..K-1).")
    parser.add_argument("--batch-size", type=int, default=40, help="Prompts generated together.")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "augmentation")
    args = parser.parse_args()

    from tunesmith import api
    from tunesmith.data.io import write_jsonl
    from tunesmith.workspace import Workspace

    args.out.mkdir(parents=True, exist_ok=True)
    workspace = Workspace(args.out / "home")
    for name in ("minilm-l6", args.model):
        if "/" not in name:
            api.pull_model(name, workspace=workspace)
    train, test = read(SHARED / "train.csv"), read(SHARED / "test.csv")[: args.test_examples]
    slice_path = args.out / "slice.jsonl"
    write_jsonl(slice_path, stratified(train, args.examples, args.seed))
    test_path = args.out / "test.jsonl"
    write_jsonl(test_path, test)
    results = [dict(system="slice alone", records=args.examples, **train_and_score(slice_path, test, args, workspace, "slice"))]
    print(f"slice alone: {results[0]}", flush=True)
    for method in args.methods.split(","):
        started = time.time()
        summary = api.augment(slice_path, args.out / f"{method}.jsonl", method, args.model, args.n, test_path,
                              seed=args.seed, batch_size=args.batch_size, workspace=workspace)
        generation_seconds = round(time.time() - started, 1)
        plain = args.out / f"{method}.train.jsonl"  # provenance notes off: the recipe trains on text, label
        rows = [json.loads(line) for line in (args.out / f"{method}.jsonl").read_text().splitlines()]
        write_jsonl(plain, [{"text": r["text"], "label": r["label"]} for r in rows])
        scored = train_and_score(plain, test, args, workspace, method)
        results.append(dict(system=f"slice + {method}", records=len(rows), generated=summary["generated"],
                            kept=summary["kept"], dropped=summary["dropped"], generation_seconds=generation_seconds, **scored))
        print(f"{method}: {results[-1]}", flush=True)
        write(results, args)
    write(results, args)


def read(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return [{"text": r["text"], "label": r["label"]} for r in csv.DictReader(f)]


def stratified(rows: list[dict], count: int, seed: int) -> list[dict]:
    """``count`` rows spread over the labels as evenly as they allow (round robin over shuffled labels)."""
    rng = random.Random(seed)
    by_label: dict[str, list[dict]] = {}
    for r in rows:
        by_label.setdefault(r["label"], []).append(r)
    for items in by_label.values():
        rng.shuffle(items)
    labels = sorted(by_label)
    rng.shuffle(labels)
    picked, depth = [], 0
    while len(picked) < count:
        for label in labels:
            if depth < len(by_label[label]) and len(picked) < count:
                picked.append(by_label[label][depth])
        depth += 1
    return picked


def train_and_score(path: Path, test: list[dict], args, workspace, name: str) -> dict:
    import numpy as np

    scores = [train_once(path, test, args, workspace, name, seed) for seed in range(args.train_seeds)]
    accuracy, f1 = np.array([s["accuracy"] for s in scores]), np.array([s["macro_f1"] for s in scores])
    return {"accuracy": float(accuracy.mean()), "accuracy_sd": float(accuracy.std(ddof=1)) if len(scores) > 1 else 0.0,
            "macro_f1": float(f1.mean()), "macro_f1_sd": float(f1.std(ddof=1)) if len(scores) > 1 else 0.0,
            "per_seed": scores}


def train_once(path: Path, test: list[dict], args, workspace, name: str, seed: int) -> dict:
    import numpy as np
    from sklearn.metrics import f1_score

    from tunesmith import api
    from tunesmith.config import load_config
    from tunesmith.models.engine import load_classifier

    config = load_config(None, [], base={
        "recipe": "classify", "model": "minilm-l6", "method": "full", "pooling": "mean", "run_name": f"aug-{name}-s{seed}",
        "data": {"train": str(path), "validation_fraction": 0.0, "max_length": 64},
        "training": {"epochs": args.epochs, "batch_size": 16, "learning_rate": 1e-4, "warmup_ratio": 0.06,
                     "weight_decay": 0.01, "seed": seed, "save_total_limit": 2},
        "tracking": {"report_to": "none"}})
    started = time.time()
    run = api.train(config, workspace=workspace).run
    classifier = load_classifier(run, workspace)
    predicted = [classifier.labels[int(p.argmax())] for p in classifier.predict_proba([r["text"] for r in test])]
    truth = [r["label"] for r in test]
    return {"accuracy": float(np.mean([p == t for p, t in zip(predicted, truth)])),
            "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
            "train_seconds": round(time.time() - started, 1), "run": run.id}


def write(results: list[dict], args) -> None:
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    base = results[0]
    lines = [f"Mean ± standard deviation over {args.train_seeds} training seed(s), each scored on the BANKING77 test split.",
             "",
             "| training data | records | kept / generated | test accuracy | change | macro-F1 | change |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        kept = f"{r['kept']} / {r['generated']}" if "kept" in r else "–"
        lines.append(f"| {r['system']} | {r['records']} | {kept} | {r['accuracy']:.4f} ± {r['accuracy_sd']:.4f} | "
                     f"{(r['accuracy'] - base['accuracy']) * 100:+.1f} pts | {r['macro_f1']:.4f} ± {r['macro_f1_sd']:.4f} | "
                     f"{(r['macro_f1'] - base['macro_f1']) * 100:+.1f} pts |")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
