"""Bad job requests are refused at creation with a 400 naming the field: hyperparameters out of
range or not finite (``1e999`` is valid JSON for inf), and recipe settings beyond the training
hyperparameters (a tracking URI, a path, how the server runs)."""
import json

import pytest

from tunesmith.errors import APIError
from tunesmith.jobs.fine_tuning import _method, _settings


@pytest.mark.parametrize("hyper, param", [
    ({"learning_rate_multiplier": json.loads("1e999")}, "learning_rate_multiplier"),
    ({"learning_rate_multiplier": float("nan")}, "learning_rate_multiplier"),
    ({"learning_rate_multiplier": 0}, "learning_rate_multiplier"),
    ({"learning_rate_multiplier": 101}, "learning_rate_multiplier"),
    ({"n_epochs": 0}, "n_epochs"), ({"n_epochs": 51}, "n_epochs"), ({"n_epochs": True}, "n_epochs"),
    ({"n_epochs": 2.0}, "n_epochs"), ({"batch_size": 257}, "batch_size"), ({"batch_size": False}, "batch_size"),
    ({"learning_rate_multiplier": True}, "learning_rate_multiplier"), ({"warmup": 3}, "warmup"),
])
def test_out_of_range_or_non_finite_hyperparameters_are_refused(hyper, param):
    with pytest.raises(APIError) as e:
        _method({"hyperparameters": hyper})
    assert e.value.status == 400 and e.value.body()["error"]["param"] == param


@pytest.mark.parametrize("beta", [0, 2.5, float("inf"), True])
def test_dpo_beta_is_bounded(beta):
    with pytest.raises(APIError) as e:
        _method({"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": beta}}}})
    assert e.value.body()["error"]["param"] == "beta"


def test_hyperparameters_at_their_bounds_are_accepted():
    method = _method({"method": {"type": "dpo", "dpo": {"hyperparameters": {
        "n_epochs": 50, "batch_size": 1, "learning_rate_multiplier": 100, "beta": 2}}}})
    assert method["dpo"]["hyperparameters"] == {"n_epochs": 50, "batch_size": 1, "learning_rate_multiplier": 100,
                                                "beta": 2}


@pytest.mark.parametrize("settings, field", [
    ({"tracking": {"tracking_uri": "http://attacker.example/mlflow"}}, "tracking"),
    ({"tracking": {"tracking_uri": "sqlite:////etc/cron.d/x.db"}}, "tracking"),
    ({"replay": {"data": "/etc/passwd", "fraction": 0.1}}, "replay"),
    ({"data": {"clean": {"model": "/root/secret-model"}}}, "data.clean"),
    ({"data": {"test": "/etc/shadow"}}, "data.test"),
    ({"chat_template": "{{ 7 * 7 }}"}, "chat_template"),
    ({"training": {"threads": 64}}, "training.threads"),
    ({"training": {"weight_decay": float("inf")}}, "training.weight_decay"),
    ({"lora": {"r": 8, "alpha": float("nan")}}, "lora.alpha"),
    ({"training": {"epochs": 1e6}}, "training.epochs"),
    ({"training": {"batch_size": 100_000}}, "training.batch_size"),
])
def test_settings_beyond_training_hyperparameters_are_refused_naming_the_field(settings, field):
    body = {"model": "m", "training_file": "f", "tunesmith": {"settings": settings}}
    with pytest.raises(APIError) as e:
        _settings(body, _method(body))
    error = e.value.body()["error"]
    assert e.value.status == 400 and error["param"] == "tunesmith.settings" and f"{field}:" in error["message"]


def test_recipe_yaml_naming_a_tracking_uri_is_refused():
    body = {"model": "m", "training_file": "f",
            "tunesmith": {"recipe_yaml": "tracking:\n  tracking_uri: http://example.com\nlora:\n  r: 4\n"}}
    with pytest.raises(APIError, match="tracking: not settable through the API"):
        _settings(body, _method(body))


def test_training_settings_the_web_form_sends_are_accepted():
    settings = {"method": "dora", "lora": {"r": 8, "alpha": 16, "dropout": 0.1},
                "training": {"learning_rate": 1e-4, "max_steps": 20, "warmup_ratio": 0.1, "packing": False,
                             "gradient_checkpointing": True}, "data": {"max_length": 512}}
    body = {"model": "m", "training_file": "f", "tunesmith": {"settings": settings}}
    assert _settings(body, _method(body)) == settings
