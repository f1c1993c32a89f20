"""The HF Trainer with the SFT loss computed our way: only at the positions that carry loss,
through the fused chunked projection + cross-entropy (training/fused_loss.py).

We keep transformers' Trainer for everything else it does well (optimizer, schedule,
checkpoints and resume, DDP/FSDP through Accelerate, callbacks) and replace only
``compute_loss``. The model's forward still runs through the Trainer's (possibly
DDP-wrapped) module, so gradient synchronisation is untouched; during that forward the output
layer hands back its input, and the loss is taken outside with the layer's own weight.
"""
from __future__ import annotations

import contextlib

from transformers import Trainer

from tunesmith.training.fused_loss import fused_linear_cross_entropy


def fused_head(model):
    """The output projection, when the fused loss can stand in for it exactly: a plain bias-free
    linear layer whose output is the logits (no softcapping or scaling after it, no adapter on it)."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    config = getattr(base, "config", None)
    if type(head) is not torch.nn.Linear or head.bias is not None:
        return None
    if getattr(config, "final_logit_softcapping", None) is not None or getattr(config, "logit_scale", None):
        return None
    return head


@contextlib.contextmanager
def head_returns_hidden(head):
    """While active, ``head(x)`` returns ``x``: the forward yields the final hidden states at the
    kept positions instead of projecting them. An instance attribute shadows ``Linear.forward``;
    the module's parameters and state dict are untouched, so saving mid-training is safe."""
    head.forward = _identity
    try:
        yield
    finally:
        del head.forward


def _identity(x):
    return x


class FusedLossTrainer(Trainer):
    """Expects batches with ``logits_to_keep`` (bool mask of loss positions) and ``shift_labels``
    (their targets), as ``PadCollator(loss_positions_only=True)`` and ``PackedCollator`` make."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.head = fused_head(self.model)
        # The loss below is a sum over the whole accumulated batch divided by its token count,
        # which the Trainer computes (and all-reduces across ranks) only for models that take
        # loss kwargs: claim that, and say the loss is already scaled for accumulation.
        self.model_accepts_loss_kwargs = True
        self.loss_is_scaled_for_ga = True

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        targets = inputs["shift_labels"]
        batch = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "position_ids")}
        batch["logits_to_keep"] = inputs["logits_to_keep"]
        if self.head is None:  # the model's own head and loss, still only at loss positions
            outputs = model(**batch, labels=inputs["labels"], shift_labels=targets, use_cache=False,
                            num_items_in_batch=num_items_in_batch)
            loss = outputs.loss
        else:
            with head_returns_hidden(self.head):
                outputs = model(**batch, use_cache=False)
            total = fused_linear_cross_entropy(outputs.logits, self.head.weight, targets)
            loss = total / (num_items_in_batch if num_items_in_batch is not None else targets.numel())
        if num_items_in_batch is not None and self.args.average_tokens_across_devices and self.args.world_size > 1:
            # num_items_in_batch counts every rank's tokens, and DDP averages gradients over ranks.
            loss = loss * self.args.world_size
        return (loss, outputs) if return_outputs else loss
