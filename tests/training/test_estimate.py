"""The pre-flight estimate (training/estimate.py) on a tiny random model: its fields, the refusal
when the estimate exceeds the free memory, --force, and `train --dry-run` leaving no run."""
import json

import pytest
from typer.testing import CliRunner

import tunesmith
from tests.conftest import chat_records, write_jsonl
from tunesmith.cli import app
from tunesmith.config import load_config
from tunesmith.training import estimate as preflight

pytestmark = pytest.mark.slow

FAST = ["training.batch_size=4", "training.eval_steps=5", "training.logging_steps=1", "lora.r=8",
        "training.packing=false"]


@pytest.fixture(scope="module")
def probed(tiny_model_dir, tmp_path_factory):
    """One probe shared by the tests that read its result (each probe loads a model)."""
    from tunesmith.workspace import Workspace
    tmp = tmp_path_factory.mktemp("estimate")
    records = chat_records(30)
    records[7]["messages"][1]["content"] += " It is a long answer." * 6  # the longest example
    data = write_jsonl(tmp / "chat.jsonl", records)
    config = load_config(None, [f"model={tiny_model_dir}", f"data.train={data}", *FAST, "training.epochs=2"])
    est = preflight.estimate(config, Workspace(tmp / "home"), probe_steps=3)
    assert not (tmp / "home" / "mlflow.db").exists()  # the probe tracked into its scratch store
    return config, est, records


def test_estimate_measures_tokens_steps_memory_time_and_disk(probed):
    config, est, records = probed
    assert est.recipe == "sft" and est.method == "lora" and est.device == "cpu"
    train_examples = est.train_examples
    assert 0 < train_examples <= len(records)  # validation_fraction holds some back
    assert est.steps_per_epoch == -(-train_examples // 4)
    assert est.total_steps == 2 * est.steps_per_epoch and est.epochs == pytest.approx(2.0)
    assert est.measured_steps == 2  # three probe steps, the first is warm-up
    assert est.tokens_per_epoch > 0 and est.padded_tokens_per_epoch >= est.tokens_per_epoch
    assert est.longest_example_tokens > est.tokens_per_epoch / train_examples
    assert est.seconds_per_step > 0 and est.train_seconds_per_epoch > 0
    in_all = preflight._every(est.total_steps, 5)  # every 5 steps and at the last
    assert est.evals_per_epoch == round(in_all / est.epochs) and est.eval_seconds > 0
    assert est.seconds_per_epoch >= est.train_seconds_per_epoch
    # both are rounded to 0.1 s: on a fast machine an epoch of the tiny model takes well under a second
    assert est.total_seconds == pytest.approx(est.seconds_per_epoch * est.epochs, rel=0.01, abs=0.1 * est.epochs)
    assert est.peak_rss_bytes > 50 * 2**20 and est.peak_gpu_bytes is None
    assert est.checkpoint_bytes > est.final_weights_bytes > 0  # adapter + optimizer state + ...
    assert est.checkpoints_kept == min(config.training.save_total_limit, in_all)
    assert est.disk_bytes == est.checkpoint_bytes * est.checkpoints_kept + est.final_weights_bytes
    assert est.free_ram_bytes > 0 and est.fits
    assert json.loads(json.dumps(est.to_dict()))["fits"] is True


def test_refuses_an_estimate_over_the_free_memory_unless_forced(probed, monkeypatch):
    _, est, _ = probed
    small = est.__class__(**{**est.__dict__, "free_ram_bytes": est.peak_rss_bytes // 2})
    assert not small.fits
    with pytest.raises(preflight.ResourceError, match="peak RAM .* exceeds .* free.*--force"):
        preflight.check_fits(small)
    preflight.check_fits(small, force=True)  # forced: no refusal
    preflight.check_fits(est)


def test_gpu_memory_over_the_free_gpu_memory_is_refused(probed):
    _, est, _ = probed
    on_gpu = est.__class__(**{**est.__dict__, "peak_gpu_bytes": 4 * 2**30, "free_gpu_bytes": 2**30})
    with pytest.raises(preflight.ResourceError, match="GPU memory"):
        preflight.check_fits(on_gpu)


def test_cli_dry_run_prints_the_estimate_and_creates_no_run(tiny_model_dir, chat_file, workspace, monkeypatch):
    args = ["train", "--set", f"model={tiny_model_dir}", "--set", f"data.train={chat_file}",
            *sum((["--set", s] for s in FAST), []), "--set", "training.max_steps=6", "--probe-steps", "2"]
    # the config comes from --set only: an empty YAML
    config = chat_file.parent / "empty.yaml"
    config.write_text("recipe: sft\n")
    result = CliRunner().invoke(app, [args[0], str(config), *args[1:], "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["total_steps"] == 6 and shown["fits"] is True
    assert not workspace.runs_dir.exists() or not any(workspace.runs_dir.iterdir())

    monkeypatch.setattr(preflight, "free_memory", lambda: (1024, None))  # 1 KiB free
    refused = CliRunner().invoke(app, [args[0], str(config), *args[1:], "--dry-run"])
    assert refused.exit_code != 0 and isinstance(refused.exception, preflight.ResourceError)
    assert "would not fit" in str(refused.exception) and "--force" in str(refused.exception)
    assert "exceeds" in refused.output  # the table, with the numbers, is shown before the refusal
    forced = CliRunner().invoke(app, [args[0], str(config), *args[1:], "--dry-run", "--force"])
    assert forced.exit_code == 0, forced.output
    assert not workspace.runs_dir.exists() or not any(workspace.runs_dir.iterdir())


def test_api_estimate_takes_a_yaml_with_overrides(tiny_model_dir, chat_file, workspace):
    est = tunesmith.api.estimate(None, [f"model={tiny_model_dir}", f"data.train={chat_file}", *FAST,
                                        "training.max_steps=3"], workspace=workspace, probe_steps=2)
    assert est.total_steps == 3 and est.measured_steps == 1


def test_the_peak_adds_the_measured_growth_per_new_batch_shape_for_the_shapes_not_run(probed):
    _, est, _ = probed
    assert est.peak_rss_bytes >= est.probe_peak_rss_bytes > 0
    assert est.batch_shapes_per_epoch >= 1 and est.warmup_seconds >= 0
    # steps 1..3 ran shapes A, B, A with the RSS rising 30 MiB after the warm-up step: B was the
    # one new shape; the epoch's three shapes after A scale that rise by 3 ** GROWTH_EXPONENT
    a, b, c, d = [[[2, 8]]], [[[2, 9]]], [[2, 10]], [[2, 11]]
    probe = {"step_rss": [100 * 2**20, 110 * 2**20, 130 * 2**20], "step_shapes": [a, b, a],
             "epoch_shapes": [a[0], b[0], c, d], "peak_gpu_bytes": None}
    growth = int(30 * 2**20 * (3 ** preflight.GROWTH_EXPONENT - 1))
    assert preflight.shape_growth(probe) == (growth, 30 * 2**20, 2) and 0 < growth < 2 * 30 * 2**20
    assert preflight.shape_growth(probe | {"step_rss": [130 * 2**20, 120 * 2**20, 110 * 2**20]}) == (0, 0, 2)
    assert preflight.shape_growth(probe | {"peak_gpu_bytes": 10}) == (0, 0, 0)  # on a GPU activations are not RSS
