"""Classification metrics from labels, predictions and probabilities: one confusion matrix, everything else from it.

Computed with numpy from the confusion matrix so that the per-class table, the macro / micro /
weighted averages and the matrix itself can never disagree; tests check every figure against
scikit-learn. Calibration (expected calibration error, reliability bins) follows Guo et al. 2017:
equal-width confidence bins, ECE = sum over bins of (bin share) * |accuracy - mean confidence|.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def confusion(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """Counts: rows are true classes, columns predicted classes.

    >>> confusion([0, 1, 1], [0, 1, 0], 2).tolist()
    [[1, 0], [1, 1]]
    """
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return matrix


def scores(matrix: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro / micro / weighted precision, recall and F1, and the per-class table.

    A class never predicted has precision 0 (and never present, recall 0), as scikit-learn's
    ``zero_division=0``.
    """
    true_pos = np.diag(matrix).astype(float)
    support = matrix.sum(axis=1).astype(float)
    predicted = matrix.sum(axis=0).astype(float)
    precision = _safe_divide(true_pos, predicted)
    recall = _safe_divide(true_pos, support)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    total = support.sum()
    present = (support + predicted) > 0  # scikit-learn averages over labels seen in y_true or y_pred
    weights = support / total if total else support
    micro = float(true_pos.sum() / total) if total else 0.0
    out: dict[str, Any] = {"accuracy": micro, "examples": int(total)}
    for name, values in (("precision", precision), ("recall", recall), ("f1", f1)):
        out[f"macro_{name}"] = float(values[present].mean()) if present.any() else 0.0
        out[f"weighted_{name}"] = float((values * weights).sum())
        out[f"micro_{name}"] = micro  # single-label: micro P = R = F1 = accuracy
    out["per_class"] = [
        {"label": label, "precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
         "support": int(support[i])}
        for i, label in enumerate(labels)
    ]
    return out


def top_confusions(matrix: np.ndarray, labels: Sequence[str], limit: int = 10) -> list[dict[str, Any]]:
    """The most frequent (true, predicted) mistakes, largest first.

    >>> top_confusions(np.array([[5, 2], [0, 3]]), ["a", "b"])
    [{'true': 'a', 'predicted': 'b', 'count': 2, 'share_of_true': 0.2857}]
    """
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:limit]
    out = []
    for flat in order:
        i, j = divmod(int(flat), matrix.shape[1])
        if off[i, j] == 0:
            break
        out.append({"true": labels[i], "predicted": labels[j], "count": int(off[i, j]),
                    "share_of_true": round(float(off[i, j] / matrix[i].sum()), 4)})
    return out


def calibration(y_true: Sequence[int], probabilities: np.ndarray, n_bins: int = 10) -> dict[str, Any]:
    """Expected calibration error of the top-class confidence, and the reliability bins behind it.

    >>> c = calibration([0, 1], np.array([[0.9, 0.1], [0.6, 0.4]]), n_bins=10)
    >>> round(c["ece"], 3)  # bin 0.9: acc 1 vs 0.9; bin 0.6: acc 0 vs 0.6 → (0.1 + 0.6) / 2
    0.35
    """
    probabilities = np.asarray(probabilities, dtype=float)
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == np.asarray(y_true)).astype(float)
    # Bin i holds confidences in (i/n, (i+1)/n]; a confidence of exactly 0 goes to bin 0.
    index = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    bins, ece = [], 0.0
    for i in range(n_bins):
        members = index == i
        count = int(members.sum())
        if count:
            accuracy, mean_conf = float(correct[members].mean()), float(confidence[members].mean())
            ece += count / len(confidence) * abs(accuracy - mean_conf)
        else:
            accuracy = mean_conf = None
        bins.append({"low": i / n_bins, "high": (i + 1) / n_bins, "count": count,
                     "accuracy": accuracy, "confidence": mean_conf})
    return {"ece": float(ece), "bins": bins, "mean_confidence": float(confidence.mean()) if len(confidence) else 0.0}


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50 / p95 of per-example latencies, in milliseconds.

    >>> latency_summary([0.01, 0.02, 0.03])["p50_ms"]
    20.0
    """
    ms = np.asarray(seconds, dtype=float) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "measured_examples": len(ms)}


def _safe_divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a, dtype=float), where=b > 0)
