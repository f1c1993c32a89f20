"""Scoring token sequences: each token's log-probability given the ones before it, and the most
likely alternatives at each position.

This is what OpenAI's legacy ``/v1/completions`` answers with ``echo`` and ``logprobs`` (the shape
lm-evaluation-harness's ``local-completions`` reads for loglikelihood tasks): one forward pass over
the sequence, a log-softmax over the vocabulary at every position, the logprob of the token that
follows and the top ``k`` of the distribution. The first token has no logprob (nothing precedes it).

``models/engine.py:sequence_logprobs`` sums label tokens' logprobs for preference evaluation (and
multiple-choice scoring, ``eval/multiple_choice.py``); this module keeps every position and its
alternatives, which the summed form has no room for. The engines call ``token_logprobs`` with their
model and the request's adapter active (``BatchingEngine.score``, ``TransformersEngine.score``).
"""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Sequence

MAX_TOP_LOGPROBS = 5  # OpenAI's legacy limit for ``logprobs``


@dataclass(frozen=True)
class TokenScores:
    """One sequence scored: ``logprobs[i]`` is log p(token i | tokens before it), None for the first;
    ``top[i]`` the ``k`` most likely tokens at position i as (token id, logprob), best first."""

    token_ids: list[int]
    logprobs: list[float | None]
    top: list[list[tuple[int, float]] | None]


def token_logprobs(model, sequences: Sequence[list[int]], top_k: int = 0, pad_token_id: int = 0,
                   batch_size: int = 8, context: AbstractContextManager | None = None,
                   adapter_name: str | None = None) -> list[TokenScores]:
    """Score each sequence (right-padded, ``batch_size`` at a time, log-softmax in fp32).
    ``adapter_name``: the peft adapter of a model that mixes LoRA adapters per row
    (``adapter_names=[...]`` in its forward, ``"__base__"`` for none); ``context`` is entered
    around each forward (``disable_adapter()`` for the base model of a PeftModel)."""
    import torch

    if not 0 <= top_k <= MAX_TOP_LOGPROBS:
        raise ValueError(f"top_k must be between 0 and {MAX_TOP_LOGPROBS}")
    results: list[TokenScores] = []
    for start in range(0, len(sequences), batch_size):
        chunk = [list(s) for s in sequences[start:start + batch_size]]
        width = max(len(s) for s in chunk)
        ids = torch.tensor([s + [pad_token_id] * (width - len(s)) for s in chunk])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in chunk])
        extra: dict[str, Any] = {"adapter_names": [adapter_name] * len(chunk)} if adapter_name is not None else {}
        with torch.inference_mode(), (context if context is not None else nullcontext()):
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False, **extra).logits
            logits = logits[:, -width:]  # prompt tuning prepends virtual tokens: keep the sequence's own positions
            logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # position i predicts token i + 1
            chosen = logprobs.gather(-1, ids[:, 1:, None])[..., 0]
            best = logprobs.topk(top_k, dim=-1) if top_k else None
        for row, sequence in enumerate(chunk):
            n = len(sequence)
            values = chosen[row, :n - 1].tolist()
            top: list[list[tuple[int, float]] | None] = [None]
            if best is not None:
                top += [list(zip(i, v)) for i, v in zip(best.indices[row, :n - 1].tolist(),
                                                        best.values[row, :n - 1].tolist())]
            else:
                top += [[] for _ in range(n - 1)]
            results.append(TokenScores(sequence, [None, *values], top))
    return results
