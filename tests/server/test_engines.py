"""`tunesmith serve --engine ... --max-batch N`: which engine serves each model, refusals of the
engines this machine cannot run, and concurrent requests for different fine-tunes of one base
answered in one batch, each as that fine-tune alone would answer."""
from __future__ import annotations

import sys
import threading

import pytest
from fastapi.testclient import TestClient

import tunesmith
from tests.training.test_sft import tiny_config
from tunesmith.errors import ConfigError
from tunesmith.models import engine
from tunesmith.serving import engines

PARAMS = {"max_tokens": 8, "temperature": 0, "top_p": 1, "n": 1, "stop": None, "seed": None}
ASK = [{"role": "user", "content": "Which colour is item 2?"}]


def _server(workspace, **kwargs):
    from tunesmith.jobs.db import Database
    from tunesmith.jobs.served_models import JobModels
    from tunesmith.serving.model_server import ModelServer

    return ModelServer(workspace, JobModels(workspace, Database.for_workspace(workspace)), **kwargs)


def test_models_list_names_the_engine_of_each_model(tiny_model_dir, workspace):
    from tunesmith.serving.names import local_directories
    from tunesmith.web.app import ServerSettings, create_app

    settings = ServerSettings(require_keys=False, models=local_directories([f"local={tiny_model_dir}"]))
    client = TestClient(create_app(workspace, settings), raise_server_exceptions=False)
    listed = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert listed["local"]["engine"] == "transformers"
    assert client.get("/v1/models/local").json()["engine"] == "transformers"


def test_an_engine_this_machine_cannot_run_is_refused_before_serving(workspace, monkeypatch):
    monkeypatch.setattr(engines, "cuda_available", lambda: False)
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        _server(workspace, engine="vllm")
    monkeypatch.setattr(engines, "llama_cpp_installed", lambda: False)
    with pytest.raises(ConfigError, match="llama-cpp-python"):
        _server(workspace, engine="llama.cpp")
    with pytest.raises(ConfigError, match="choose one of auto, transformers, llama.cpp, vllm"):
        _server(workspace, engine="onnx")


def test_the_cli_refuses_vllm_on_a_cpu_with_a_message_not_a_traceback(monkeypatch, capsys):
    from tunesmith.cli import main

    monkeypatch.setattr(engines, "cuda_available", lambda: False)
    monkeypatch.setattr(sys, "argv", ["tunesmith", "serve", "--engine", "vllm", "--insecure-no-keys", "--workers", "0"])
    with pytest.raises(SystemExit) as stopped:
        main()
    err = capsys.readouterr().err
    assert stopped.value.code not in (0, None)
    assert "needs a CUDA GPU" in err and "Traceback" not in err


def test_auto_without_a_gguf_or_a_gpu_serves_through_transformers(tiny_model_dir, workspace, monkeypatch):
    from tunesmith.serving.names import Target

    monkeypatch.setattr(engines, "cuda_available", lambda: False)
    server = _server(workspace, engine="auto")
    assert server.engine_of(Target("local", str(tiny_model_dir), owned_by="local")) == "transformers"


def test_fine_tunes_of_one_base_requested_at_once_share_a_batch(tiny_model_dir, chat_file, workspace):
    from tunesmith.models.batching import BatchingEngine
    from tunesmith.serving.names import Target

    runs = [tunesmith.train(tiny_config(tiny_model_dir, chat_file, "training.max_steps=6", f"training.seed={seed}",
                                        "training.learning_rate=0.05"), workspace=workspace).run for seed in (1, 2)]
    server = _server(workspace, max_batch=8)
    targets = [Target(run.id, str(tiny_model_dir), adapter_dir=run.final_dir) for run in runs]
    targets.append(Target("base", str(tiny_model_dir)))
    server.targets = lambda fresh=False: targets
    alone = {run.id: engine.generate(engine.load(run.id, workspace), [ASK], max_new_tokens=8)[0] for run in runs}
    alone["base"] = engine.generate(engine.load(str(tiny_model_dir), workspace), [ASK], max_new_tokens=8)[0]

    seen, real = [], BatchingEngine._forward

    def recording(self, rows, **inputs):
        seen.append({r.adapter.key if r.adapter else None for r in rows})
        return real(self, rows, **inputs)

    BatchingEngine._forward = recording
    try:
        answers, start = {}, threading.Barrier(6)

        def ask(name, i):
            start.wait()
            answers[(name, i)] = server.complete(name, ASK, None, PARAMS)["texts"][0]

        threads = [threading.Thread(target=ask, args=(t.name, i)) for t in targets for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        BatchingEngine._forward = real
    assert max(len(names) for names in seen) == 3  # two adapters and the base in one forward
    for (name, _), text in answers.items():
        assert text.strip() == alone[name].strip(), name
    assert len(server.slots) == 1 and server.status()["adapters_loaded"] == 2
    assert server.status()["generating"] == 0 and server.status()["admitted"] == 0


def test_under_auto_a_request_for_logprobs_is_scored_by_transformers_where_llama_cpp_generates(
        tiny_model_dir, workspace, monkeypatch):
    """lm-eval's local-completions against a plain `tunesmith serve`: llama.cpp keeps generating,
    the request that asks for token log-probabilities goes to a transformers copy of the model;
    an engine chosen by name is kept (and refuses the request: a 400 naming logprobs)."""
    from tunesmith.errors import APIError
    from tunesmith.serving import model_server

    class FakeLlama:  # what the llama.cpp engine offers: generation, no scoring
        def __init__(self, tokenizer):
            self.tokenizer, self.context_length, self.model = tokenizer, 2048, None

    tokenizer = engine.load_model(engine.resolve_model(str(tiny_model_dir), workspace)).tokenizer
    monkeypatch.setattr(model_server, "llama_cpp_installed", lambda: True)
    monkeypatch.setattr(engines, "llama_cpp_installed", lambda: True)
    for name in ("auto", "llama.cpp"):
        server = _server(workspace, engine=name, directories={"local": tiny_model_dir})
        llama = model_server.BaseSlot(FakeLlama(tokenizer))
        monkeypatch.setattr(server.gguf, "found", lambda target: "model.gguf")
        monkeypatch.setattr(server.gguf, "servable", lambda target: True)
        monkeypatch.setattr(server, "_llama_slot", lambda target: (llama, None))
        target = server.resolve("local")
        assert server.engine_of(target) == "llama.cpp" and server.acquire(target)[0] is llama
        scoring = {**PARAMS, "max_tokens": 0, "echo": True, "logprobs": 1}
        if name == "auto":
            assert server.acquire(target, scoring=True)[0] is not llama
            result = server.complete("local", None, "Which colour is item 2?", scoring)
            assert result["logprobs"][0]["token_logprobs"][0] is None and len(result["logprobs"][0]["tokens"]) > 2
        else:
            assert server.acquire(target, scoring=True)[0] is llama
            with pytest.raises(APIError) as refused:
                server.complete("local", None, "Which colour is item 2?", scoring)
            assert refused.value.param == "logprobs" and "--engine transformers" in str(refused.value)
