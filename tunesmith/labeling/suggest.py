"""``tunesmith label suggest``: the ``budget`` unlabelled examples most worth a human's time.

Uncertainty alone picks near-duplicates (ten phrasings of the same confusing request), so the
selection is diversified: the ``diversity`` × budget most uncertain candidates are clustered
(k-means on sentence embeddings) into ``budget`` groups and the most uncertain example of each
group is taken. ``strategy: random`` is the baseline active learning is measured against.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from tunesmith.data.io import read_rows, write_jsonl
from tunesmith.errors import ConfigError, DataError
from tunesmith.labeling.uncertainty import CLASSIFIER_MEASURES, from_probabilities, generation_uncertainty
from tunesmith.models import engine
from tunesmith.models.chat import prompt_ids
from tunesmith.models.embeddings import embed, load_encoder
from tunesmith.models.engine import load_classifier
from tunesmith.models.store import resolve_model
from tunesmith.runs import find_run, is_run_ref
from tunesmith.training.recipes import recipe_of
from tunesmith.workspace import Workspace

STRATEGIES = (*CLASSIFIER_MEASURES, "likelihood", "random")


@dataclass
class Pool:
    """Unlabelled examples: the records as read, and the text a model sees for each."""
    path: Path
    records: list[dict[str, Any]]
    lines: list[int]
    texts: list[str]


def read_pool(path: str | Path) -> Pool:
    """Records with a ``text`` (classification), a ``prompt`` or ``messages`` (generation)."""
    path = Path(path)
    records, lines, texts, bad = [], [], [], []
    for row in read_rows(path):
        value = row.value if not row.error and isinstance(row.value, dict) else None
        text = _text_of(value) if value is not None else None
        if text is None:
            bad.append(row.line)
            continue
        records.append(value)
        lines.append(row.line)
        texts.append(text)
    if bad:
        shown = ", ".join(str(n) for n in bad[:10])
        raise DataError(f"{path}: line{'s' if len(bad) > 1 else ''} {shown}{' ...' if len(bad) > 10 else ''}: each record needs a string `text`, "
                        "a `prompt`, or `messages` ending with a user turn")
    if not records:
        raise DataError(f"{path}: no records")
    return Pool(path, records, lines, texts)


def _text_of(value: dict[str, Any]) -> str | None:
    for key in ("text", "prompt"):
        if isinstance(value.get(key), str):
            return value[key]
    messages = value.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "user":
        return str(messages[-1].get("content", ""))
    return None


def uncertainties(model: str, pool: Pool, strategy: str, workspace: Workspace,
                  log: Callable[[str], None] = print) -> tuple[np.ndarray, dict[str, Any]]:
    """One uncertainty per example (higher: more unsure), and what the model proposed."""
    run = find_run(model, workspace) if is_run_ref(model, workspace) else None
    if run is not None and not recipe_of(run).generates:
        if strategy == "likelihood":
            raise ConfigError(f"{run.id} is a classifier: use entropy, margin or least_confidence (or random)")

        classifier = load_classifier(run, workspace)
        log(f"scoring {len(pool.texts):,} examples with {run.id}")
        probabilities = classifier.predict_proba(pool.texts)
        best = probabilities.argmax(1)
        proposed = {"labels": [classifier.labels[i] for i in best], "confidence": probabilities.max(1).tolist()}
        return from_probabilities(probabilities, "entropy" if strategy == "random" else strategy), proposed
    if run is None:
        resolve_model(model, workspace)  # an unknown name is "no such model", not a wrong strategy
    if strategy in CLASSIFIER_MEASURES:
        raise ConfigError(f"{model} generates text: its uncertainty is `likelihood` (or random); "
                          f"{strategy} needs a classify run")

    loaded = engine.load(model, workspace)
    log(f"generating an answer to each of {len(pool.texts):,} prompts with {loaded.name} to score it")
    prompts = [prompt_ids(loaded.tokenizer, r["messages"] if "messages" in r else [{"role": "user", "content": t}])
               for r, t in zip(pool.records, pool.texts)]
    return generation_uncertainty(loaded.model, loaded.tokenizer, prompts), {}


def select(uncertainty: np.ndarray, budget: int, strategy: str, embeddings: np.ndarray | None,
           diversity: float, seed: int = 0) -> list[int]:
    """Indices of the examples to label, most uncertain first (random: in random order)."""
    n = len(uncertainty)
    budget = min(budget, n)
    rng = np.random.default_rng(seed)
    if strategy == "random":
        return [int(i) for i in rng.choice(n, budget, replace=False)]
    ranked = np.argsort(-uncertainty, kind="stable")
    if embeddings is None or diversity <= 1 or budget < 2:
        return [int(i) for i in ranked[:budget]]
    from sklearn.cluster import KMeans

    candidates = ranked[: min(n, int(round(budget * diversity)))]
    groups = KMeans(n_clusters=budget, n_init=1, random_state=seed).fit_predict(embeddings[candidates])
    picked = {}
    for index, group in zip(candidates, groups):  # candidates are most-uncertain first
        picked.setdefault(int(group), int(index))
    chosen = sorted(picked.values(), key=lambda i: -uncertainty[i])
    return chosen + [int(i) for i in ranked if int(i) not in picked][: budget - len(chosen)]


def suggest(model: str, path: str | Path, budget: int, out: str | Path, workspace: Workspace,
            strategy: str = "entropy", diversity: float = 3.0, embedding_model: str = "minilm-l6",
            seed: int = 0, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write the chosen examples to ``out`` (JSONL) for labelling: each record as it was, with
    ``label`` proposed by the model where it can (to confirm or correct) and a ``_suggest`` note
    (rank, uncertainty, source line)."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}: one of {', '.join(STRATEGIES)}")
    if budget < 1:
        raise ConfigError("--budget must be at least 1")
    pool = read_pool(path)
    uncertainty, proposed = (np.zeros(len(pool.texts)), {}) if strategy == "random" else \
        uncertainties(model, pool, strategy, workspace, log)
    embeddings = None
    if strategy != "random" and diversity > 1 and budget > 1:
        tokenizer, encoder = load_encoder(embedding_model, workspace, log)
        ranked = np.argsort(-uncertainty, kind="stable")[: int(round(budget * diversity))]
        vectors = embed([pool.texts[i] for i in ranked], tokenizer, encoder)
        embeddings = np.zeros((len(pool.texts), vectors.shape[1]), dtype=np.float32)
        embeddings[ranked] = vectors
    chosen = select(uncertainty, budget, strategy, embeddings, diversity, seed)
    records = []
    for rank, i in enumerate(chosen, 1):
        record = dict(pool.records[i])
        if proposed and "label" not in record:
            record["label"] = proposed["labels"][i]
        record["_suggest"] = {"rank": rank, "uncertainty": round(float(uncertainty[i]), 6), "line": pool.lines[i],
                              "strategy": strategy, "model": model,
                              **({"confidence": round(proposed["confidence"][i], 6)} if proposed else {})}
        records.append(record)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(out, records)
    return {"pool": len(pool.texts), "selected": len(records), "strategy": strategy, "output": str(out),
            "mean_uncertainty_selected": float(np.mean([uncertainty[i] for i in chosen])) if chosen else None,
            "mean_uncertainty_pool": float(uncertainty.mean()), "indices": chosen}


def strip_suggestion(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Labelled suggestions back to plain training records (the ``_suggest`` note removed)."""
    return [{k: v for k, v in r.items() if k not in ("_suggest", "_prelabel")} for r in records]
