"""Classification evaluation end to end on tiny models: train → eval (every baseline, every
report section) → predict, and the prompted-LLM baseline's constrained decoding."""
import csv
import json

import pytest

from tests.conftest import classification_records, write_jsonl
from tests.training.test_classify import classify_config
from tunesmith import api
from tunesmith.eval.prompted import PromptedClassifier, pick_shots

SECTIONS = ["systems-side-by-side", "which-examples-changed", "per-class", "confusion-matrix", "calibration", "most-confident-errors",
            "baseline-details"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_encoder_dir):
    import os

    home = tmp_path_factory.mktemp("home")
    os.environ["TUNESMITH_HOME"] = str(home)
    from tunesmith.workspace import Workspace

    workspace = Workspace(home)
    data = tmp_path_factory.mktemp("data")
    train = write_jsonl(data / "train.jsonl", classification_records(120))
    test = data / "test.csv"
    with open(test, "w", newline="") as f:
        writer = csv.DictWriter(f, ["text", "label"])
        writer.writeheader()
        writer.writerows(classification_records(45, seed=3))
    result = api.train(classify_config(train, tiny_encoder_dir, **{"data.test": str(test)}), workspace=workspace)
    yield result.run, workspace, test
    os.environ.pop("TUNESMITH_HOME", None)


def test_eval_scores_every_system_and_writes_every_report(trained, tiny_model_dir):
    run, workspace, test = trained
    report = api.evaluate(run.id, llm=str(tiny_model_dir), llm_examples=12, workspace=workspace, log=lambda m: None,
                          against=[run.id])
    names = [s["name"] for s in report["systems"]]
    assert names[0] == "fine-tuned" and "majority class" in names and "TF-IDF + logistic regression" in names
    assert sum("prompted zero-shot" in n for n in names) == 1 and sum("prompted few-shot" in n for n in names) == 1
    by_name = {s["name"]: s for s in report["systems"]}
    assert by_name["majority class"]["accuracy"] == pytest.approx(15 / 45)  # 3 balanced labels
    assert by_name["fine-tuned"]["accuracy"] > by_name["majority class"]["accuracy"]
    for system in report["systems"]:
        assert 0 <= system["macro_f1"] <= 1
    llm_rows = [s for s in report["systems"] if "prompted" in s["name"]]
    assert all(s["examples"] == 12 and "fine_tuned_accuracy_same_examples" in s for s in llm_rows)
    assert by_name["fine-tuned"]["latency"]["p95_ms"] >= by_name["fine-tuned"]["latency"]["p50_ms"] > 0
    fine = report["fine_tuned"]
    assert len(fine["per_class"]) == 3 and sum(map(sum, fine["confusion_matrix"])) == 45
    assert 0 <= fine["calibration"]["ece"] <= 1

    pairs = {c["other"]: c for c in report["paired"]["comparisons"]}  # fine-tuned vs every other system
    assert set(pairs) == set(names[1:]) and pairs[run.id]["tied"] == 45  # --against itself: every example tied
    assert pairs[run.id]["p_value"] == 1.0 and not pairs[run.id]["shown"]
    for name, c in pairs.items():
        system = by_name[name]
        tuned_accuracy = system.get("fine_tuned_accuracy_same_examples", by_name["fine-tuned"]["accuracy"])
        assert c["examples"] == system["examples"] and c["test"] == "mcnemar"
        assert c["won"] - c["lost"] == round((tuned_accuracy - system["accuracy"]) * system["examples"])
        assert [e["outcome"] for e in c["shown"]][:c["lost"]] == ["lost"] * min(c["lost"], 20)
    report_lines = open(report["report_files"]["markdown"]).read()
    assert "## Which examples changed" in report_lines and "| fine-tuned | majority class | accuracy |" in report_lines

    files = report["report_files"]
    page = open(files["html"], encoding="utf-8").read()
    for section in SECTIONS:
        assert f'id="{section}"' in page
    assert page.count("data:image/png;base64,") == 3 and "http" not in page.split("<body>")[1]
    markdown = open(files["markdown"]).read()
    assert "| fine-tuned |" in markdown and "## Top confusions" in markdown and "## Per class" in markdown
    rows = list(csv.reader(open(files["confusion_csv"])))
    assert rows[0][1:] == report["labels"] and len(rows) == 4
    assert json.load(open(files["json"]))["kind"] == "classification"


def test_compare_lines_up_runs(trained, tmp_path):
    run, workspace, _ = trained
    table = api.compare([run.id, run.id], tmp_path / "cmp", workspace=workspace)
    assert "accuracy" in table["columns"] and len(table["rows"]) == 2
    assert (tmp_path / "cmp" / "compare.md").read_text().count("\n") == 4


def test_prompted_classifier_only_ever_answers_a_label(tiny_model_dir):
    from tunesmith.models.engine import load
    from tunesmith.workspace import Workspace

    loaded = load(str(tiny_model_dir), Workspace(tiny_model_dir))
    labels = ["refund", "refund_status", "delivery", "login"]  # "refund" is a token prefix of another label
    shots = pick_shots([(r["text"], r["label"]) for r in classification_records(30)], labels)
    texts = [r["text"] for r in classification_records(10, seed=5)]
    for demos in ([], shots):
        classifier = PromptedClassifier(loaded.model, loaded.tokenizer, labels, demos)
        batched = classifier.predict(texts, batch_size=4)
        assert all(0 <= p < len(labels) for p in batched)
        assert batched == classifier.predict(texts, batch_size=1)  # padding and the shared cache change nothing


def test_an_out_of_scope_label_gets_a_threshold_chosen_on_validation_and_both_figures_on_test(tiny_encoder_dir,
                                                                                               tmp_path, workspace):
    from tunesmith.eval.classify_report import to_markdown

    train = write_jsonl(tmp_path / "train.jsonl", classification_records(120))
    test = write_jsonl(tmp_path / "test.jsonl", classification_records(45, seed=3))
    config = classify_config(train, tiny_encoder_dir, **{"data.test": str(test), "data.out_of_scope_label": "refund",
                                                         "data.validation_fraction": 0.25})
    run = api.train(config, workspace=workspace).run
    report = api.evaluate(run.id, baselines=False, workspace=workspace, log=lambda m: None)
    section = report["out_of_scope"]
    assert section["label"] == "refund" and section["chosen_on"] == "validation (30 examples)"
    assert 0 <= section["threshold"] < 1
    for figures in (section["test"], section["argmax"]):
        assert figures["in_scope_examples"] == 30 and figures["out_of_scope_examples"] == 15
        assert 0 <= figures["in_scope_accuracy"] <= 1 and 0 <= figures["out_of_scope_recall"] <= 1
    # A higher threshold can only flag more: recall at the chosen one is at least the argmax's.
    assert section["test"]["out_of_scope_recall"] >= section["argmax"]["out_of_scope_recall"]
    assert "## Out of scope (`refund`)" in to_markdown(report)


def test_an_out_of_scope_label_the_run_does_not_have_is_a_note(trained):
    from tunesmith.config import load_config

    run, workspace, _ = trained
    config = load_config(run.config_path)
    assert config.data.out_of_scope_label is None
    report = api.evaluate(run.id, baselines=False, workspace=workspace, log=lambda m: None)
    assert report["out_of_scope"] is None
