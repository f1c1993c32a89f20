"""Take a run anywhere: export it as a merged Hugging Face directory, a GGUF file, an Ollama model,
a GGUF LoRA adapter, or (a classifier) ONNX — each checked against the trained model in its own
runtime, and described by a model card.

Everything is checked before any work (the run has weights, its base model is there, the format
fits the model, the tools are installed, the disk has room); the files are written into a staging
directory that becomes the output only when complete (``staging``); then the parity check runs
(``parity``), its report is written beside the files, and the card is written last. An export
whose parity fails is kept for inspection, and ``ParityFailed`` says so.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tunesmith.config import load_config
from tunesmith.errors import ExportError, ParityFailed
from tunesmith.eval.generation_eval import EvalItem, max_new_tokens_for, read_items
from tunesmith.exports import gguf, merged, ollama, parity
from tunesmith.exports.parity import Thresholds
from tunesmith.exports.staging import check_output, check_space, staged
from tunesmith.models import engine
from tunesmith.models.card import write_model_card
from tunesmith.models.chat import prompt_ids, render, stop_token_ids
from tunesmith.runs import Run, find_run
from tunesmith.training.recipes import recipe_of
from tunesmith.workspace import Workspace

__all__ = ["FORMATS", "QUANTS", "ExportOptions", "Thresholds", "check_choice", "export_run", "formats_for"]

Log = Callable[[str], None]
FORMATS = ("merged", "gguf", "ollama", "gguf-adapter", "onnx")
LANGUAGE_MODEL_FORMATS = ("merged", "gguf", "ollama", "gguf-adapter")
CLASSIFIER_FORMATS = ("merged", "onnx")
GGUF_FORMATS = ("gguf", "ollama", "gguf-adapter")
QUANTS = gguf.QUANTS
DEFAULT_QUANT = "q8_0"


@dataclass(frozen=True)
class ExportOptions:
    format: str = "merged"
    quant: str | None = None                # GGUF formats: f16, q8_0 (default), q4_k_m
    output: Path | None = None              # default: <run>/exports/<format>[-<quant>]
    data: str | Path | None = None          # parity examples; default: the run's evaluation data
    thresholds: Thresholds = Thresholds()
    parity_examples: int | None = 200       # at most this many parity examples (None: all)
    check: bool = True                      # run the parity check (off only when asked)
    force: bool = False                     # replace an existing export at the output


@dataclass
class _Plan:
    run: Run
    options: ExportOptions
    quant: str | None
    output: Path
    classifier: bool
    tools: Path | None = None
    parity_data: Any = None  # what _parity_set / _classifier_texts read, once, before any work


def export_run(ref: str, workspace: Workspace, options: ExportOptions = ExportOptions(), log: Log = print) -> dict[str, Any]:
    """Export run ``ref``; returns what was written and the parity report. Raises ``ExportError``
    before writing anything when the export cannot be made, ``ParityFailed`` after writing it
    when it answers differently from the trained model."""
    plan = _plan(find_run(ref, workspace), workspace, options, log)
    started = time.time()
    with staged(plan.output, options.force) as dest:
        files, report = WRITERS[options.format](plan, workspace, dest, log)
        if report is not None:
            files += parity.write_report(dest, report)
        export = {"format": options.format, "quant": plan.quant, "files": sorted(files), "created_at": time.time()}
        write_model_card(dest, plan.run, workspace, export=export, parity=report)
    result = {**export, "run": plan.run.id, "output": str(plan.output), "seconds": round(time.time() - started, 1),
              "parity": report}
    if report is not None and not report["passed"]:
        raise ParityFailed(f"exported to {plan.output}, but parity FAILED: {'; '.join(report['failures'])}. "
                           f"See {plan.output / 'parity.md'}.", report)
    return result


# ── checks before any work ──────────────────────────────────────────────────────────────────
def _plan(run: Run, workspace: Workspace, options: ExportOptions, log: Log) -> _Plan:
    quant = check_choice(run, options.format, options.quant)
    classifier = not recipe_of(run).generates
    if not run.final_dir.exists():
        status = run.info().get("status", "unknown")
        advice = "its weights were deleted; train it again" if status == "succeeded" else \
            f"finish it first: tunesmith train --resume {run.id}"
        raise ExportError(f"run {run.id} has no trained weights to export (status: {status}; {run.final_dir.name}/ "
                          f"is missing): {advice}")
    output = Path(options.output).expanduser().resolve() if options.output else \
        run.dir / "exports" / (options.format + (f"-{quant}" if quant else ""))
    check_output(output, options.force)
    if options.format != "onnx":
        merged.check_mergeable(run)
    size = merged.weights_bytes(run, workspace)  # also: the base model is still there
    plan = _Plan(run, options, quant, output, classifier)
    if options.check:  # bad --data (or none at all) is found now, not after minutes of merging
        plan.parity_data = _classifier_texts(plan) if classifier else _parity_set(plan, workspace)
    if options.format in GGUF_FORMATS:
        _check_gguf_tools(plan, workspace, log)
    check_space(output, _bytes_needed(options.format, quant, size))
    return plan


def formats_for(run: Run) -> list[str]:
    """The formats this run can be exported as."""
    if not recipe_of(run).generates:
        return list(CLASSIFIER_FORMATS)
    info = run.info()
    adapter = info.get("method") in ("lora", "qlora") and not info.get("start_run")
    return [f for f in LANGUAGE_MODEL_FORMATS if f != "gguf-adapter" or adapter]


def check_choice(run: Run, fmt: str | None, quant: str | None) -> str | None:
    """The quantisation to use for ``fmt`` (None: not a GGUF format), or ``ExportError`` naming the
    option that does not fit this run (``param``: format or quant)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}", "format")
    allowed = formats_for(run)
    if fmt not in allowed:
        raise ExportError(_misfit(run, fmt, allowed), "format")
    if fmt not in GGUF_FORMATS:
        if quant:
            raise ExportError(f"--quant applies to GGUF exports; a {fmt} export is full precision", "quant")
        return None
    chosen = (quant or DEFAULT_QUANT).lower()
    if chosen not in QUANTS:
        raise ExportError(f"unknown quantisation {quant!r}; choose one of {', '.join(QUANTS)}", "quant")
    return chosen


def _misfit(run: Run, fmt: str, allowed: list[str]) -> str:
    info = run.info()
    if not recipe_of(run).generates:
        return (f"run {run.id} is a classifier; {fmt} is for language models (llama.cpp and Ollama generate "
                f"text). Export a classifier as {' or '.join(allowed)}.")
    if fmt in CLASSIFIER_FORMATS:
        return f"run {run.id} is a language model; {fmt} is for classifiers. Choose one of {', '.join(allowed)}."
    if info.get("start_run"):
        return (f"run {run.id} is an adapter on another run's merged weights; export it as gguf (the whole "
                "model), not as an adapter")
    return (f"--format gguf-adapter exports a LoRA adapter; run {run.id} trained {info.get('method')!r}. "
            "Export it as gguf (the whole model) instead.")


def _check_gguf_tools(plan: _Plan, workspace: Workspace, log: Log) -> None:
    if plan.options.check or plan.quant in gguf.QUANTISER_TYPES:
        why = "quantising to " + plan.quant if plan.quant in gguf.QUANTISER_TYPES else \
            "the parity check of a GGUF export (llama.cpp runs it; --no-check skips it)"
        gguf.require_llama_cpp(why)
    plan.tools = gguf.converter_dir(workspace, log)


def _bytes_needed(fmt: str, quant: str | None, weights: int) -> int:
    extra = weights / 4 * gguf.BYTES_PER_WEIGHT["f16" if quant in gguf.QUANTISER_TYPES else quant] if quant else 0
    final = weights / 4 * gguf.BYTES_PER_WEIGHT[quant] if quant in gguf.QUANTISER_TYPES else 0
    return int(weights + extra + final) + 64 * 1024 * 1024


# ── the writers: files into ``dest``, then their parity report ────────────────────────────
def _write_merged(plan: _Plan, workspace: Workspace, dest: Path, log: Log):
    if plan.classifier:
        loaded = merged.write_classifier(plan.run, workspace, dest, log)
        return _files(dest), _classifier_parity(plan, loaded, dest, log) if plan.options.check else None
    files = merged.write_language_model(plan.run, workspace, dest, log)
    if not plan.options.check:
        return files, None
    items, data, max_new = _parity_set(plan, workspace)
    trained = _trained_answers(plan, workspace, items, max_new, log)
    log(f"parity: the merged directory through plain transformers on {len(items)} examples")
    exported = parity.merged_answers(dest, [it.conversation for it in items], max_new)
    return files, parity.compare(items, trained, exported, "transformers (plain, no tunesmith code)",
                                 plan.options.thresholds, data)


def _write_gguf(plan: _Plan, workspace: Workspace, dest: Path, log: Log, with_modelfile: bool = False):
    name = f"model.{plan.quant}.gguf"
    with tempfile.TemporaryDirectory(prefix=".merged-", dir=dest) as tmp:  # inside the staging directory
        merged.write_language_model(plan.run, workspace, Path(tmp), log)
        gguf.convert(Path(tmp), dest / name, plan.quant, plan.tools, log)
    files = [name]
    tokenizer = _tokenizer(plan.run.final_dir)  # the template and stop tokens the run was trained with
    checks = _metadata_checks(dest / name, tokenizer)
    if with_modelfile:
        files.append(_write_modelfile(dest, name, tokenizer))
    if not plan.options.check:
        return files, None
    items, data, max_new = _parity_set(plan, workspace)
    trained = _trained_answers(plan, workspace, items, max_new, log)
    context = _context(tokenizer, items, max_new)
    if with_modelfile:
        return files, _ollama_parity(plan, dest, name, tokenizer, items, trained, data, max_new, context, checks, log)
    log(f"parity: {name} through llama.cpp's chat completion on {len(items)} examples")
    exported = parity.gguf_chat_answers(dest / name, [it.conversation for it in items], max_new, context)
    return files, parity.compare(items, trained, exported, _llama_runtime(), plan.options.thresholds, data, checks)


def _write_ollama(plan: _Plan, workspace: Workspace, dest: Path, log: Log):
    return _write_gguf(plan, workspace, dest, log, with_modelfile=True)


def _write_gguf_adapter(plan: _Plan, workspace: Workspace, dest: Path, log: Log):
    base_dir = Path(engine.base_model_of(plan.run, workspace).path)
    base_name, adapter_name = f"base.{plan.quant}.gguf", "adapter.f16.gguf"
    gguf.convert(base_dir, dest / base_name, plan.quant, plan.tools, log)
    gguf.convert_lora(plan.run.final_dir, base_dir, dest / adapter_name, plan.tools, log)
    files = [base_name, adapter_name]
    if not plan.options.check:
        return files, None
    tokenizer = _tokenizer(plan.run.final_dir)
    items, data, max_new = _parity_set(plan, workspace)
    trained = _trained_answers(plan, workspace, items, max_new, log)
    log(f"parity: {base_name} with {adapter_name} through llama.cpp on {len(items)} examples")
    prompts = [engine_prompt(tokenizer, it.conversation) for it in items]
    stops = [tokenizer.convert_ids_to_tokens(i) for i in stop_token_ids(tokenizer)]
    exported = parity.gguf_prompt_answers(dest / base_name, prompts, stops, max_new,
                                          _context(tokenizer, items, max_new), lora=dest / adapter_name)
    return files, parity.compare(items, trained, exported, _llama_runtime() + " with the LoRA adapter",
                                 plan.options.thresholds, data, _metadata_checks(dest / base_name, tokenizer))


def _write_onnx(plan: _Plan, workspace: Workspace, dest: Path, log: Log):
    from tunesmith.exports import onnx

    loaded = engine.load_classifier(plan.run, workspace)
    files = onnx.export_classifier_onnx(loaded.model, loaded.tokenizer, loaded.labels, loaded.max_length, dest, log)
    if not plan.options.check:
        return files, None

    def predict(texts):
        return onnx.onnx_predict_proba(dest, texts), loaded.labels

    return files, _classifier_parity(plan, loaded, dest, log, predict, "onnxruntime (CPU)")


WRITERS = {"merged": _write_merged, "gguf": _write_gguf, "ollama": _write_ollama,
           "gguf-adapter": _write_gguf_adapter, "onnx": _write_onnx}


# ── parity helpers ──────────────────────────────────────────────────────────────────────────
def _parity_set(plan: _Plan, workspace: Workspace) -> tuple[list[EvalItem], str, int]:
    if plan.parity_data is not None:
        return plan.parity_data
    data = _parity_data(plan)
    items = read_items(data, plan.options.parity_examples)
    return items, Path(data).name, max_new_tokens_for(_tokenizer(plan.run.final_dir), items)


def _parity_data(plan: _Plan) -> Path:
    """--data, else what the run was last evaluated on, else its test split, else its validation split."""
    if plan.options.data:
        path = Path(plan.options.data).expanduser()
        if not path.exists():
            raise ExportError(f"--data {plan.options.data}: no such file")
        return path
    candidates = [_last_eval_data(plan.run)]
    config = load_config(plan.run.config_path)
    candidates += [getattr(config.data, "test", None), getattr(config.data, "validation", None)]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return Path(candidate)
    raise ExportError(f"run {plan.run.id} has no evaluation data to check the export on (its eval, test and "
                      "validation files are gone); give --data FILE, or --no-check to skip the parity check")


def _last_eval_data(run: Run) -> str | None:
    import json

    report = run.eval_dir / "report.json"
    return json.loads(report.read_text()).get("data") if report.exists() else None


def _trained_answers(plan: _Plan, workspace: Workspace, items: list[EvalItem], max_new: int, log: Log) -> list[str]:
    log(f"parity: the trained model's greedy answers to {len(items)} examples (up to {max_new} tokens)")
    loaded = engine.load_run(plan.run, workspace)
    return engine.generate(loaded, [it.conversation for it in items], max_new)


def _classifier_parity(plan: _Plan, loaded, dest: Path, log: Log, predict=None, runtime: str | None = None):
    import numpy as np

    texts, gold, data = _classifier_texts(plan)
    log(f"parity: {len(texts)} texts through the trained classifier and the export")
    if loaded.lexical is not None and loaded.lexical_weight:
        log(f"note: this run mixes a TF-IDF member (weight {loaded.lexical_weight}) into its probabilities; "
            "the export carries the encoder alone, so parity compares the encoder")
    trained_p = loaded.neural_proba(texts)  # what the export computes (the encoder alone)
    export_p, labels = predict(texts) if predict else parity.labels_from_merged(dest, texts, loaded.max_length)
    trained = [loaded.labels[i] for i in trained_p.argmax(1)]
    exported = [labels[i] for i in export_p.argmax(1)]
    gap = float(np.abs(trained_p - export_p).max()) if trained_p.shape == export_p.shape else float("nan")
    return parity.compare_labels(texts, gold, trained, exported, runtime or "transformers (plain, no tunesmith code)",
                                 plan.options.thresholds, data, gap)


def _classifier_texts(plan: _Plan) -> tuple[list[str], list[str], str]:
    from tunesmith.training.classify import read_examples

    if plan.parity_data is not None:
        return plan.parity_data
    data = _parity_data(plan)
    examples = read_examples(data)[:plan.options.parity_examples]
    return [e.text for e in examples], [e.label for e in examples], data.name


def _ollama_parity(plan, dest, name, tokenizer, items, trained, data, max_new, context, checks, log):
    written = ollama.read_modelfile((dest / "Modelfile").read_text())
    shape = ollama.chat_shape(tokenizer)
    conversations = [_with_system(it.conversation, written["system"]) for it in items]
    mismatched = ollama.check_shape(shape, tokenizer, [it.conversation for it in items])
    checks = dict(checks, modelfile_template=(f"renders {len(mismatched)} of {len(items)} conversations "
                                              "differently from the trained chat template") if mismatched else None)
    log(f"parity: {name} with the Modelfile's template and stops through llama.cpp on {len(items)} examples")
    exported = parity.gguf_prompt_answers(dest / name, [shape.render(c) for c in conversations], written["stops"],
                                          max_new, context)
    return parity.compare(items, trained, exported, _llama_runtime() + " with the Modelfile's TEMPLATE and stops",
                          plan.options.thresholds, data, checks)


def _with_system(conversation: list[dict[str, str]], system: str | None) -> list[dict[str, str]]:
    """What Ollama sends the template: the Modelfile's SYSTEM first when the request has none."""
    if system and (not conversation or conversation[0]["role"] != "system"):
        return [{"role": "system", "content": system}] + conversation
    return conversation


def _write_modelfile(dest: Path, gguf_name: str, tokenizer) -> str:
    shape = ollama.chat_shape(tokenizer)
    stops = sorted({tokenizer.convert_ids_to_tokens(i) for i in stop_token_ids(tokenizer)})
    (dest / "Modelfile").write_text(ollama.modelfile(gguf_name, shape, stops))
    return "Modelfile"


def _metadata_checks(gguf_file: Path, tokenizer) -> dict[str, str | None]:
    """The chat template and end-of-turn token as llama.cpp will read them from the file."""
    meta = gguf.read_metadata(gguf_file)
    stops = set(stop_token_ids(tokenizer))
    ends = {meta.get("tokenizer.ggml.eos_token_id"), meta.get("tokenizer.ggml.eot_token_id")} - {None}
    return {
        "gguf_chat_template": None if meta.get("tokenizer.chat_template") == tokenizer.chat_template
        else "the GGUF's tokenizer.chat_template is not the one the run was trained with",
        "gguf_end_of_turn": None if ends & stops else
        f"the GGUF's eos/eot tokens {sorted(ends)} are not the run's end-of-turn tokens {sorted(stops)}",
    }


def _tokenizer(directory: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory))


def engine_prompt(tokenizer, conversation) -> str:
    return render(tokenizer, conversation, add_generation_prompt=True)


def _context(tokenizer, items: list[EvalItem], max_new: int) -> int:
    longest = max(len(prompt_ids(tokenizer, it.conversation)) for it in items)
    return longest + max_new + 16


def _llama_runtime() -> str:
    return f"llama.cpp (llama-cpp-python {gguf.llama_cpp_version()})"


def _files(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir())

