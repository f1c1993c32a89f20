"""Active learning tools: the most uncertain examples are picked (and spread over clusters),
generators are scored by the likelihood of their own answers, and proposed labels come with
their provenance."""
import json

import numpy as np
import pytest

from tests.conftest import chat_records, classification_records, write_jsonl
from tests.training.test_classify import classify_config
from tests.training.test_sft import tiny_config
from tunesmith import api
from tunesmith.errors import ConfigError, ModelNotFound
from tunesmith.labeling.suggest import select


def test_diversity_takes_one_example_per_cluster_of_uncertain_ones():
    uncertainty = np.array([0.99, 0.98, 0.97, 0.96, 0.5, 0.4, 0.3, 0.2])
    embeddings = np.array([[1, 0], [1, 0.01], [1, 0.02], [1, 0.03], [0, 1], [-1, 0], [0, -1], [0.7, 0.7]], dtype=float)
    assert select(uncertainty, 3, "entropy", None, 1.0) == [0, 1, 2]  # pure uncertainty: three near-duplicates
    diverse = select(uncertainty, 3, "entropy", embeddings, diversity=8 / 3)
    assert diverse[0] == 0 and len(set(map(tuple, embeddings[diverse].round(1)))) == 3  # three different places
    assert len(set(select(uncertainty, 8, "random", None, 1.0))) == 8


@pytest.mark.slow
def test_suggest_and_prelabel_with_a_classifier(workspace, tiny_encoder_dir, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", classification_records(60))
    run = api.train(classify_config(train, tiny_encoder_dir, **{"training.epochs": 3}), workspace=workspace).run
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"text": r["text"]} for r in classification_records(80, seed=3)])

    summary = api.suggest_labels(run.id, pool, 10, tmp_path / "next.jsonl", embedding_model=str(tiny_encoder_dir),
                                 workspace=workspace)
    picked = [json.loads(line) for line in (tmp_path / "next.jsonl").read_text().splitlines()]
    assert summary["selected"] == 10 and [p["_suggest"]["rank"] for p in picked] == list(range(1, 11))
    assert summary["mean_uncertainty_selected"] > summary["mean_uncertainty_pool"]
    assert all(p["label"] in {"refund", "delivery", "login"} and 0 < p["_suggest"]["confidence"] <= 1 for p in picked)
    margin = api.suggest_labels(run.id, pool, 5, tmp_path / "m.jsonl", strategy="margin", diversity=1, workspace=workspace)
    assert len(margin["indices"]) == 5
    with pytest.raises(ConfigError):
        api.suggest_labels(run.id, pool, 5, tmp_path / "x.jsonl", strategy="likelihood", workspace=workspace)
    with pytest.raises(ModelNotFound, match="unknown model 'no-such-classifer'"):
        api.suggest_labels("no-such-classifer", pool, 5, tmp_path / "x.jsonl", workspace=workspace)

    result = api.prelabel(run.id, pool, tmp_path / "pre.jsonl", workspace=workspace)
    rows = [json.loads(line) for line in (tmp_path / "pre.jsonl").read_text().splitlines()]
    assert result["proposed"] == 80 and all(r["_prelabel"]["method"] == "classifier" for r in rows)
    assert sum(result["labels"].values()) == 80


@pytest.mark.slow
def test_suggest_scores_a_generator_by_its_own_answers_and_prelabel_prompts_an_llm(workspace, tiny_model_dir, chat_file, tmp_path):
    run = api.train(tiny_config(tiny_model_dir, chat_file, "training.max_steps=2"), workspace=workspace).run
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"messages": r["messages"][:1]} for r in chat_records(12, seed=4)])
    summary = api.suggest_labels(run.id, prompts, 4, tmp_path / "next.jsonl", strategy="likelihood", diversity=1,
                                 workspace=workspace)
    picked = [json.loads(line) for line in (tmp_path / "next.jsonl").read_text().splitlines()]
    assert len(picked) == 4 and all(0 <= p["_suggest"]["uncertainty"] <= 1 for p in picked)
    assert summary["mean_uncertainty_selected"] >= summary["mean_uncertainty_pool"]

    texts = write_jsonl(tmp_path / "texts.jsonl", [{"text": r["text"]} for r in classification_records(6)])
    labelled = write_jsonl(tmp_path / "labelled.jsonl", classification_records(9, seed=1))
    result = api.prelabel(str(tiny_model_dir), texts, tmp_path / "pre.jsonl", examples=labelled, workspace=workspace)
    rows = [json.loads(line) for line in (tmp_path / "pre.jsonl").read_text().splitlines()]
    assert result["method"] == "prompted-llm" and all(r["label"] in {"refund", "delivery", "login"} for r in rows)
    with pytest.raises(ConfigError):
        api.prelabel(str(tiny_model_dir), texts, tmp_path / "p2.jsonl", workspace=workspace)  # no label set
