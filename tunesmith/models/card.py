"""Model cards: the ``README.md`` beside a run's weights and beside every export, in the form the
Hugging Face Hub reads (YAML front matter, then Markdown).

    write_model_card(run.final_dir, run, workspace)                       # adapter/ or model/
    write_model_card(out_dir, run, workspace, export={...}, parity={...})  # an export

The card is built only from files the run left behind — ``run.json``, ``config.yaml``,
``summary.json``, ``eval/report.json`` — and the base model's manifest, so it can be rewritten
at any time (after training, after each evaluation, for each export) and says the same for the
same files. It replaces peft's template, whose 39 "[More Information Needed]" said nothing.

Invariant: **no absolute path reaches the card.** A card travels with the weights, to other
machines and to the Hub; where the training machine kept its home, data and models is nobody's
business there (and names its user). Paths are cut to their last component where they are read
(``_name``), and the finished text goes through ``scrub_paths`` once more, so a path inside a
sample answer or a config value we did not foresee is cut too.

This module sits below training/ and eval/ (pyproject's import-linter layers): it reads the
recipe's name from run.json and the evaluation report as a plain JSON file, and copies the few
metric labels of eval/report.py rather than importing them.
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tunesmith.catalog import BUILTIN_MODELS
from tunesmith.files import write_atomic
from tunesmith.models.pull import MANIFEST
from tunesmith.reports import markdown_table
from tunesmith.runs import Run
from tunesmith.workspace import Workspace, is_safe_name

CARD = "README.md"
GGUF_FORMATS = ("gguf", "ollama", "gguf-adapter")
NOT_RECORDED = "not recorded"
MAX_DIFFERENCES = 5   # differing parity examples shown
MAX_TEXT = 160        # characters of one prompt or answer in a table cell

METHODS = {
    "lora": "LoRA adapter", "dora": "DoRA adapter (weight-decomposed LoRA)", "ia3": "IA³ adapter (learned rescaling vectors)",
    "qlora": "QLoRA adapter (LoRA trained over a 4-bit base)", "prompt_tuning": "prompt-tuning adapter (learned virtual tokens)",
    "prefix_tuning": "prefix-tuning adapter (learned keys and values in every layer)", "full": "full fine-tune (every weight trained)",
}
RECIPES = {
    "sft": "supervised fine-tuning on example conversations",
    "classify": "text classification through a new head over the base model",
    "dpo": "preference tuning on chosen / rejected answer pairs",
}
# The licence ids the Hub lists (https://huggingface.co/docs/hub/repositories-licenses) that our
# sources name; anything else is `other` with its own `license_name`.
HUB_LICENCES = {"apache-2.0", "mit", "cc0-1.0", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "cc-by-nc-sa-4.0",
                "cc-by-3.0", "cc-by-sa-3.0", "bsd-3-clause", "bsd-2-clause", "gpl-3.0", "lgpl-3.0", "mpl-2.0",
                "odc-by", "odbl", "gemma", "llama2", "llama3", "llama3.1", "llama3.2", "openrail", "unknown"}
HUB_ALIASES = {"gemma terms of use": "gemma", "cc0": "cc0-1.0", "apache 2.0": "apache-2.0", "apache license 2.0": "apache-2.0",
               "mit license": "mit"}
# Licences a data README states in words; the first match in a file is taken.
LICENCE_PATTERNS = [
    re.compile(r"\bCC[ -]BY(?:[ -](?:NC|SA|ND))*[ -]\d\.\d\b", re.I),
    re.compile(r"\bCC0(?:[ -]1\.0)?\b", re.I),
    re.compile(r"\bApache(?: License)?,?[ -](?:Version )?2\.0\b", re.I),
    re.compile(r"\bMIT Licen[cs]e\b", re.I),
    re.compile(r"\b(?:ODC-By|ODbL|CDLA-(?:Permissive|Sharing)-\d\.\d|BSD-[23]-Clause)\b", re.I),
    re.compile(r"^licen[cs]e:\s*([\w.+-]+)\s*$", re.I | re.M),  # a card's own front matter
]
# An absolute path (or ~/path) that is not part of a URL: kept only as its last component.
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~\\<-])~?/(?:[^\s/`'\"|()<>\[\]{},;]+/)*([^\s/`'\"|()<>\[\]{},;]*)")


def write_model_card(dest_dir: Path, run: Run, workspace: Workspace, *, export: dict | None = None,
                     parity: dict | None = None) -> Path:
    """Write dest_dir/README.md (atomically: temp file + os.replace) and return its path."""
    return write_atomic(Path(dest_dir) / CARD, model_card(run, workspace, export=export, parity=parity))


def model_card(run: Run, workspace: Workspace, *, export: dict | None = None, parity: dict | None = None) -> str:
    """The card's text: front matter, then one section per question a reader has."""
    facts = _facts(run, workspace)
    sections = [_about(facts, export), _base_section(facts), _data_section(facts), _procedure_section(facts),
                _evaluation_section(facts)]
    if export or parity:
        sections.append(_export_section(export, parity))
    sections += [_usage_section(facts, export), _intended_use_section(facts), _limitations_section(facts, export)]
    body = "\n\n".join("\n".join(lines) for lines in sections)
    return scrub_paths(f"---\n{yaml.safe_dump(_front_matter(facts, export), sort_keys=False)}---\n\n{body}\n")


def scrub_paths(text: str) -> str:
    """Every absolute path cut to its last component; URLs and relative paths are left alone.

    >>> scrub_paths("data /home/ann/x/train.jsonl, see https://example.org/a/b and ~/m/base")
    'data train.jsonl, see https://example.org/a/b and base'
    """
    return ABSOLUTE_PATH.sub(lambda m: m.group(1) or "/", text)


# ── what the run left behind ──────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Base:
    name: str             # never a path: a built-in or pulled name, a hub id, or a directory's name
    licence: str | None
    description: str
    via: tuple[str, ...]  # the runs it went through first (a dpo run that starts from an sft run)


@dataclass(frozen=True)
class Facts:
    run: Run
    info: dict[str, Any]
    config: dict[str, Any]
    summary: dict[str, Any]
    report: dict[str, Any] | None
    base: Base

    @property
    def recipe(self) -> str:
        return self.info.get("recipe") or "sft"  # runs from before recipes were recorded are sft

    @property
    def method(self) -> str:
        return self.info.get("method") or self.config.get("method") or "lora"

    @property
    def is_adapter(self) -> bool:
        return self.method != "full"

    @property
    def labels(self) -> list[str]:
        return list(self.info.get("labels") or [])


def _facts(run: Run, workspace: Workspace) -> Facts:
    config = yaml.safe_load(run.config_path.read_text()) if run.config_path.exists() else {}
    report_path = run.eval_dir / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    info = run.info()
    return Facts(run, info, config or {}, run.summary(), report, _base(info, workspace))


def _base(info: dict[str, Any], workspace: Workspace) -> Base:
    """The model the run started from, followed through any runs it started from in turn."""
    name, path, via = str(info.get("base_model") or "unknown"), info.get("base_model_path"), []
    while is_safe_name(name) and (workspace.run_dir(name) / "run.json").exists() and len(via) < 8:
        via.append(name)
        upstream = Run(workspace.run_dir(name)).info()
        name, path = str(upstream.get("base_model") or "unknown"), upstream.get("base_model_path")
    manifest_path = workspace.model_dir(name) / MANIFEST if is_safe_name(name) else None
    manifest = json.loads(manifest_path.read_text()) if manifest_path and manifest_path.exists() else {}
    spec = BUILTIN_MODELS.get(name)
    licence = manifest.get("licence") or (spec.licence if spec else None) or _stated_licence(path)
    description = (manifest.get("description") or (spec.description if spec else "")).removesuffix(" (default)")
    return Base(_name(name), licence, description, tuple(via))


def _stated_licence(model_dir: str | None) -> str | None:
    """The licence a local model directory's own card states in its front matter."""
    card = Path(model_dir) / CARD if model_dir else None
    if not card or not card.is_file():
        return None
    found = LICENCE_PATTERNS[-1].search(card.read_text(errors="replace"))
    return found.group(1) if found else None


def _name(path_or_name: str) -> str:
    """A path's last component; a name or hub id (``org/model``) as it is."""
    text = str(path_or_name)
    return Path(text).name if text.startswith(("/", "~")) or os.path.isabs(text) else text


def _file(path: str | None) -> str:
    """A data file by its name only: where it lay on the training machine says nothing here."""
    return Path(path).name if path else NOT_RECORDED


def _export_files(export: dict | None) -> list[str]:
    return [str(name) for name in (export or {}).get("files", [])]  # already relative to the export's folder


def data_licence(data_file: str | None) -> str | None:
    """The licence stated by a README.md, LICENSE or other .md beside the data file or one level
    up, e.g. "CC BY 4.0"; None when no such file states one."""
    if not data_file:
        return None
    folder = Path(data_file).expanduser().parent
    for directory in (folder, folder.parent):
        candidates = [directory / n for n in ("README.md", "LICENSE", "LICENSE.md", "LICENSE.txt")]
        candidates += sorted(p for p in directory.glob("*.md") if p.name != "README.md") if directory.is_dir() else []
        for candidate in candidates:
            if candidate.is_file():
                text = candidate.read_text(errors="replace")[:200_000]
                for pattern in LICENCE_PATTERNS:
                    if found := pattern.search(text):
                        return " ".join(found.group(found.lastindex or 0).split())
    source = _split_source(Path(data_file).expanduser())
    return data_licence(str(source)) if source else None


def _split_source(data_file: Path) -> Path | None:
    """The file a split was made from (``tunesmith data split`` writes ``<stem>.split.json`` beside
    its splits, naming its ``source``), so a split's licence is its source's."""
    for record in data_file.parent.glob("*.split.json"):
        try:
            split = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        named = {Path(str(f)).name for f in (split.get("files") or {}).values()}
        source = split.get("source")
        if data_file.name not in named or not source or Path(source).name == data_file.name:
            continue
        for candidate in (Path(source), data_file.parent / source, *(p / source for p in data_file.parent.parents)):
            if candidate.is_file():
                return candidate
    return None


def hub_licence(licence: str | None) -> str:
    """The Hub's id for a licence: lowercased SPDX where there is one, else ``other``.

    >>> hub_licence("Apache-2.0"), hub_licence("Gemma Terms of Use"), hub_licence(None), hub_licence("Odd 1")
    ('apache-2.0', 'gemma', 'unknown', 'other')
    """
    if not licence:
        return "unknown"
    key = " ".join(licence.lower().split())
    key = HUB_ALIASES.get(key, key.replace(" ", "-"))
    return key if key in HUB_LICENCES else "other"


# ── front matter and the sections ─────────────────────────────────────────────────────────────


def _front_matter(f: Facts, export: dict | None) -> dict[str, Any]:
    fmt = (export or {}).get("format")
    licence = hub_licence(f.base.licence)
    library = ("gguf" if fmt in GGUF_FORMATS else "onnx" if fmt == "onnx"
               else "peft" if f.is_adapter and not fmt else "transformers")
    tags = ["tunesmith", f.recipe, f.method] + [t for t in (_algorithm(f), fmt, (export or {}).get("quant")) if t]
    matter: dict[str, Any] = {"license": licence}
    if licence == "other":
        matter["license_name"] = re.sub(r"[^a-z0-9.]+", "-", (f.base.licence or "").lower()).strip("-")
    spec = BUILTIN_MODELS.get(f.base.name)
    matter |= {"base_model": spec.hub_id if spec and spec.hub_id else f.base.name, "library_name": library,
               "pipeline_tag": "text-classification" if f.recipe == "classify" else "text-generation",
               "tags": list(dict.fromkeys(tags))}
    return matter


def _about(f: Facts, export: dict | None) -> list[str]:
    method = METHODS.get(f.method, f.method)
    trained = _date(f.info.get("finished_at") or f.info.get("created_at"))
    via = f" (by way of run{'s' if len(f.base.via) > 1 else ''} {', '.join(f'`{v}`' for v in f.base.via)})" if f.base.via else ""
    text = (f"A {method} of `{f.base.name}`{via}, trained by tunesmith's `{f.recipe}` recipe "
            f"({RECIPES.get(f.recipe, f.recipe)}{_algorithm_phrase(f)}) on {_count(f.summary.get('train_examples'))} "
            f"examples from `{_file(_data(f, 'train'))}`; run `{f.run.id}`, "
            f"{'finished' if f.info.get('finished_at') else 'started'} {trained}.")
    if f.recipe == "classify" and f.labels:
        text += f" It puts every text into one of {len(f.labels)} labels."
    if export:
        quant = f", quantised {export['quant']}" if export.get("quant") else ""
        text += (f" This folder is its **{export.get('format')}** export{quant}, made {_date(export.get('created_at'))}.")
    return [f"# {f.run.id}", "", text]


def _base_section(f: Facts) -> list[str]:
    lines = ["## Base model", "", f"- **Model:** `{f.base.name}`" + (f" — {f.base.description}" if f.base.description else "")]
    if f.base.via:
        lines.append(f"- **Starting point:** run {' → '.join(f'`{v}`' for v in f.base.via)}, itself fine-tuned from it")
    lines.append(f"- **Licence:** {f.base.licence or NOT_RECORDED}. This fine-tune is a derivative of the base model "
                 "and is bound by the same licence.")
    return lines


def _data(f: Facts, split: str) -> str | None:
    return (f.config.get("data") or {}).get(split)


def _data_section(f: Facts) -> list[str]:
    hashes = f.info.get("data") or {}
    counts = {"train": f.summary.get("train_examples"), "validation": f.summary.get("validation_examples")}
    rows = []
    for split in ("train", "validation", "test"):
        file = _data(f, split)
        if not file and split not in hashes:
            continue
        if file:
            name = f"`{_file(file)}`"
        elif split == "validation":
            name = f"held out from the training file ({_share((f.config.get('data') or {}).get('validation_fraction'))})"
        else:
            name = NOT_RECORDED
        count = counts.get(split)
        if split == "test" and f.report and _file(f.report.get("data")) == _file(file):
            count = f.report.get("examples")
        sha = f"`{hashes[split]}`" if split in hashes else "– (not used in training)" if split == "test" else NOT_RECORDED
        rows.append([split, name, _count(count), sha, data_licence(file) or NOT_RECORDED])
    lines = ["## Training data", ""]
    lines += markdown_table(["split", "file", "examples", "sha256", "licence"], rows) if rows else [f"Data files: {NOT_RECORDED}."]
    if f.config.get("replay"):
        lines += ["", f"General data was replayed during training (`replay` below) to limit forgetting; "
                      f"replay fraction {f.summary.get('replay_fraction', NOT_RECORDED)}."]
    return lines


def _procedure_section(f: Facts) -> list[str]:
    s = f.summary
    if not s:
        figures = [f"Figures: {NOT_RECORDED} yet (the card was written before the run's summary.json)."]
    else:
        rows = [["optimizer steps", _count(s.get("global_step"))], ["epochs", _number(s.get("epochs"))],
                ["training time", f"{s['train_seconds']:,.0f} s" if s.get("train_seconds") is not None else NOT_RECORDED],
                ["precision", s.get("precision", NOT_RECORDED)]]
        rows += [[label, _number(s.get(key))] for key, label in (
            ("best_eval_loss", "best validation loss"), ("best_eval_macro_f1", "best validation macro F1"),
            ("best_eval_accuracy", "best validation accuracy"), ("last_train_loss", "last training loss"))
            if s.get(key) is not None]
        if s.get("trainable_parameters") is not None:
            total = s.get("total_parameters")
            share = f" of {total:,} ({s['trainable_parameters'] / total:.2%})" if total else ""
            rows.append(["trainable parameters", f"{s['trainable_parameters']:,}{share}"])
        figures = markdown_table(["figure", "value"], rows)
    settings = yaml.safe_dump(_settings(f), sort_keys=False).strip()
    return ["## Training procedure", "", *figures, "", "Resolved settings (the run's `config.yaml`; paths as file names):",
            "", "```yaml", settings, "```"]


def _settings(f: Facts) -> dict[str, Any]:
    """The resolved config, less what does not shape the weights (tracking) or does not apply to
    the method (LoRA settings of a full fine-tune, prompt-learning settings of LoRA)."""
    unused = {"tracking"}
    if f.method in ("full", "prompt_tuning", "prefix_tuning"):
        unused.add("lora")
    if f.method not in ("prompt_tuning", "prefix_tuning"):
        unused.add("prompt_learning")
    return {k: _scrubbed(v) for k, v in f.config.items() if k not in unused and v is not None}


def _scrubbed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrubbed(v) for v in value]
    return _name(value) if isinstance(value, str) else value


# ── evaluation ───────────────────────────────────────────────────────────────────────────────

# Copied from eval/report.py (which this layer may not import): (key, label, format).
GENERATION_METRICS = [("loss", "loss (answer tokens)", "{:.4f}"), ("perplexity", "perplexity", "{:.2f}"),
                      ("rouge_l", "ROUGE-L F1", "{:.3f}"), ("bleu", "BLEU", "{:.2f}"),
                      ("exact_match", "exact match", "{:.1%}")]
PREFERENCE_METRICS = [("preference_accuracy", "prefers chosen (per token)", "{:.1%}"),
                      ("preference_accuracy_total", "prefers chosen (total)", "{:.1%}"),
                      ("chosen_loss", "loss of chosen answers", "{:.4f}"),
                      ("rejected_loss", "loss of rejected answers", "{:.4f}")]
CLASSIFY_METRICS = [("accuracy", "accuracy", "{:.2%}"), ("macro_f1", "macro F1", "{:.4f}"),
                    ("weighted_f1", "weighted F1", "{:.4f}"), ("ece", "ECE", "{:.4f}")]
SIDES = {"base": "base", "few_shot": "base, few-shot prompt", "tuned": "fine-tuned"}


def _evaluation_section(f: Facts) -> list[str]:
    r = f.report
    if not r:
        return ["## Evaluation", "", f"Not evaluated yet: run `tunesmith eval {f.run.id}`."]
    lines = ["## Evaluation", "", f"On `{_file(r.get('data'))}` ({_count(r.get('examples'))} held-out "
             f"examples), {_date(r.get('created_at'))}; the full report is the run's `eval/report.md`.", ""]
    if r.get("kind") == "classification":
        header = ["system", "examples"] + [label for _, label, _ in CLASSIFY_METRICS]
        rows = [[s.get("name"), _count(s.get("examples"))] + [_fmt(fmt, s.get(k)) for k, _, fmt in CLASSIFY_METRICS]
                for s in r.get("systems", [])]
        return lines + markdown_table(header, rows)
    metrics = r.get("metrics", {})
    if r.get("kind") == "preference":
        sides = [("base", "starting point"), ("tuned", "tuned")]
        table = PREFERENCE_METRICS
    else:
        sides = [(k, title) for k, title in SIDES.items() if k in metrics]
        table = GENERATION_METRICS
    rows = [[label] + [_fmt(fmt, metrics.get(side, {}).get(key)) for side, _ in sides]
            for key, label, fmt in table if any(metrics.get(side, {}).get(key) is not None for side, _ in sides)]
    lines += markdown_table(["metric"] + [title for _, title in sides], rows)
    if r.get("kind") == "preference" and r.get("win_rate") is not None:
        rewards = r.get("rewards") or {}
        lines += ["", f"Win rate over the starting point: {_fmt('{:.1%}', r['win_rate'])}; implicit-reward accuracy "
                      f"{_fmt('{:.1%}', rewards.get('accuracy'))} (beta {rewards.get('beta', NOT_RECORDED)})."]
    if (r.get("few_shot") or {}).get("shots"):
        lines += ["", f"The few-shot baseline sees {r['few_shot']['shots']} training conversations before each test one."]
    return lines


# ── export and parity ────────────────────────────────────────────────────────────────────────


def _export_section(export: dict | None, parity: dict | None) -> list[str]:
    lines = ["## Export & parity", ""]
    if export:
        files = ", ".join(f"`{n}`" for n in _export_files(export)) or NOT_RECORDED
        lines += [f"- **Format:** {export.get('format')}" + (f", quantised `{export['quant']}`" if export.get("quant") else ""),
                  f"- **Files:** {files}", f"- **Exported:** {_date(export.get('created_at'))}"]
    if not parity:
        return lines + ([""] if export else []) + ["Parity with the trained model was not measured."]
    verdict = "**passed**" if parity.get("passed") else "**failed**"
    threshold = parity.get("threshold", (parity.get("thresholds") or {}).get("min_identical"))
    lines += ["", f"Parity check {verdict}: run in {parity.get('runtime', NOT_RECORDED)} on "
                  f"`{_file(parity.get('data'))}`, {_fmt('{:.1%}', parity.get('identical'))} of "
                  f"{_count(parity.get('examples'))} answers were identical to the trained model's "
                  f"(threshold {_fmt('{:.1%}', threshold)}).", ""]
    lines += [f"- {_cell(failure)}" for failure in parity.get("failures") or []] + ([""] if parity.get("failures") else [])
    trained, exported = (parity.get("metrics") or {}).get("trained", {}), (parity.get("metrics") or {}).get("export", {})
    keys = list(dict.fromkeys([*trained, *exported]))
    if keys:
        lines += markdown_table(["metric", "trained", "export"], [[k, _number(trained.get(k)), _number(exported.get(k))]
                                                                   for k in keys]) + [""]
    differences = parity.get("differences") or []
    if differences:
        shown = differences[:MAX_DIFFERENCES]
        lines += [f"Answers that differ ({len(shown)} of {len(differences)}):", ""]
        lines += markdown_table(["prompt", "trained", "export"],
                                [[_cell(d.get("prompt")), _cell(d.get("trained")), _cell(d.get("export"))] for d in shown])
    return lines


# ── use, intended use, limitations ───────────────────────────────────────────────────────────


def _usage_section(f: Facts, export: dict | None) -> list[str]:
    fmt = (export or {}).get("format")
    files = _export_files(export)
    if fmt == "ollama":
        modelfile = next((n for n in files if n.lower().startswith("modelfile")), "Modelfile")
        code = ["```bash", f"ollama create {f.run.id} -f {modelfile}", f"ollama run {f.run.id}", "```"]
    elif fmt == "onnx":
        code = _onnx_snippet(f)
    elif fmt in ("gguf", "gguf-adapter"):
        gguf = next((n for n in files if n.endswith(".gguf")), "model.gguf")
        model = f"-m {f.base.name}.gguf --lora {gguf}" if fmt == "gguf-adapter" else f"-m {gguf}"
        code = ["```bash", f"llama-cli {model} -cnv   # llama.cpp, in this folder", "```"]
        if fmt == "gguf-adapter":
            code.append(f"The adapter applies on top of a GGUF conversion of `{f.base.name}` (the same weights it was trained on).")
    elif f.recipe == "classify" and fmt == "merged":
        code = _merged_classifier_snippet(f)
    elif f.recipe == "classify":
        code = ["```bash", f'tunesmith predict {f.run.id} --text "a text to label"', "```", "", "```python",
                "from tunesmith import api", "", f'print(api.predict("{f.run.id}", ["a text to label"]))', "```",
                "", "tunesmith applies the saved pooling (`labels.json`) that plain transformers would not."]
    elif f.is_adapter and not fmt:
        code = _peft_snippet(f)
    else:
        code = _transformers_snippet()
    if f.recipe != "classify" and not fmt:
        code += ["", f"With tunesmith, where the run is: `tunesmith chat {f.run.id}`."]
    return ["## How to use", "", *code]


def _peft_snippet(f: Facts) -> list[str]:
    base = f"{f.base.via[-1]}-merged" if f.base.via else f.base.name
    if f.base.via:
        where = f"run {f.base.via[-1]}'s weights with its own adapter merged, as this adapter was trained on them"
    elif f.base.name in BUILTIN_MODELS:
        where = f"a local copy; `tunesmith models pull {f.base.name}` puts one under models/ in the tunesmith home"
    else:
        where = "its hub id or a local copy"
    return ["```python", "from peft import PeftModel", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
            f'BASE = "{base}"  # the base model: {where}', 'ADAPTER = "."  # this folder',
            "model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE), ADAPTER)",
            "tokenizer = AutoTokenizer.from_pretrained(ADAPTER)", *_GENERATE]


def _merged_classifier_snippet(f: Facts) -> list[str]:
    """Plain transformers; with mean pooling, the masked mean the head was trained on (what the
    export's parity check runs: ``exports/parity.py:labels_from_merged``)."""
    try:
        mean = json.loads((f.run.final_dir / "labels.json").read_text()).get("pooling") == "mean"
    except (OSError, ValueError):
        mean = False
    head = (['    hidden = model.base_model(**batch).last_hidden_state',
             '    mask = batch["attention_mask"].unsqueeze(-1).float()',
             '    logits = model.classifier((hidden * mask).sum(1) / mask.sum(1))  # mean pooling, as trained']
            if mean else ['    logits = model(**batch).logits'])
    return ["```python", "import torch", "from transformers import AutoModelForSequenceClassification, AutoTokenizer", "",
            'model = AutoModelForSequenceClassification.from_pretrained(".").eval()  # this folder',
            'tokenizer = AutoTokenizer.from_pretrained(".")',
            'batch = tokenizer(["a text to label"], return_tensors="pt", padding=True, truncation=True)',
            "with torch.no_grad():", *head, "print(model.config.id2label[int(logits.argmax(-1)[0])])", "```"]


def _onnx_snippet(f: Facts) -> list[str]:
    labels = ["import json", "", 'labels = json.load(open("labels.json"))["labels"]'] if f.recipe == "classify" else []
    answer = "print(labels[logits.argmax(-1)[0]])" if labels else "print(logits.shape)"
    return ["```python", *labels, "import onnxruntime", "from transformers import AutoTokenizer", "",
            'tokenizer = AutoTokenizer.from_pretrained(".")  # this folder',
            'session = onnxruntime.InferenceSession("model.onnx")',
            'inputs = tokenizer(["a text"], return_tensors="np")',
            "names = {i.name for i in session.get_inputs()}",
            "(logits,) = session.run(None, {k: v for k, v in inputs.items() if k in names})", answer, "```"]


def _transformers_snippet() -> list[str]:
    return ["```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
            'model = AutoModelForCausalLM.from_pretrained(".")  # this folder',
            'tokenizer = AutoTokenizer.from_pretrained(".")', *_GENERATE]


_GENERATE = ['messages = [{"role": "user", "content": "Hello!"}]',
             'inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)',
             "print(tokenizer.decode(model.generate(**inputs, max_new_tokens=64)[0], skip_special_tokens=True))", "```"]


def _intended_use_section(f: Facts) -> list[str]:
    train = f"`{_file(_data(f, 'train'))}`"
    if f.recipe == "classify":
        labels = ", ".join(f"`{label}`" for label in f.labels[:30]) + (" …" if len(f.labels) > 30 else "")
        use = (f"Labelling texts like those in {train} with one of its {len(f.labels) or NOT_RECORDED} labels"
               + (f": {labels}." if labels else "."))
    elif f.recipe == "dpo":
        use = f"Answering prompts like those in {train} the way its chosen answers do, rather than its rejected ones."
    else:
        use = f"Answering requests like those in {train}, in the form its example answers take."
    return ["## Intended use", "", use + " It was fine-tuned for that one task; evaluate it on your own data before "
            "relying on it elsewhere."]


def _limitations_section(f: Facts, export: dict | None) -> list[str]:
    evaluated = (f"evaluated only on `{_file(f.report.get('data'))}` ({_count(f.report.get('examples'))} "
                 "examples): other data may score differently" if f.report else "not evaluated on held-out data yet")
    items = [f"Trained on {_count(f.summary.get('train_examples'))} examples of one task; outside it, expect the base "
             "model's behaviour at best.",
             f"It inherits the biases, gaps and licence ({f.base.licence or NOT_RECORDED}) of `{f.base.name}`.",
             f"It was {evaluated}."]
    if f.recipe == "classify":
        items.append(f"A classifier only knows its {len(f.labels) or NOT_RECORDED} labels: every text gets one of them, "
                     "even one that fits none; read low confidences as \"none of these\".")
    else:
        items.append("Like any language model it can produce fluent, confident and wrong answers.")
    if f.is_adapter and not export:
        items.append(f"The adapter works only with the exact base weights it was trained on (`{f.base.name}`).")
    if (export or {}).get("quant"):
        items.append(f"The export is quantised ({export['quant']}): its answers can differ from the trained model's "
                     "(see the parity check above).")
    return ["## Limitations", "", *[f"- {item}" for item in items]]


# ── formatting ───────────────────────────────────────────────────────────────────────────────


def _algorithm(f: Facts) -> str | None:
    return (f.config.get("preference") or {}).get("algorithm") if f.recipe == "dpo" else None


def _algorithm_phrase(f: Facts) -> str:
    algorithm = _algorithm(f)
    return f", {algorithm.upper()}" if algorithm else ""


def _date(timestamp: Any) -> str:
    if not isinstance(timestamp, (int, float)):
        return f"on a date {NOT_RECORDED}"
    return "on " + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else NOT_RECORDED


def _share(value: Any) -> str:
    return f"{value:.0%}" if isinstance(value, (int, float)) else f"a share {NOT_RECORDED}"


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–" if value is None else str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:.4g}"


def _fmt(fmt: str, value: Any) -> str:
    return fmt.format(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"


def _cell(text: Any) -> str:
    """One line of at most MAX_TEXT characters, safe inside a Markdown table cell."""
    one = " ".join(str(text if text is not None else "").split()).replace("|", "\\|")
    return one if len(one) <= MAX_TEXT else one[: MAX_TEXT - 1] + "…"
