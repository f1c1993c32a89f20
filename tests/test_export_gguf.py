"""GGUF, Ollama and GGUF-adapter exports through llama.cpp's own converter, quantiser and runtime.

They need llama-cpp-python (``./scripts/build-llama-cpp.sh``; CI runs them when the build finished
in time) and SmolLM2's tokenizer (llama.cpp's converter knows tokenizers by the hash of their
pre-tokenizer, so the byte-level test tokenizer will not do): the model is a 2-layer random Llama
with SmolLM2's vocabulary, trained in the test for a few steps.
"""
from __future__ import annotations

import json
import shutil

import pytest

import tunesmith
from tests.conftest import chat_records, write_jsonl
from tunesmith.config import load_config
from tunesmith.errors import ParityFailed

pytest.importorskip("llama_cpp")
pytestmark = [pytest.mark.integration, pytest.mark.llama_cpp]


@pytest.fixture(scope="module")
def smol_tiny_dir(tmp_path_factory):
    """A 2-layer random Llama with SmolLM2-135M-Instruct's tokenizer and chat template."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from tunesmith.workspace import Workspace

    home = Workspace(tmp_path_factory.mktemp("smol-home"))
    tunesmith.pull_model("smollm2-135m-instruct", workspace=home, log=lambda m: None)
    tokenizer = AutoTokenizer.from_pretrained(str(home.model_dir("smollm2-135m-instruct")))
    config = AutoConfig.for_model("llama", vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                  max_position_embeddings=1024, tie_word_embeddings=True,
                                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                  bos_token_id=tokenizer.bos_token_id)
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("smol-tiny")
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def converter(tmp_path_factory):
    """llama.cpp's converter, fetched once for the module (a home's tools/ would fetch it per test)."""
    from tunesmith.exports.gguf import converter_dir
    from tunesmith.workspace import Workspace

    return converter_dir(Workspace(tmp_path_factory.mktemp("tools-home")), log=lambda m: None)


@pytest.fixture
def run(smol_tiny_dir, converter, tmp_path, workspace, monkeypatch):
    monkeypatch.setenv("TUNESMITH_LLAMA_CPP_DIR", str(converter))
    train = write_jsonl(tmp_path / "train.jsonl", chat_records(40))
    test = write_jsonl(tmp_path / "test.jsonl", chat_records(10, seed=1))
    config = load_config(None, [f"model={smol_tiny_dir}", f"data.train={train}", f"data.test={test}",
                                "training.max_steps=40", "training.batch_size=4", "training.learning_rate=0.02",
                                "training.eval_steps=100", "lora.r=8"])
    return tunesmith.train(config, workspace=workspace).run


def test_gguf_carries_the_template_and_end_of_turn_and_answers_like_the_trained_model(run, workspace):
    from tunesmith.exports.gguf import read_metadata

    result = tunesmith.export(run.id, "gguf", quant="f16", workspace=workspace, log=lambda m: None)
    out = run.dir / "exports" / "gguf-f16"
    meta = read_metadata(out / "model.f16.gguf")
    assert meta["general.architecture"] == "llama"
    assert "<|im_start|>" in meta["tokenizer.chat_template"]
    report = result["parity"]
    assert report["checks"] == {"gguf_chat_template": None, "gguf_end_of_turn": None}
    assert report["runtime"].startswith("llama.cpp") and report["examples"] == 10
    assert report["identical"] >= 0.9 and report["passed"]
    assert json.loads((out / "parity.json").read_text())["passed"]
    assert "library_name: gguf" in (out / "README.md").read_text()


def test_ollama_modelfile_renders_the_trained_template_and_stops_at_end_of_turn(run, workspace):
    from tunesmith.exports.ollama import read_modelfile

    result = tunesmith.export(run.id, "ollama", quant="q8_0", workspace=workspace, log=lambda m: None)
    out = run.dir / "exports" / "ollama-q8_0"
    modelfile = (out / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model.q8_0.gguf\n")
    assert read_modelfile(modelfile)["stops"] == ["<|im_end|>"]
    assert read_modelfile(modelfile)["system"].startswith("You are a helpful AI assistant named SmolLM")
    assert result["parity"]["checks"]["modelfile_template"] is None
    assert result["parity"]["identical"] >= 0.8


def test_a_q4_k_m_export_goes_through_llama_cpps_quantiser(run, workspace):
    from tunesmith.exports.gguf import read_metadata

    tunesmith.export(run.id, "gguf", quant="q4_k_m", min_identical=0.0, max_drop=1.0, workspace=workspace,
                     log=lambda m: None)
    out = run.dir / "exports" / "gguf-q4_k_m"
    assert read_metadata(out / "model.q4_k_m.gguf")["general.file_type"] == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    assert not list(out.glob("*.tmp"))


def test_the_lora_adapter_alone_as_a_gguf_adapter_on_its_gguf_base(run, workspace):
    result = tunesmith.export(run.id, "gguf-adapter", quant="f16", workspace=workspace, log=lambda m: None)
    out = run.dir / "exports" / "gguf-adapter-f16"
    assert {"base.f16.gguf", "adapter.f16.gguf"} <= {p.name for p in out.iterdir()}
    assert result["parity"]["runtime"].endswith("with the LoRA adapter")
    assert result["parity"]["identical"] >= 0.8


def test_a_wrong_template_carried_into_the_gguf_is_caught(run, workspace, monkeypatch):
    from tunesmith.exports import merged

    real = merged.write_language_model

    def wrong_template(r, ws, dest, log):
        files = real(r, ws, dest, log)
        (dest / "chat_template.jinja").write_text(
            "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
            "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")
        return files

    monkeypatch.setattr(merged, "write_language_model", wrong_template)
    with pytest.raises(ParityFailed) as failed:
        tunesmith.export(run.id, "gguf", quant="f16", workspace=workspace, log=lambda m: None)
    assert failed.value.report["checks"]["gguf_chat_template"]  # named, whatever the answers did
    assert any("gguf_chat_template" in f for f in failed.value.report["failures"])


def test_without_the_converter_on_the_index_the_error_says_what_to_do(run, workspace, monkeypatch, tmp_path):
    monkeypatch.setenv("TUNESMITH_LLAMA_CPP_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(tunesmith.ExportError, match="holds no convert_hf_to_gguf.py"):
        tunesmith.export(run.id, "gguf", workspace=workspace, log=lambda m: None)
    assert not (run.dir / "exports").exists()
    shutil.rmtree(tmp_path / "nowhere", ignore_errors=True)
