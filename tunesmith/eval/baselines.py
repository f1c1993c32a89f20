"""Baselines a fine-tuned classifier must beat, trained on the run's own training split.

- majority class: the most frequent training label, always;
- TF-IDF + logistic regression (scikit-learn): word 1-2-grams and character 2-5-grams, the
  classic strong linear baseline for short texts (class probabilities, so it is calibrated too);
- the base LLM prompted zero-shot and few-shot with the label list (eval/prompted.py).
Each returns a ``SystemOutput`` so the report treats every system the same way.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from tunesmith.models import lexical


@dataclass
class SystemOutput:
    """What one system predicted on the test texts, and what it cost."""

    name: str
    kind: str                             # "fine-tuned" | "baseline"
    predictions: list[int]
    probabilities: np.ndarray | None      # rows over the label set, when the system has them
    seconds: float                        # the whole test set, batched
    latencies: list[float] = field(default_factory=list)  # one example at a time, seconds
    details: dict[str, Any] = field(default_factory=dict)


def majority(train_labels: Sequence[str], labels: list[str], n_test: int) -> SystemOutput:
    most = Counter(train_labels).most_common(1)[0][0]
    index = labels.index(most)
    return SystemOutput("majority class", "baseline", [index] * n_test, None, 0.0,
                        details={"label": most})


def tfidf_logistic_regression(train_texts: Sequence[str], train_labels: Sequence[str], labels: list[str],
                              test_texts: Sequence[str], seed: int = 0, latency_examples: int = 100) -> SystemOutput:
    """The lexical classifier (models/lexical.py: the same one ``ensemble: tfidf`` mixes in)."""
    started = time.time()
    model = lexical.fit(train_texts, train_labels, labels, seed=seed)
    fit_seconds = time.time() - started
    started = time.time()
    probabilities = model.predict_proba(list(test_texts))
    seconds = time.time() - started
    latencies = time_one_at_a_time(lambda text: model.predict_proba([text]), test_texts, latency_examples)
    return SystemOutput("TF-IDF + logistic regression", "baseline", probabilities.argmax(1).tolist(), probabilities,
                        seconds, latencies, {"fit_seconds": round(fit_seconds, 1)})


def time_one_at_a_time(predict_one: Callable[[str], Any], texts: Sequence[str], limit: int) -> list[float]:
    """Latency per request as a user sees it: one text per call, the first ``limit`` texts."""
    latencies = []
    for text in list(texts)[:limit]:
        started = time.perf_counter()
        predict_one(text)
        latencies.append(time.perf_counter() - started)
    return latencies
