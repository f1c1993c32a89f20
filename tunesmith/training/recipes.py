"""The recipe table: one entry per training recipe, looked up by its config or by a run.

Every caller that trains, checks or describes a run goes through a :class:`Recipe` — the
CLI and the Python API, ``--nproc`` ranks, server jobs, searches, method comparisons and
retraining — instead of testing the recipe's name. A new recipe is one module with a
``run_*`` function plus one entry here (and its config class in config.py).

    recipe = recipe_for(config)       # by the config's class
    recipe.check_data(config)         # every data problem, before any process starts
    recipe.check_model(config, ws)    # the model it starts from exists
    result = recipe.run(config, ws, console=console, name="my-run")
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from tunesmith.config import ClassifyConfig, PreferenceConfig, RecipeConfig, SFTConfig
from tunesmith.errors import ConfigError
from tunesmith.models.store import resolve_model
from tunesmith.runs import Run
from tunesmith.training import classify, preference, sft
from tunesmith.workspace import Workspace


@dataclass(frozen=True)
class Recipe:
    name: str                                   # the config's ``recipe:`` value, recorded in run.json
    config: type                                # its pydantic config class
    run: Callable[..., Any]                     # (config, workspace, run=, console=, name=, callbacks=, fresh=) -> result
    check_data: Callable[[Any], Any]            # validates the data files without a model
    check_model: Callable[[Any, Workspace], Any]  # resolves what it starts from, or raises
    generates: bool                             # a language model (chat / completions) or a classifier (labels)
    job_method: str                             # the OpenAI fine-tuning ``method.type`` its jobs are filed under


def _base_model(config: RecipeConfig, workspace: Workspace) -> Any:
    return resolve_model(config.model, workspace)


SFT = Recipe("sft", SFTConfig, sft.run_sft, sft.check_data, _base_model, generates=True,
             job_method="supervised")
CLASSIFY = Recipe("classify", ClassifyConfig, classify.run_classify, classify.read_splits, _base_model,
                  generates=False, job_method="supervised")
DPO = Recipe("dpo", PreferenceConfig, preference.run_preference, preference.check_data, preference.starting_point,
             generates=True, job_method="dpo")

RECIPES: dict[str, Recipe] = {r.name: r for r in (SFT, CLASSIFY, DPO)}


def recipe_for(config: RecipeConfig) -> Recipe:
    """The recipe a validated config trains."""
    return next(r for r in RECIPES.values() if isinstance(config, r.config))


def recipe_named(name: str | None) -> Recipe:
    """The recipe recorded under ``name`` (a run written before recipes were recorded is sft)."""
    found = RECIPES.get(name or "sft")
    if found is None:
        raise ConfigError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return found


def recipe_of(run: Run) -> Recipe:
    """The recipe a run was trained with (from its run.json)."""
    return recipe_named(run.info().get("recipe"))


def recipe_of_job_method(method: str) -> Recipe:
    """The recipe an OpenAI fine-tuning job's ``method.type`` trains by default (supervised → sft,
    dpo → dpo; a classifier's retraining job is ``supervised`` with its recipe in the settings)."""
    return next(r for r in RECIPES.values() if r.job_method == method)
