"""Retraining: the new data is feedback + confirmed fresh labels (no unconfirmed proposals, no
duplicates, nothing from the test data) mixed with replayed training data; the candidate is
promoted behind an alias only if it evaluates at least as well, and the alias is then served."""
import json

import pytest
from fastapi.testclient import TestClient

from tests.conftest import classification_records, write_jsonl
from tests.training.test_classify import classify_config
from tunesmith import api
from tunesmith.errors import ConfigError
from tunesmith.jobs.request_log import LogSettings
from tunesmith.serving.aliases import read_aliases
from tunesmith.web.app import ServerSettings, create_app

pytestmark = pytest.mark.slow


def test_retrain_builds_the_mix_and_promotes_only_a_model_that_is_not_worse(workspace, tiny_encoder_dir, tmp_path):
    train_records, test_records = classification_records(90), classification_records(30, seed=9)
    train = write_jsonl(tmp_path / "train.jsonl", train_records)
    test = write_jsonl(tmp_path / "test.jsonl", test_records)
    current = api.train(classify_config(train, tiny_encoder_dir, **{"training.epochs": 2, "data.test": str(test)}),
                        workspace=workspace).run
    client = TestClient(create_app(workspace, ServerSettings(require_keys=False, request_log=LogSettings(content=True))))
    asked = client.post("/v1/classifications", json={"model": current.id, "input": "give me my money back, order 77"}).json()
    item = client.post("/v1/tunesmith/feedback", json={"request_id": asked["id"], "label": "refund", "rating": -1}).json()
    client.post(f"/v1/tunesmith/feedback/{item['id']}", json={"status": "accepted"})
    fresh = write_jsonl(tmp_path / "fresh.jsonl", [
        {"text": "the courier left my parcel at the wrong door", "label": "delivery"},
        {"text": "cannot log in since the update", "label": "login", "_suggest": {"rank": 1}},
        {"text": "send the package to my office", "label": "delivery",
         "_prelabel": {"model": current.id, "status": "proposed"}},              # nobody confirmed it
        dict(train_records[50]),                                                # already in the training data
        dict(test_records[0]),                                                  # in the test data: never trained on
    ])

    kept = api.retrain(current.id, fresh=[fresh], replay=0.5, tolerance=1.0, alias="intents",
                       overrides=["training.epochs=1"], workspace=workspace)
    data = kept["data"]
    # 3 new records; replay 0.5 asks for 3 more, topped up to the recipe's 10-example minimum.
    assert (data["new"], data["from_feedback"], data["replayed"], data["unconfirmed"]) == (3, 1, 7, 1)
    assert data["dropped"] == {"duplicate": 1, "in_test_data": 1}
    lines = [json.loads(line) for line in open(data["path"])]
    assert len(lines) == 10 and {"text": "give me my money back, order 77", "label": "refund"} in lines
    assert all(set(r) == {"text", "label"} for r in lines)  # provenance notes are not training fields
    assert kept["metric"] == "accuracy" and kept["promoted"] and read_aliases(workspace) == {"intents": kept["candidate"]}
    served = client.post("/v1/classifications", json={"model": "intents", "input": "where is my parcel"})
    assert served.status_code == 200 and served.json()["model"] == "intents"

    refused = api.retrain(current.id, fresh=[fresh], replay=0.5, tolerance=-1.0, alias="intents",
                          overrides=["training.epochs=1"], workspace=workspace)
    assert not refused["promoted"] and read_aliases(workspace) == {"intents": kept["candidate"]}  # unchanged
    assert json.loads(open(refused["report"]).read())["candidate_score"] == refused["candidate_score"]


def test_nothing_new_is_an_error_that_says_what_to_do(workspace, tiny_encoder_dir, tmp_path):
    from tunesmith.errors import DataError

    train = write_jsonl(tmp_path / "train.jsonl", classification_records(60))
    test = write_jsonl(tmp_path / "test.jsonl", classification_records(12, seed=9))
    current = api.train(classify_config(train, tiny_encoder_dir, **{"training.epochs": 1, "data.test": str(test)}),
                        workspace=workspace).run
    with pytest.raises(DataError) as e:
        api.retrain(current.id, workspace=workspace)
    assert "--fresh" in str(e.value)


def test_cli_retrains_only_when_an_alert_calls_for_it(workspace, tiny_encoder_dir, tmp_path):
    from typer.testing import CliRunner

    from tunesmith.cli import app

    train = write_jsonl(tmp_path / "train.jsonl", classification_records(60))
    test = write_jsonl(tmp_path / "test.jsonl", classification_records(12, seed=9))
    current = api.train(classify_config(train, tiny_encoder_dir, **{"training.epochs": 1, "data.test": str(test)}),
                        workspace=workspace).run
    quiet = CliRunner().invoke(app, ["monitor", current.id, "--retrain", "--json", "-o", str(tmp_path / "m")])
    assert quiet.exit_code == 0, quiet.output
    assert "no alert calls for retraining" in quiet.output and '"retrain": null' in quiet.output


def test_submitted_retraining_is_a_queued_job_the_worker_trains_and_judges(workspace, tiny_encoder_dir, tmp_path):
    from tunesmith.jobs.db import Database
    from tunesmith.jobs.fine_tuning import get_job, list_events
    from tunesmith.jobs.worker import Worker

    train = write_jsonl(tmp_path / "train.jsonl", classification_records(60))
    test = write_jsonl(tmp_path / "test.jsonl", classification_records(12, seed=9))
    current = api.train(classify_config(train, tiny_encoder_dir, **{"training.epochs": 1, "data.test": str(test)}),
                        workspace=workspace).run
    fresh = write_jsonl(tmp_path / "fresh.jsonl", classification_records(8, seed=21))

    plan = api.retrain(current.id, fresh=[fresh], tolerance=1.0, alias="intents", submit=True, workspace=workspace)
    assert plan["status"] == "submitted" and read_aliases(workspace) == {}  # nothing promoted before training
    db = Database.for_workspace(workspace)
    job = get_job(db, plan["job"])
    assert job.status == "queued" and job.settings["recipe"] == "classify" and job.model == str(tiny_encoder_dir)
    with pytest.raises(ConfigError, match="already retraining"):  # one retraining of a model at a time
        api.retrain(current.id, fresh=[fresh], submit=True, workspace=workspace)

    assert Worker(workspace, db).run_one()
    job = get_job(db, plan["job"])
    assert job.status == "succeeded", job.error
    messages = [e["message"] for e in list_events(db, job.id, None, 50)[0]]
    assert any(m.startswith("Retraining check on test.jsonl: accuracy") and "promoted behind alias intents" in m
               for m in messages), messages
    verdict = json.loads(open(plan["report"]).read())
    assert verdict["status"] == "judged" and verdict["promoted"] and verdict["job"] == job.id
    assert read_aliases(workspace) == {"intents": job.run_id} == {"intents": verdict["candidate"]}
    client = TestClient(create_app(workspace, ServerSettings(require_keys=False)))
    for name in ("intents", job.fine_tuned_model):  # the alias and the job's own ft: name classify
        served = client.post("/v1/classifications", json={"model": name, "input": "where is my parcel"})
        assert served.status_code == 200 and served.json()["data"][0]["label"] in {"refund", "delivery", "login"}
    assert job.fine_tuned_model not in [m["id"] for m in client.get("/v1/models").json()["data"]]  # not a chat model
