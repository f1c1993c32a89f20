"""A trained classifier as ONNX: one graph, its tokenizer and its labels, runnable without tunesmith.

The export is ``model.onnx`` (inputs ``input_ids``, ``attention_mask`` and, for models that take
it, ``token_type_ids``, each [batch, sequence] with both axes dynamic; output ``logits``), the
tokenizer files (``tokenizer.save_pretrained``) and ``labels.json`` (``{"labels": [...],
"max_length": N}``). ``onnx_predict_proba`` reads those files alone, through onnxruntime.

The graph is traced from the loaded model, so what a plain transformers checkpoint cannot say is
baked in: ``pooling: mean`` is done by forward hooks (``tunesmith.models.classifier``), and a
reload of the weights alone would classify from the first token instead.

We use torch's own exporter, ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript), the
default since torch 2.9. The TorchScript one (``dynamo=False``) is deprecated and its trace fixes
data-dependent branches of transformers' mask code as constants (it warns so); optimum's exporters
pin transformers below 5.11. Needs ``pip install onnx onnxscript onnxruntime`` (``tunesmith[onnx]``).
"""
from __future__ import annotations

import importlib.util
import inspect
import json
import warnings
from pathlib import Path

from tunesmith.errors import ExportError

MODEL_FILE, LABELS_FILE = "model.onnx", "labels.json"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
INSTALL_HINT = "pip install onnx onnxscript onnxruntime (or: pip install 'tunesmith[onnx]')"
# A protobuf file holds at most 2 GiB; larger models keep their weights in model.onnx.data beside it.
SINGLE_FILE_LIMIT = 1536 * 1024 * 1024
# Two texts of different lengths, so the traced graph sees padding and no axis of size 1 (which
# torch.export would specialise on).
EXAMPLE_TEXTS = ["a short text", "a somewhat longer text, so that the first one is padded to its length"]


def export_classifier_onnx(model, tokenizer, labels: list[str], max_length: int, dest_dir: Path,
                           log=print) -> list[str]:
    """Write dest_dir/model.onnx, the tokenizer files and labels.json; return the names of the files
    in ``dest_dir`` afterwards, which is meant to start empty (a ``staging.staged`` directory)."""
    _require("onnx", "onnxscript")
    dest_dir.mkdir(parents=True, exist_ok=True)
    example = _example_inputs(model, tokenizer, max_length)
    log(f"exporting {type(model).__name__} to ONNX (inputs: {', '.join(example)})")
    _trace_to_onnx(model, example, dest_dir / MODEL_FILE)
    tokenizer.save_pretrained(dest_dir)
    (dest_dir / LABELS_FILE).write_text(json.dumps({"labels": list(labels), "max_length": max_length}, indent=2))
    # Listed rather than collected: the exporter may add model.onnx.data, the tokenizer a file per kind.
    return sorted(p.name for p in dest_dir.iterdir() if p.is_file())


def _example_inputs(model, tokenizer, max_length: int) -> dict:
    """The tokenizer's outputs that the model's forward takes, on ``EXAMPLE_TEXTS``."""
    accepted = inspect.signature(model.forward).parameters
    batch = tokenizer(EXAMPLE_TEXTS, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    return {name: batch[name] for name in INPUT_NAMES if name in batch and name in accepted}


def _trace_to_onnx(model, example: dict, path: Path) -> None:
    import torch

    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    with torch.no_grad(), warnings.catch_warnings():
        # torch 2.13's exporter warns about its own internals: the pytree LeafSpec deprecation, and
        # axis names shared by several inputs (which is what we ask for). Neither concerns the graph.
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)`")
        warnings.filterwarnings("ignore", message="# The axis name")
        torch.onnx.export(model, (), path, kwargs=example, input_names=list(example), output_names=["logits"],
                          dynamic_shapes={name: {0: batch, 1: sequence} for name in example},
                          dynamo=True, external_data=size > SINGLE_FILE_LIMIT, verbose=False)


def onnx_predict_proba(dest_dir: Path, texts: list[str], batch_size: int = 64):
    """Label probabilities from the exported files alone (onnxruntime on the CPU and the saved
    tokenizer): a float32 array [len(texts), len(labels)]. Texts are batched by length, as in
    ``LoadedClassifier.predict_proba``, so little of each batch is padding."""
    import numpy as np

    session, tokenizer, meta = load_onnx_classifier(dest_dir)
    wanted = [i.name for i in session.get_inputs()]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), len(meta["labels"])), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch = tokenizer([texts[i] for i in chunk], truncation=True, max_length=meta["max_length"],
                          padding=True, return_tensors="np")
        logits = session.run(["logits"], {name: batch[name].astype(np.int64) for name in wanted})[0]
        out[chunk] = _softmax(logits)
    return out


def load_onnx_classifier(dest_dir: Path):
    """(onnxruntime session, tokenizer, labels.json contents) of an export; load once, run many."""
    _require("onnxruntime")
    import onnxruntime
    from transformers import AutoTokenizer

    if not (dest_dir / MODEL_FILE).exists():
        raise ExportError(f"{dest_dir} holds no {MODEL_FILE}; export a classifier there first")
    session = onnxruntime.InferenceSession(str(dest_dir / MODEL_FILE), providers=["CPUExecutionProvider"])
    meta = json.loads((dest_dir / LABELS_FILE).read_text())
    return session, AutoTokenizer.from_pretrained(dest_dir), meta


def _softmax(logits):
    """Row-wise softmax in float32, shifted by the row maximum so that exp cannot overflow."""
    import numpy as np

    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32)


def _require(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"ONNX export needs {', '.join(missing)}, which is not installed; install it with: "
                          f"{INSTALL_HINT}")
