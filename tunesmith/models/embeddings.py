"""Sentence embeddings from an encoder (minilm-l6 by default): mean-pooled over the real tokens
and L2-normalised, as sentence-transformers does for all-MiniLM-L6-v2 — computed with plain
transformers so no extra package is needed. Used by drift monitoring and active learning."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from tunesmith.catalog import BUILTIN_MODELS
from tunesmith.errors import ModelNotFound
from tunesmith.models.pull import pull
from tunesmith.models.store import resolve_model
from tunesmith.workspace import Workspace


def load_encoder(name: str, workspace: Workspace, log: Callable[[str], None] = print):
    """(tokenizer, model) of a name, pulled model or directory; a built-in model is pulled on first use."""
    from transformers import AutoModel, AutoTokenizer

    try:
        ref = resolve_model(name, workspace)
    except ModelNotFound:
        if name not in BUILTIN_MODELS:
            raise

        log(f"pulling {name} for sentence embeddings (once)")
        pull(BUILTIN_MODELS[name], workspace, progress=log)
        ref = resolve_model(name, workspace)
    tokenizer = AutoTokenizer.from_pretrained(ref.path)
    model = AutoModel.from_pretrained(ref.path).eval()
    return tokenizer, model


def embed(texts: Sequence[str], tokenizer, model, batch_size: int = 64, max_length: int = 128) -> np.ndarray:
    import torch

    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)
