"""Distillations over HTTP: started on an uploaded prompts file, polled until the child ends,
its failure in the log; the teacher's key never written to disk; unknown ids and files refused."""
from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from tests.conftest import write_jsonl
from tunesmith.web.app import ServerSettings, create_app


@pytest.fixture
def client(workspace):
    return TestClient(create_app(workspace, ServerSettings(require_keys=False)))


def test_a_distillation_is_started_polled_and_its_failure_told(client, workspace, tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"q{i}"} for i in range(12)])
    with open(prompts, "rb") as f:
        file_id = client.post("/v1/files", data={"purpose": "fine-tune"}, files={"file": ("p.jsonl", f)}).json()["id"]
    started = client.post("/v1/tunesmith/distillations",
                          json={"teacher": "no-such-teacher", "prompts_file": file_id, "teacher_api_key": "sk-secret"})
    assert started.status_code == 200, started.text
    distillation = started.json()
    assert distillation["task"]["status"] == "running"
    deadline = time.time() + 120
    while distillation["task"]["status"] == "running" and time.time() < deadline:
        time.sleep(0.5)
        distillation = client.get(f"/v1/tunesmith/distillations/{distillation['id']}").json()
    assert distillation["task"]["status"] == "failed" and distillation["report"] is None
    assert any("no-such-teacher" in line for line in distillation["task"]["log"])
    directory = workspace.home / "distill" / distillation["id"]
    assert "sk-secret" not in (directory / "task.json").read_text()
    assert [d["id"] for d in client.get("/v1/tunesmith/distillations").json()["data"]] == [distillation["id"]]


def test_unknown_ids_and_files_are_refused(client):
    assert client.get("/v1/tunesmith/distillations/nope").status_code == 404
    assert client.post("/v1/tunesmith/distillations", json={"teacher": "t", "prompts_file": "file-nope"}).status_code == 404
    bad = client.post("/v1/tunesmith/distillations", json={"teacher": "t", "prompts_file": "f", "held_out": "x"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "held_out"
