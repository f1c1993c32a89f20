"""What a hyperparameter search varies and optimises: a default per recipe, overridable by YAML.

    metric: eval_loss          # a validation metric the Trainer logs (eval_<name>)
    direction: minimize
    pruner: {type: median, startup_trials: 2}   # or halving, or none; never at the first evaluation
    sampler: {seed: 0, startup_trials: 4}                          # TPE; random for the first ones
    params:                    # merged over the recipe's defaults; `null` drops a default
      training.learning_rate: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
      lora.r: {type: categorical, choices: [8, 16, 32]}
      lora.dropout: null
    defaults: true             # false: only the params given here

Keys of ``params`` are dotted config keys; every value a parameter can take is checked against
the recipe's schema before any trial starts, and errors name the file, line and key.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tunesmith.config import (
    ClassifyConfig,
    PreferenceConfig,
    RecipeConfig,
    SFTConfig,
    YamlSource,
    apply_overrides,
    load_config,
    read_yaml,
    validate_yaml,
)
from tunesmith.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Param(_Strict):
    type: Literal["float", "int", "categorical"] = Field(description="How values are drawn.")
    low: float | None = Field(None, description="Smallest value (float, int).")
    high: float | None = Field(None, description="Largest value (float, int).")
    log: bool = Field(False, description="Draw on a log scale (learning rates).")
    step: float | None = Field(None, gt=0, description="Spacing of allowed values (float, int).")
    choices: list[Any] | None = Field(None, min_length=1, description="The values to choose from (categorical).")

    @model_validator(mode="after")
    def _complete(self) -> "Param":
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs `choices`")
        elif self.low is None or self.high is None or self.low > self.high:
            raise ValueError(f"a {self.type} parameter needs `low` <= `high`")
        elif self.log and self.low <= 0:
            raise ValueError("a log-scale parameter needs `low` > 0")
        return self

    def corners(self) -> list[Any]:
        """The extreme values, to check against the recipe's schema before any trial."""
        if self.type == "categorical":
            return list(self.choices)
        cast = int if self.type == "int" else float
        return [cast(self.low), cast(self.high)]

    def suggest(self, trial, name: str) -> Any:
        if self.type == "categorical":
            return trial.suggest_categorical(name, self.choices)
        if self.type == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)


class PrunerSpec(_Strict):
    type: Literal["median", "halving", "none"] = Field("median", description="`median`: stop a trial whose validation metric is worse than the median of earlier trials at the same step; `halving`: successive halving (asynchronous); `none`.")
    startup_trials: int = Field(2, ge=0, description="Trials that always run to the end before pruning starts (median).")
    warmup_steps: int | None = Field(None, ge=0, description="Steps of each trial never pruned (median; default: up to and including the first evaluation, whose figures still mostly reflect the warmup schedule).")
    reduction_factor: int = Field(3, ge=2, description="Successive halving keeps 1 in this many trials per rung.")


class SamplerSpec(_Strict):
    seed: int = Field(0, description="Seed of the TPE sampler (each worker process adds its index).")
    startup_trials: int | None = Field(None, ge=1, description="Random trials before TPE models the results (default: a third of the trials, 2 to 10).")


class SearchSpec(_Strict):
    metric: str | None = Field(None, description="Validation metric to optimise, as the Trainer logs it (default: eval_loss; eval_macro_f1 for classify).")
    direction: Literal["minimize", "maximize"] | None = Field(None, description="Default: minimize for losses, maximize otherwise.")
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    params: dict[str, Param | None] = Field(default_factory=dict, description="Dotted config key → how to draw it; merged over the recipe's defaults.")
    defaults: bool = Field(True, description="Start from the recipe's default space (false: only `params`).")


def _float(low: float, high: float, log: bool = False) -> Param:
    return Param(type="float", low=low, high=high, log=log)


_LORA_FAMILY = {"lora", "dora", "qlora"}


# Learning-rate ranges per recipe: (full fine-tune, adapter methods); a full fine-tune wants a
# rate about ten times lower than LoRA. And the validation metric each recipe's search optimises.
_LEARNING_RATES = {SFTConfig: ((5e-6, 1e-4), (5e-5, 2e-3)), ClassifyConfig: ((1e-5, 2e-4), (5e-5, 2e-3)),
                   PreferenceConfig: ((1e-7, 1e-5), (5e-6, 2e-4))}
_METRICS = {SFTConfig: "eval_loss", ClassifyConfig: "eval_macro_f1", PreferenceConfig: "eval_loss"}


def default_params(config: RecipeConfig) -> dict[str, Param]:
    """Learning rate, adapter rank/alpha/dropout, epochs, batch size and warmup, with ranges that
    suit the recipe and method."""
    full, adapter = _LEARNING_RATES[type(config)]
    params = {"training.learning_rate": _float(*(full if config.method == "full" else adapter), log=True)}
    if isinstance(config, PreferenceConfig):
        params["preference.beta"] = _float(0.02, 0.5, log=True)
    if config.method in _LORA_FAMILY:
        params |= {"lora.r": Param(type="categorical", choices=[4, 8, 16, 32, 64]),
                   "lora.alpha": Param(type="categorical", choices=[8, 16, 32, 64, 128]),
                   "lora.dropout": _float(0.0, 0.2)}
    params |= {"training.epochs": Param(type="int", low=1, high=3),
               "training.batch_size": Param(type="categorical", choices=[4, 8, 16]),
               "training.warmup_ratio": _float(0.0, 0.1)}
    return params


def default_metric(config: RecipeConfig) -> str:
    return _METRICS[type(config)]


def load_search(path: str | Path | None, config: RecipeConfig) -> SearchSpec:
    """The search spec with the recipe's defaults filled in and every value checked."""
    source = read_yaml(path) if path else YamlSource("<default search space>")
    spec = validate_yaml(SearchSpec, source, "search space")
    merged = (default_params(config) if spec.defaults else {}) | spec.params
    spec.params = {k: v for k, v in merged.items() if v is not None}
    if not spec.params:
        raise ConfigError(f"{source.name}: the search space is empty: give `params` (or keep `defaults: true`)")
    _require_validation(config)
    if spec.pruner.warmup_steps is None:
        spec.pruner.warmup_steps = config.training.eval_steps + 1  # Optuna prunes from this step on
    spec.metric = spec.metric or default_metric(config)
    if not spec.metric.startswith("eval_"):
        spec.metric = f"eval_{spec.metric}"
    spec.direction = spec.direction or ("minimize" if spec.metric.endswith("loss") else "maximize")
    _check_values(spec, config, source)
    return spec


def _require_validation(config: RecipeConfig) -> None:
    """Trials are judged (and pruned) on validation figures: a config without validation data
    would train every trial to the end for nothing."""
    data = config.data
    if not data.validation and not getattr(data, "validation_fraction", 0):
        raise ConfigError("tuning compares trials on validation data: set data.validation (a file) or "
                          "data.validation_fraction above 0")


def _check_values(spec: SearchSpec, config: RecipeConfig, source: YamlSource) -> None:
    """Each parameter's extreme values must make a valid config: all problems at once."""
    problems = []
    for key, param in spec.params.items():
        for value in param.corners():
            try:
                with_values(config, {key: value})
            except ConfigError as e:
                detail = "; ".join(p.split(": ", 2)[-1] for p in e.problems) or str(e)
                problems.append(source.problem(("params", key), f"value {value!r} is not valid for this recipe: {detail}"))
                break
    if problems:
        raise ConfigError(f"invalid search space {source.name}:", problems)


def with_values(config: RecipeConfig, values: dict[str, Any]) -> RecipeConfig:
    """The config with dotted keys set (``{"lora.r": 8}``), validated again as a whole."""
    return load_config(None, None, base=apply_overrides(config.model_dump(mode="json"), values))
