"""Exports over HTTP (what the web UI's Export control uses): a bad format or quantisation is a
400 naming ``param`` before any process starts, an unknown run a 404; a real merged export of a
tiny LoRA run runs as `tunesmith export` in the background and comes back in the listing with
its parity verdict; an export's text files are read by listed name only."""
import time

import pytest
from fastapi.testclient import TestClient

import tunesmith
from tests.conftest import classification_records, write_jsonl
from tests.test_export import FAST, lora_run  # noqa: F401 - the fixture, used by name
from tests.training.test_sft import tiny_config
from tunesmith.config import load_config
from tunesmith.jobs import exports
from tunesmith.web.app import ServerSettings, create_app

pytestmark = pytest.mark.slow


@pytest.fixture
def client(workspace):
    return TestClient(create_app(workspace, ServerSettings(require_keys=False)))


@pytest.fixture
def classify_run(tiny_encoder_dir, tmp_path, workspace):
    train = write_jsonl(tmp_path / "train.jsonl", classification_records(30))
    config = load_config(None, ["recipe=classify", f"model={tiny_encoder_dir}", f"data.train={train}",
                                "training.max_steps=2", *FAST[:2]])
    return tunesmith.train(config, workspace=workspace).run


@pytest.fixture
def short_run(tiny_model_dir, chat_file, workspace):
    """A LoRA chat run of two steps: enough for what is refused before (or without) a real export."""
    return tunesmith.train(tiny_config(tiny_model_dir, chat_file, "training.max_steps=2"), workspace=workspace).run


def wait_for_export(client, run_id, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = client.get(f"/v1/tunesmith/runs/{run_id}/exports").json()
        if found["task"]["status"] != "running":
            return found
        time.sleep(0.5)
    raise AssertionError(f"the export of {run_id} is still running")


def error_of(response, status=400):
    assert response.status_code == status, response.text
    return response.json()["error"]


def test_a_merged_export_started_over_http_succeeds_and_is_listed_with_its_parity(client, lora_run):
    url = f"/v1/tunesmith/runs/{lora_run.id}/exports"
    before = client.get(url).json()
    assert before["task"] == {"status": "none"} and before["data"] == []
    assert before["formats"] == ["merged", "gguf", "ollama", "gguf-adapter"] and "q4_k_m" in before["quants"]

    started = client.post(url, json={"format": "merged"})
    assert started.status_code == 200, started.text
    assert started.json()["task"]["status"] == "running" and started.json()["task"]["name"] == "merged"
    assert client.post(url, json={"format": "merged"}).status_code == 409  # one export of a run at a time

    found = wait_for_export(client, lora_run.id)
    task = found["task"]
    assert task["status"] == "succeeded", "\n".join(task["log"])
    assert task["result"]["output"] == str(lora_run.dir / "exports" / "merged") and task["result"]["seconds"] > 0
    [merged] = found["data"]
    assert merged["name"] == "merged" and merged["format"] == "merged" and merged["quant"] is None
    names = {f["name"] for f in merged["files"]}
    assert {"model.safetensors", "config.json", "parity.json", "parity.md", "README.md"} <= names
    assert merged["bytes"] == sum(f["bytes"] for f in merged["files"]) > 0
    parity = merged["parity"]
    assert parity["passed"] is True and parity["identical"] == 1.0 and parity["examples"] == 12
    assert set(parity["metrics"]) == {"trained", "export"} and "transformers" in parity["runtime"]

    report = client.get(f"{url}/merged/parity.md")
    assert report.status_code == 200 and report.text.startswith("# Export parity: PASSED")
    assert report.headers["content-type"].startswith("text/plain")
    assert "library_name: transformers" in client.get(f"{url}/merged/README.md").text

    again = error_of(client.post(url, json={"format": "merged"}), 409)  # there already: replaced only with force
    assert again["param"] == "force" and "already has a merged export" in again["message"]


def test_bad_formats_and_quants_are_400s_naming_param_before_anything_starts(client, short_run, classify_run):
    url = f"/v1/tunesmith/runs/{short_run.id}/exports"
    unknown = error_of(client.post(url, json={"format": "tarball"}))
    assert unknown["param"] == "format" and "unknown export format 'tarball'" in unknown["message"]
    assert error_of(client.post(url, json={"format": "onnx"}))["param"] == "format"  # onnx is for classifiers
    quant = error_of(client.post(url, json={"format": "gguf", "quant": "q3_xs"}))
    assert quant["param"] == "quant" and "unknown quantisation 'q3_xs'" in quant["message"]
    assert error_of(client.post(url, json={"format": "merged", "quant": "q8_0"}))["param"] == "quant"
    assert error_of(client.post(url, json={}))["param"] == "format"  # required
    assert error_of(client.post(url, json={"format": "merged", "force": "yes"}))["param"] == "force"

    classifier_url = f"/v1/tunesmith/runs/{classify_run.id}/exports"
    assert client.get(classifier_url).json()["formats"] == ["merged", "onnx"]
    refused = error_of(client.post(classifier_url, json={"format": "gguf"}))
    assert refused["param"] == "format" and "is a classifier" in refused["message"] and "merged or onnx" in refused["message"]

    for run in (short_run, classify_run):
        assert not (run.dir / "exports").exists()  # no task, no child, no directory
    assert short_run.id not in exports._children and classify_run.id not in exports._children


def test_unknown_runs_unfinished_runs_and_paths_are_refused(client, short_run, workspace, tmp_path):
    assert error_of(client.get("/v1/tunesmith/runs/no-such-run/exports"), 404)["code"] == "run_not_found"
    assert error_of(client.post("/v1/tunesmith/runs/no-such-run/exports", json={"format": "merged"}), 404)
    short_run.update_info(status="interrupted")
    url = f"/v1/tunesmith/runs/{short_run.id}/exports"
    assert error_of(client.post(url, json={"format": "merged"}), 409)["code"] == "invalid_state"
    short_run.update_info(status="succeeded")

    # A directory under exports/ that is listed, and files beside and above it that must stay unreadable.
    (short_run.dir / "exports" / "merged").mkdir(parents=True)
    (short_run.dir / "exports" / "merged" / "parity.md").write_text("# Export parity: PASSED\n")
    (short_run.dir / "exports" / ".merged.partial-1").mkdir()  # one being written: not listed
    assert [e["name"] for e in client.get(url).json()["data"]] == ["merged"]
    assert client.get(f"{url}/merged/parity.md").status_code == 200
    for path in ("..%2Fconfig.yaml/parity.md", "%2E%2E/run.json", ".merged.partial-1/parity.md",
                 "merged/config.json", "merged/..%2F..%2Frun.json", "merged/model.safetensors"):
        response = client.get(f"{url}/{path}")
        assert response.status_code == 404, (path, response.text)
        assert str(workspace.home) not in response.text

    # The child's own checks: a run whose weights are gone fails, and its log says why.
    short_run.final_dir.rename(tmp_path / "weights-aside")
    assert client.post(url, json={"format": "merged", "force": True}).status_code == 200
    task = wait_for_export(client, short_run.id)["task"]
    assert task["status"] == "failed" and task["result"] is None
    assert any("has no trained weights to export" in line for line in task["log"]), task["log"]
