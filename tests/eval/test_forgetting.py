"""Replay mixes general data into training; eval --forgetting reports base vs tuned on general data."""
import json

import pytest

import tunesmith
from tests.conftest import chat_records, write_jsonl
from tests.training.test_sft import tiny_config
from tunesmith.data.general import GENERAL_DIR
from tunesmith.errors import ConfigError, DataError
from tunesmith.eval.forgetting import answered
from tunesmith.training.replay import replay_count

pytestmark = pytest.mark.slow


@pytest.fixture
def general_dir(tmp_path):
    directory = tmp_path / "general"
    directory.mkdir()
    write_jsonl(directory / "heldout.jsonl", chat_records(8, seed=2))
    write_jsonl(directory / "questions.jsonl", [{"question": "Which colour is item 1?", "answer": "green|red"},
                                                {"question": "What is 2 plus 2?", "answer": "4"}])
    return directory


def test_replay_adds_its_share_of_general_examples(tiny_model_dir, chat_file, tmp_path, workspace):
    general = write_jsonl(tmp_path / "general.jsonl", chat_records(5, seed=3))
    plain = tunesmith.train(tiny_config(tiny_model_dir, chat_file, "training.max_steps=2"), workspace=workspace)
    mixed = tunesmith.train(tiny_config(tiny_model_dir, chat_file, "training.max_steps=2",
                                        f"replay.data={general}", "replay.fraction=0.2"), workspace=workspace)
    task = plain.summary["train_examples"]
    assert mixed.summary["train_examples"] == task + replay_count(task, 0.2) == task + 9  # 5 records, reused in turn
    assert mixed.summary["replay_fraction"] == 0.2 and "replay" in mixed.run.info()["data"]


def test_the_shipped_general_set_is_valid_and_the_default_replay():
    from tunesmith.data.validate import validate_file

    for name in ("replay.jsonl", "heldout.jsonl"):
        assert validate_file(GENERAL_DIR / name).ok
    questions = [json.loads(line) for line in (GENERAL_DIR / "questions.jsonl").read_text().splitlines()]
    assert len(questions) >= 50 and all(q["question"] and q["answer"] for q in questions)


def test_missing_replay_file_is_named_before_training(tiny_model_dir, chat_file, workspace):
    with pytest.raises(DataError, match="replay.data: no such file: .*nowhere.jsonl"):
        tunesmith.train(tiny_config(tiny_model_dir, chat_file, "replay.data=nowhere.jsonl"), workspace=workspace)


def test_eval_forgetting_reports_base_and_tuned_on_general_data(tiny_model_dir, chat_file, general_dir, workspace):
    result = tunesmith.train(tiny_config(tiny_model_dir, chat_file, "training.epochs=2"), workspace=workspace)
    report = tunesmith.evaluate(result.run.id, chat_file, max_examples=4, baselines=False, few_shot=0,
                                workspace=workspace, log=lambda m: None, forgetting=True, general_data=general_dir)
    f = report["forgetting"]
    assert f["base"]["questions"] == 2 and f["base"]["loss_tokens"] == f["tuned"]["loss_tokens"] > 0
    # Trained on the colour task, the tuned model fits the general colour conversations better than the base.
    assert f["tuned"]["loss"] < f["base"]["loss"] and f["change"]["loss"] == f["tuned"]["loss"] - f["base"]["loss"]
    assert "## Forgetting" in open(report["report_files"]["markdown"]).read()
    row = tunesmith.compare([result.run.id], workspace=workspace)["runs"][0]
    assert row["general_perplexity_change"] < 0


def test_forgetting_is_refused_for_a_classifier_and_without_general_data(tmp_path, workspace):
    assert answered("It is Paris.", ["paris"]) and not answered("Parisian", ["Paris"])
    from tunesmith.eval.forgetting import general_files
    with pytest.raises(DataError, match="general data not found"):
        general_files(tmp_path)
    classifier = workspace.run_dir("20261122-000000-intents")
    classifier.mkdir(parents=True)
    (classifier / "run.json").write_text(json.dumps({"id": classifier.name, "recipe": "classify"}))
    with pytest.raises(ConfigError, match="is a classifier"):
        tunesmith.evaluate(classifier.name, tmp_path / "test.csv", workspace=workspace, forgetting=True)
