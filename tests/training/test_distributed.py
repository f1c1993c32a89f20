"""Two processes through torchrun (gloo on CPU) train like one process with the same global batch,
and only rank 0 writes the run's files."""
import json

import pytest

import tunesmith
from tests.conftest import chat_records, write_jsonl
from tunesmith.config import load_config
from tunesmith.training.distributed import Distributed

SETTINGS = ["training.batch_size=4", "training.learning_rate=0.01", "training.max_steps=6", "training.logging_steps=1",
            "training.eval_steps=3", "training.pack_length=128", "training.threads=1", "lora.r=8", "lora.dropout=0"]


def _losses(run) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, run.metrics_path.read_text().splitlines()) if "loss" in r}


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(tiny_model_dir, tmp_path, workspace):
    data = write_jsonl(tmp_path / "chat.jsonl", chat_records(96))
    common = [f"model={tiny_model_dir}", f"data.train={data}", *SETTINGS]
    # One process accumulating 2 rows per step = 2 processes with 1 row each.
    single = tunesmith.train(load_config(None, common + ["training.gradient_accumulation_steps=2"]),
                             workspace=workspace)
    double = tunesmith.train(load_config(None, common), workspace=workspace, distributed=Distributed(nproc=2))

    one, two = _losses(single.run), _losses(double.run)
    assert sorted(two) == list(range(1, 7))  # each step logged once: only rank 0 writes metrics
    assert all(abs(one[s] - two[s]) <= 1e-3 * one[s] for s in one), (one, two)
    assert double.summary["global_step"] == 6
    assert (double.run.dir / "adapter" / "adapter_model.safetensors").exists()
    checkpoints = sorted(p.name for p in double.run.checkpoints_dir.iterdir())
    assert checkpoints == ["checkpoint-3", "checkpoint-6"]
    runs = sorted(p.name for p in workspace.runs_dir.iterdir())
    assert runs == sorted([single.run.id, double.run.id])  # no stray directory from rank 1


def test_torchrun_command_and_strategies(monkeypatch, tmp_path):
    from tunesmith.errors import TunesmithError
    from tunesmith.training import steps as runner
    from tunesmith.training.launch import torchrun_args

    single = torchrun_args(tmp_path / "run-1", True, 2)
    assert single[:2] == ["--nproc-per-node=2", "--standalone"]
    assert single[-3:] == ["--run-dir", str(tmp_path / "run-1"), "--fresh"]
    multi = torchrun_args(tmp_path / "run-1", False, 8, nnodes=2, rdzv_endpoint="host0:29500")
    assert "--rdzv-endpoint=host0:29500" in multi and "--rdzv-id=run-1" in multi and "--fresh" not in multi
    with pytest.raises(TunesmithError, match="rdzv-endpoint"):
        Distributed(nproc=8, nnodes=2, run_id="run-1").check()

    assert runner._strategy_args("fsdp") == {}  # one process: nothing to shard
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert runner._strategy_args("fsdp") == {"fsdp": True}
    monkeypatch.setattr(runner, "_installed", lambda package: False)
    with pytest.raises(TunesmithError, match="pip install deepspeed"):
        runner._strategy_args("zero3")


def test_several_machines_need_one_run_id(tiny_model_dir, chat_file, workspace):
    from tunesmith.errors import TunesmithError

    config = load_config(None, [f"model={tiny_model_dir}", f"data.train={chat_file}"])
    with pytest.raises(TunesmithError, match="--run-id"):
        tunesmith.train(config, workspace=workspace, distributed=Distributed(nproc=1, nnodes=2, rdzv_endpoint="h:1"))
    with pytest.raises(TunesmithError, match="rdzv-endpoint"):
        tunesmith.train(config, workspace=workspace, distributed=Distributed(nproc=1, nnodes=2, run_id="big"))
    with pytest.raises(TunesmithError, match="single process"):
        tunesmith.train(config, workspace=workspace, distributed=Distributed(run_id="big"))
    assert not workspace.runs_dir.exists() or not any(workspace.runs_dir.iterdir())  # nothing half-made
