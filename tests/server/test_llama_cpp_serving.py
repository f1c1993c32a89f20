"""`tunesmith serve --engine llama.cpp`: a LoRA run exported to GGUF at its first request (parity
check included) and served by llama.cpp with its GGUF adapter switched per request, over HTTP;
a base model converted once; a run whose export fails its parity check served by transformers.

The model is the 2-layer random Llama with SmolLM2's tokenizer of ``tests/test_export_gguf.py``
(llama.cpp's converter knows tokenizers by their pre-tokenizer hash)."""
from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

import tunesmith
from tests.conftest import chat_records, write_jsonl
from tunesmith.config import load_config
from tunesmith.exports import Thresholds
from tunesmith.models import engine

pytest.importorskip("llama_cpp")
from tests.test_export_gguf import converter, smol_tiny_dir  # noqa: E402,F401 - module fixtures, shared

pytestmark = [pytest.mark.integration, pytest.mark.llama_cpp]
ASK = "Which colour is item 3?"


def _train(smol_tiny_dir, tmp_path, workspace, seed: int):
    train = write_jsonl(tmp_path / f"train{seed}.jsonl", chat_records(40, seed=seed))
    test = write_jsonl(tmp_path / f"test{seed}.jsonl", chat_records(8, seed=seed + 10))
    config = load_config(None, [f"model={smol_tiny_dir}", f"data.train={train}", f"data.test={test}",
                                "training.max_steps=30", "training.batch_size=4", "training.learning_rate=0.02",
                                "training.eval_steps=100", "lora.r=8", f"training.seed={seed}"])
    return tunesmith.train(config, workspace=workspace).run


@pytest.fixture
def served(smol_tiny_dir, converter, tmp_path, workspace, monkeypatch):
    from tunesmith.web.app import ServerSettings, create_app

    monkeypatch.setenv("TUNESMITH_LLAMA_CPP_DIR", str(converter))
    runs = [_train(smol_tiny_dir, tmp_path, workspace, seed) for seed in (1, 2)]
    app = create_app(workspace, ServerSettings(require_keys=False, engine="llama.cpp"))
    app.state.models.gguf.thresholds = Thresholds(min_identical=0.0, max_drop=1.0)  # random weights: any agreement
    return TestClient(app, raise_server_exceptions=False), app.state.models, runs


def _chat(client, model, **extra):
    return client.post("/v1/chat/completions", json={"model": model, "max_tokens": 10, "temperature": 0,
                                                     "messages": [{"role": "user", "content": ASK}], **extra})


def test_runs_are_exported_on_first_use_and_share_one_base_in_llama_cpp(served, workspace):
    client, server, runs = served
    listed = {m["id"]: m["engine"] for m in client.get("/v1/models").json()["data"]}
    assert all(listed[run.id] == "llama.cpp" for run in runs)
    answers = {}
    for run in runs + runs[:1]:  # back to the first: its adapter switched in again
        reply = _chat(client, run.id)
        assert reply.status_code == 200, reply.text
        answers.setdefault(run.id, []).append(reply.json()["choices"][0]["message"]["content"])
    for run in runs:
        export = run.dir / "exports" / "gguf-adapter-q8_0"
        assert {"base.q8_0.gguf", "adapter.f16.gguf", "parity.json", "README.md"} <= {p.name for p in export.iterdir()}
        report = json.loads((export / "parity.json").read_text())
        assert report["runtime"].endswith("with the LoRA adapter")
    assert answers[runs[0].id][0] == answers[runs[0].id][1]
    gguf_slots = [key for key in server.slots if key.startswith("gguf:")]
    assert len(gguf_slots) == 1  # the two exports' base files are the same bytes: one model in memory
    assert len(server.slots[gguf_slots[0]].engine.adapters) == 2


def test_the_llama_cpp_answer_is_the_trained_models_when_parity_is_identical(served, workspace):
    client, server, runs = served
    run = runs[0]
    reply = _chat(client, run.id)
    assert reply.status_code == 200, reply.text
    report = json.loads((run.dir / "exports" / "gguf-adapter-q8_0" / "parity.json").read_text())
    trained = engine.generate(engine.load(run.id, workspace), [[{"role": "user", "content": ASK}]], max_new_tokens=10)[0]
    if report["identical"] == 1.0:  # every parity answer agreed: so must this one (same template, same greedy)
        assert reply.json()["choices"][0]["message"]["content"].strip() == trained.strip()
    usage = reply.json()["usage"]
    assert usage["completion_tokens"] >= 1 and usage["prompt_tokens"] > 5


def test_a_stream_that_disconnects_frees_the_model_and_a_bad_body_is_a_400(served):
    client, server, runs = served
    with client.stream("POST", "/v1/chat/completions", json={
            "model": runs[0].id, "max_tokens": 200, "stream": True,
            "messages": [{"role": "user", "content": ASK}]}) as response:
        assert response.status_code == 200
        next(response.iter_lines())  # one chunk, then the client goes away
    bad = client.post("/v1/chat/completions", json={"model": runs[0].id, "messages": "not a list"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "messages"
    after = _chat(client, runs[0].id)  # the lock was released: the next request is answered
    assert after.status_code == 200, after.text
    status = server.status()
    assert status["admitted"] == 0 and status["generating"] == 0


def test_a_run_whose_export_fails_parity_is_served_by_transformers(served, capsys):
    client, server, runs = served
    server.gguf.thresholds = Thresholds(min_identical=1.01)  # no export can pass
    reply = _chat(client, runs[1].id)
    assert reply.status_code == 200, reply.text
    assert "parity" in server.gguf.refused[runs[1].id]
    assert client.get(f"/v1/models/{runs[1].id}").json()["engine"] == "transformers"
    assert "served through transformers" in capsys.readouterr().err
