"""The real SmolLM2-135M-Instruct: a few LoRA steps lower the loss, and the saved adapter reloads
to generate exactly the tokens the in-memory model generated. Pulls the model once if needed."""
import json
from pathlib import Path

import pytest

import tunesmith
from tests.conftest import write_jsonl
from tunesmith.config import load_config
from tunesmith.models import engine
from tunesmith.workspace import Workspace

pytestmark = pytest.mark.integration

DATA = Path(__file__).parents[1] / "examples" / "support-routing" / "data.jsonl"


@pytest.fixture(scope="module")
def real_workspace():
    workspace = Workspace.default()  # shares the pulled model with the quickstart
    tunesmith.pull_model("smollm2-135m-instruct", workspace=workspace, log=lambda m: None)
    return workspace


def test_few_lora_steps_lower_the_loss_and_the_adapter_round_trips(real_workspace, tmp_path):
    records = [json.loads(line) for line in DATA.read_text().splitlines()]
    train = write_jsonl(tmp_path / "train.jsonl", records[:32])
    held_out = write_jsonl(tmp_path / "test.jsonl", records[400:416])
    config = load_config(None, [f"data.train={train}", f"data.validation={held_out}", "training.max_steps=8",
                                "training.batch_size=4", "training.learning_rate=1e-3", "training.eval_steps=8", "training.logging_steps=1",
                                "run_name=integration"])
    result = tunesmith.train(config, workspace=real_workspace)
    assert result.summary["last_train_loss"] < result.summary["first_train_loss"] / 2

    conversations = [records[i]["messages"][:2] for i in range(400, 404)]
    in_memory = engine.Loaded("in-memory", result.model.eval(), result.tokenizer, is_adapter=True)
    before = engine.generate(in_memory, conversations, max_new_tokens=12)
    reloaded = engine.load(result.run.id, real_workspace)
    assert engine.generate(reloaded, conversations, max_new_tokens=12) == before

    report = tunesmith.evaluate(result.run.id, held_out, workspace=real_workspace, log=lambda m: None)
    assert report["metrics"]["tuned"]["loss"] < report["metrics"]["base"]["loss"]
