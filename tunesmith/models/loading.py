"""Loading tokenizers and causal LMs from a resolved ``ModelRef``: local files only, safetensors only."""
from __future__ import annotations

from tunesmith.models.store import ModelRef


def quiet_transformers() -> None:
    """Per-tensor loading bars and deprecation warnings from the libraries are noise on our terminal."""
    import warnings

    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft)\.")


def load_tokenizer(ref: ModelRef):
    from transformers import AutoTokenizer

    quiet_transformers()

    tokenizer = AutoTokenizer.from_pretrained(ref.path, local_files_only=ref.local)
    if not tokenizer.is_fast:
        raise ValueError(f"{ref.name}: a fast tokenizer (tokenizer.json) is needed for offsets")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(ref: ModelRef, dtype=None, quantization=None):
    import torch
    from transformers import AutoModelForCausalLM

    # use_safetensors=True: never unpickle weights; trust_remote_code stays off.
    extra = {"quantization_config": quantization, "device_map": {"": 0}} if quantization is not None else {}
    return AutoModelForCausalLM.from_pretrained(
        ref.path, local_files_only=ref.local, dtype=dtype or torch.float32, use_safetensors=True, **extra)


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
