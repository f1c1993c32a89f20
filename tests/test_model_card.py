"""The model card (models/card.py): built from a run directory made by hand, so every recipe and
every export is covered in milliseconds; the hooks in training (save_final) and evaluation too."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tunesmith.eval import evaluate as evaluation
from tunesmith.models.card import model_card, scrub_paths, write_model_card
from tunesmith.runs import Run, new_run
from tunesmith.training import steps

SFT_REPORT = {
    "run_id": "x", "base_model": "smollm2-135m-instruct", "data": "build/quickstart/data.test.jsonl", "examples": 48,
    "max_new_tokens": 18, "few_shot": {"shots": 3},
    "metrics": {side: {"loss": loss, "perplexity": 1.5, "rouge_l": 0.5, "bleu": 20.0, "exact_match": em}
                for side, loss, em in (("base", 2.8169, 0.0), ("few_shot", 0.6671, 0.2083), ("tuned", 0.0197, 0.9583))},
    "samples": [], "created_at": 1796130191.0,
}
CLASSIFY_REPORT = {
    "kind": "classification", "run_id": "x", "base_model": "minilm-l6", "data": "/somewhere/else/test.csv",
    "examples": 300, "labels": ["refund", "delivery", "login"],
    "systems": [{"name": "fine-tuned", "kind": "fine-tuned", "examples": 300, "accuracy": 0.9367, "macro_f1": 0.9321,
                 "weighted_f1": 0.9350, "ece": 0.0412},
                {"name": "majority class", "kind": "baseline", "examples": 300, "accuracy": 0.3333, "macro_f1": 0.1667,
                 "weighted_f1": 0.1667}],
    "created_at": 1796130191.0,
}
EXPORT = {"format": "gguf", "quant": "q8_0", "files": ["model.q8_0.gguf"], "created_at": 1796140000.0}
PARITY = {
    "passed": True, "runtime": "llama.cpp (llama-cpp-python 0.3.36)", "examples": 48, "identical": 0.979,
    "threshold": 0.95, "data": "/data/sets/data.test.jsonl",
    "metrics": {"trained": {"exact_match": 0.958, "rouge_l": 0.9}, "export": {"exact_match": 0.9375, "rouge_l": 0.8812}},
    "differences": [{"prompt": f"prompt {i} " + "long " * 100, "trained": "card_arrival", "export": "card | lost"}
                    for i in range(7)],
}


def make_run(workspace, tmp_path: Path, recipe: str = "sft", method: str = "lora", report: dict | None = None) -> Run:
    """A finished run as training leaves it: run.json, config.yaml, summary.json, weights dir."""
    data = tmp_path / "datasets" / "support"
    data.mkdir(parents=True)
    (data / "README.md").write_text("# Support\n\n## Source and licence\n- Licence: **Creative Commons Attribution "
                                    "4.0 International (CC BY 4.0)**, © PolyAI.\n")
    train, validation = data / "train.jsonl", data / "validation.jsonl"
    for f in (train, validation):
        f.write_text("{}\n")
    base = "minilm-l6" if recipe == "classify" else "smollm2-135m-instruct"
    manifest = workspace.model_dir(base) / "tunesmith-model.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"name": base, "licence": "Apache-2.0", "description": "a base model"}))
    run = new_run(workspace, f"{recipe}-card")
    labels = ["refund", "delivery", "login"] if recipe == "classify" else None
    run.update_info(id=run.id, recipe=recipe, method=method, base_model=base,
                    base_model_path=str(workspace.model_dir(base)), data={"train": "a" * 64, "validation": "b" * 64},
                    status="succeeded", created_at=1796129575.0, finished_at=1796130057.0,
                    **({"labels": labels} if labels else {}))
    config = {"recipe": recipe, "model": base, "method": method, "run_name": "card",
              "data": {"train": str(train), "validation": str(validation), "test": str(data / "test.jsonl"),
                       "max_length": 256},
              "lora": {"r": 16, "alpha": 32}, "prompt_learning": {"num_virtual_tokens": 20},
              "training": {"epochs": 1.0, "learning_rate": 0.0005, "seed": 0},
              "tracking": {"tracking_uri": str(tmp_path / "mlruns")}}
    run.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    run.summary_path.write_text(json.dumps({
        "global_step": 59, "epochs": 1.0, "train_examples": 384, "validation_examples": 48, "train_seconds": 478.1,
        "best_eval_loss": 0.08366, "trainable_parameters": 4884480, "total_parameters": 139399488,
        "final_dir": str(run.dir / "adapter"), **({"labels": 3} if labels else {})}))
    (run.dir / ("model" if method == "full" else "adapter")).mkdir()
    if report:
        run.eval_dir.mkdir()
        (run.eval_dir / "report.json").write_text(json.dumps(report | {"run_id": run.id}))
    return run


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def assert_readable_and_path_free(card: str, tmp_path: Path) -> None:
    assert "More Information Needed" not in card
    for secret in (str(tmp_path), str(Path.home()), "/root", str(Path(__file__).resolve().parents[1])):
        assert secret not in card
    # No token that starts with "/" and goes on like a path ("/a/b", "/tmp"); "/" alone is prose.
    assert not re.findall(r"(?<![\w:/.<-])~?/[\w.-]+", card), re.findall(r"(?<![\w:/.<-])~?/[\w.-]+", card)


def test_sft_card_with_its_evaluation(workspace, tmp_path):
    run = make_run(workspace, tmp_path, report=SFT_REPORT)
    card = model_card(run, workspace)
    meta = front_matter(card)
    assert meta == {"license": "apache-2.0", "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct", "library_name": "peft",
                    "pipeline_tag": "text-generation", "tags": ["tunesmith", "sft", "lora"]}
    assert "| exact match | 0.0% | 20.8% | 95.8% |" in card
    assert "| loss (answer tokens) | 2.8169 | 0.6671 | 0.0197 |" in card
    assert "`data.test.jsonl` (48 held-out examples)" in card
    assert "| train | `train.jsonl` | 384 | `" + "a" * 64 + "` | CC BY 4.0 |" in card
    assert "| validation | `validation.jsonl` | 48 | `" + "b" * 64 + "` | CC BY 4.0 |" in card
    assert "| trainable parameters | 4,884,480 of 139,399,488 (3.50%) |" in card
    assert "PeftModel.from_pretrained" in card and "tunesmith models pull smollm2-135m-instruct" in card
    assert "prompt_learning" not in card and "tracking" not in card  # settings that do not apply, or do not shape weights
    assert_readable_and_path_free(card, tmp_path)


def test_sft_card_before_any_evaluation(workspace, tmp_path):
    run = make_run(workspace, tmp_path)
    card = model_card(run, workspace)
    assert f"Not evaluated yet: run `tunesmith eval {run.id}`." in card
    assert "not evaluated on held-out data yet" in card
    assert_readable_and_path_free(card, tmp_path)


def test_classify_card_names_its_labels_and_systems(workspace, tmp_path):
    run = make_run(workspace, tmp_path, recipe="classify", method="full", report=CLASSIFY_REPORT)
    card = model_card(run, workspace)
    meta = front_matter(card)
    assert meta["pipeline_tag"] == "text-classification"
    assert meta["library_name"] == "transformers" and meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["tags"] == ["tunesmith", "classify", "full"]
    assert "| fine-tuned | 300 | 93.67% | 0.9321 | 0.9350 | 0.0412 |" in card
    assert "| majority class | 300 | 33.33% | 0.1667 | 0.1667 | – |" in card
    assert "only knows its 3 labels" in card and "`refund`, `delivery`, `login`" in card
    assert "tunesmith predict" in card
    assert "lora:" not in card  # a full fine-tune has no LoRA settings
    assert_readable_and_path_free(card, tmp_path)


def test_export_card_shows_parity_and_at_most_five_differences(workspace, tmp_path):
    run = make_run(workspace, tmp_path, report=SFT_REPORT)
    (tmp_path / "export").mkdir()
    path = write_model_card(tmp_path / "export", run, workspace, export=EXPORT, parity=PARITY)
    card = path.read_text()
    assert path == tmp_path / "export" / "README.md"
    assert not [p for p in path.parent.iterdir() if p.name != "README.md"]  # no temp file left behind
    meta = front_matter(card)
    assert meta["library_name"] == "gguf" and "gguf" in meta["tags"] and "q8_0" in meta["tags"]
    assert "Parity check **passed**" in card and "llama.cpp (llama-cpp-python 0.3.36)" in card
    assert "97.9% of 48 answers" in card and "threshold 95.0%" in card
    assert "| exact_match | 0.958 | 0.9375 |" in card
    assert "Answers that differ (5 of 7):" in card
    assert "prompt 4" in card and "prompt 5" not in card
    assert "card \\| lost" in card  # a pipe inside a cell does not break the table
    assert max(len(line) for line in card.splitlines() if line.startswith("| prompt")) < 400
    assert "llama-cli -m model.q8_0.gguf" in card
    assert_readable_and_path_free(card, tmp_path)


def test_failed_parity_and_an_ollama_export(workspace, tmp_path):
    run = make_run(workspace, tmp_path)
    export = {"format": "ollama", "quant": None, "files": ["model.gguf", "Modelfile"], "created_at": 1796140000.0}
    card = model_card(run, workspace, export=export, parity=PARITY | {"passed": False, "identical": 0.5})
    assert "Parity check **failed**" in card and "50.0% of 48" in card
    assert f"ollama create {run.id} -f Modelfile" in card
    assert front_matter(card)["library_name"] == "gguf"


def test_classifier_onnx_export_with_the_export_module_s_parity_shape(workspace, tmp_path):
    run = make_run(workspace, tmp_path, recipe="classify", method="full", report=CLASSIFY_REPORT)
    export = {"format": "onnx", "quant": None, "files": ["labels.json", "model.onnx", "tokenizer.json"],
              "created_at": 1796140000.0}
    parity = {"passed": False, "failures": ["91.0% identical labels, below the 95% required"], "runtime": "onnxruntime",
              "data": str(tmp_path / "test.csv"), "examples": 100, "identical": 0.91,
              "thresholds": {"min_identical": 0.95, "max_drop": 0.02}, "metrics": {"trained": {}, "export": {}},
              "differences": [{"prompt": "where is my parcel", "trained": "delivery", "export": "refund"}]}
    card = model_card(run, workspace, export=export, parity=parity)
    assert front_matter(card)["library_name"] == "onnx" and "onnx" in front_matter(card)["tags"]
    assert "threshold 95.0%" in card and "- 91.0% identical labels, below the 95% required" in card
    assert 'onnxruntime.InferenceSession("model.onnx")' in card and "labels.json" in card
    assert "| where is my parcel | delivery | refund |" in card
    assert_readable_and_path_free(card, tmp_path)


def test_a_local_base_model_is_named_by_its_directory_and_its_card_licence(workspace, tmp_path):
    run = make_run(workspace, tmp_path)
    local = tmp_path / "models" / "my-base"
    local.mkdir(parents=True)
    (local / "README.md").write_text("---\nlicense: mit\n---\n# my base\n")
    run.update_info(base_model=str(local), base_model_path=str(local))
    card = model_card(run, workspace)
    assert front_matter(card)["base_model"] == "my-base"
    assert front_matter(card)["license"] == "mit"
    assert_readable_and_path_free(card, tmp_path)


def test_scrub_paths_leaves_urls_fractions_and_tags_alone():
    assert scrub_paths("see https://huggingface.co/a/b, 1/2 and </s>") == "see https://huggingface.co/a/b, 1/2 and </s>"
    assert scrub_paths("`/root/.cache/tunesmith/runs/x/adapter`") == "`adapter`"


# ── the hooks ────────────────────────────────────────────────────────────────────────────────


class FakeTrainer:
    """What save_final asks of transformers' Trainer: save_model, which (through peft) writes the
    adapter and peft's empty card."""

    def save_model(self, directory: str) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / "adapter_model.safetensors").write_bytes(b"weights")
        (Path(directory) / "README.md").write_text("## Model Details\n[More Information Needed]\n" * 39)
        (Path(directory) / "training_args.bin").write_bytes(b"pickle")


class FakeTokenizer:
    def save_pretrained(self, directory: str) -> None:
        (Path(directory) / "tokenizer.json").write_text("{}")


def test_save_final_replaces_peft_template_with_the_card(workspace, tmp_path):
    run = make_run(workspace, tmp_path)
    final = steps.save_final(FakeTrainer(), FakeTokenizer(), run, "lora")
    card = (final / "README.md").read_text()
    assert final == run.dir / "adapter"
    assert front_matter(card)["library_name"] == "peft"
    assert_readable_and_path_free(card, tmp_path)
    assert not (run.dir / ".adapter.tmp").exists()


def test_evaluation_refreshes_the_card_and_a_failed_card_is_only_a_warning(workspace, tmp_path, monkeypatch):
    run = make_run(workspace, tmp_path)
    write_model_card(run.final_dir, run, workspace)
    assert "Not evaluated yet" in (run.final_dir / "README.md").read_text()
    run.eval_dir.mkdir()
    (run.eval_dir / "report.json").write_text(json.dumps(SFT_REPORT))
    evaluation.refresh_card(run, workspace, log=pytest.fail)
    assert "| exact match | 0.0% | 20.8% | 95.8% |" in (run.final_dir / "README.md").read_text()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(evaluation, "write_model_card", broken)
    said = []
    evaluation.refresh_card(run, workspace, log=said.append)
    assert said == ["warning: the model card in adapter/ was not updated: OSError: disk full"]
