"""Out-of-scope detection for a classifier whose data has an out-of-scope class.

Where the label set holds a class for "none of these" (CLINC150's ``oos``; set it with
``data.out_of_scope_label``), a classifier that answers its top in-scope label with low
confidence should answer out-of-scope instead. The confidence threshold is chosen on the run's
validation split — never on test — as the one that maximises the mean of in-scope accuracy and
out-of-scope recall (either alone is maximised by a trivial threshold); the test report then
gives both figures at that threshold beside the plain argmax.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

GRID = tuple(round(float(t), 2) for t in np.arange(0.0, 1.0, 0.05))


def predict(probabilities: np.ndarray, oos: int, threshold: float) -> np.ndarray:
    """Argmax over the in-scope labels, or ``oos`` where its probability (or the out-of-scope
    class's own) wins or the top in-scope probability is under ``threshold``.

    >>> p = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [0.1, 0.1, 0.8]])
    >>> predict(p, oos=2, threshold=0.5).tolist()
    [0, 2, 2]
    """
    predicted = probabilities.argmax(1)
    in_scope = probabilities.copy()
    in_scope[:, oos] = -1.0
    unsure = in_scope.max(1) < threshold
    return np.where(unsure | (predicted == oos), oos, predicted)


def figures(probabilities: np.ndarray, y: Sequence[int], oos: int, threshold: float) -> dict[str, float | int]:
    """In-scope accuracy and out-of-scope recall (and precision) at ``threshold``."""
    y = np.asarray(y)
    predicted = predict(probabilities, oos, threshold)
    inside, outside = y != oos, y == oos
    flagged = predicted == oos
    return {"threshold": threshold,
            "in_scope_accuracy": round(float((predicted[inside] == y[inside]).mean()), 4) if inside.any() else None,
            "out_of_scope_recall": round(float(flagged[outside].mean()), 4) if outside.any() else None,
            "out_of_scope_precision": round(float(outside[flagged].mean()), 4) if flagged.any() else None,
            "in_scope_examples": int(inside.sum()), "out_of_scope_examples": int(outside.sum())}


def choose_threshold(probabilities: np.ndarray, y: Sequence[int], oos: int) -> float:
    """The threshold with the best mean of in-scope accuracy and out-of-scope recall on these
    (validation) examples; ties go to the lowest.

    >>> p = np.array([[0.9, 0.05, 0.05], [0.45, 0.3, 0.25], [0.5, 0.1, 0.4], [0.1, 0.85, 0.05]])
    >>> choose_threshold(p, [0, 2, 2, 1], oos=2)
    0.55
    """
    def score(t: float) -> float:
        f = figures(probabilities, y, oos, t)
        return ((f["in_scope_accuracy"] or 0.0) + (f["out_of_scope_recall"] or 0.0)) / 2

    best = max(score(t) for t in GRID)
    return min(t for t in GRID if score(t) == best)


def section(labels: list[str], oos_label: str, validation_p: np.ndarray, validation_y: Sequence[int],
            test_p: np.ndarray, test_y: Sequence[int]) -> dict[str, Any]:
    """The report's out-of-scope section: the threshold chosen on validation, the test figures
    at it and with the plain argmax (threshold 0)."""
    oos = labels.index(oos_label)
    if not len(validation_y) or oos not in set(validation_y):
        return {"label": oos_label, "threshold": None,
                "note": "no out-of-scope example in the validation split to choose a threshold on",
                "argmax": figures(test_p, test_y, oos, 0.0)}
    threshold = choose_threshold(validation_p, validation_y, oos)
    return {"label": oos_label, "threshold": threshold, "chosen_on": f"validation ({len(validation_y)} examples)",
            "validation": figures(validation_p, validation_y, oos, threshold),
            "test": figures(test_p, test_y, oos, threshold), "argmax": figures(test_p, test_y, oos, 0.0)}
