"""The classify recipe end to end on tiny random models: train → predict (→ eval in tests/eval)."""
import csv
import json

import pytest

from tests.conftest import classification_records, write_jsonl
from tunesmith import api
from tunesmith.config import load_config
from tunesmith.errors import DataError


def classify_config(train, model, **overrides):
    base = {"recipe": "classify", "model": str(model), "data": {"train": str(train), "max_length": 64},
            "training": {"epochs": 15, "learning_rate": 5e-3, "batch_size": 16, "eval_steps": 35, "logging_steps": 5,
                         "warmup_ratio": 0.0}}
    settings = [f"{k}={v}" for k, v in overrides.items()]
    return load_config(None, settings, base=base)


@pytest.fixture
def classify_file(tmp_path):
    return write_jsonl(tmp_path / "intents.jsonl", classification_records(120))


def test_encoder_classifier_learns_and_predicts(workspace, tiny_encoder_dir, classify_file, tmp_path):
    result = api.train(classify_config(classify_file, tiny_encoder_dir), workspace=workspace)
    summary = result.summary
    assert summary["labels"] == 3 and summary["validation_examples"] == 12
    assert summary["best_eval_accuracy"] >= 0.9, summary
    labels = json.loads((result.run.final_dir / "labels.json").read_text())
    assert labels == {"labels": ["delivery", "login", "refund"], "pooling": "mean"}

    [prediction] = api.predict(result.run.id, ["where is the courier please"], workspace=workspace)
    assert prediction["label"] == "delivery"
    assert sum(t["probability"] for t in prediction["top"]) <= 1.0 + 1e-6

    source = tmp_path / "in.csv"
    with open(source, "w", newline="") as f:
        writer = csv.DictWriter(f, ["text", "label"])
        writer.writeheader()
        writer.writerows(classification_records(30, seed=7))
    out = tmp_path / "out.csv"
    summary = api.predict_file(result.run.id, source, out, workspace=workspace)
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 30 and {"text", "label", "predicted", "confidence", "p_refund"} <= set(rows[0])
    assert all(abs(sum(float(r[f"p_{l}"]) for l in ("delivery", "login", "refund")) - 1) < 1e-3 for r in rows)
    assert summary["accuracy"] >= 0.8


def test_decoder_lora_classifier_with_class_weights(workspace, tiny_model_dir, classify_file):
    config = classify_config(classify_file, tiny_model_dir, method="lora", class_weights="balanced",
                             **{"training.epochs": 2, "lora.r": 4})
    result = api.train(config, workspace=workspace)
    assert (result.run.final_dir / "adapter_config.json").exists()
    labels = json.loads((result.run.final_dir / "labels.json").read_text())
    assert labels["pooling"] == "model"  # causal LMs classify from the last token
    [prediction] = api.predict(result.run.id, ["password is not working"], workspace=workspace)
    assert prediction["label"] in {"delivery", "login", "refund"}


def test_no_validation_split_trains_without_evaluating(workspace, tiny_encoder_dir, classify_file):
    config = classify_config(classify_file, tiny_encoder_dir, **{"data.validation_fraction": 0, "training.epochs": 1})
    result = api.train(config, workspace=workspace)
    assert result.summary["validation_examples"] == 0 and result.summary["train_examples"] == 120


def test_validation_label_unseen_in_training_is_an_error(workspace, tiny_encoder_dir, classify_file, tmp_path):
    validation = write_jsonl(tmp_path / "val.jsonl", [{"text": "x y z", "label": "refund"},
                                                     {"text": "new thing", "label": "cancel"}])
    config = classify_config(classify_file, tiny_encoder_dir, **{"data.validation": str(validation)})
    with pytest.raises(DataError, match=r"line 2: 'cancel'"):
        api.train(config, workspace=workspace)


def test_predict_on_a_chat_run_says_to_use_generate(workspace, tiny_model_dir, chat_file):
    from tests.training.test_sft import tiny_config
    from tunesmith.errors import TunesmithError

    result = api.train(tiny_config(tiny_model_dir, chat_file, "training.max_steps=2"), workspace=workspace)
    with pytest.raises(TunesmithError, match="not a classifier.*generate"):
        api.predict(result.run.id, ["hello"], workspace=workspace)


def test_tfidf_ensemble_member_is_saved_weighted_on_validation_and_mixed_in(workspace, tiny_encoder_dir, classify_file):
    import numpy as np

    from tunesmith.models.engine import load_classifier

    config = classify_config(classify_file, tiny_encoder_dir, ensemble="tfidf", **{"training.epochs": 1})
    result = api.train(config, workspace=workspace)
    summary, final = result.summary, result.run.final_dir
    assert (final / "tfidf.json").exists() and (final / "tfidf.safetensors").exists()
    meta = json.loads((final / "labels.json").read_text())
    assert meta["lexical_weight"] == summary["lexical_weight"] and 0 <= meta["lexical_weight"] <= 0.8
    assert summary["validation_accuracy_mixed"] >= summary["validation_accuracy_encoder"]

    loaded = load_classifier(result.run, workspace)
    texts = ["where is the courier please", "i forgot my password", "give me my money back"]
    neural, lexical = loaded.neural_proba(texts), loaded.lexical.predict_proba(texts)
    w = loaded.lexical_weight
    assert np.allclose(loaded.predict_proba(texts), (1 - w) * neural + w * lexical, atol=1e-6)
    assert np.allclose(loaded.predict_proba(texts).sum(1), 1, atol=1e-5)
    # The lexical member alone has learned the words of each intent (a tiny encoder after one epoch has not).
    assert [loaded.labels[i] for i in lexical.argmax(1)] == ["delivery", "login", "refund"]
