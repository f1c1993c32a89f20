"""The drift tests on samples whose answer is known: the same distribution must not alert, a
moved one must (lengths, vocabulary, embeddings, predicted labels)."""
import random

import numpy as np
import pytest

from tunesmith.errors import ConfigError
from tunesmith.monitoring import drift
from tunesmith.monitoring.settings import load_settings

TOPICS = ["my card was declined at the shop", "how do I reset my password", "where is my parcel today",
          "I want a refund for the order", "the app crashes when I log in"]


def sentences(n, seed, extra=""):
    rng = random.Random(seed)
    return [f"{rng.choice(TOPICS)} {extra}please #{rng.randint(0, 999)}".strip() for _ in range(n)]


def test_the_same_distribution_does_not_drift_and_a_moved_one_does():
    reference, same = sentences(400, 0), sentences(200, 1)
    longer = sentences(200, 2, extra="and also I would like to know about the crypto staking rewards on my wallet ")
    assert drift.length_drift(reference, same)["p_value"] > 0.01
    moved = drift.length_drift(reference, longer)
    assert moved["p_value"] < 1e-6 and moved["effect"] > 0.5 and moved["live_median"] > moved["reference_median"]
    assert drift.vocabulary_drift(reference, same)["effect"] < 0.1
    vocabulary = drift.vocabulary_drift(reference, longer)
    assert vocabulary["p_value"] < 1e-6 and "crypto" in vocabulary["new_words"]
    assert vocabulary["unseen_word_share"] > vocabulary["reference_baseline_unseen_share"]


def test_mmd_finds_a_shifted_cloud_and_not_a_resampled_one():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(150, 16))
    same = drift.embedding_drift(reference, rng.normal(size=(100, 16)), permutations=200, seed=0)
    shifted = drift.embedding_drift(reference, rng.normal(0.6, 1, size=(100, 16)), permutations=200, seed=0)
    assert same["p_value"] > 0.05
    assert shifted["p_value"] <= 1 / 201 + 1e-9 and shifted["statistic"] > same["statistic"]


def test_predicted_labels_against_the_training_labels():
    training = ["refund"] * 100 + ["delivery"] * 100 + ["login"] * 100
    balanced = drift.label_drift(training, ["refund", "delivery", "login"] * 40)
    skewed = drift.label_drift(training, ["login"] * 100 + ["refund"] * 20)
    assert balanced["p_value"] > 0.5 and balanced["effect"] < 0.01
    assert skewed["p_value"] <= 1 / 2001 and skewed["effect"] > 0.3 and skewed["largest_changes"][0]["label"] == "login"


def test_a_small_window_over_many_labels_is_not_label_drift():
    # 77 labels, 300 predictions drawn from the training distribution: most expected counts are
    # under 5, where a chi-square test cries wolf; the sampling-aware test must stay quiet.
    rng = np.random.default_rng(3)
    weights = rng.uniform(0.3, 1.7, size=77)
    names = [f"intent_{i}" for i in range(77)]
    training = list(rng.choice(names, size=8000, p=weights / weights.sum()))
    quiet = [drift.label_drift(training, list(rng.choice(names, size=300, p=weights / weights.sum())), seed=s)
             for s in range(5)]
    assert all(result["effect"] < 0.05 for result in quiet)
    assert sum(result["p_value"] < 0.01 for result in quiet) <= 1
    collapsed = drift.label_drift(training, list(rng.choice(names[:20], size=300)))
    assert collapsed["p_value"] < 0.01 and collapsed["effect"] > 0.3


def test_thresholds_file_errors_name_file_line_and_key(tmp_path):
    path = tmp_path / "monitor.yaml"
    path.write_text("monitor:\n  p_value: 0.001\n  max_error_rate: 2\n")
    with pytest.raises(ConfigError) as e:
        load_settings(path)
    assert f"{path}:3: max_error_rate" in "\n".join(e.value.problems)
    path.write_text("p_value: 0.001\n")
    assert load_settings(path, {"min_requests": 50}).model_dump()["min_requests"] == 50


def test_confidence_is_judged_against_the_models_own_confidence():
    rng = np.random.default_rng(0)
    usual = rng.beta(2, 5, 400)  # a many-label classifier: rarely sure of anything
    same = drift.confidence_summary(rng.beta(2, 5, 200), 0.5, usual)
    lower = drift.confidence_summary(rng.beta(1, 9, 200), 0.5, usual)
    assert same["drop"] < 0.05 and same["p_value_lower"] > 0.01
    assert lower["drop"] > 0.15 and lower["p_value_lower"] < 1e-6
