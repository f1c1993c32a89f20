"""Runs and evaluations over HTTP (what the web UI's Runs and Evaluation pages use): every run is
listed, a command-line run is a chat model, `tunesmith eval` runs in the background and its
report and the compare table come back; a file too small to train on is refused at once."""
import time

import pytest
from fastapi.testclient import TestClient

from tests.conftest import chat_records, write_jsonl
from tests.training.test_sft import tiny_config
from tunesmith import api
from tunesmith.web.app import ServerSettings, create_app

pytestmark = pytest.mark.slow


@pytest.fixture
def client(workspace):
    return TestClient(create_app(workspace, ServerSettings(require_keys=False)))


def upload(client, path):
    with open(path, "rb") as f:
        response = client.post("/v1/files", data={"purpose": "fine-tune"}, files={"file": (path.name, f)})
    assert response.status_code == 200, response.text
    return response.json()


def wait_for_evaluation(client, run_id, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = client.get(f"/v1/tunesmith/runs/{run_id}/evaluation").json()
        if found["task"]["status"] != "running":
            return found
        time.sleep(0.5)
    raise AssertionError(f"the evaluation of {run_id} is still running")


def test_a_command_line_run_is_listed_served_evaluated_and_compared(client, workspace, tiny_model_dir, chat_file, tmp_path):
    run = api.train(tiny_config(tiny_model_dir, chat_file, "training.max_steps=4"), workspace=workspace).run

    listed = client.get("/v1/tunesmith/runs").json()["data"]
    assert [r["id"] for r in listed] == [run.id]
    assert listed[0]["job"] is None and listed[0]["status"] == "succeeded" and not listed[0]["evaluated"]
    assert run.id in {m["id"] for m in client.get("/v1/models").json()["data"]}  # the playground can chat with it
    assert client.get(f"/v1/tunesmith/runs/{run.id}").json()["test_data"] is None  # its config names no data.test

    test_file = upload(client, write_jsonl(tmp_path / "held-out.jsonl", chat_records(6, seed=2)))
    started = client.post(f"/v1/tunesmith/runs/{run.id}/evaluation",
                          json={"data_file": test_file["id"], "samples": 2, "baselines": False,
                                "against": [str(tiny_model_dir)]})
    assert started.status_code == 200, started.text
    assert started.json()["task"]["status"] == "running"
    again = client.post(f"/v1/tunesmith/runs/{run.id}/evaluation", json={"data_file": test_file["id"]})
    assert again.status_code == 409  # one evaluation of a run at a time

    found = wait_for_evaluation(client, run.id, timeout=420)  # three systems (the base, --against, the run)
    assert found["task"]["status"] == "succeeded", "\n".join(found["task"]["log"])
    assert found["task"]["data_filename"] == "held-out.jsonl"
    report = found["report"]
    assert report["examples"] == 6 and len(report["samples"]) == 2
    assert set(report["metrics"]) == {"base", f"against:{tiny_model_dir}", "tuned"}  # "against" over HTTP too
    assert [c["other_key"] for c in report["paired"]["comparisons"]] == ["base", f"against:{tiny_model_dir}"]
    page = client.get(f"/v1/tunesmith/runs/{run.id}/evaluation/report.html")
    assert page.status_code == 200 and "Metrics side by side" in page.text and "Which examples changed" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]

    listed = client.get("/v1/tunesmith/runs").json()["data"][0]
    assert listed["evaluated"] and listed["evaluation"]["loss"] == pytest.approx(report["metrics"]["tuned"]["loss"])
    table = client.get("/v1/tunesmith/compare", params={"runs": [run.id]}).json()
    assert table["rows"][0][0] == run.id and "loss" in table["columns"]


def test_evaluation_refuses_unfinished_unknown_and_path_runs(client, workspace, tiny_model_dir, chat_file):
    run = api.train(tiny_config(tiny_model_dir, chat_file, "training.max_steps=2"), workspace=workspace).run
    run.update_info(status="interrupted")
    assert client.post(f"/v1/tunesmith/runs/{run.id}/evaluation", json={}).status_code == 409
    assert client.get("/v1/tunesmith/runs/no-such-run/evaluation").status_code == 404
    assert client.get("/v1/tunesmith/runs/no-such-run/evaluation/report.html").status_code == 404
    run.update_info(status="succeeded")
    bad = client.post(f"/v1/tunesmith/runs/{run.id}/evaluation", json={"samples": -1})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "samples"
    unknown = client.post(f"/v1/tunesmith/runs/{run.id}/evaluation", json={"against": ["no-such-model"]})
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "against"
    assert "unknown model 'no-such-model'" in unknown.json()["error"]["message"]
    assert client.get("/v1/tunesmith/compare").status_code == 400


def test_a_training_file_with_too_few_examples_is_refused_at_creation(client, workspace, tiny_model_dir, tmp_path):
    from tests.server.test_openai_sdk import install_model

    install_model(workspace.home, tiny_model_dir)
    small = client.post("/v1/files/" + upload(client, write_jsonl(tmp_path / "all.jsonl", chat_records(20)))["id"] + "/split",
                        json={"ratios": "0.5,0.25,0.25"}).json()["files"]["test"]
    assert small["status"] == "processed"  # valid as held-out data
    refused = client.post("/v1/fine_tuning/jobs", json={"model": "tiny-chat", "training_file": small["id"]})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["param"] == "training_file" and "5 example(s)" in error["message"] and "at least 10" in error["message"]
    assert client.get("/v1/fine_tuning/jobs").json()["data"] == []  # nothing was created
