"""How unsure a model is about each example: higher is more unsure, for every measure.

Classifiers (from label probabilities): ``entropy`` of the distribution, ``margin`` (one minus
the gap between the two most likely labels), ``least_confidence`` (one minus the top
probability). Generators: one minus the mean per-token probability of the model's own greedy
answer (``likelihood``): a model that hesitates over its words spreads its probability.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

CLASSIFIER_MEASURES = ("entropy", "margin", "least_confidence")


def from_probabilities(probabilities: np.ndarray, measure: str) -> np.ndarray:
    """
    >>> p = np.array([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25]])
    >>> [bool(x) for x in from_probabilities(p, "margin") > 0.5]
    [False, True]
    """
    p = np.clip(probabilities, 1e-12, 1.0)
    if measure == "entropy":
        return -(p * np.log(p)).sum(axis=1) / np.log(p.shape[1])  # 0..1
    top2 = -np.sort(-p, axis=1)[:, :2]
    if measure == "margin":
        return 1 - (top2[:, 0] - top2[:, 1])
    if measure == "least_confidence":
        return 1 - top2[:, 0]
    raise ValueError(f"unknown uncertainty measure {measure!r} (one of {', '.join(CLASSIFIER_MEASURES)})")


def generation_uncertainty(model, tokenizer, prompts: Sequence[list[int]], max_new_tokens: int = 48,
                           batch_size: int = 8) -> np.ndarray:
    """1 − mean probability of each greedy answer's tokens (prompts as token ids)."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = np.zeros(len(prompts))
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            width = max(len(prompts[i]) for i in chunk)
            ids = torch.tensor([[pad] * (width - len(prompts[i])) + list(prompts[i]) for i in chunk])
            mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in chunk])
            generated = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                       do_sample=False, output_scores=True, return_dict_in_generate=True,
                                       pad_token_id=pad)
            scores = model.compute_transition_scores(generated.sequences, generated.scores, normalize_logits=True)
            new = generated.sequences[:, width:]
            real = (new != pad).float()
            real[:, 0] = 1  # the first token is always an answer token
            probability = (scores.exp() * real).sum(1) / real.sum(1)
            out[chunk] = 1 - probability.float().numpy()
    return out
