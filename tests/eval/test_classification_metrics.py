"""Every classification figure against scikit-learn on fixed inputs (and ECE by hand)."""
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from tunesmith.confusion import calibration, confusion, scores, top_confusions

LABELS = ["a", "b", "c", "d"]
# Class d is never predicted (precision 0 by convention) and c is over-predicted.
Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 0, 1, 2]
Y_PRED = [0, 2, 0, 1, 2, 2, 2, 0, 2, 2, 1, 0, 1, 2]


def test_confusion_matches_sklearn():
    ours = confusion(Y_TRUE, Y_PRED, len(LABELS))
    assert ours.tolist() == confusion_matrix(Y_TRUE, Y_PRED, labels=range(len(LABELS))).tolist()


@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
def test_averages_match_sklearn(average):
    ours = scores(confusion(Y_TRUE, Y_PRED, len(LABELS)), LABELS)
    p, r, f, _ = precision_recall_fscore_support(Y_TRUE, Y_PRED, average=average, zero_division=0)
    assert ours[f"{average}_precision"] == pytest.approx(p)
    assert ours[f"{average}_recall"] == pytest.approx(r)
    assert ours[f"{average}_f1"] == pytest.approx(f)
    assert ours["accuracy"] == pytest.approx(accuracy_score(Y_TRUE, Y_PRED))


def test_per_class_matches_sklearn():
    ours = scores(confusion(Y_TRUE, Y_PRED, len(LABELS)), LABELS)["per_class"]
    p, r, f, support = precision_recall_fscore_support(Y_TRUE, Y_PRED, labels=range(len(LABELS)), zero_division=0)
    for i, row in enumerate(ours):
        assert row["label"] == LABELS[i]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx((p[i], r[i], f[i], support[i]))


def test_macro_skips_labels_absent_from_both_sides_like_sklearn():
    y_true, y_pred = [0, 0, 1], [0, 1, 1]  # label 2 of 3 never occurs
    ours = scores(confusion(y_true, y_pred, 3), ["x", "y", "z"])
    _, _, f, _ = precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
    assert ours["macro_f1"] == pytest.approx(f)


def test_top_confusions_are_the_largest_off_diagonal_cells():
    found = top_confusions(confusion(Y_TRUE, Y_PRED, len(LABELS)), LABELS, limit=3)
    counts = [c["count"] for c in found]
    assert counts == sorted(counts, reverse=True)
    matrix = confusion_matrix(Y_TRUE, Y_PRED)
    np.fill_diagonal(matrix, 0)
    assert counts[0] == matrix.max()


def test_expected_calibration_error_by_hand():
    probabilities = np.array([[0.95, 0.05], [0.85, 0.15], [0.3, 0.7], [0.45, 0.55]])
    y_true = [0, 1, 1, 0]
    result = calibration(y_true, probabilities, n_bins=5)
    # bins (0.8,1.0]: conf .95,.85 acc 1,0 → |0.5-0.9|*2/4 ; (0.6,0.8]: .7 acc 1 → .3/4 ; (0.4,0.6]: .55 acc 0 → .55/4
    assert result["ece"] == pytest.approx((0.4 * 2 + 0.3 + 0.55) / 4)
    assert sum(b["count"] for b in result["bins"]) == 4


def test_perfect_confident_predictions_have_zero_ece():
    probabilities = np.eye(3)[[0, 1, 2, 1]]
    assert calibration([0, 1, 2, 1], probabilities)["ece"] == pytest.approx(0.0)
