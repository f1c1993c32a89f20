"""`tunesmith export`: merged directories, Ollama templates, parity checks and every refusal, on
tiny random models trained in the test (seconds). GGUF through llama.cpp: tests/test_export_gguf.py."""
from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys

import pytest
import yaml

import tunesmith
from tests.conftest import chat_records, classification_records, write_jsonl
from tunesmith.config import load_config
from tunesmith.errors import ExportError, ParityFailed
from tunesmith.exports import ollama

pytestmark = pytest.mark.slow

FAST = ["training.batch_size=4", "training.learning_rate=0.01", "training.eval_steps=50", "training.logging_steps=5",
        "lora.r=8"]


@pytest.fixture
def lora_run(tiny_model_dir, tmp_path, workspace):
    train = write_jsonl(tmp_path / "train.jsonl", chat_records(40))
    test = write_jsonl(tmp_path / "test.jsonl", chat_records(12, seed=1))
    config = load_config(None, [f"model={tiny_model_dir}", f"data.train={train}", f"data.test={test}",
                                "training.max_steps=30", *FAST])
    return tunesmith.train(config, workspace=workspace).run


@pytest.fixture
def classify_run(tiny_encoder_dir, tmp_path, workspace):
    train = write_jsonl(tmp_path / "train.jsonl", classification_records(60))
    test = write_jsonl(tmp_path / "test.jsonl", classification_records(18, seed=1))
    config = load_config(None, ["recipe=classify", f"model={tiny_encoder_dir}", f"data.train={train}",
                                f"data.validation={test}", "training.max_steps=10", "pooling=mean", *FAST[:2]])
    return tunesmith.train(config, workspace=workspace).run


def test_merged_export_loads_in_plain_transformers_and_matches_the_trained_model(lora_run, workspace):
    result = tunesmith.export(lora_run.id, "merged", workspace=workspace, log=lambda m: None)
    out = lora_run.dir / "exports" / "merged"
    assert result["output"] == str(out) and result["parity"]["passed"]
    assert result["parity"]["identical"] == 1.0 and result["parity"]["examples"] == 12
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "chat_template.jinja",
            "parity.json", "parity.md", "README.md"} <= {p.name for p in out.iterdir()}
    from transformers import AutoTokenizer

    end_of_turn = AutoTokenizer.from_pretrained(str(out)).convert_tokens_to_ids("<|im_end|>")
    assert end_of_turn in json.loads((out / "generation_config.json").read_text())["eos_token_id"]
    card = (out / "README.md").read_text()
    assert str(workspace.home) not in card and "More Information Needed" not in card
    assert yaml.safe_load(card.split("---")[1])["library_name"] == "transformers"
    assert not list(out.parent.glob(".*partial*"))


def test_merged_directory_needs_nothing_of_tunesmith(lora_run, workspace):
    tunesmith.export(lora_run.id, "merged", check=False, workspace=workspace, log=lambda m: None)
    out = lora_run.dir / "exports" / "merged"
    script = ("import sys, torch\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
              f"d = {str(out)!r}\nt = AutoTokenizer.from_pretrained(d)\nm = AutoModelForCausalLM.from_pretrained(d)\n"
              "x = t.apply_chat_template([{'role': 'user', 'content': 'Which colour is item 3?'}], "
              "add_generation_prompt=True, return_tensors='pt', return_dict=True)\n"
              "y = m.generate(**x, max_new_tokens=8, do_sample=False)\n"
              "assert not [k for k in sys.modules if k.startswith('tunesmith')]\nprint(y.shape[1] > x['input_ids'].shape[1])\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=out)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "True"


def test_a_wrong_chat_template_in_the_export_fails_parity(lora_run, workspace, monkeypatch):
    from tunesmith.exports import merged

    real = merged.write_language_model

    def wrong_template(run, ws, dest, log):
        files = real(run, ws, dest, log)
        config = json.loads((dest / "tokenizer_config.json").read_text())
        (dest / "chat_template.jinja").write_text(
            "{% for m in messages %}{{ '### ' + m['role'].upper() + ': ' + m['content'] + '\\n' }}{% endfor %}"
            "{% if add_generation_prompt %}{{ '### ANSWER: ' }}{% endif %}")
        (dest / "tokenizer_config.json").write_text(json.dumps(config))
        return files

    monkeypatch.setattr(merged, "write_language_model", wrong_template)
    with pytest.raises(ParityFailed) as failed:
        tunesmith.export(lora_run.id, "merged", workspace=workspace, log=lambda m: None)
    report = failed.value.report
    assert not report["passed"] and report["identical"] < 0.95 and report["differences"]
    kept = lora_run.dir / "exports" / "merged"
    assert json.loads((kept / "parity.json").read_text())["passed"] is False  # kept, for inspection
    assert "parity check **failed**" in (kept / "README.md").read_text().lower()


def test_cli_export_exits_7_when_parity_fails(lora_run, workspace, monkeypatch, capsys):
    from tunesmith.cli import main
    from tunesmith.exports import parity

    monkeypatch.setattr(parity, "merged_answers", lambda d, convs, n: ["something else"] * len(convs))
    monkeypatch.setattr(sys, "argv", ["tunesmith", "export", lora_run.id, "--format", "merged"])
    with pytest.raises(SystemExit) as exited:
        main()
    output = capsys.readouterr()
    assert exited.value.code == 7
    assert "parity: FAILED" in output.err and "Traceback" not in output.err + output.out


@pytest.mark.parametrize("options, message", [
    ({"format": "tarball"}, "unknown export format 'tarball'"),
    ({"format": "gguf", "quant": "q3_xs"}, "unknown quantisation 'q3_xs'"),
    ({"format": "merged", "quant": "q8_0"}, "--quant applies to GGUF exports"),
    ({"format": "onnx"}, "is a language model; onnx is for classifiers"),
])
def test_bad_formats_and_quants_are_refused_before_any_work(lora_run, workspace, options, message):
    with pytest.raises(ExportError, match=message):
        tunesmith.export(lora_run.id, workspace=workspace, log=lambda m: None, **options)
    assert not (lora_run.dir / "exports").exists()


def test_parity_data_that_is_not_chat_is_refused_before_any_work(lora_run, workspace, tmp_path):
    from tunesmith.errors import DataError

    texts = write_jsonl(tmp_path / "texts.jsonl", classification_records(12))
    with pytest.raises(DataError, match="cannot evaluate a chat model"):
        tunesmith.export(lora_run.id, "merged", data=texts, workspace=workspace, log=lambda m: None)
    with pytest.raises(ExportError, match="--data .*: no such file"):
        tunesmith.export(lora_run.id, "merged", data=tmp_path / "gone.jsonl", workspace=workspace, log=lambda m: None)
    assert not (lora_run.dir / "exports").exists()


def test_a_classifier_cannot_become_a_gguf_but_exports_merged_with_its_labels(classify_run, workspace):
    with pytest.raises(ExportError, match="is a classifier; gguf is for language models"):
        tunesmith.export(classify_run.id, "gguf", workspace=workspace, log=lambda m: None)
    result = tunesmith.export(classify_run.id, "merged", workspace=workspace, log=lambda m: None)
    out = classify_run.dir / "exports" / "merged"
    config = json.loads((out / "config.json").read_text())
    assert sorted(config["id2label"].values()) == ["delivery", "login", "refund"]
    assert json.loads((out / "labels.json").read_text())["pooling"] == "mean"
    assert result["parity"]["passed"] and result["parity"]["identical"] == 1.0
    assert result["parity"]["checks"]["max_probability_difference"] < 1e-4  # mean pooling reproduced
    snippet = (out / "README.md").read_text().split("```python\n", 1)[1].split("```", 1)[0]
    assert "mean pooling" in snippet  # the card's own code, run in the export's folder
    done = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, cwd=out)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() in {"delivery", "login", "refund"}


def test_a_classifier_exports_to_onnx_with_its_pooling_and_labels(classify_run, workspace):
    pytest.importorskip("onnxruntime")
    result = tunesmith.export(classify_run.id, "onnx", workspace=workspace, log=lambda m: None)
    out = classify_run.dir / "exports" / "onnx"
    assert (out / "model.onnx").exists() and json.loads((out / "labels.json").read_text())["labels"] == [
        "delivery", "login", "refund"]
    assert result["parity"]["passed"] and result["parity"]["runtime"] == "onnxruntime (CPU)"
    assert result["parity"]["checks"]["max_probability_difference"] < 1e-4
    assert "library_name: onnx" in (out / "README.md").read_text()


def test_an_export_killed_half_way_leaves_only_a_hidden_directory_that_the_next_one_removes(lora_run, workspace, tmp_path):
    out = tmp_path / "exported"
    abandoned = tmp_path / ".exported.partial-999999999"  # no such process
    abandoned.mkdir()
    (abandoned / "model.safetensors").write_bytes(b"half")
    tunesmith.export(lora_run.id, "merged", output=out, check=False, workspace=workspace, log=lambda m: None)
    assert not abandoned.exists() and (out / "model.safetensors").stat().st_size > 4


def test_a_run_without_weights_and_a_run_whose_base_model_is_gone(lora_run, workspace, tiny_model_dir, tmp_path):
    adapter = lora_run.dir / "adapter"
    shutil.move(adapter, tmp_path / "adapter-aside")
    with pytest.raises(ExportError, match="has no trained weights to export"):
        tunesmith.export(lora_run.id, workspace=workspace, log=lambda m: None)
    shutil.move(tmp_path / "adapter-aside", adapter)
    info = json.loads(lora_run.info_path.read_text())
    info["base_model"] = info["base_model_path"] = str(tmp_path / "deleted-base")  # fault 32: base model missing
    lora_run.info_path.write_text(json.dumps(info))
    with pytest.raises(ExportError, match="its base model .* is missing"):
        tunesmith.export(lora_run.id, workspace=workspace, log=lambda m: None)
    assert not (lora_run.dir / "exports").exists()


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device"),
    # what safetensors (Rust) raises on a full disk, seen on a full tmpfs
    "SafetensorError: Error while serializing: I/O error: No space left on device (os error 28)",
])
def test_a_disk_that_fills_up_half_way_leaves_nothing_under_the_output_name(lora_run, workspace, monkeypatch, tmp_path,
                                                                            error):
    import safetensors
    import transformers.modeling_utils

    def full_disk(tensors, filename, *args, **kwargs):
        with open(filename, "wb") as f:
            f.write(b"\0" * 4096)  # half a file, then the disk is full
        raise error if isinstance(error, OSError) else safetensors.SafetensorError(error)

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full_disk)
    out = tmp_path / "exported"
    with pytest.raises(ExportError, match="disk filled up"):
        tunesmith.export(lora_run.id, "merged", output=out, workspace=workspace, log=lambda m: None)
    assert not out.exists() and not list(tmp_path.glob(".exported*"))


def test_an_existing_export_is_replaced_only_with_force(lora_run, workspace, tmp_path):
    out = tmp_path / "exported"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(ExportError, match="already holds an export; give --force"):
        tunesmith.export(lora_run.id, "merged", output=out, check=False, workspace=workspace, log=lambda m: None)
    assert (out / "precious.txt").exists()
    tunesmith.export(lora_run.id, "merged", output=out, check=False, force=True, workspace=workspace, log=lambda m: None)
    assert not (out / "precious.txt").exists() and (out / "model.safetensors").exists()
    assert "parity with the trained model was not measured" in (out / "README.md").read_text().lower()


def test_not_enough_space_is_refused_before_writing(lora_run, workspace, monkeypatch, tmp_path):
    from collections import namedtuple

    from tunesmith.exports import staging

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(staging.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 10**6, 10**6))
    with pytest.raises(ExportError, match="not enough space to export"):
        tunesmith.export(lora_run.id, "merged", output=tmp_path / "x", workspace=workspace, log=lambda m: None)
    assert not (tmp_path / "x").exists()


# ── the Ollama template, measured from the Jinja one ─────────────────────────────────────────
SMOL = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are helpful<|im_end|>\n' }}{% endif %}"
        "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
LLAMA3 = ("{{ '<|begin_of_text|>' }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + "
          "'<|end_header_id|>\n\n' + m['content'] + '<|eot_id|>' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
FOLDED = ("{% for m in messages %}{% if m['role'] == 'system' %}{% set s = m['content'] %}{% else %}"
          "{{ '<start_of_turn>' + m['role'] + '\n' + (s + '\n\n' if s is defined and loop.index == 2 else '') "
          "+ m['content'] + '<end_of_turn>\n' }}{% endif %}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}")
CONVERSATIONS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
    [{"role": "system", "content": "S"}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
     {"role": "user", "content": "c {{ not a template }}"}],
]


def _tokenizer(template):
    from tests.conftest import byte_tokenizer

    tokenizer = byte_tokenizer()
    tokenizer.chat_template = template
    return tokenizer


@pytest.mark.parametrize("template, default_system", [(SMOL, "You are helpful"), (LLAMA3, None)])
def test_the_measured_shape_renders_like_the_jinja_template(template, default_system):
    tokenizer = _tokenizer(template)
    shape = ollama.chat_shape(tokenizer)
    assert shape.default_system == default_system
    assert ollama.check_shape(shape, tokenizer, CONVERSATIONS) == []
    text = ollama.modelfile("model.q8_0.gguf", shape, ["<|im_end|>"])
    assert text.startswith("FROM ./model.q8_0.gguf\n") and 'PARAMETER stop "<|im_end|>"' in text
    assert ollama.read_modelfile(text) == {"system": default_system, "stops": ["<|im_end|>"]}
    assert "{{ .Content }}" not in text and "{{ $m.Content }}" in text


def test_a_template_that_folds_the_system_prompt_into_the_user_turn_is_refused():
    with pytest.raises(ExportError, match="cannot be written as an Ollama TEMPLATE"):
        ollama.chat_shape(_tokenizer(FOLDED))


def test_braces_in_the_template_text_are_escaped_for_go():
    shape = ollama.ChatShape({"system": ("{{", ""), "user": ("", ""), "assistant": ("", "")}, "", "", None)
    assert '{{ "{{" }}' in shape.go_template()
