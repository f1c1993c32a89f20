"""Job settings beyond OpenAI's hyperparameters (the web UI's run form, or `extra_body`)."""
from pathlib import Path

import pytest

from tunesmith.errors import APIError
from tunesmith.jobs.db import JobRow
from tunesmith.jobs.fine_tuning import _method, _settings, job_config


def body(**tunesmith):
    return {"model": "m", "training_file": "f", "tunesmith": tunesmith}


def test_settings_reach_the_recipe_and_win_over_defaults():
    request = body(settings={"method": "dora", "lora": {"r": 4}, "training": {"learning_rate": 0.01}})
    method = _method(request)
    settings = _settings(request, method)
    job = JobRow(id="ftjob-x", model="m", training_file="f", validation_file=None, seed=1, method=method,
                 settings=settings)
    config, _ = job_config(job, Path("/files"), 100)
    assert (config.method, config.lora.r, config.training.learning_rate) == ("dora", 4, 0.01)
    assert config.lora.alpha == 32 and config.data.train == "/files/f"  # the rest: defaults and the job's own


def test_recipe_yaml_is_accepted_like_settings():
    request = body(recipe_yaml="method: ia3\ntraining:\n  max_steps: 5\n")
    assert _settings(request, _method(request)) == {"method": "ia3", "training": {"max_steps": 5}}


@pytest.mark.parametrize("tunesmith, words", [
    ({"settings": {"training": {"learning_rate": 2}, "lora": {"rank": 4}}}, ["training.learning_rate", "lora.rank"]),
    ({"settings": {"model": "other", "data": {"train": "x"}}}, ["data.train", "model"]),
    ({"recipe_yaml": "training: [unclosed"}, ["not valid YAML"]),
])
def test_bad_settings_fail_the_request_naming_each_field(tunesmith, words):
    request = body(**tunesmith)
    with pytest.raises(APIError) as e:
        _settings(request, _method(request))
    assert e.value.status == 400 and all(w in str(e.value.body()) for w in words)


@pytest.mark.parametrize("kind, settings, rate", [
    ("supervised", None, 2e-4 * 0.5), ("dpo", None, 5e-5 * 0.5), ("dpo", {"method": "full"}, 1e-6 * 0.5)])
def test_the_multiplier_scales_the_recipes_own_default_rate(kind, settings, rate):
    method = _method({"model": "m", "training_file": "f",
                      "method": {"type": kind, kind: {"hyperparameters": {"learning_rate_multiplier": 0.5}}}})
    job = JobRow(id="ftjob-x", model="m", training_file="f", validation_file=None, seed=1, method=method,
                 settings=settings)
    config, _ = job_config(job, Path("/files"), 100)
    assert config.training.learning_rate == pytest.approx(rate)  # the rate the CLI would use, times 0.5


def test_a_field_that_fits_no_member_of_its_union_says_every_way_it_could_have():
    from tunesmith.web import schemas

    with pytest.raises(APIError) as e:
        schemas.parse(schemas.FineTuningJobRequest, {"model": "m", "training_file": "f",
                                                     "hyperparameters": {"learning_rate_multiplier": "0.5"}})
    assert e.value.param == "hyperparameters.learning_rate_multiplier"
    assert "'auto' or a valid number (got '0.5')" in e.value.message
