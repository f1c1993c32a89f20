import pytest

from tunesmith.errors import ModelNotFound
from tunesmith.models.inspect import parameter_count
from tunesmith.models.store import list_models, resolve_model


def test_missing_builtin_names_the_pull_command(workspace):
    with pytest.raises(ModelNotFound, match="tunesmith models pull smollm2-135m-instruct"):
        resolve_model("smollm2-135m-instruct", workspace)


def test_unknown_name_lists_the_choices(workspace):
    with pytest.raises(ModelNotFound, match="minilm-l6"):
        resolve_model("no-such-model", workspace)


def test_local_directory_is_a_model(tiny_model_dir, workspace, tmp_path):
    ref = resolve_model(str(tiny_model_dir), workspace)
    assert ref.local and ref.path == str(tiny_model_dir.resolve())
    with pytest.raises(ModelNotFound, match="config.json"):
        resolve_model(str(tmp_path), workspace)


def test_list_shows_builtins_not_pulled(workspace):
    listing = {m.name: m for m in list_models(workspace)}
    assert set(listing) >= {"smollm2-135m-instruct", "minilm-l6", "gemma3-270m"}
    assert not listing["smollm2-135m-instruct"].pulled


def test_parameter_count_reads_headers_only(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert parameter_count(tiny_model_dir) == sum(p.numel() for p in model.parameters())
