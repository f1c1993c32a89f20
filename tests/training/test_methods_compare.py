"""`tunesmith methods compare`: each method trained on the same data and steps, one table."""
import json

import pytest
import yaml

import tunesmith
from tunesmith.errors import TunesmithError

pytestmark = pytest.mark.slow


def test_methods_compare_trains_each_method_and_tabulates(tiny_model_dir, chat_file, tmp_path, workspace):
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump({"model": str(tiny_model_dir), "data": {"train": str(chat_file), "test": str(chat_file)},
                                      "training": {"max_steps": 3, "batch_size": 4, "eval_steps": 3}}))
    table = tunesmith.api.compare_methods(config, ["lora", "ia3"], ["lora.r=4"], eval_examples=2,
                                          out=tmp_path / "out", workspace=workspace, log=lambda m: None)
    rows = {r["method"]: r for r in table["runs"]}
    assert list(rows) == ["lora", "ia3"] and all(r["run"] for r in rows.values())
    assert rows["ia3"]["trainable_parameters"] < rows["lora"]["trainable_parameters"]
    assert all(r["peak_rss_gb"] > 0.1 and r["tokens_per_second"] > 0 and r["best_eval_loss"] for r in rows.values())
    assert all(r["test_metric"].startswith(("exact match", "ROUGE-L")) for r in rows.values())
    assert json.loads((tmp_path / "out" / "methods.json").read_text())[0]["method"] == "lora"
    assert "trainable params" in (tmp_path / "out" / "methods.md").read_text()


def test_methods_compare_refuses_a_method_the_recipe_lacks(tmp_path, workspace):
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump({"recipe": "classify", "data": {"train": "x.csv"}}))
    with pytest.raises(TunesmithError, match="dora.*choose from lora, full"):
        tunesmith.api.compare_methods(config, ["dora"], [], workspace=workspace)
