"""Parameter-efficient methods, one config key each, all through peft.

``lora``: low-rank adapters. ``dora``: LoRA with the weight split into magnitude and direction
(peft ``use_dora``), slower per step, often better at low rank. ``ia3``: learned rescaling
vectors on attention keys/values and the MLP (far fewer parameters than LoRA). ``qlora``: LoRA
on a 4-bit (NF4) base loaded by bitsandbytes, CUDA only. ``prompt_tuning`` / ``prefix_tuning``:
virtual tokens prepended to the input / to every layer's keys and values; peft lengthens the
sequence itself, so these train on padded batches with the model's own loss (no packing).
"""
from __future__ import annotations

from tunesmith.errors import ConfigError

PROMPT_LEARNING = ("prompt_tuning", "prefix_tuning")

# What each value of the `method` key trains (`tunesmith methods list`).
METHODS = {
    "full": "every weight (most memory: weights, gradients and AdamW state for all of them)",
    "lora": "low-rank adapters on the linear layers (`lora.r`, `lora.alpha`); the base stays frozen",
    "dora": "LoRA with each weight split into magnitude and direction: slower per step, often better at low rank",
    "qlora": "LoRA on a 4-bit NF4 base (bitsandbytes): the least memory; needs a CUDA GPU",
    "ia3": "learned rescaling vectors on attention keys/values and the MLP: the fewest parameters",
    "prompt_tuning": "virtual input tokens before every example (`prompt_learning.num_virtual_tokens`)",
    "prefix_tuning": "virtual keys and values in every layer (`prompt_learning.num_virtual_tokens`)",
}


def require_supported(method: str) -> None:
    """Fail before any data or model is touched when the method cannot run here."""
    if method != "qlora":
        return
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise ConfigError("method: qlora needs a CUDA GPU (bitsandbytes 4-bit weights); this machine has none. "
                          "Use method: lora (same adapter, full-precision base) or method: dora.")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("method: qlora needs bitsandbytes: pip install bitsandbytes")


def quantization_config(method: str):
    """The 4-bit load settings for qlora (QLoRA paper: NF4, double quantisation, bf16 compute)."""
    if method != "qlora":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def wrap(model, method: str, lora, prompt_learning=None, task_type: str = "CAUSAL_LM"):
    """The model with a fresh adapter of ``method`` (``lora`` holds the LoRA/DoRA settings,
    ``prompt_learning`` the virtual-token count)."""
    from peft import IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig, get_peft_model

    if method == "ia3":
        return get_peft_model(model, IA3Config(task_type=task_type))
    if method in PROMPT_LEARNING:
        settings = PromptTuningConfig if method == "prompt_tuning" else PrefixTuningConfig
        return get_peft_model(model, settings(task_type=task_type, num_virtual_tokens=prompt_learning.num_virtual_tokens))
    if method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    return get_peft_model(model, LoraConfig(
        task_type=task_type, r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=lora.target_modules, use_dora=method == "dora"))
