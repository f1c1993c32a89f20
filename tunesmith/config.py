"""Typed, validated recipe configs: YAML files, ``--set key=value`` overrides on top.

Every field has one description (it feeds ``--help``-style docs and, later, UI forms). Unknown
keys are rejected, and all problems are reported together, each with the file, line and field.
The resolved config is saved with every run (``runs/<id>/config.yaml``).
"""
from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tunesmith.catalog import DEFAULT_MODEL
from tunesmith.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CleanConfig(_Strict):
    """What `tunesmith data clean` does. Every step is on by default."""

    format: Literal["chat", "prompt_completion", "instruction", "classification", "preference"] | None = Field(None, description="Data format (default: detect).")
    fix_roles: bool = Field(False, description="Map role aliases (human, gpt, bot, ...) to user/assistant instead of rejecting the record.")
    dedup_exact: bool = Field(True, description="Remove exact duplicates of normalised content (first occurrence kept).")
    dedup_near: bool = Field(True, description="Remove near-duplicates (first kept); `near_rule` says which.")
    near_rule: Literal["auto", "edits", "cosmetic"] = Field("auto", description="What a near-duplicate is: `edits` (case, whitespace, punctuation, one-word edits, char 5-gram Jaccard >= 0.8) or `cosmetic` (case, whitespace, punctuation only); `auto`: cosmetic for classification text, where one word apart is often a distinct paraphrase of the intent (measured on BANKING77's test split: edits removes 3.2 % of its clean rows), edits otherwise.")
    label_conflicts: bool = Field(True, description="Set aside classification records whose text has conflicting labels.")
    pii: Literal["redact", "drop", "report", "off"] = Field("redact", description="Personal data: replace with typed placeholders, drop the record, only count it, or skip the check.")
    model: str | None = Field(None, description="Count tokens with this model's tokenizer (default: count words).")
    min_tokens: int | None = Field(None, ge=0, description="Records with fewer tokens in all their content are removed as too short (default: 2, and none for classification text, where one word is a message: 'terminate').")
    max_tokens: int | None = Field(None, ge=1, description="Records with more tokens are removed as too long (default: with `model`, its context length; else no limit).")
    max_chars: int | None = Field(32_000, ge=1, description="Records with more characters in all their content are removed as too long (a pasted log or a whole document where a message belongs).")
    max_char_run: int = Field(30, ge=2, description="Longest run of one repeated character allowed.")
    min_text_ratio: float = Field(0.5, ge=0, le=1, description="Least share of letters, digits and spaces in each text field.")

    def shortest(self, classification: bool) -> int:
        """The fewest tokens a record may have: ``min_tokens``, else 2 (0 for classification text)."""
        return self.min_tokens if self.min_tokens is not None else 0 if classification else 2

    def near_edits(self, classification: bool) -> bool:
        """Whether one-word edits count as near-duplicates (``near_rule``)."""
        return self.near_rule == "edits" or (self.near_rule == "auto" and not classification)

    @model_validator(mode="after")
    def _length_window(self):
        if self.max_tokens is not None and self.min_tokens is not None and self.max_tokens < self.min_tokens:
            raise ValueError(f"max_tokens ({self.max_tokens}) is below min_tokens ({self.min_tokens}): "
                             "every record would be removed")
        return self


class DataConfig(_Strict):
    train: str = Field(description="Training data file (chat, prompt/completion or instruction JSONL).")
    validation: str | None = Field(None, description="Validation file. When absent, `validation_fraction` of `train` is held out.")
    validation_fraction: float = Field(0.1, ge=0.0, lt=0.5, description="Share of `train` held out for validation when no `validation` file is given (0 disables).")
    test: str | None = Field(None, description="Held-out test file; `tunesmith eval RUN` uses it when no --data is given.")
    format: Literal["auto", "chat", "prompt_completion", "instruction"] = Field("auto", description="Data format; `auto` detects it from the records.")
    max_length: int = Field(1024, ge=16, le=131072, description="Longest sequence in tokens; longer examples are truncated (and counted).")
    min_examples: int = Field(10, ge=1, description="Fewest valid training examples accepted.")
    clean: bool | CleanConfig = Field(False, description="Clean the data first (`true` for the defaults of `tunesmith data clean`, or its settings); removed records go to a rejects file.")
    train_on: Literal["assistant", "all"] = Field("assistant", description="Tokens that carry loss: the assistant's answers only, or every token of the conversation (as TRL does by default for chat data).")


class LoraSettings(_Strict):
    r: int = Field(16, ge=1, le=1024, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: str | list[str] = Field("all-linear", description="Modules to adapt: `all-linear` or a list of module names.")


class PromptLearningSettings(_Strict):
    num_virtual_tokens: int = Field(20, ge=1, le=512, description="Virtual tokens learned (methods prompt_tuning, prefix_tuning).")


class ReplaySettings(_Strict):
    data: str | None = Field(None, description="General-purpose chat data to mix in (default: examples/general/replay.jsonl, 250 helpful conversations).")
    fraction: float = Field(0.1, gt=0.0, lt=1.0, description="Share of the training examples that are replayed general data (0.1: one in ten).")


class TrackingSettings(_Strict):
    """Where a run's parameters, metrics and artefacts are recorded (MLflow; W&B or TensorBoard too)."""

    tracking_uri: str | None = Field(None, description="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else a SQLite store in the tunesmith home, no server needed).")
    experiment: str | None = Field(None, description="MLflow experiment (default: $MLFLOW_EXPERIMENT_NAME, else `tunesmith`).")
    report_to: list[Literal["mlflow", "wandb", "tensorboard"]] = Field(["mlflow"], description="Trackers: `mlflow` (tunesmith's own, never stops training), `wandb` and `tensorboard` (through transformers, where installed; W&B offline unless WANDB_API_KEY is set); `none` for no tracking.")
    log_weights: Literal["adapter", "all", "none"] = Field("adapter", description="Trained weights logged as artefacts: `adapter` (adapters only; a full model is recorded by its path), `all`, or `none`.")

    @field_validator("report_to", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [] if value == "none" else [part.strip() for part in value.split(",") if part.strip()]
        return value


class TrainingSettings(_Strict):
    epochs: float = Field(1.0, gt=0, description="Passes over the training data.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (overrides `epochs`).")
    batch_size: int = Field(8, ge=1, description="Examples per device per step.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Steps whose gradients are summed before one optimizer update.")
    learning_rate: float = Field(2e-4, gt=0, lt=1, description="Peak learning rate.")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field("cosine", description="Learning-rate schedule after warmup.")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Share of steps spent warming up the learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    eval_steps: int = Field(50, ge=1, description="Evaluate on the validation split every N optimizer steps.")
    save_steps: int | None = Field(None, ge=1, description="Write a checkpoint every N steps (default: `eval_steps`).")
    save_total_limit: int = Field(2, ge=2, description="Checkpoints kept (at least 2, so a damaged one never leaves none).")
    early_stopping_patience: int | None = Field(None, ge=1, description="Stop after this many evaluations without a better validation score (loss for sft, macro-F1 for classify); the best checkpoint is kept.")
    logging_steps: int = Field(5, ge=1, description="Log the training loss every N steps.")
    seed: int = Field(0, description="Random seed (data order, initialisation, dropout).")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="`auto`: bf16 autocast where the hardware runs it natively (CUDA bf16, CPU AVX-512-BF16/AMX), else fp32.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory (slower).")
    group_by_length: bool = Field(False, description="Batch examples of similar length together (less padding, faster; order is still shuffled by groups).")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch (default: all cores).")
    strategy: Literal["ddp", "fsdp", "zero2", "zero3"] = Field("ddp", description="With several processes (`--nproc`/`--nnodes`): `ddp` replicates the model; `fsdp` shards weights, gradients and optimizer state (PyTorch FSDP); `zero2`/`zero3` use DeepSpeed ZeRO (needs `deepspeed` installed).")

    @model_validator(mode="after")
    def _save_aligned_with_eval(self) -> "TrainingSettings":
        if self.early_stopping_patience and self.save_steps and self.save_steps % self.eval_steps:
            raise ValueError("with early stopping, `save_steps` must be a multiple of `eval_steps`")
        return self


class SFTTrainingSettings(TrainingSettings):
    # Packing (training/packing.py). Row length measured on SmolLM2-135M LoRA, 2 CPU threads,
    # alternating runs: 384-token rows train as fast as 512 (125-136 vs 116-124 tokens/s; noise
    # ~10 %) at 2.0-2.2 GB peak RSS instead of 2.5 GB. Longer examples get a row of their own.
    packing: bool = Field(True, description="Pack several examples into each row (padding-free, each example attends only to itself). A step still holds about `batch_size` examples' worth of tokens.")
    pack_length: int = Field(384, ge=32, le=131072, description="Tokens per packed row: long enough for efficient matrix multiplies, short enough that activations stay small without gradient checkpointing.")


def load_clean_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> CleanConfig:
    """The cleaning config from ``path`` with the options given (``None``: not given) on top."""
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    return load_yaml_model(path, CleanConfig, given, what="clean config")


class SFTConfig(_Strict):
    """Supervised fine-tuning of a causal LM on conversations; loss on assistant tokens only."""

    recipe: Literal["sft"] = Field("sft", description="The training recipe.")
    model: str = Field(DEFAULT_MODEL, description="Base model: a built-in or pulled name, or a local Hugging Face model directory.")
    method: Literal["lora", "dora", "ia3", "qlora", "prompt_tuning", "prefix_tuning", "full"] = Field("lora", description="`lora` trains a low-rank adapter; `dora` a weight-decomposed one (slower, often better at low rank); `ia3` only rescaling vectors (fewest parameters); `qlora` LoRA on a 4-bit base (CUDA + bitsandbytes); `prompt_tuning` learns virtual input tokens, `prefix_tuning` virtual keys/values in every layer; `full` trains every weight.")
    chat_template: str | None = Field(None, description="Jinja chat template to use instead of the model's (models without one get ChatML).")
    run_name: str | None = Field(None, description="Name part of the run id (default: the config file name).")
    data: DataConfig
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA settings (methods lora, dora, qlora).")
    prompt_learning: PromptLearningSettings = Field(default_factory=PromptLearningSettings, description="Settings of methods prompt_tuning and prefix_tuning.")
    replay: ReplaySettings | None = Field(None, description="Mix general-purpose data into training, against forgetting what the model knew (`tunesmith eval RUN --forgetting` measures it).")
    training: SFTTrainingSettings = Field(default_factory=SFTTrainingSettings, description="Optimisation settings.")
    tracking: TrackingSettings = Field(default_factory=TrackingSettings, description="Experiment tracking (MLflow by default).")


class ClassifyDataConfig(_Strict):
    train: str = Field(description="Training data: CSV or JSONL with `text` and `label`.")
    validation: str | None = Field(None, description="Validation file. When absent, `validation_fraction` of `train` is held out (stratified by label).")
    validation_fraction: float = Field(0.1, ge=0.0, lt=0.5, description="Share of `train` held out for validation when no `validation` file is given (0 disables).")
    test: str | None = Field(None, description="Held-out test file; `tunesmith eval RUN` uses it when no --data is given.")
    max_length: int = Field(128, ge=8, le=131072, description="Longest text in tokens; longer texts are truncated (and counted).")
    out_of_scope_label: str | None = Field(None, description="The label meaning \"none of these\" (e.g. CLINC150's `oos`), when the data has one: `tunesmith eval` chooses a confidence threshold on validation below which the answer is this label, and reports in-scope accuracy and out-of-scope recall.")
    min_examples: int = Field(10, ge=1, description="Fewest valid training examples accepted.")
    clean: bool | CleanConfig = Field(False, description="Clean the data first (`true` for the defaults of `tunesmith data clean`, or its settings); removed records go to a rejects file.")


class ClassifyTrainingSettings(TrainingSettings):
    """The usual settings for fine-tuning an encoder classifier (BERT paper, sentence-transformers)."""

    epochs: float = Field(3.0, gt=0, description="Passes over the training data.")
    batch_size: int = Field(32, ge=1, description="Examples per device per step.")
    learning_rate: float = Field(5e-5, gt=0, lt=1, description="Peak learning rate.")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field("linear", description="Learning-rate schedule after warmup.")
    warmup_ratio: float = Field(0.06, ge=0, lt=1, description="Share of steps spent warming up the learning rate.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    eval_steps: int = Field(100, ge=1, description="Evaluate on the validation split every N optimizer steps.")
    # Short texts of very different lengths: random batches are mostly padding (banking77: mean
    # 16 tokens, random batches of 32 padded to 39-64). minilm-l6 measured ~1.0 s per random
    # batch, 0.52 s per step with grouping: about 2x faster.
    group_by_length: bool = Field(True, description="Batch examples of similar length together (less padding, faster; order is still shuffled by groups).")


class ClassifyConfig(_Strict):
    """Text classification: an encoder or a causal LM with a sequence-classification head."""

    recipe: Literal["classify"] = Field("classify", description="The training recipe.")
    model: str = Field("minilm-l6", description="Base model: an encoder (e.g. minilm-l6) or a causal LM (its last token feeds the head); a name, a pulled model or a local directory.")
    method: Literal["lora", "full"] = Field("full", description="`full` trains every weight; `lora` trains a low-rank adapter plus the new head.")
    pooling: Literal["auto", "mean", "model"] = Field("auto", description="How a text becomes one vector: `mean` of the token states, or the `model`'s own head input (CLS/pooler for BERT, last token for causal LMs). `auto`: mean for encoders, model for causal LMs.")
    class_weights: Literal["none", "balanced"] = Field("none", description="`balanced` weighs each class's loss by n_examples / (n_classes * n_class), for imbalanced labels.")
    ensemble: Literal["none", "tfidf"] = Field("none", description="`tfidf`: after training, fit TF-IDF + logistic regression on the same training split and mix its probabilities with the encoder's, the weight chosen on validation (0 when it does not help). Exports carry the encoder alone.")
    run_name: str | None = Field(None, description="Name part of the run id (default: the config file name).")
    data: ClassifyDataConfig
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA settings (method: lora).")
    training: ClassifyTrainingSettings = Field(default_factory=ClassifyTrainingSettings, description="Optimisation settings.")
    tracking: TrackingSettings = Field(default_factory=TrackingSettings, description="Experiment tracking (MLflow by default).")


class PreferenceDataConfig(_Strict):
    train: str = Field(description="Preference pairs: JSONL with `prompt`, `chosen`, `rejected` (conversational message lists or plain strings).")
    validation: str | None = Field(None, description="Validation pairs. When absent, `validation_fraction` of `train` is held out.")
    validation_fraction: float = Field(0.05, ge=0.0, lt=0.5, description="Share of `train` held out for validation when no `validation` file is given (0 disables).")
    test: str | None = Field(None, description="Held-out test pairs; `tunesmith eval RUN` uses them when no --data is given.")
    max_length: int = Field(1024, ge=16, le=131072, description="Longest prompt + answer in tokens; longer pairs are truncated at the end.")
    min_examples: int = Field(10, ge=1, description="Fewest valid training pairs accepted.")
    clean: bool | CleanConfig = Field(False, description="Clean the data first (`true` for the defaults of `tunesmith data clean`, or its settings); removed records go to a rejects file.")


class PreferenceSettings(_Strict):
    algorithm: Literal["dpo", "ipo", "orpo", "kto"] = Field("dpo", description="`dpo`: direct preference optimisation against the starting model; `ipo`: its squared-loss variant (less prone to overfitting the pairs); `orpo`: odds-ratio loss added to SFT on the chosen answers, no reference model; `kto`: each answer judged desirable or not on its own (the pairs are unpaired).")
    beta: float = Field(0.1, gt=0, description="How far the model may move from the starting point (dpo, kto: KL strength; ipo: regularisation tau; orpo: weight lambda of the odds-ratio term).")


class PreferenceTrainingSettings(TrainingSettings):
    batch_size: int = Field(4, ge=1, description="Pairs per device per step.")
    learning_rate: float | None = Field(None, gt=0, lt=1, description="Peak learning rate (default: 5e-5 with an adapter, 1e-6 for full fine-tuning, as preference tuning moves a model quickly).")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field("linear", description="Learning-rate schedule after warmup.")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of steps spent warming up the learning rate.")
    eval_steps: int = Field(25, ge=1, description="Evaluate on the validation pairs every N optimizer steps.")


class PreferenceConfig(_Strict):
    """Preference tuning (DPO, IPO, ORPO, KTO through TRL) of a base model or an SFT run on chosen/rejected pairs."""

    recipe: Literal["dpo"] = Field("dpo", description="The training recipe.")
    model: str = Field(DEFAULT_MODEL, description="Starting point: a model (built-in, pulled or a local directory) or an SFT run id, whose weights (adapter merged) are both the model tuned and the reference.")
    method: Literal["lora", "dora", "ia3", "qlora", "full"] = Field("lora", description="`lora`/`dora`/`ia3` train an adapter, whose switched-off state is the reference model (no second copy in memory); `qlora` LoRA on a 4-bit base (CUDA); `full` trains every weight against a frozen copy.")
    chat_template: str | None = Field(None, description="Jinja chat template to use instead of the model's (models without one get ChatML).")
    run_name: str | None = Field(None, description="Name part of the run id (default: the config file name).")
    data: PreferenceDataConfig
    preference: PreferenceSettings = Field(default_factory=PreferenceSettings, description="The preference objective.")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA settings (methods lora, dora, qlora).")
    training: PreferenceTrainingSettings = Field(default_factory=PreferenceTrainingSettings, description="Optimisation settings.")
    tracking: TrackingSettings = Field(default_factory=TrackingSettings, description="Experiment tracking (MLflow by default).")

    @model_validator(mode="after")
    def _default_learning_rate(self) -> "PreferenceConfig":
        if self.training.learning_rate is None:
            self.training.learning_rate = default_learning_rate(PreferenceConfig, self.method)
        return self


RecipeConfig = SFTConfig | ClassifyConfig | PreferenceConfig


def default_learning_rate(recipe: type, method: str) -> float:
    """The peak learning rate a recipe trains with when its config gives none: the one place it
    is declared (a fine-tuning job's ``learning_rate_multiplier`` scales it). Preference tuning
    moves a model quickly: 5e-5 with an adapter, 1e-6 for a full fine-tune."""
    if recipe is PreferenceConfig:
        return 1e-6 if method == "full" else 5e-5
    return recipe.model_fields["training"].default_factory().learning_rate
_RECIPES: dict[str, type[_Strict]] = {"sft": SFTConfig, "classify": ClassifyConfig, "dpo": PreferenceConfig}


def load_config(path: str | Path | None, overrides: list[str] | None = None, base: dict | None = None) -> RecipeConfig:
    """Read a YAML recipe (or take ``base``, a config built in code), apply ``key=value`` overrides,
    validate; raise ConfigError with every problem. The ``recipe`` key (default ``sft``) chooses the schema."""
    values = parse_overrides(overrides or [])
    if path:
        source = read_yaml(path)
        _resolve_relative_paths(source.data, Path(path).parent)
    else:  # a config built in code: its relative data paths are relative to where it runs, as overrides are
        source = YamlSource("<overrides>", copy.deepcopy(base or {}))
        _resolve_relative_paths(source.data, Path.cwd())
    source.override(values)
    # Paths given as overrides are relative to where the command runs: made absolute here, the
    # config saved with the run still finds its data from any directory.
    _resolve_relative_paths(source.data, Path.cwd(), only=set(values))
    recipe = source.data.get("recipe", "sft")
    if recipe not in _RECIPES:
        raise ConfigError(f"invalid config {source.name}:", [source.problem(
            ("recipe",), f"unknown recipe {recipe!r}; choose one of {', '.join(_RECIPES)}")])
    return validate_yaml(_RECIPES[recipe], source)


def recipe_schema(recipe: str) -> dict[str, Any] | None:
    """The JSON schema of a recipe's config (what forms are generated from), or None."""
    found = _RECIPES.get(recipe)
    return found.model_json_schema() if found else None


def save_config(config: RecipeConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))


# ── YAML into pydantic: the one loader of every config (recipes, cleaning, search spaces, monitoring) ──

Model = TypeVar("Model", bound=BaseModel)


@dataclass
class YamlSource:
    """A YAML mapping and where it came from: ``name`` (the file, or what stands in for one) and
    the 1-based line of every key path, so that each problem reads ``file:line: field: message``."""

    name: str
    data: dict[str, Any] = field(default_factory=dict)
    lines: dict[tuple, int] = field(default_factory=dict)
    overridden: dict[tuple, str] = field(default_factory=dict)  # key path -> the ``--set`` that gave it

    def problem(self, loc: Sequence[Any], message: str) -> str:
        """``message`` about the field at ``loc``, at the line of its deepest key in the file, or
        named by the ``--set`` that gave it its value.

        >>> YamlSource("r.yaml", {}, {("training",): 3}).problem(("training", "epochs"), "too big")
        'r.yaml:3: training.epochs: too big'
        >>> source = YamlSource("r.yaml", {}, {("training",): 3}).override({"training.epochs": 0})
        >>> source.problem(("training", "epochs"), "too small")
        '--set training.epochs=0: training.epochs: too small'
        """
        loc = tuple(str(part) for part in loc)
        given = next((self.overridden[loc[:depth]] for depth in range(len(loc), 0, -1) if loc[:depth] in self.overridden),
                     None)
        if given is not None:
            return f"--set {given}: {'.'.join(loc)}: {message}"
        line = next((self.lines[loc[:depth]] for depth in range(len(loc), 0, -1) if loc[:depth] in self.lines), None)
        where = f"{self.name}:{line}" if line else self.name
        return f"{where}: {'.'.join(loc) or '(top level)'}: {message}"

    def override(self, values: Mapping[str, Any]) -> "YamlSource":
        """Set ``values`` (dotted keys) on the data, remembering which fields they gave."""
        apply_overrides(self.data, values)
        for key, value in values.items():
            self.overridden[tuple(key.strip().split("."))] = f"{key.strip()}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
        return self

    def within(self, key: str) -> "YamlSource":
        """The mapping under ``key`` (one section of a larger file), with its keys' lines."""
        return YamlSource(self.name, self.data[key], {k[1:]: line for k, line in self.lines.items() if k[:1] == (key,)},
                          {k[1:]: given for k, given in self.overridden.items() if k[:1] == (key,)})


def load_yaml_model(path: str | Path | None, model_class: type[Model], overrides: Mapping[str, Any] | None = None,
                    *, section: str | None = None, what: str = "config") -> Model:
    """``model_class`` from the YAML file at ``path`` (none: its defaults) — or from the file's
    ``section`` where it has one — with ``overrides`` (dotted keys, e.g. from ``parse_overrides``)
    set on top; a ConfigError lists every problem, each as ``file:line: field: message``."""
    source = read_yaml(path) if path else YamlSource("<overrides>" if overrides else "<defaults>")
    if section and isinstance(source.data.get(section), dict):
        source = source.within(section)
    source.override(overrides or {})
    return validate_yaml(model_class, source, what)


def read_yaml(path: str | Path) -> YamlSource:
    """The mapping in a YAML file, with the line of every key; a ConfigError if it is missing,
    not YAML, or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text)
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    return YamlSource(str(path), raw, _key_lines(node))


def validate_yaml(model_class: type[Model], source: YamlSource, what: str = "config") -> Model:
    """``source.data`` as ``model_class``, or a ConfigError with every problem at its line."""
    try:
        return model_class.model_validate(source.data)
    except ValidationError as e:
        problems = [source.problem(error["loc"], _message(error)) for error in e.errors()]
        raise ConfigError(f"invalid {what} {source.name}:", problems) from None


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``key=value`` strings (the ``--set`` of every command) as dotted keys and values, each
    value read as YAML (``2`` a number, ``[a, b]`` a list, nothing at all null). A key given
    twice counts once, where it was given last, so that applying the result in order is the
    same as applying the strings one after another.

    >>> parse_overrides(["training.epochs=2", "lora.target_modules=[q_proj, v_proj]", "data.test="])
    {'training.epochs': 2, 'lora.target_modules': ['q_proj', 'v_proj'], 'data.test': None}
    """
    values: dict[str, Any] = {}
    for item in items:
        key, equals, text = item.partition("=")
        if not equals or not key.strip():
            raise ConfigError(f"override {item!r} must look like key=value (e.g. training.epochs=2)")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"override {item!r}: the value is not valid YAML (quote it?)") from None
        values.pop(key.strip(), None)
        values[key.strip()] = value
    return values


def apply_overrides(data: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """Set each dotted key of ``values`` in ``data`` (in place), making sections as needed.

    >>> apply_overrides({"training": {"epochs": 1}}, {"training.epochs": 3, "lora.r": 8})
    {'training': {'epochs': 3}, 'lora': {'r': 8}}
    """
    for key, value in values.items():
        target = data
        *sections, leaf = key.strip().split(".")
        for section in sections:
            target = target.setdefault(section, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{key}: {section} is not a section of the config")
        target[leaf] = value
    return data


def _key_lines(node, prefix: tuple = ()) -> dict[tuple, int]:
    """Map each key path, e.g. ('training', 'learning_rate'), to its 1-based line in the YAML."""
    lines: dict[tuple, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = prefix + (key.value,)
            lines[path] = key.start_mark.line + 1
            lines.update(_key_lines(value, path))
    return lines


def _message(error: dict) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key (not a setting of this recipe)"
    return error["msg"]


def _resolve_relative_paths(raw: dict, base_dir: Path, only: set[str] | None = None) -> None:
    """Data paths in a config file are relative to that file, so recipes can travel with their data.
    ``only``: resolve just these dotted keys (the ones given on the command line)."""
    for section, keys in (("data", ("train", "validation", "test")), ("replay", ("data",))):
        data = raw.get(section)
        if not isinstance(data, dict):
            continue
        for key in keys:
            value = data.get(key)
            if (only is None or f"{section}.{key}" in only) and isinstance(value, str) and not Path(value).is_absolute():
                data[key] = str((base_dir / value).resolve())
