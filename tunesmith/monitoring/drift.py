"""Two-sample tests: do live inputs come from the same distribution as the training inputs?

Each test returns its statistic, a p-value and an effect size; ``drifted`` needs both a small
p-value and an effect at least ``min_effect`` (with thousands of requests a harmless shift is
'significant'). Lengths: Kolmogorov-Smirnov on word counts. Vocabulary: chi-square on the
counts of the most frequent words, Jensen-Shannon distance as the effect, and the share of live
words never seen in training. Meaning: maximum mean discrepancy (MMD) between sentence
embeddings with a Gaussian kernel, p-value by permutation. Classifiers: the predicted-label
distribution against the training labels (chi-square goodness of fit, total variation).
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Any, Sequence

import numpy as np

WORD = re.compile(r"[a-z0-9']+")
TOP_WORDS = 200


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def length_drift(reference: Sequence[str], live: Sequence[str]) -> dict[str, Any]:
    from scipy.stats import ks_2samp

    ref, now = [len(words(t)) for t in reference], [len(words(t)) for t in live]
    test = ks_2samp(ref, now)
    return {"test": "Kolmogorov-Smirnov on word counts", "statistic": float(test.statistic), "p_value": float(test.pvalue),
            "effect": float(test.statistic), "reference_median": float(np.median(ref)), "live_median": float(np.median(now)),
            "reference_p95": float(np.percentile(ref, 95)), "live_p95": float(np.percentile(now, 95))}


def vocabulary_drift(reference: Sequence[str], live: Sequence[str]) -> dict[str, Any]:
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import chi2_contingency

    # Words with a letter: order numbers and ids differ in every request and are no drift.
    ref = Counter(w for t in reference for w in words(t) if not w.isdigit())
    now = Counter(w for t in live for w in words(t) if not w.isdigit())
    top = [w for w, _ in (ref + now).most_common(TOP_WORDS)]
    # The most frequent words and one bucket for the rest: the full vocabulary of small samples
    # is mostly words seen once, which makes any two samples look far apart.
    table = np.array([[ref[w] for w in top] + [sum(ref.values()) - sum(ref[w] for w in top)],
                      [now[w] for w in top] + [sum(now.values()) - sum(now[w] for w in top)]], dtype=float)
    table = table[:, table.sum(axis=0) > 0]
    p_value = float(chi2_contingency(table).pvalue) if table.shape[1] > 1 else 1.0
    distance = float(jensenshannon(table[0], table[1], base=2)) if table.shape[1] > 1 else 0.0
    unseen = sum(c for w, c in now.items() if w not in ref) / max(sum(now.values()), 1)
    new_words = [w for w, _ in now.most_common() if w not in ref][:20]
    return {"test": f"chi-square on the {len(top)} most frequent words", "p_value": p_value, "effect": distance,
            "jensen_shannon": distance, "unseen_word_share": unseen, "reference_baseline_unseen_share": _self_unseen(reference),
            "new_words": new_words}


def _self_unseen(reference: Sequence[str]) -> float:
    """The unseen-word share to expect without drift: a fifth of the training inputs against the rest."""
    if len(reference) < 10:
        return 0.0
    cut = len(reference) // 5
    seen = {w for t in reference[cut:] for w in words(t) if not w.isdigit()}
    held = [w for t in reference[:cut] for w in words(t) if not w.isdigit()]
    return sum(w not in seen for w in held) / max(len(held), 1)


def embedding_drift(reference: np.ndarray, live: np.ndarray, permutations: int, seed: int) -> dict[str, Any]:
    """MMD² (biased) with a Gaussian kernel, bandwidth the median pairwise distance; the p-value is
    the share of label permutations with an MMD at least as large (+1 smoothing)."""
    pooled = np.concatenate([reference, live]).astype(np.float64)
    n, m = len(reference), len(live)
    squared = np.maximum((pooled ** 2).sum(1)[:, None] + (pooled ** 2).sum(1)[None, :] - 2 * pooled @ pooled.T, 0)
    bandwidth = np.median(squared[np.triu_indices(len(pooled), 1)]) or 1.0
    kernel = np.exp(-squared / bandwidth)
    rng = np.random.default_rng(seed)
    signs = np.empty((n + m, permutations + 1))
    base = np.concatenate([np.full(n, 1 / n), np.full(m, -1 / m)])
    signs[:, 0] = base
    for j in range(1, permutations + 1):
        signs[:, j] = rng.permutation(base)
    # s^T K s for every column at once: one matrix product instead of a loop of quadratic forms.
    mmds = np.einsum("ij,ij->j", signs, kernel @ signs)
    observed = float(mmds[0])
    p_value = float((1 + np.sum(mmds[1:] >= observed)) / (permutations + 1))
    centroid_cosine = float(reference.mean(0) @ live.mean(0) / (np.linalg.norm(reference.mean(0)) * np.linalg.norm(live.mean(0)) + 1e-12))
    return {"test": f"MMD, Gaussian kernel, {permutations} permutations", "statistic": observed, "p_value": p_value,
            "effect": None, "reference_samples": n, "live_samples": m, "centroid_cosine": centroid_cosine}


def label_drift(training_labels: Sequence[str], predicted: Sequence[str], draws: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Total variation between the live predicted labels and the training labels, judged against
    the total variation that samples of the same size drawn from the training labels show anyway.

    Why not chi-square: with many labels and a few hundred requests most expected counts are
    below 5, and the chi-square approximation raised false alarms on BANKING77 (77 labels, 300
    requests). The Monte-Carlo null is exact for any size, and the effect is the TV *beyond* the
    sampling noise, so a small window does not look 'moved' just because it is small."""
    labels = sorted(set(training_labels) | set(predicted))
    train, live = Counter(training_labels), Counter(predicted)
    expected = np.array([train[l] + 1 for l in labels], dtype=float)  # add-one: a label unseen in training
    expected /= expected.sum()
    observed = np.array([live[l] for l in labels], dtype=float) / max(len(predicted), 1)
    total_variation = float(0.5 * np.abs(observed - expected).sum())
    null = np.random.default_rng(seed).multinomial(len(predicted), expected, size=draws) / max(len(predicted), 1)
    null_tv = 0.5 * np.abs(null - expected).sum(axis=1)
    p_value = float((1 + np.sum(null_tv >= total_variation - 1e-12)) / (draws + 1))
    baseline = float(null_tv.mean())
    train_share = {l: train[l] / max(len(training_labels), 1) for l in labels}
    live_share = {l: live[l] / max(len(predicted), 1) for l in labels}
    moved = sorted(labels, key=lambda l: -abs(train_share[l] - live_share[l]))[:10]
    return {"test": f"total variation vs {draws} samples of the training labels (Monte Carlo)", "p_value": p_value,
            "effect": max(0.0, total_variation - baseline), "total_variation": total_variation,
            "sampling_total_variation": baseline,
            "largest_changes": [{"label": l, "training": train_share[l], "live": live_share[l]} for l in moved]}


def confidence_summary(confidences: Sequence[float], low: float, reference: Sequence[float] | None = None) -> dict[str, Any]:
    """Live confidence; with ``reference`` (the model's confidence on its training inputs) also the
    drop in the mean and a one-sided Mann-Whitney test that live confidence is lower."""
    values = np.asarray(confidences, dtype=float)
    out = {"mean": float(values.mean()), "median": float(np.median(values)), "low_share": float((values < low).mean()),
           "low_threshold": low}
    if reference is not None and len(reference):
        from scipy.stats import mannwhitneyu

        ref = np.asarray(reference, dtype=float)
        out |= {"reference_mean": float(ref.mean()), "drop": float(ref.mean() - values.mean()),
                "p_value_lower": float(mannwhitneyu(values, ref, alternative="less").pvalue)}
    return out
