"""TF-IDF + logistic regression: the lexical text classifier, fitted with scikit-learn.

Word 1-2-grams and character 2-5-grams (within word boundaries), sublinear term frequencies,
L2 logistic regression: the classic strong linear model for short texts. It is both the baseline
a fine-tuned classifier must beat (eval/baselines.py) and, with ``ensemble: tfidf``, a member of
the classifier itself: its errors are lexical where an encoder's are semantic, so the mixture
of the two is right more often than either (measured on BANKING77: examples/banking77/README.md).

Saved without pickle (a run directory may come from elsewhere, and unpickling runs code): the
two vocabularies as JSON, the idf vectors and the regression's weights as safetensors, and the
vectorizers rebuilt from them with the same settings at load time.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

FILE_STEM = "tfidf"  # tfidf.json (settings, vocabularies, labels) and tfidf.safetensors (arrays)
VECTORIZERS: tuple[dict[str, Any], ...] = (
    {"ngram_range": (1, 2), "sublinear_tf": True, "min_df": 1},
    {"analyzer": "char_wb", "ngram_range": (2, 5), "sublinear_tf": True, "min_df": 2},
)
C = 10.0  # weak regularisation: with ~100 examples per label the n-gram features are sparse


@dataclass
class LexicalClassifier:
    """A fitted TF-IDF + logistic regression over ``labels`` (probability columns in that order)."""

    vectorizers: list[Any]
    coef: np.ndarray        # labels x features
    intercept: np.ndarray   # labels
    labels: list[str]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        from scipy.sparse import hstack

        features = hstack([v.transform(list(texts)) for v in self.vectorizers]).tocsr()
        logits = np.asarray(features @ self.coef.T) + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)

    def save(self, directory: Path) -> None:
        from safetensors.numpy import save_file

        arrays = {"coef": self.coef.astype(np.float32), "intercept": self.intercept.astype(np.float32)}
        arrays |= {f"idf_{i}": v.idf_.astype(np.float32) for i, v in enumerate(self.vectorizers)}
        save_file(arrays, str(directory / f"{FILE_STEM}.safetensors"))
        meta = {"labels": self.labels,
                "vocabularies": [{term: int(i) for term, i in v.vocabulary_.items()} for v in self.vectorizers]}
        (directory / f"{FILE_STEM}.json").write_text(json.dumps(meta, ensure_ascii=False))


def fit(texts: Sequence[str], text_labels: Sequence[str], labels: list[str], seed: int = 0) -> LexicalClassifier:
    """Fit on ``texts`` / ``text_labels``; probability columns follow ``labels`` (a label with no
    training text gets probability ~0)."""
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizers = [TfidfVectorizer(**settings) for settings in VECTORIZERS]
    features = hstack([v.fit_transform(list(texts)) for v in vectorizers]).tocsr()
    regression = LogisticRegression(C=C, max_iter=2000, random_state=seed).fit(features, list(text_labels))
    coef = np.zeros((len(labels), features.shape[1]), dtype=np.float32)
    intercept = np.full(len(labels), -1e4, dtype=np.float32)  # labels never seen: never predicted
    classes = list(regression.classes_)
    if len(classes) == 2:  # scikit-learn keeps one row for two classes: the second class's logit
        rows = {classes[0]: (-regression.coef_[0] / 2, -regression.intercept_[0] / 2),
                classes[1]: (regression.coef_[0] / 2, regression.intercept_[0] / 2)}
    else:
        rows = {c: (regression.coef_[i], regression.intercept_[i]) for i, c in enumerate(classes)}
    for i, label in enumerate(labels):
        if label in rows:
            coef[i], intercept[i] = rows[label]
    return LexicalClassifier(vectorizers, coef, intercept, list(labels))


def load(directory: Path) -> LexicalClassifier | None:
    """The lexical classifier saved in ``directory``, or None when there is none."""
    meta_path = directory / f"{FILE_STEM}.json"
    if not meta_path.exists():
        return None
    from safetensors.numpy import load_file
    from sklearn.feature_extraction.text import TfidfVectorizer

    meta = json.loads(meta_path.read_text())
    arrays = load_file(str(directory / f"{FILE_STEM}.safetensors"))
    vectorizers = []
    for i, (settings, vocabulary) in enumerate(zip(VECTORIZERS, meta["vocabularies"])):
        vectorizer = TfidfVectorizer(**settings, vocabulary=vocabulary, dtype=np.float64)
        vectorizer.idf_ = arrays[f"idf_{i}"].astype(np.float64)
        vectorizers.append(vectorizer)
    return LexicalClassifier(vectorizers, arrays["coef"], arrays["intercept"], meta["labels"])


def mixture_weight(neural: np.ndarray, lexical: np.ndarray, y: Sequence[int],
                   grid: Sequence[float] = tuple(np.round(np.arange(0, 0.85, 0.05), 2))) -> tuple[float, dict[float, float]]:
    """The weight w of the lexical member in ``(1 - w) * neural + w * lexical`` that is right most
    often on validation (``y``); ties go to the smaller weight (the encoder alone, when nothing
    helps). Returns the weight and the validation accuracy at every weight tried.

    >>> neural = np.array([[0.6, 0.4], [0.45, 0.55], [0.2, 0.8]])
    >>> lexical = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9]])
    >>> mixture_weight(neural, lexical, [0, 0, 1], grid=(0.0, 0.5))
    (0.5, {0.0: 0.6667, 0.5: 1.0})
    """
    y = np.asarray(y)
    accuracy = {float(w): round(float(((1 - w) * neural + w * lexical).argmax(1).__eq__(y).mean()), 4) for w in grid}
    best = max(accuracy.values())
    return min(w for w, a in accuracy.items() if a == best), accuracy
