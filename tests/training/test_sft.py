"""The SFT recipe end to end on a tiny random model (seconds)."""
import json

import pytest

import tunesmith
from tests.conftest import chat_records, write_jsonl
from tunesmith.config import load_config
from tunesmith.errors import DataError

pytestmark = pytest.mark.slow

FAST = ["training.batch_size=4", "training.learning_rate=0.01", "training.eval_steps=5",
        "training.logging_steps=1", "lora.r=8"]


def tiny_config(model_dir, data, *extra):
    return load_config(None, [f"model={model_dir}", f"data.train={data}", *FAST, *extra])


def test_lora_run_learns_and_leaves_a_complete_run_directory(tiny_model_dir, chat_file, workspace):
    result = tunesmith.train(tiny_config(tiny_model_dir, chat_file, "training.epochs=3"), workspace=workspace)
    run, summary = result.run, result.summary
    assert summary["last_eval_loss"] < _first_eval(run.metrics_path)
    assert summary["last_train_loss"] < summary["first_train_loss"]
    assert {p.name for p in run.dir.iterdir()} >= {"config.yaml", "run.json", "metrics.jsonl", "checkpoints",
                                                   "adapter", "summary.json"}
    assert (run.dir / "adapter" / "adapter_model.safetensors").exists()
    assert not (run.dir / "adapter" / "training_args.bin").exists()
    assert run.info()["status"] == "succeeded"
    checkpoints = sorted(p.name for p in run.checkpoints_dir.iterdir())
    assert all((run.checkpoints_dir / c / "tunesmith-complete.json").exists() for c in checkpoints)
    card = (run.dir / "adapter" / "README.md").read_text()  # models/card.py, not peft's template
    assert "More Information Needed" not in card and str(tiny_model_dir) not in card and str(workspace.home) not in card
    assert f"| optimizer steps | {summary['global_step']} |" in card  # rewritten once summary.json was there


def _first_eval(path):
    return next(json.loads(line)["eval_loss"] for line in path.read_text().splitlines() if "eval_loss" in line)


def test_saved_adapter_reloads_and_generates_the_same_tokens(tiny_model_dir, chat_file, workspace):
    import torch

    result = tunesmith.train(tiny_config(tiny_model_dir, chat_file, "training.max_steps=6"), workspace=workspace)
    prompt = [[{"role": "user", "content": "Which colour is item 3?"}]]
    from tunesmith.models import engine
    adapter = engine.load(result.run.id, workspace)                # PeftModel with the adapter
    merged = engine.load(result.run.id, workspace, merge=True)     # adapter folded into the weights
    a = engine.generate(adapter, prompt, max_new_tokens=12)
    assert a == engine.generate(merged, prompt, max_new_tokens=12)
    with adapter.base_context():
        base = engine.generate(adapter, prompt, max_new_tokens=12)
    plain = engine.load(str(tiny_model_dir), workspace)
    assert base == engine.generate(plain, prompt, max_new_tokens=12)
    with torch.no_grad():
        changed = any(p.abs().sum() > 0 for n, p in adapter.model.named_parameters() if "lora_B" in n)
    assert changed


def test_full_fine_tuning_saves_a_model(tiny_model_dir, chat_file, workspace):
    result = tunesmith.train(tiny_config(tiny_model_dir, chat_file, "method=full", "training.max_steps=4",
                                         "training.learning_rate=0.001"), workspace=workspace)
    assert (result.run.dir / "model" / "model.safetensors").exists()
    reply = tunesmith.generate(result.run.id, "Which colour is item 1?", max_new_tokens=4, workspace=workspace)
    assert isinstance(reply, str)


def test_early_stopping_stops_on_validation_loss(tiny_model_dir, chat_file, workspace):
    # A learning rate this high makes validation loss worse after the first evaluation.
    result = tunesmith.train(tiny_config(tiny_model_dir, chat_file, "training.epochs=20", "training.learning_rate=0.5",
                                         "training.early_stopping_patience=1", "training.eval_steps=2"),
                             workspace=workspace)
    assert result.summary["global_step"] < 180


def test_bad_data_stops_before_any_training(tiny_model_dir, tmp_path, workspace):
    records = chat_records(20)
    records[4]["messages"][1]["role"] = "bot"
    data = write_jsonl(tmp_path / "bad.jsonl", records)
    with pytest.raises(DataError) as err:
        tunesmith.train(tiny_config(tiny_model_dir, data), workspace=workspace)
    assert "line 5" in str(err.value) and "messages[1].role" in str(err.value)
    assert not workspace.runs_dir.exists()


def test_validation_file_and_weight_zero(tiny_model_dir, tmp_path, workspace):
    records = chat_records(30)
    records[0]["messages"].append({"role": "user", "content": "More?"})
    records[0]["messages"].append({"role": "assistant", "content": "No.", "weight": 0})
    train = write_jsonl(tmp_path / "t.jsonl", records)
    val = write_jsonl(tmp_path / "v.jsonl", chat_records(6, seed=1))
    result = tunesmith.train(tiny_config(tiny_model_dir, train, f"data.validation={val}", "training.max_steps=3"),
                             workspace=workspace)
    assert result.summary["validation_examples"] == 6 and result.summary["train_examples"] == 30


def test_same_seed_same_run_whatever_ran_before(tiny_model_dir, chat_file, workspace):
    import torch

    first = tunesmith.train(tiny_config(tiny_model_dir, chat_file, "training.max_steps=3"), workspace=workspace)
    torch.rand(1000)  # anything earlier in the process that draws random numbers
    second = tunesmith.train(tiny_config(tiny_model_dir, chat_file, "training.max_steps=3"), workspace=workspace)
    assert first.summary["last_eval_loss"] == second.summary["last_eval_loss"]
    assert first.summary["last_train_loss"] == second.summary["last_train_loss"]


def test_clean_step_sets_bad_records_aside_before_training(tiny_model_dir, tmp_path, workspace):
    records = chat_records(30) + chat_records(5)  # 5 exact duplicates
    lines = [json.dumps(r) for r in records] + ['{"messages": [broken']
    data = tmp_path / "dirty.jsonl"
    data.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError):
        tunesmith.train(tiny_config(tiny_model_dir, data, "training.max_steps=2"), workspace=workspace)
    result = tunesmith.train(tiny_config(tiny_model_dir, data, "training.max_steps=2", "data.clean=true"),
                             workspace=workspace)
    assert result.summary["train_examples"] + result.summary["validation_examples"] == 30
    rejects = list((workspace.home / "cleaned").glob("*.rejects.jsonl"))
    assert len(rejects) == 1 and len(rejects[0].read_text().splitlines()) == 6
