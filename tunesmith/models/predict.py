"""Predicting with a trained classifier (loaded by ``models/engine.py``'s ``load_classifier``):
labels with probabilities, for texts or a whole file. Shared by ``tunesmith predict``, evaluation,
labelling and the server's ``/v1/classifications``."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tunesmith.data.io import is_csv, read_rows, write_csv, write_jsonl
from tunesmith.errors import DataError
from tunesmith.models.engine import LoadedClassifier


def predict_texts(classifier: LoadedClassifier, texts: Sequence[str], top_k: int = 3) -> list[dict[str, Any]]:
    """For each text: the predicted label, its probability, and the ``top_k`` labels."""
    probabilities = classifier.predict_proba(list(texts))
    return [_prediction(classifier.labels, row, top_k) for row in probabilities]


def predict_file(classifier: LoadedClassifier, path: Path, out: Path, batch_size: int = 64) -> dict[str, Any]:
    """Predict every ``text`` of a CSV / JSONL file; writes ``out`` (CSV or JSONL by its suffix) with
    the input columns, ``predicted``, ``confidence`` and one probability column per label."""
    rows = list(read_rows(path))
    bad = [r for r in rows if r.error or not isinstance(r.value, dict) or not isinstance(r.value.get("text"), str)]
    if bad:
        lines = ", ".join(str(r.line) for r in bad[:10])
        raise DataError(f"{path}: every record needs a string field `text` (lines {lines}"
                        f"{' ...' if len(bad) > 10 else ''})")
    started = time.time()
    probabilities = classifier.predict_proba([r.value["text"] for r in rows], batch_size)
    seconds = time.time() - started
    records = []
    for row, p in zip(rows, probabilities):
        best = int(p.argmax())
        record = dict(row.value) | {"predicted": classifier.labels[best], "confidence": round(float(p[best]), 6)}
        if is_csv(out):
            record |= {f"p_{label}": round(float(v), 6) for label, v in zip(classifier.labels, p)}
        else:
            record["probabilities"] = {label: round(float(v), 6) for label, v in zip(classifier.labels, p)}
        records.append(record)
    out.parent.mkdir(parents=True, exist_ok=True)
    if is_csv(out):
        fields = list(dict.fromkeys(k for r in records for k in r))
        write_csv(out, records, fields)
    else:
        write_jsonl(out, records)
    summary = {"input": str(path), "output": str(out), "examples": len(records), "seconds": round(seconds, 2),
               "examples_per_second": round(len(records) / seconds, 1) if seconds else None}
    given = [r for r in records if "label" in r]
    if given:
        summary["accuracy"] = sum(str(r["label"]).strip() == r["predicted"] for r in given) / len(given)
    return summary


def _prediction(labels: list[str], row: np.ndarray, top_k: int) -> dict[str, Any]:
    order = np.argsort(-row)[:top_k]
    return {"label": labels[int(order[0])], "confidence": float(row[order[0]]),
            "top": [{"label": labels[int(i)], "probability": float(row[i])} for i in order]}
