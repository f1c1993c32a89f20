import pytest

from tunesmith.config import load_config
from tunesmith.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_every_problem_is_listed_with_file_line_and_field(tmp_path):
    path = write(tmp_path, "model: x\ndata:\n  train: t.jsonl\n  colour: red\ntraining:\n  epochs: -1\n  learning_rate: big\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    problems = err.value.problems
    assert len(problems) == 3
    assert f"{path}:4: data.colour: unknown key" in problems[0]
    assert f"{path}:6: training.epochs" in problems[1]
    assert f"{path}:7: training.learning_rate" in problems[2]


def test_overrides_apply_on_top_and_paths_are_relative_to_the_file(tmp_path):
    path = write(tmp_path, "data:\n  train: data/t.jsonl\ntraining:\n  epochs: 1\n")
    config = load_config(path, ["training.epochs=3", "lora.r=4", "method=full"])
    assert config.training.epochs == 3 and config.lora.r == 4 and config.method == "full"
    assert config.data.train == str((tmp_path / "data" / "t.jsonl").resolve())


def test_missing_required_and_bad_override():
    with pytest.raises(ConfigError, match="data"):
        load_config(None, [])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["training.epochs"])


def test_invalid_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "data:\n  train: [unclosed\n")
    with pytest.raises(ConfigError, match=r"recipe.yaml:\d+: not valid YAML"):
        load_config(path)


def test_save_total_limit_must_keep_two():
    with pytest.raises(ConfigError, match="save_total_limit"):
        load_config(None, ["data.train=x", "training.save_total_limit=1"])


def test_data_paths_set_on_the_command_line_are_relative_to_the_working_directory(tmp_path, monkeypatch):
    recipe = tmp_path / "recipes" / "r.yaml"
    recipe.parent.mkdir()
    recipe.write_text("data:\n  train: data/train.jsonl\n")
    monkeypatch.chdir(tmp_path)
    config = load_config(recipe, ["data.validation=build/val.jsonl"])
    assert config.data.train == str(tmp_path / "recipes" / "data" / "train.jsonl")  # the file's own: beside it
    assert config.data.validation == str(tmp_path / "build" / "val.jsonl")          # the flag's: from here


def test_classify_recipe_has_its_own_schema_and_defaults():
    config = load_config(None, ["recipe=classify", "data.train=/x.csv", "training.epochs=2"])
    assert config.model == "minilm-l6" and config.method == "full"
    assert config.training.learning_rate == 5e-5 and config.training.group_by_length  # classify defaults
    with pytest.raises(ConfigError, match="recipe: unknown recipe 'dpo-ish'"):
        load_config(None, ["recipe=dpo-ish", "data.train=/x.csv"])
    with pytest.raises(ConfigError, match="class_weights"):
        load_config(None, ["recipe=classify", "data.train=/x.csv", "class_weights=sometimes"])


def test_relative_data_paths_of_a_config_built_in_code_are_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = {"data": {"train": "data/train.jsonl"}}
    config = load_config(None, [], base=base)
    assert config.data.train == str(tmp_path / "data" / "train.jsonl")
    assert base == {"data": {"train": "data/train.jsonl"}}  # the caller's dict is left as it was


def test_a_bad_override_is_named_by_its_set_not_by_a_line_of_the_file(tmp_path):
    from tunesmith.config import load_config
    from tunesmith.errors import ConfigError

    path = tmp_path / "r.yaml"
    path.write_text("training:\n  epochs: 1\ndata:\n  train: t.jsonl\n")
    with pytest.raises(ConfigError) as e:
        load_config(path, ["training.batch_size=zero"])
    assert e.value.problems[0].startswith("--set training.batch_size=zero: training.batch_size:")
