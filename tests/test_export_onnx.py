"""ONNX export of a classifier: the exported graph, run by onnxruntime from the exported files alone,
gives the probabilities the PyTorch model gives, mean-pooling hooks and padding included."""
import json

import pytest

from tunesmith.errors import TunesmithError
from tunesmith.exports import onnx as onnx_export

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

LABELS = ["delivery", "login", "refund"]
MAX_LENGTH = 128
# Lengths far apart in one batch, so most rows are padded; the last is truncated (byte-level tokens).
TEXTS = ["hi", "where is my parcel please", "refund", "I have an issue: " + "the password is not working " * 6]


def tiny_classifier(model_dir, pooling):
    from tunesmith.models.classifier import load_sequence_classifier

    return load_sequence_classifier(str(model_dir), LABELS, pooling).eval()


def torch_probabilities(model, tokenizer, texts):
    import torch

    batch = tokenizer(texts, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt")
    with torch.inference_mode():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return torch.softmax(logits, dim=-1).numpy()


@pytest.fixture(scope="module")
def tokenizer(tiny_encoder_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_encoder_dir)


@pytest.fixture(scope="module")
def exported(tiny_encoder_dir, tokenizer, tmp_path_factory):
    """pooling -> (the model, its export directory, the files written); each pooling exported once
    (an export takes several seconds)."""
    cache = {}

    def export(pooling):
        if pooling not in cache:
            model, dest = tiny_classifier(tiny_encoder_dir, pooling), tmp_path_factory.mktemp(f"onnx-{pooling}")
            written = onnx_export.export_classifier_onnx(model, tokenizer, LABELS, MAX_LENGTH, dest, log=lambda _: None)
            cache[pooling] = model, dest, written
        return cache[pooling]
    return export


@pytest.mark.slow
@pytest.mark.parametrize("pooling", ["mean", "model"])
def test_exported_classifier_matches_pytorch_on_a_padded_batch(exported, tokenizer, pooling):
    import numpy as np

    model, dest, written = exported(pooling)
    assert {"model.onnx", "labels.json", "tokenizer.json"} <= set(written)
    assert json.loads((dest / "labels.json").read_text()) == {"labels": LABELS, "max_length": MAX_LENGTH}

    expected = torch_probabilities(model, tokenizer, TEXTS)
    got = onnx_export.onnx_predict_proba(dest, TEXTS, batch_size=len(TEXTS))
    assert got.shape == (len(TEXTS), len(LABELS))
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert (got.argmax(1) == expected.argmax(1)).all()
    # Small batches take other lengths (and sizes) through the dynamic axes.
    np.testing.assert_allclose(onnx_export.onnx_predict_proba(dest, TEXTS, batch_size=3), expected, atol=1e-4)


@pytest.mark.slow
def test_the_mean_pooling_hooks_are_in_the_graph(exported, tiny_encoder_dir, tokenizer):
    """Without the hooks the same weights classify from the first token: the export must differ from that."""
    import numpy as np

    model, dest, _ = exported("mean")
    first_token = tiny_classifier(tiny_encoder_dir, "model")
    first_token.load_state_dict(model.state_dict())
    unpooled = torch_probabilities(first_token, tokenizer, TEXTS)
    assert np.abs(onnx_export.onnx_predict_proba(dest, TEXTS) - unpooled).max() > 1e-3


def test_missing_packages_are_named_with_the_install_command(monkeypatch, tmp_path):
    real = onnx_export.importlib.util.find_spec
    monkeypatch.setattr(onnx_export.importlib.util, "find_spec", lambda name: None if name == "onnxruntime" else real(name))
    with pytest.raises(TunesmithError, match=r"onnxruntime.*pip install onnx onnxscript onnxruntime.*tunesmith\[onnx\]"):
        onnx_export.onnx_predict_proba(tmp_path, ["hi"])


def test_a_directory_without_an_export_is_refused(tmp_path):
    with pytest.raises(TunesmithError, match="no model.onnx"):
        onnx_export.onnx_predict_proba(tmp_path, ["hi"])
