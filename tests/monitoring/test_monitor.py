"""The request log and `tunesmith monitor` against a live app: requests are recorded (text only
when opted in, personal data redacted), in-distribution traffic raises no drift alert, moved
traffic does, feedback can name a logged request, and the CLI's exit code can alert."""
import json
import time
from datetime import datetime, timezone

import pytest
from fastapi.testclient import TestClient

from tests.conftest import classification_records, write_jsonl
from tests.training.test_classify import classify_config
from tests.training.test_sft import tiny_config
from tunesmith import api
from tunesmith.jobs.db import Database, RequestRow
from tunesmith.jobs.request_log import LogSettings
from tunesmith.web.app import ServerSettings, create_app

pytestmark = pytest.mark.slow

MOVED = ["I would like to ask about the staking rewards of my crypto wallet and the gas fees on chain {}",
         "what is the annual percentage yield for locking tokens in the validator pool number {}",
         "my hardware wallet seed phrase backup does not restore the ledger account {}"]


def client_for(workspace, content=True):
    settings = ServerSettings(require_keys=False, request_log=LogSettings(content=content))
    return TestClient(create_app(workspace, settings))


def classify(client, model, texts):
    response = client.post("/v1/classifications", json={"model": model, "input": texts})
    assert response.status_code == 200, response.text
    return response.json()


def logged(workspace):
    with Database.for_workspace(workspace).session() as session:
        return list(session.query(RequestRow).order_by(RequestRow.created_at))


@pytest.fixture
def classifier(workspace, tiny_encoder_dir, tmp_path):
    train = write_jsonl(tmp_path / "intents.jsonl", classification_records(90))
    return api.train(classify_config(train, tiny_encoder_dir, **{"training.epochs": 2}), workspace=workspace).run


def test_monitor_is_quiet_on_familiar_traffic_and_alerts_on_moved_traffic(workspace, classifier, tiny_encoder_dir, tmp_path):
    client = client_for(workspace)
    familiar = [r["text"] for r in classification_records(60, seed=7)]
    for start in range(0, 60, 15):
        classify(client, classifier.id, familiar[start:start + 15])
    settings = {"embedding_model": str(tiny_encoder_dir), "min_requests": 20, "permutations": 200}

    quiet = api.monitor(classifier.id, since="1h", overrides=settings, workspace=workspace, out=tmp_path / "quiet")
    assert quiet["traffic"]["requests"] == 4 and quiet["traffic"]["texts"] == 60 and quiet["traffic"]["error_rate"] == 0
    assert quiet["traffic"]["latency_ms"]["p95"] > 0
    assert {"length", "vocabulary", "embedding", "labels", "confidence"} <= set(quiet["drift"])
    assert not {a["kind"] for a in quiet["alerts"]} & {"input_length_drift", "vocabulary_drift", "embedding_drift"}, quiet["alerts"]

    moved_since = time.time()
    classify(client, classifier.id, [MOVED[i % 3].format(i) for i in range(60)])
    since = datetime.fromtimestamp(moved_since, timezone.utc).isoformat()  # only the moved traffic
    moved = api.monitor(classifier.id, since=since, overrides=settings, workspace=workspace, out=tmp_path / "moved")
    assert moved["traffic"]["texts"] == 60
    kinds = {a["kind"] for a in moved["alerts"]}
    assert {"input_length_drift", "vocabulary_drift", "embedding_drift"} <= kinds, moved["alerts"]
    assert moved["retrain_recommended"]
    assert "crypto" in moved["drift"]["vocabulary"]["new_words"] or "wallet" in moved["drift"]["vocabulary"]["new_words"]
    page = (tmp_path / "moved" / "report.html").read_text()
    assert "Drift against the training data" in page and "input_length_drift" in page
    assert json.loads((tmp_path / "moved" / "report.json").read_text())["alerts"] == moved["alerts"]


def test_requests_are_logged_with_tokens_and_redacted_text_only_when_opted_in(workspace, tiny_model_dir, chat_file):
    run = api.train(tiny_config(tiny_model_dir, chat_file, "training.max_steps=2"), workspace=workspace).run
    ask = [{"role": "user", "content": "Which colour is item 3? Mail jo@example.com"}]
    with_text = client_for(workspace, content=True)
    answer = with_text.post("/v1/chat/completions", json={"model": run.id, "messages": ask, "max_tokens": 5}).json()
    with with_text.stream("POST", "/v1/chat/completions", json={"model": run.id, "messages": ask, "max_tokens": 5,
                                                                "stream": True}) as streamed:
        assert "[DONE]" in streamed.read().decode()
    assert with_text.post("/v1/chat/completions", json={"model": "no-such-model", "messages": ask}).status_code == 404
    client_for(workspace, content=False).post("/v1/chat/completions", json={"model": run.id, "messages": ask, "max_tokens": 5})

    rows = logged(workspace)
    assert [r.status for r in rows] == [200, 200, 404, 200]
    plain, stream, missing, private = rows
    assert plain.id == answer["id"] and plain.prompt_tokens == answer["usage"]["prompt_tokens"]
    assert plain.completion_tokens == answer["usage"]["completion_tokens"] and plain.latency_ms > 0
    assert plain.input == "Which colour is item 3? Mail <EMAIL>" and "jo@example.com" not in (plain.output or "")
    assert stream.completion_tokens and stream.output is not None
    assert missing.model == "no-such-model" and "does not exist" in missing.error
    assert private.input is None and private.output is None and private.prompt_tokens  # metadata only
    report = api.monitor(run.id, since="1h", workspace=workspace)
    assert report["traffic"]["requests"] == 3 and report["traffic"]["with_content"] == 2
    assert any("--log-content" in note for note in report["notes"])  # too few texts to test drift
    typo = api.monitor(run.id + "x", since="1h", workspace=workspace)
    assert typo["traffic"]["requests"] == 0
    assert any(f"models with traffic: {run.id} (3)" in note for note in typo["notes"]), typo["notes"]


def test_feedback_names_a_logged_classification_and_exports_labels(workspace, classifier):
    client = client_for(workspace)
    result = classify(client, classifier.id, ["where is the parcel please #1", "refund me now #2"])
    made = client.post("/v1/tunesmith/feedback", json={"request_id": f"{result['id']}:1", "label": "refund", "rating": -1})
    assert made.status_code == 200, made.text
    item = made.json()
    assert item["messages"] == [{"role": "user", "content": "refund me now #2"}] and item["model"] == classifier.id
    ambiguous = client.post("/v1/tunesmith/feedback", json={"request_id": result["id"], "rating": 1})
    assert ambiguous.status_code == 400 and ":0" in ambiguous.json()["error"]["message"]
    good = client.post("/v1/tunesmith/feedback", json={"request_id": f"{result['id']}:0", "rating": 1}).json()
    assert good["label"] == result["data"][0]["label"]  # a good rating keeps the predicted label
    for fid in (item["id"], good["id"]):
        client.post(f"/v1/tunesmith/feedback/{fid}", json={"status": "accepted"})
    exported = client.post("/v1/tunesmith/feedback/export").json()
    lines = client.get(f"/v1/files/{exported['files']['classification']['id']}/content").text.splitlines()
    assert sorted(json.loads(line)["text"] for line in lines) == ["refund me now #2", "where is the parcel please #1"]
    assert {"text": "refund me now #2", "label": "refund"} in [json.loads(line) for line in lines]


def test_cli_json_and_exit_code_for_alerting(workspace, classifier, tiny_encoder_dir, tmp_path):
    from typer.testing import CliRunner

    from tunesmith.cli import app

    client = client_for(workspace)
    for i in range(3):
        classify(client, classifier.id, [MOVED[j % 3].format(j) for j in range(i * 20, i * 20 + 20)])
    args = ["monitor", classifier.id, "--since", "1h", "--set", f"embedding_model={tiny_encoder_dir}",
            "--set", "permutations=100", "--json", "-o", str(tmp_path / "cli")]
    plain = CliRunner().invoke(app, args)
    assert plain.exit_code == 0, plain.output
    assert CliRunner().invoke(app, args + ["--fail-on-alert"]).exit_code == 3
    assert CliRunner().invoke(app, ["monitor", classifier.id, "--since", "yesterday"]).exit_code != 0
