"""Active learning on BANKING77: does labelling the examples the model is unsure of reach a given
accuracy with fewer labels than labelling random ones?

    python bench/active_learning.py [--start 0.1] [--budget 500] [--rounds 4] [--epochs 4]
                                    [--strategies entropy,random] [--seed 0] [--out build/active-learning]
    python bench/active_learning.py --combine DIR [DIR ...] --out DIR   # mean over seeds

Both strategies start from the same stratified random ``--start`` share of the training labels
(the rest is the unlabelled pool) and add ``--budget`` labels per round, picked from the pool by
tunesmith's own tools: ``entropy`` ranks by the tuned classifier's entropy and diversifies with
k-means over minilm-l6 embeddings (labeling/suggest.py, as ``tunesmith label suggest``);
``random`` draws uniformly. After every round a fresh classifier (minilm-l6, full fine-tuning,
``tunesmith train`` recipe classify) is trained on the labels so far and scored on the whole
BANKING77 test split. Output: accuracy per number of labels (curve.png, results.json,
results.md) and, per accuracy level, how many labels each strategy needed (linear interpolation
between rounds). ``--seed`` changes the starting labels, the random picks and training; run it
for several seeds and ``--combine`` their folders for the mean, the spread and every seed's curve.
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets" / "banking77"
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--start", type=float, default=0.1, help="Share of the training labels to start from.")
    parser.add_argument("--budget", type=int, default=500, help="Labels added per round.")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--epochs", type=float, default=4)
    parser.add_argument("--diversity", type=float, default=3.0)
    parser.add_argument("--strategies", default="entropy,random")
    parser.add_argument("--test-examples", type=int, default=None, help="Score on the first N test texts (default: all).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "active-learning")
    parser.add_argument("--data", type=Path, default=SHARED, help="Folder with BANKING77's train.csv and test.csv.")
    parser.add_argument("--combine", type=Path, nargs="+", default=None, metavar="DIR",
                        help="Instead of running: average the results.json of runs with different --seed into --out.")
    parser.add_argument("--resume", action="store_true", help="Keep the strategies results.json already has "
                        "all rounds of; round 0 (the same labels for every strategy) is reused from any of them.")
    args = parser.parse_args()
    if args.combine:
        return combine(args.combine, args.out)

    from tunesmith.workspace import Workspace

    args.out.mkdir(parents=True, exist_ok=True)
    workspace = Workspace(args.out / "home")
    train, test = read(args.data / "train.csv"), read(args.data / "test.csv")[: args.test_examples]
    start = stratified_sample(train, args.start, args.seed)
    pool_embeddings = embed_all([train[i]["text"] for i in range(len(train))], workspace)
    previous = json.loads((args.out / "results.json").read_text()) if args.resume and (args.out / "results.json").exists() else {}
    results: dict[str, list[dict]] = {}
    for strategy in args.strategies.split(","):
        if len(previous.get(strategy, [])) >= args.rounds + 1:
            results[strategy] = previous[strategy][: args.rounds + 1]
            continue
        labelled = list(start)
        results[strategy] = []
        for round_ in range(args.rounds + 1):
            began = time.time()
            shared = _round_zero(previous | results) if round_ == 0 else None
            if shared:  # every strategy starts from the same labels and seed: the same model
                from tunesmith.models.engine import load_classifier
                from tunesmith.runs import find_run

                classifier, accuracy = load_classifier(find_run(shared["run"], workspace), workspace), shared["accuracy"]
            else:
                classifier = train_classifier(train, labelled, args, workspace, f"al-{strategy}-r{round_}")
                accuracy = score(classifier, test)
            results[strategy].append({"round": round_, "labels": len(labelled), "accuracy": accuracy,
                                      "seconds": round(time.time() - began, 1), "run": classifier.name})
            print(f"{strategy:8s} round {round_}: {len(labelled):5d} labels → test accuracy {accuracy:.4f}", flush=True)
            write(results, args)
            if round_ < args.rounds:
                labelled += pick(strategy, classifier, train, labelled, pool_embeddings, args, round_)
    write(results, args)


def _round_zero(results: dict[str, list[dict]]) -> dict | None:
    return next((points[0] for points in results.values() if points and points[0].get("run")), None)


def read(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return [{"text": r["text"], "label": r["label"]} for r in csv.DictReader(f)]


def stratified_sample(rows: list[dict], share: float, seed: int) -> list[int]:
    by_label: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_label.setdefault(r["label"], []).append(i)
    rng = random.Random(seed)
    return sorted(i for items in by_label.values() for i in rng.sample(items, max(1, round(len(items) * share))))


def embed_all(texts: list[str], workspace) -> np.ndarray:
    from tunesmith.models.embeddings import embed, load_encoder

    tokenizer, encoder = load_encoder("minilm-l6", workspace)
    return embed(texts, tokenizer, encoder)


def train_classifier(train: list[dict], labelled: list[int], args, workspace, name: str):
    from tunesmith import api
    from tunesmith.config import load_config
    from tunesmith.data.io import write_jsonl
    from tunesmith.models.engine import load_classifier

    data = args.out / "data" / f"{name}.jsonl"
    write_jsonl(data, [train[i] for i in labelled])
    config = load_config(None, [], base={
        "recipe": "classify", "model": "minilm-l6", "method": "full", "pooling": "mean", "run_name": name,
        "data": {"train": str(data), "validation_fraction": 0.0, "max_length": 64},
        "training": {"epochs": args.epochs, "batch_size": 32, "learning_rate": 1e-4, "warmup_ratio": 0.06,
                     "weight_decay": 0.01, "group_by_length": True, "seed": args.seed, "save_total_limit": 2},
        "tracking": {"report_to": "none"}})
    run = api.train(config, workspace=workspace).run
    return load_classifier(run, workspace)


def score(classifier, test: list[dict]) -> float:
    probabilities = classifier.predict_proba([r["text"] for r in test])
    return float(np.mean([classifier.labels[int(p.argmax())] == r["label"] for p, r in zip(probabilities, test)]))


def pick(strategy: str, classifier, train: list[dict], labelled: list[int], embeddings: np.ndarray, args,
         round_: int) -> list[int]:
    from tunesmith.labeling.suggest import select
    from tunesmith.labeling.uncertainty import from_probabilities

    taken = set(labelled)
    pool = [i for i in range(len(train)) if i not in taken]
    if strategy == "random":
        chosen = select(np.zeros(len(pool)), args.budget, "random", None, 1.0, seed=args.seed + round_)
    else:
        uncertainty = from_probabilities(classifier.predict_proba([train[i]["text"] for i in pool]), strategy)
        chosen = select(uncertainty, args.budget, strategy, embeddings[pool], args.diversity, seed=args.seed)
    return [pool[i] for i in chosen]


def write(results: dict[str, list[dict]], args) -> None:
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["| labels | " + " | ".join(f"{s} accuracy" for s in results) + " |", "|---|" + "---|" * len(results)]
    for i in range(max(len(v) for v in results.values())):
        row = [results[s][i] for s in results if i < len(results[s])]
        lines.append(f"| {row[0]['labels']} | " + " | ".join(f"{r['accuracy']:.4f}" for r in row) + " |")
    lines += ["", "| accuracy reached | " + " | ".join(f"labels ({s})" for s in results) + " |", "|---|" + "---|" * len(results)]
    reached = sorted({round(r["accuracy"], 2) for v in results.values() for r in v})
    for level in reached:
        lines.append(f"| {level:.2f} | " + " | ".join(_labels_for(results[s], level) for s in results) + " |")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    _plot(results, args.out / "curve.png")


def _labels_for(points: list[dict], level: float) -> str:
    """Labels at which the curve first reaches ``level`` (linear between rounds), or '–'."""
    for before, after in zip(points, points[1:]):
        if before["accuracy"] >= level:
            return str(before["labels"])
        if after["accuracy"] >= level:
            share = (level - before["accuracy"]) / (after["accuracy"] - before["accuracy"])
            return f"{before['labels'] + share * (after['labels'] - before['labels']):.0f}"
    return str(points[0]["labels"]) if points and points[0]["accuracy"] >= level else "–"


def _plot(results: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plt.figure(figsize=(6, 4), dpi=110)
    axes = figure.add_subplot()
    for strategy, points in results.items():
        axes.plot([p["labels"] for p in points], [p["accuracy"] for p in points], marker="o",
                  label="uncertainty (entropy + diversity)" if strategy == "entropy" else strategy)
    axes.set_xlabel("labelled training examples")
    axes.set_ylabel("BANKING77 test accuracy")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.savefig(path, bbox_inches="tight")
    plt.close(figure)


def combine(folders: list[Path], out: Path) -> None:
    """Mean accuracy per round over seeds, each seed's labels-needed, and one plot with every seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [json.loads((folder / "results.json").read_text()) for folder in folders]
    strategies = list(runs[0])
    rounds = min(len(run[s]) for run in runs for s in strategies)
    mean = {s: [{"labels": runs[0][s][i]["labels"],
                 "accuracy": float(np.mean([run[s][i]["accuracy"] for run in runs])),
                 "spread": [float(min(run[s][i]["accuracy"] for run in runs)), float(max(run[s][i]["accuracy"] for run in runs))]}
                for i in range(rounds)] for s in strategies}
    lines = [f"Mean over {len(runs)} seeds (min–max in brackets).", "",
             "| labels | " + " | ".join(f"{s} accuracy" for s in strategies) + " |", "|---|" + "---|" * len(strategies)]
    for i in range(rounds):
        lines.append(f"| {mean[strategies[0]][i]['labels']} | " + " | ".join(
            f"{mean[s][i]['accuracy']:.4f} [{mean[s][i]['spread'][0]:.4f}–{mean[s][i]['spread'][1]:.4f}]" for s in strategies) + " |")
    lines += ["", "| accuracy reached | " + " | ".join(f"labels ({s}), per seed" for s in strategies) + " |",
              "|---|" + "---|" * len(strategies)]
    for level in (0.70, 0.72, 0.74, 0.75, 0.76, 0.78, 0.80):
        lines.append(f"| {level:.2f} | " + " | ".join(", ".join(_labels_for(run[s][:rounds], level) for run in runs)
                                                      for s in strategies) + " |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({"seeds": [str(f) for f in folders], "mean": mean}, indent=2) + "\n")
    figure = plt.figure(figsize=(6, 4), dpi=110)
    axes = figure.add_subplot()
    for strategy, colour in zip(strategies, ("tab:blue", "tab:orange", "tab:green")):
        name = "uncertainty (entropy + diversity)" if strategy == "entropy" else strategy
        axes.plot([p["labels"] for p in mean[strategy]], [p["accuracy"] for p in mean[strategy]], marker="o",
                  color=colour, label=f"{name}, mean of {len(runs)} seeds")
        for run in runs:
            axes.plot([p["labels"] for p in run[strategy][:rounds]], [p["accuracy"] for p in run[strategy][:rounds]],
                      color=colour, alpha=0.3, linewidth=1)
    axes.set_xlabel("labelled training examples")
    axes.set_ylabel("BANKING77 test accuracy")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.savefig(out / "curve.png", bbox_inches="tight")
    plt.close(figure)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
