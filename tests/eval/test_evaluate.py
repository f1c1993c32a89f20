"""Tiny-model end to end: train → eval writes a side-by-side report with every section."""
import json

import pytest

import tunesmith
from tests.conftest import chat_records, write_jsonl
from tunesmith.config import load_config

pytestmark = pytest.mark.slow


def test_eval_compares_base_and_tuned_and_writes_reports(tiny_model_dir, tmp_path, workspace):
    train = write_jsonl(tmp_path / "train.jsonl", chat_records(40))
    test_records = chat_records(6, seed=2)
    for r in test_records:
        r["final_answer"] = r["messages"][-1]["content"].split()[-1].rstrip(".")
    test = write_jsonl(tmp_path / "test.jsonl", test_records)
    config = load_config(None, [f"model={tiny_model_dir}", f"data.train={train}", "training.epochs=4",
                                "training.learning_rate=0.01", "training.batch_size=4", "lora.r=8"])
    run = tunesmith.train(config, workspace=workspace).run

    report = tunesmith.evaluate(run.id, test, samples=2, workspace=workspace, log=lambda m: None)
    base, few_shot, tuned = (report["metrics"][k] for k in ("base", "few_shot", "tuned"))
    for side in (base, few_shot, tuned):
        assert set(side) >= {"loss", "perplexity", "rouge_l", "bleu", "exact_match", "loss_tokens"}
        assert side["exact_match_examples"] == 6
    assert tuned["loss"] < base["loss"]  # trained on the same task
    assert few_shot["loss_tokens"] == base["loss_tokens"]  # demonstrations carry no loss
    assert report["few_shot"] == {"shots": 3}
    assert len(report["samples"]) == 2
    assert set(report["samples"][0]) == {"prompt", "reference", "base", "few_shot", "tuned"}
    written = json.loads((run.eval_dir / "report.json").read_text())
    assert written["metrics"] == report["metrics"]
    markdown = (run.eval_dir / "report.md").read_text()
    for section in ("| metric | base | base, few-shot prompt | fine-tuned | change vs best baseline |", "perplexity",
                    "ROUGE-L", "BLEU", "exact match", "## Samples", "**base, few-shot**"):
        assert section in markdown
    page = (run.eval_dir / "report.html").read_text()
    for section in ('id="metrics-side-by-side"', 'id="samples"', 'id="time"', "base, few-shot prompt"):
        assert section in page
    pairs = {c["other_key"]: c for c in report["paired"]["comparisons"]}
    assert set(pairs) == {"base", "few_shot"}
    for key, c in pairs.items():  # per-example outcomes add up to the aggregate difference
        assert c["won"] + c["lost"] + c["tied"] == 6 and c["test"] == "mcnemar"
        assert c["won"] - c["lost"] == round((tuned["exact_match"] - report["metrics"][key]["exact_match"]) * 6)
        assert [e["outcome"] for e in c["shown"]] == ["lost"] * c["lost"] + ["won"] * c["won"]
        assert {a["metric"] for a in c["also"]} == {"ROUGE-L", "loss"}
    assert sum(report["per_example"]["tuned"]["loss_tokens"]) == tuned["loss_tokens"]
    assert "## Which examples changed" in markdown and 'id="which-examples-changed"' in page
    card = (run.final_dir / "README.md").read_text()  # the model card now shows this evaluation
    assert "| metric | base | base, few-shot prompt | fine-tuned |" in card and "`test.jsonl` (6 held-out" in card


def test_no_baselines_leaves_only_base_and_tuned(tiny_model_dir, tmp_path, workspace):
    train = write_jsonl(tmp_path / "train.jsonl", chat_records(20))
    config = load_config(None, [f"model={tiny_model_dir}", f"data.train={train}", "training.max_steps=2"])
    run = tunesmith.train(config, workspace=workspace).run
    report = tunesmith.evaluate(run.id, train, max_examples=3, baselines=False, workspace=workspace, log=lambda m: None,
                                against=[str(tiny_model_dir)])
    against = f"against:{tiny_model_dir}"  # --against: one more system on the same examples
    assert set(report["metrics"]) == {"base", against, "tuned"} and report["few_shot"] is None
    pairs = {c["other_key"]: c for c in report["paired"]["comparisons"]}
    assert set(pairs) == {"base", against} and pairs[against]["test"] == "bootstrap"  # no final answers: ROUGE-L
    assert all(c["won"] + c["lost"] + c["tied"] == 3 for c in pairs.values())
    # the tiny base model loaded again is the base side: the same loss on every example, the same comparison
    each = report["per_example"]
    assert each[against]["loss"] == pytest.approx(each["base"]["loss"], abs=1e-5)
    loss = {a["metric"]: a for a in pairs[against]["also"]}["loss"]
    assert loss["mean_difference"] == pytest.approx({a["metric"]: a for a in pairs["base"]["also"]}["loss"]["mean_difference"], abs=1e-5)
    assert str(tiny_model_dir) in (run.eval_dir / "report.md").read_text().split("## Samples")[0]


def test_against_an_unknown_model_is_refused_before_loading(tiny_model_dir, tmp_path, workspace):
    from tunesmith.errors import TunesmithError

    train = write_jsonl(tmp_path / "train.jsonl", chat_records(20))
    config = load_config(None, [f"model={tiny_model_dir}", f"data.train={train}", "training.max_steps=1"])
    run = tunesmith.train(config, workspace=workspace).run
    with pytest.raises(TunesmithError, match="unknown model 'no-such-model'"):
        tunesmith.evaluate(run.id, train, max_examples=2, workspace=workspace, log=lambda m: None,
                           against=["no-such-model"])
