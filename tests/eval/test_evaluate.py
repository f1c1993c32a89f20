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
    base, tuned = report["metrics"]["base"], report["metrics"]["tuned"]
    for side in (base, tuned):
        assert set(side) >= {"loss", "perplexity", "rouge_l", "bleu", "exact_match", "loss_tokens"}
        assert side["exact_match_examples"] == 6
    assert tuned["loss"] < base["loss"]  # trained on the same task
    assert len(report["samples"]) == 2 and set(report["samples"][0]) == {"prompt", "reference", "base", "tuned"}
    written = json.loads((run.eval_dir / "report.json").read_text())
    assert written["metrics"] == report["metrics"]
    markdown = (run.eval_dir / "report.md").read_text()
    for section in ("| metric | base | fine-tuned | change |", "perplexity", "ROUGE-L", "BLEU", "exact match", "## Samples"):
        assert section in markdown
