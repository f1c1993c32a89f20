"""``POST /v1/tunesmith/estimates`` (the web UI's Estimate button): a job's body, answered with
the pre-flight estimate of that job and nothing stored; bad bodies are the same 400s a job
would get, and a second probe while one runs is a 429."""
import pytest
from fastapi.testclient import TestClient

from tests.conftest import chat_records, write_jsonl
from tests.server.test_http import assert_openai_error
from tests.server.test_openai_sdk import home_with_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir):
    from tunesmith.web.app import ServerSettings, create_app

    workspace = home_with_model(tmp_path_factory, tiny_model_dir, "estimate-home")
    client = TestClient(create_app(workspace, ServerSettings(require_keys=False)), raise_server_exceptions=False)
    data = write_jsonl(tmp_path_factory.mktemp("estimate-data") / "train.jsonl", chat_records(24))
    with data.open("rb") as f:
        file_id = client.post("/v1/files", data={"purpose": "fine-tune"}, files={"file": ("train.jsonl", f)}).json()["id"]
    return client, file_id


def job(file_id, **extra):
    return {"model": "tiny-chat", "training_file": file_id,
            "hyperparameters": {"n_epochs": 2, "batch_size": 4}, **extra}


def test_a_job_body_gets_its_estimate_and_no_job_is_created(served):
    client, file_id = served
    response = client.post("/v1/tunesmith/estimates",
                           json=job(file_id, tunesmith={"settings": {"lora": {"r": 4}, "training": {"packing": False}}}))
    assert response.status_code == 200, response.text
    est = response.json()
    assert est["object"] == "tunesmith.estimate" and est["recipe"] == "sft" and est["method"] == "lora"
    assert est["train_examples"] == 24 and est["steps_per_epoch"] == 6 and est["total_steps"] == 12
    assert est["hyperparameters"]["n_epochs"] == 2 and est["epochs"] == pytest.approx(2.0)
    assert est["tokens_per_epoch"] > 0 and est["seconds_per_epoch"] > 0 and est["peak_rss_bytes"] > 50 * 2**20
    assert est["fits"] is True and est["problems"] == [] and est["free_ram_bytes"] > 0
    assert client.get("/v1/fine_tuning/jobs").json()["data"] == []  # an estimate stores nothing


@pytest.mark.parametrize("body, param", [
    ({"model": "no-such-model"}, "model"),
    ({"training_file": "file-nope"}, "training_file"),
    ({"hyperparameters": {"n_epochs": 0}}, "n_epochs"),
    ({"tunesmith": {"settings": {"lora": {"r": -1}}}}, "tunesmith.settings"),
])
def test_a_bad_body_is_the_400_a_job_would_get(served, body, param):
    client, file_id = served
    error = assert_openai_error(client.post("/v1/tunesmith/estimates", json=job(file_id) | body), 400)
    assert param in (error["param"] or "") + error["message"], error


def test_a_second_estimate_while_one_probes_is_a_429(served):
    from tunesmith.jobs import estimates

    client, file_id = served
    with estimates._PROBING:  # as if a probe were running
        response = client.post("/v1/tunesmith/estimates", json=job(file_id))
    error = assert_openai_error(response, 429)
    assert error["code"] == "estimate_in_progress" and response.headers["Retry-After"] == "30"
