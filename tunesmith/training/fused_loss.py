"""Cross-entropy over a vocabulary projection without ever holding all the logits.

Why by hand: liger-kernel's fused linear cross-entropy needs triton (CUDA/XPU only), and the
plain ``lm_head(hidden)`` + ``cross_entropy`` path holds ``[tokens x vocab]`` logits and their
gradient: 2 x 2,048 x 49,152 fp32 values = 800 MB for one 2k-token SmolLM2 batch. Here the
projection runs in chunks of rows, and each chunk's gradient is computed in the forward pass
(softmax minus one-hot, the loss being a sum) and kept only as the small ``[tokens x hidden]``
input gradient. Backward then only scales it: no logits are stored, and nothing is recomputed,
unlike TRL's chunked head, which projects again in backward.
"""
from __future__ import annotations

import torch

# Rows per chunk: keeps one chunk's logits near 64 MB in fp32 for any vocabulary size.
_LOGITS_PER_CHUNK = 1 << 24


class _FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        rows = max(1, _LOGITS_PER_CHUNK // weight.shape[0])
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) \
            if ctx.needs_input_grad[1] else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], rows):
            h, t = hidden[start:start + rows], targets[start:start + rows]
            logits = (h @ weight.T).float()
            log_norm = torch.logsumexp(logits, dim=-1)
            total += (log_norm - logits.gather(1, t[:, None]).squeeze(1)).sum()
            if grad_hidden is None and grad_weight is None:
                continue
            # d(sum of NLL)/d(logits) = softmax - one_hot, built in place in the logits buffer.
            probs = logits.sub_(log_norm[:, None]).exp_()
            probs[torch.arange(len(t), device=t.device), t] -= 1
            grad_logits = probs.to(h.dtype)
            if grad_hidden is not None:
                grad_hidden[start:start + rows] = grad_logits @ weight.to(h.dtype)
            if grad_weight is not None:
                grad_weight += (grad_logits.T @ h).float()
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_total: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        return (grad_hidden * grad_total if grad_hidden is not None else None,
                (grad_weight * grad_total).to(ctx.weight_dtype) if grad_weight is not None else None,
                None)


def fused_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over rows of ``-log softmax(hidden @ weight.T)[target]``.

    ``hidden``: ``[tokens, hidden_size]`` states at the positions that carry loss only;
    ``weight``: the output projection ``[vocab, hidden_size]``; ``targets``: ``[tokens]`` ids.

    >>> h, w, t = torch.randn(5, 4, requires_grad=True), torch.randn(7, 4), torch.tensor([0, 6, 2, 2, 1])
    >>> ref = torch.nn.functional.cross_entropy(h @ w.T, t, reduction="sum")
    >>> bool(torch.allclose(fused_linear_cross_entropy(h, w, t), ref))
    True
    """
    return _FusedLinearCrossEntropy.apply(hidden, weight, targets)
