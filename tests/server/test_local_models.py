"""`tunesmith serve --model NAME=DIR`: a local language-model directory (an exported merged model)
served under a name, beside what the home holds; bad options refused before the server starts."""
from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from tunesmith.errors import ConfigError
from tunesmith.serving.names import local_directories


def test_an_exported_directory_is_served_by_its_name(tiny_model_dir, workspace):
    from tunesmith.web.app import ServerSettings, create_app

    settings = ServerSettings(require_keys=False, models=local_directories([f"exported={tiny_model_dir}"]))
    client = TestClient(create_app(workspace, settings), raise_server_exceptions=False)
    listed = client.get("/v1/models").json()["data"]
    assert {"id": "exported", "owned_by": "local"}.items() <= next(m for m in listed if m["id"] == "exported").items()
    reply = client.post("/v1/chat/completions", json={"model": "exported", "max_tokens": 5,
                                                      "messages": [{"role": "user", "content": "hi"}]})
    assert reply.status_code == 200, reply.text
    assert reply.json()["model"] == "exported" and reply.json()["usage"]["completion_tokens"] >= 1


@pytest.mark.parametrize("spec, message", [
    ("no-equals-sign", "give NAME=DIR"),
    ("bad name={dir}", "give NAME=DIR"),
    ("x={missing}", "not a Hugging Face model directory"),
    ("x={encoder}", "not a language model"),
])
def test_bad_model_options_are_refused(spec, message, tiny_model_dir, tiny_encoder_dir, tmp_path):
    spec = spec.format(dir=tiny_model_dir, missing=tmp_path / "gone", encoder=_encoder_config(tiny_encoder_dir))
    with pytest.raises(ConfigError, match=message):
        local_directories([spec])


def test_a_name_given_twice_is_refused(tiny_model_dir):
    with pytest.raises(ConfigError, match="given twice"):
        local_directories([f"a={tiny_model_dir}", f"a={tiny_model_dir}"])


def _encoder_config(directory):
    config = json.loads((directory / "config.json").read_text())
    assert not any(a.endswith("ForCausalLM") for a in config.get("architectures") or [])
    return directory
