"""A training process killed (SIGKILL) while writing a checkpoint resumes cleanly from the last complete one."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

import tunesmith
from tests.conftest import chat_records, write_jsonl

pytestmark = pytest.mark.slow

# Dies inside the second checkpoint write: after the adapter and optimizer are on disk, before
# the RNG state and trainer_state.json — exactly the half-written directory that the Trainer's
# own "newest checkpoint" logic would pick up (huggingface/transformers#35782).
KILLER = textwrap.dedent("""
    import os, signal, sys
    import transformers
    original = transformers.Trainer._save_rng_state
    def save_rng_state(self, output_dir):
        if self.state.global_step == 8:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, output_dir)
    transformers.Trainer._save_rng_state = save_rng_state
    import tunesmith
    tunesmith.train(tunesmith.load_config(None, sys.argv[1:]))
""")


def overrides(model_dir, data):
    return [f"model={model_dir}", f"data.train={data}", "training.max_steps=12", "training.save_steps=4",
            "training.eval_steps=4", "training.batch_size=4", "training.logging_steps=1",
            "training.learning_rate=0.01", "lora.dropout=0", "run_name=killed"]


def test_kill_during_checkpoint_write_then_resume(tiny_model_dir, tmp_path, workspace):
    data = write_jsonl(tmp_path / "d.jsonl", chat_records(40))
    env = {**os.environ, "TUNESMITH_HOME": str(workspace.home)}
    proc = subprocess.run([sys.executable, "-c", KILLER, *overrides(tiny_model_dir, data)], env=env,
                          capture_output=True, text=True, cwd=os.getcwd())
    assert proc.returncode == -9, proc.stderr[-2000:]

    run = tunesmith.get_run("killed", workspace)
    half_written = run.checkpoints_dir / "checkpoint-8"
    assert half_written.is_dir() and not (half_written / "trainer_state.json").exists()

    result = tunesmith.resume(run.id, workspace)
    assert result.summary["global_step"] == 12
    assert not half_written.exists() or (half_written / "tunesmith-complete.json").exists()
    assert not (run.dir / "incomplete").exists()  # the half-written copy was deleted, not kept aside
    assert run.info()["resumed_from_step"] == 4 and run.info()["status"] == "succeeded"

    records = [json.loads(line) for line in run.metrics_path.read_text().splitlines()]
    resumed = [r["step"] for r in records if "loss" in r and r["time"] >= run.info()["resumed_at"]]
    assert resumed == list(range(5, 13))  # continues at the step after the last complete checkpoint

    # Same result as an uninterrupted run with the same seed: resume restores optimizer, schedule, RNG.
    clean = tunesmith.train(tunesmith.load_config(None, overrides(tiny_model_dir, data)), workspace=workspace)
    assert result.summary["last_eval_loss"] == pytest.approx(clean.summary["last_eval_loss"], rel=1e-4)
