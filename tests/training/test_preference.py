"""The dpo recipe end to end on a tiny random model: each objective learns the toy preference,
evaluation reports rewards and a win rate, and a run can start from an SFT run."""
import json

import pytest

import tunesmith
from tests.conftest import write_jsonl
from tests.training.test_sft import tiny_config
from tunesmith.config import load_config
from tunesmith.errors import DataError
from tunesmith.models import engine

pytestmark = pytest.mark.slow

PROMPT = [[{"role": "user", "content": "Is item 3 ready?"}]]


def pair_records(n: int) -> list[dict]:
    """A learnable preference: a polite "yes" over a curt "no" (conversational and plain records mixed)."""
    rows = []
    for i in range(n):
        prompt, chosen, rejected = f"Is item {i} ready?", f"Yes, item {i} is ready.", "No."
        if i % 2:
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
        else:
            rows.append({"prompt": [{"role": "user", "content": prompt}],
                         "chosen": [{"role": "assistant", "content": chosen}],
                         "rejected": [{"role": "assistant", "content": rejected}]})
    return rows


@pytest.fixture
def pairs_file(tmp_path):
    return write_jsonl(tmp_path / "pairs.jsonl", pair_records(40))


def dpo_config(model, data, *extra):
    return load_config(None, ["recipe=dpo", f"model={model}", f"data.train={data}", "training.batch_size=4",
                              "training.learning_rate=0.005", "training.eval_steps=4", "training.logging_steps=1",
                              "training.max_steps=8", "lora.r=8", *extra])


def test_dpo_lora_learns_the_preference_and_reports_it(tiny_model_dir, pairs_file, workspace):
    result = tunesmith.train(dpo_config(tiny_model_dir, pairs_file), workspace=workspace)
    assert result.summary["algorithm"] == "dpo" and result.summary["global_step"] == 8
    assert result.summary["last_train_loss"] < 0.6931  # log 2: where DPO's loss starts
    report = tunesmith.evaluate(result.run.id, pairs_file, workspace=workspace, max_new_tokens=6, log=lambda m: None,
                                against=[str(tiny_model_dir)])
    assert report["kind"] == "preference" and report["examples"] == 40
    paired = {(c["other"], c["test"]): c for c in report["paired"]["comparisons"]}
    margin, prefers = paired[("starting point", "bootstrap")], paired[("starting point", "mcnemar")]
    assert (margin["won"] + margin["tied"] / 2) / 40 == pytest.approx(report["win_rate"])  # pair by pair
    base_accuracy = report["metrics"]["base"]["preference_accuracy"]
    assert prefers["won"] - prefers["lost"] == round((report["metrics"]["tuned"]["preference_accuracy"] - base_accuracy) * 40)
    assert margin["p_value"] < 0.05 and margin["ci_low"] > 0
    # --against the tiny model itself: the starting point again, pair by pair
    again = paired[(str(tiny_model_dir), "bootstrap")]
    assert again["mean_difference"] == pytest.approx(margin["mean_difference"], abs=1e-5)
    assert report["rewards"]["accuracy"] > 0.9 and report["rewards"]["margin"] > 0
    assert report["win_rate"] > 0.9
    base, tuned = report["metrics"]["base"], report["metrics"]["tuned"]
    assert tuned["rejected_loss"] > base["rejected_loss"]
    markdown = open(report["report_files"]["markdown"]).read()
    assert "Win rate over the starting point" in markdown and "prefers chosen" in markdown
    # The saved adapter reloads to the same model.
    trained = engine.Loaded("trained", result.model.eval(), result.tokenizer)
    assert engine.generate(engine.load(result.run.id, workspace), PROMPT, 8) == engine.generate(trained, PROMPT, 8)


@pytest.mark.parametrize("algorithm,method", [("ipo", "lora"), ("kto", "lora"), ("orpo", "lora"), ("dpo", "full")])
def test_each_objective_trains_from_one_config_key(algorithm, method, tiny_model_dir, pairs_file, workspace):
    config = dpo_config(tiny_model_dir, pairs_file, f"preference.algorithm={algorithm}", f"method={method}",
                        *(["training.learning_rate=0.001"] if method == "full" else []))
    result = tunesmith.train(config, workspace=workspace)
    assert result.summary["algorithm"] == algorithm
    assert (result.run.dir / ("model" if method == "full" else "adapter")).is_dir()
    report = tunesmith.evaluate(result.run.id, pairs_file, workspace=workspace, samples=0, log=lambda m: None)
    assert report["metrics"]["tuned"]["preference_accuracy"] >= report["metrics"]["base"]["preference_accuracy"]
    assert report["rewards"]["margin"] > 0


def test_dpo_on_top_of_an_sft_run_measures_against_that_run(tiny_model_dir, chat_file, pairs_file, workspace):
    sft = tunesmith.train(tiny_config(tiny_model_dir, chat_file, "training.max_steps=4"), workspace=workspace)
    result = tunesmith.train(dpo_config(sft.run.id, pairs_file, "training.max_steps=2"), workspace=workspace)
    assert result.run.info()["start_run"] == sft.run.id
    dpo = engine.load(result.run.id, workspace)
    start = engine.load(sft.run.id, workspace, merge=True)
    with dpo.base_context():  # the adapter switched off is the SFT run, not the raw base model
        assert engine.generate(dpo, PROMPT, 8) == engine.generate(start, PROMPT, 8)
    report = tunesmith.evaluate(result.run.id, pairs_file, workspace=workspace, samples=0, log=lambda m: None)
    assert report["base_model"] == sft.run.id and 0 <= report["win_rate"] <= 1


def test_a_bad_pair_is_reported_by_line_before_a_run_starts(tiny_model_dir, tmp_path, workspace):
    rows = pair_records(20)
    rows[6] = {"prompt": "Is item 6 ready?", "chosen": "Yes."}
    data = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError) as error:
        tunesmith.train(dpo_config(tiny_model_dir, data), workspace=workspace)
    assert "line 7" in str(error.value) and "rejected" in str(error.value)
    assert not workspace.runs_dir.exists() or not any(workspace.runs_dir.iterdir())


def test_learning_rate_defaults_by_method():
    lora = load_config(None, ["recipe=dpo", "data.train=x.jsonl"])
    full = load_config(None, ["recipe=dpo", "data.train=x.jsonl", "method=full"])
    assert (lora.training.learning_rate, full.training.learning_rate) == (5e-5, 1e-6)
    assert json.loads(lora.model_dump_json())["preference"]["algorithm"] == "dpo"


def test_an_interrupted_dpo_run_resumes_from_its_checkpoint(tiny_model_dir, pairs_file, workspace):
    from transformers import TrainerCallback

    from tunesmith.errors import TunesmithError

    class Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 5:
                raise KeyboardInterrupt

    config = dpo_config(tiny_model_dir, pairs_file, "training.save_steps=4", "run_name=pref")
    with pytest.raises(TunesmithError, match="interrupted; continue with: tunesmith train --resume"):
        tunesmith.train(config, workspace=workspace, callbacks=[Interrupt()])
    run = tunesmith.get_run("pref", workspace)
    assert run.info()["status"] == "interrupted"
    result = tunesmith.resume(run.id, workspace)
    assert result.summary["global_step"] == 8 and run.info()["resumed_from_step"] == 4
    assert run.info()["status"] == "succeeded" and (run.dir / "adapter").is_dir()
