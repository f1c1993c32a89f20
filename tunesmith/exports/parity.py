"""Export parity: the exported artefact, in the runtime its users will run it in, against the
trained model on the same held-out examples.

Each runtime here uses only that runtime and the exported files — plain transformers for a merged
directory (its own tokenizer, chat template and generation config), llama.cpp for a GGUF (the chat
template and end-of-turn token from the GGUF metadata), llama.cpp with the Modelfile's own
template and stop parameters for an Ollama export — so a wrong template, a missing stop token or
quantisation loss shows up as answers that differ. The report gives each metric for both sides,
the share of identical greedy answers and the examples that differ; it passes when that share
reaches ``min_identical`` and exact match (where the data has final answers) drops by at most
``max_drop``.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from tunesmith.eval import metrics
from tunesmith.eval.generation_eval import EvalItem
from tunesmith.files import write_json_atomic

Conversation = list[dict[str, str]]
MAX_DIFFERENCES = 20


@dataclass(frozen=True)
class Thresholds:
    min_identical: float = 0.95   # share of identical greedy answers
    max_drop: float = 0.02        # exact match (or accuracy) may fall by at most this much


def compare(items: Sequence[EvalItem], trained: Sequence[str], exported: Sequence[str], runtime: str,
            thresholds: Thresholds, data: str, checks: dict[str, Any] | None = None) -> dict[str, Any]:
    """The parity report of generated answers (see the module docstring)."""
    same = [t.strip() == e.strip() for t, e in zip(trained, exported)]
    sides = {"trained": _scores(items, trained), "export": _scores(items, exported)}
    identical = sum(same) / len(same) if same else 0.0
    failures = [f"{identical:.1%} identical greedy answers, below the {thresholds.min_identical:.0%} required"] \
        if identical < thresholds.min_identical else []
    failures += _drops(sides, thresholds.max_drop)
    failures += [f"{name}: {problem}" for name, problem in (checks or {}).items() if problem]
    return {
        "passed": not failures, "failures": failures, "runtime": runtime, "data": data, "examples": len(same),
        "identical": identical, "thresholds": vars(thresholds), "metrics": sides, "checks": checks or {},
        "differences": [{"prompt": it.conversation[-1]["content"], "reference": it.reference, "trained": t,
                         "export": e} for it, t, e, ok in zip(items, trained, exported, same) if not ok][:MAX_DIFFERENCES],
        "created_at": time.time(),
    }


def compare_labels(texts: Sequence[str], gold: Sequence[str] | None, trained: Sequence[str], exported: Sequence[str],
                   runtime: str, thresholds: Thresholds, data: str, max_prob_diff: float) -> dict[str, Any]:
    """The parity report of a classifier: identical labels, accuracy both sides, largest probability gap."""
    same = [t == e for t, e in zip(trained, exported)]
    sides = {side: ({"accuracy": sum(p == g for p, g in zip(preds, gold)) / len(gold)} if gold else {})
             for side, preds in (("trained", trained), ("export", exported))}
    identical = sum(same) / len(same) if same else 0.0
    failures = [f"{identical:.1%} identical labels, below the {thresholds.min_identical:.0%} required"] \
        if identical < thresholds.min_identical else []
    if gold and sides["trained"]["accuracy"] - sides["export"]["accuracy"] > thresholds.max_drop:
        failures.append(f"accuracy fell from {sides['trained']['accuracy']:.3f} to {sides['export']['accuracy']:.3f}")
    return {"passed": not failures, "failures": failures, "runtime": runtime, "data": data, "examples": len(same),
            "identical": identical, "thresholds": vars(thresholds), "metrics": sides,
            "checks": {"max_probability_difference": max_prob_diff},
            "differences": [{"prompt": x, "trained": t, "export": e} for x, t, e, ok
                            in zip(texts, trained, exported, same) if not ok][:MAX_DIFFERENCES],
            "created_at": time.time()}


def _scores(items: Sequence[EvalItem], outputs: Sequence[str]) -> dict[str, float]:
    scores = {"rouge_l": metrics.rouge_l(outputs, [it.reference for it in items])}
    answered = [(o, it.final_answer) for o, it in zip(outputs, items) if it.final_answer is not None]
    if answered:
        scores["exact_match"] = metrics.exact_match(*zip(*answered))
    return scores


def _drops(sides: dict[str, dict[str, float]], max_drop: float) -> list[str]:
    before, after = sides["trained"].get("exact_match"), sides["export"].get("exact_match")
    if before is None or before - after <= max_drop:
        return []
    return [f"exact match fell from {before:.3f} to {after:.3f} (more than {max_drop:.2f})"]


def write_report(dest: Path, report: dict[str, Any]) -> list[str]:
    """parity.json and parity.md in ``dest``; the file names."""
    write_json_atomic(dest / "parity.json", report)
    (dest / "parity.md").write_text(markdown(report))
    return ["parity.json", "parity.md"]


def markdown(report: dict[str, Any]) -> str:
    verdict = "PASSED" if report["passed"] else "FAILED: " + "; ".join(report["failures"])
    lines = [f"# Export parity: {verdict}", "",
             f"{report['examples']} examples of `{report['data']}`, greedy, trained model vs the export in "
             f"{report['runtime']}: **{report['identical']:.1%} identical answers** "
             f"(required: {report['thresholds']['min_identical']:.0%}).", "",
             "| metric | trained | export |", "|---|---|---|"]
    for metric, value in report["metrics"]["trained"].items():
        lines.append(f"| {metric} | {value:.4f} | {report['metrics']['export'].get(metric, float('nan')):.4f} |")
    for name, value in report.get("checks", {}).items():
        lines.append(f"\n- {name}: {value if value not in (None, '') else 'ok'}")
    if report["differences"]:
        lines += ["", f"## Answers that differ ({len(report['differences'])} shown)", ""]
        for d in report["differences"]:
            lines += [f"- **prompt**: {_one_line(d['prompt'])}", f"  - trained: {_one_line(d['trained'])}",
                      f"  - export: {_one_line(d['export'])}"]
    return "\n".join(lines) + "\n"


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + " …"


# ── runtimes: the exported files alone ──────────────────────────────────────────────────────
def merged_answers(model_dir: Path, conversations: Sequence[Conversation], max_new_tokens: int,
                   batch_size: int = 8) -> list[str]:
    """Plain transformers, as a user of the directory would run it: its tokenizer's chat template,
    its generation config's stop tokens, greedy; batches left-padded."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    answers = []
    with torch.inference_mode():
        for start in range(0, len(conversations), batch_size):
            inputs = tokenizer.apply_chat_template(list(conversations[start:start + batch_size]), add_generation_prompt=True,
                                                   return_tensors="pt", return_dict=True, padding=True)
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            answers += [text.strip() for text in tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:],
                                                                        skip_special_tokens=True)]
    return answers


def gguf_chat_answers(gguf_file: Path, conversations: Sequence[Conversation], max_new_tokens: int,
                      context: int) -> list[str]:
    """llama.cpp's chat completion: the template and stop token come from the GGUF's metadata."""
    llm = _llama(gguf_file, context)
    return [llm.create_chat_completion(messages=list(c), temperature=0.0, max_tokens=max_new_tokens, seed=0)
            ["choices"][0]["message"]["content"].strip() for c in conversations]


def gguf_prompt_answers(gguf_file: Path, prompts: Sequence[str], stops: Sequence[str], max_new_tokens: int,
                        context: int, lora: Path | None = None) -> list[str]:
    """llama.cpp's text completion of prompts rendered outside it (the Modelfile's template), with
    the given stop strings — what Ollama does with the Modelfile."""
    llm = _llama(gguf_file, context, lora)
    return [llm.create_completion(p, temperature=0.0, max_tokens=max_new_tokens, stop=list(stops), seed=0)
            ["choices"][0]["text"].strip() for p in prompts]


def _llama(gguf_file: Path, context: int, lora: Path | None = None):
    from llama_cpp import Llama

    return Llama(model_path=str(gguf_file), n_ctx=context, n_threads=os.cpu_count() or 1, seed=0, verbose=False,
                 lora_path=str(lora) if lora else None)


def labels_from_merged(model_dir: Path, texts: Sequence[str], max_length: int, batch_size: int = 64):
    """A merged classifier run through plain transformers (mean pooling as its model card shows it)."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    mean = json.loads((model_dir / "labels.json").read_text()).get("pooling") == "mean"
    rows = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(list(texts[start:start + batch_size]), truncation=True, max_length=max_length,
                              padding=True, return_tensors="pt")
            logits = _mean_pooled_logits(model, batch) if mean else model(**batch).logits
            rows.append(torch.softmax(logits.float(), dim=-1).numpy())
    return np.concatenate(rows), [model.config.id2label[i] for i in range(model.config.num_labels)]


def _mean_pooled_logits(model, batch):
    hidden = model.base_model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
    return model.classifier(pooled)

