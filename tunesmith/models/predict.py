"""Using a trained classifier: load a classify run, predict labels with probabilities, for
texts or a whole file. Shared by ``tunesmith predict``, evaluation and (later) the server."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tunesmith.config import load_config
from tunesmith.data.io import is_csv, read_rows, write_csv, write_jsonl
from tunesmith.errors import DataError, TunesmithError
from tunesmith.runs import Run
from tunesmith.workspace import Workspace


@dataclass
class LoadedClassifier:
    name: str
    model: Any
    tokenizer: Any
    labels: list[str]
    max_length: int

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Label probabilities, one row per text. Texts are batched by length (less padding)."""
        import torch

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = order[start:start + batch_size]
                batch = self.tokenizer([texts[i] for i in chunk], truncation=True, max_length=self.max_length,
                                       padding=True, return_tensors="pt")
                logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
                out[chunk] = torch.softmax(logits, dim=-1).numpy()
        return out


def load_classifier(run: Run, workspace: Workspace) -> LoadedClassifier:
    from tunesmith.models.classifier import load_trained_classifier
    from tunesmith.models.loading import load_tokenizer, quiet_transformers
    from tunesmith.models.store import ModelRef
    from tunesmith.models.classifier import read_labels

    quiet_transformers()
    info = run.info()
    if info.get("recipe") != "classify":
        raise TunesmithError(f"run {run.id} is a {info.get('recipe', 'sft')} run, not a classifier; "
                             f"use `tunesmith generate {run.id}` for text generation")
    final = run.final_dir
    if not final.exists():
        raise TunesmithError(f"run {run.id} has no trained weights yet ({final} is missing); "
                             f"finish it with: tunesmith train --resume {run.id}")
    meta = read_labels(final)
    tokenizer = load_tokenizer(ModelRef(run.id, str(final)))
    model = load_trained_classifier(final, info["base_model_path"], meta["labels"], meta.get("pooling", "model"),
                                    is_adapter=final.name == "adapter")
    model.eval()
    return LoadedClassifier(run.id, model, tokenizer, meta["labels"], load_config(run.config_path).data.max_length)


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
