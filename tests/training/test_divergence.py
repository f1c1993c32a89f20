"""A run whose loss or weights stop being finite is stopped with TrainingDiverged: the last
good checkpoint is kept, nothing is published, run.json says failed; through the job queue the
job fails with ``training_diverged``; the CLI prints one clear line."""
import math
import sys

import pytest
import yaml
from transformers import TrainerCallback

import tunesmith
from tests.conftest import chat_records, write_jsonl
from tunesmith.errors import TrainingDiverged
from tunesmith.training import steps as runner
from tunesmith.training.checkpoints import checkpoints_by_step, problems_with

pytestmark = pytest.mark.slow


class Poison(TrainerCallback):
    """Turns one trainable weight into NaN at the end of step ``at`` (as an overflow would):
    from the next step on, every loss is NaN."""

    def __init__(self, at: int):
        self.at = at

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.at:
            import torch

            with torch.no_grad():
                next(p for p in model.parameters() if p.requires_grad).fill_(math.nan)


@pytest.fixture
def poisoned(monkeypatch):
    """Every recipe's trainer gets Poison(at) among its standard callbacks."""
    from tunesmith.training import classify, preference, sft

    def poison(at: int):
        standard = runner.standard_callbacks
        for recipe in (sft, classify, preference):  # each imported the function by name
            monkeypatch.setattr(recipe, "standard_callbacks", lambda *a, **k: standard(*a, **k) + [Poison(at)])
    return poison


def overrides(model_dir, data, name):
    return [f"model={model_dir}", f"data.train={data}", "training.max_steps=10", "training.save_steps=2",
            "training.eval_steps=2", "training.batch_size=4", "training.logging_steps=1", "data.validation_fraction=0",
            "training.learning_rate=0.01", f"run_name={name}"]


def nested(pairs: list[str]) -> dict:
    """``a.b=1`` overrides as the recipe YAML they stand for."""
    out: dict = {}
    for pair in pairs:
        key, value = pair.split("=", 1)
        *parents, leaf = key.split(".")
        target = out
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = yaml.safe_load(value)
    return out


def sound_steps(run) -> list[int]:
    return [step for step, path in checkpoints_by_step(run.checkpoints_dir) if not problems_with(path)]


def test_non_finite_weights_at_a_save_stop_the_run_and_keep_the_last_good_checkpoint(tiny_model_dir, tmp_path,
                                                                                      workspace, poisoned):
    poisoned(at=4)  # weights NaN just before the checkpoint of step 4 is written
    data = write_jsonl(tmp_path / "d.jsonl", chat_records(40))
    with pytest.raises(TrainingDiverged, match="diverged at step 4.*last good checkpoint \\(step 2\\)"):
        tunesmith.train(tunesmith.load_config(None, overrides(tiny_model_dir, data, "nan")), workspace=workspace)
    run = tunesmith.get_run("nan", workspace)
    assert run.info()["status"] == "failed" and "TrainingDiverged" in run.info()["error"]
    assert [step for step, _ in checkpoints_by_step(run.checkpoints_dir)] == [2] == sound_steps(run)
    assert not (run.dir / "adapter").exists() and not run.summary_path.exists()  # nothing published


def test_through_the_queue_the_job_fails_with_training_diverged(tiny_model_dir, tmp_path, workspace, poisoned):
    from tests.server.test_faults import queued_job
    from tunesmith.jobs.fine_tuning import get_job
    from tunesmith.jobs.worker import Worker

    poisoned(at=7)  # a job logs and saves every epoch (6 steps): the NaN loss logged at 12 stops it before its save
    db, job_id = queued_job(workspace, tiny_model_dir, tmp_path, {"n_epochs": 5, "batch_size": 4})
    assert Worker(workspace, db, isolate=False).run_one()
    job = get_job(db, job_id)
    assert job.status == "failed" and job.error["code"] == "training_diverged", job.error
    assert "loss=nan" in job.error["message"] and job.fine_tuned_model is None
    run = tunesmith.get_run(job.run_id, workspace)
    assert sound_steps(run) == [6] and not (run.dir / "adapter").exists() and run.info()["status"] == "failed"


def test_the_cli_says_training_diverged_without_a_traceback(tiny_model_dir, tmp_path, workspace, poisoned,
                                                           monkeypatch, capsys):
    from tunesmith import cli

    poisoned(at=2)
    data = write_jsonl(tmp_path / "d.jsonl", chat_records(40))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(nested(overrides(tiny_model_dir, data, "cli"))))
    monkeypatch.setattr(sys, "argv", ["tunesmith", "train", str(recipe)])
    with pytest.raises(SystemExit) as e:
        cli.main()
    err = " ".join(capsys.readouterr().err.split())  # as one line, whatever the console's width
    assert e.value.code == TrainingDiverged.exit_code
    assert "error: training diverged at step 2" in err and "no model was published" in err and "Traceback" not in err
