"""Distillation — the way off a hosted fine-tune one can call but not download: ask the teacher
for answers to the prompts, clean them like any dataset, train the student on them, and measure
how close the student comes to the teacher on prompts it was not trained on.

The flow, top to bottom (``distill``):
1. ``read_prompts``: chat messages (a trailing assistant turn, or ``final_answer``, is the
   reference) or plain ``prompt`` lines; a bad line is a DataError naming file, line and field.
   A seeded split sets ``held_out`` prompts aside, stratified on ``label`` when the rows have one.
2. ``ask_teacher``: one request per prompt through ``models.remote.chat_client`` (the one client:
   paced, 429/5xx retried after Retry-After). Invariant: every answer is appended to
   ``answers.jsonl`` and fsynced as soon as it arrives, keyed by the prompt's hash, so a killed
   run loses nothing and a rerun asks only the prompts without a kept answer. Failures are
   recorded per prompt; the run stops at the first failure before any answer came back
   (unreachable, key refused) or after ``MAX_FAILURES_IN_A_ROW``.
3. The training prompts' answers as chat records, cleaned by ``data/clean.py`` (invalid — e.g.
   empty — answers, exact and near duplicates set aside, each reported).
4. The student trained by the recipe machinery (``training/launch.train``; default: LoRA on
   SmolLM2-135M-Instruct, ``--recipe`` YAML for anything else).
5. Student before (its base) and after, against the teacher on the held-out prompts: exact
   agreement of normalised answers and ROUGE-L (``eval/metrics.py``), the task metric against
   references where the prompts carry them, the judge (``eval/judge.py``) when asked for.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Sequence

from tunesmith.catalog import DEFAULT_MODEL
from tunesmith.config import CleanConfig, load_config
from tunesmith.data.clean import clean_file
from tunesmith.data.formats import split_prompt_and_reference
from tunesmith.data.io import read_rows
from tunesmith.data.split import split_indices
from tunesmith.data.validate import ROLES
from tunesmith.errors import DataError, TunesmithError
from tunesmith.eval import metrics
from tunesmith.models.remote import ChatClient, RemoteError, chat_client
from tunesmith.workspace import Workspace

Log = Callable[[str], None]
Progress = Callable[[int, int], None]  # (answers kept, prompts in all)
MAX_FAILURES_IN_A_ROW = 3
SEED = 0


@dataclass(frozen=True)
class Prompt:
    id: str  # a hash of the conversation: the same prompt is the same id in every run
    line: int
    messages: list[dict[str, str]]
    reference: str | None = None
    label: str | None = None


@dataclass(frozen=True)
class Teacher:
    model: str
    base_url: str | None = None
    key_env: str = "OPENAI_API_KEY"
    requests_per_minute: float | None = None
    concurrency: int = 4


@dataclass(frozen=True)
class Options:
    student: str | None = None  # default: the recipe's model, else SmolLM2-135M-Instruct
    recipe: str | Path | None = None
    held_out: float = 0.1  # a share below 1, else a count
    max_tokens: int = 256
    judge: str | None = None
    overrides: tuple[str, ...] = ()


# ── 1. prompts ───────────────────────────────────────────────────────────────────────────────
def read_prompts(path: str | Path) -> list[Prompt]:
    """Every prompt of a JSONL file, or a DataError listing each bad line with its field."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such prompts file: {path}")
    prompts, problems = [], []
    for row in read_rows(path):
        if row.error:
            problems.append(f"{path}:{row.line}: {row.error[1]}")
            continue
        try:
            prompts.append(_prompt(row.value, row.line))
        except ValueError as e:
            problems.append(f"{path}:{row.line}: {e}")
    if problems:
        raise DataError(f"{len(problems)} bad prompt line(s):\n  " + "\n  ".join(problems[:20]))
    if len(prompts) < 2:
        raise DataError(f"{path}: {len(prompts)} prompt(s); distillation needs at least 2 (some held out)")
    return prompts


def _prompt(value: Any, line: int) -> Prompt:
    """``{"messages": [...]}`` (a last assistant turn is the reference) or ``{"prompt": str}``;
    ``reference`` / ``completion`` / ``final_answer`` and ``label`` are kept when present."""
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, found {type(value).__name__}")
    if "messages" in value:
        messages = _messages(value["messages"])
        reference = None
        if messages[-1]["role"] == "assistant":
            messages, reference = split_prompt_and_reference(messages)
        if not messages or messages[-1]["role"] != "user":
            raise ValueError("messages: the conversation must end with a user turn (or a user turn and its answer)")
    elif "prompt" in value:
        if not isinstance(value["prompt"], str) or not value["prompt"].strip():
            raise ValueError("prompt: must be a non-empty string")
        messages, reference = [{"role": "user", "content": value["prompt"]}], value.get("completion")
    else:
        raise ValueError(f"missing field `messages` or `prompt` (found {sorted(value)})")
    reference = value.get("final_answer", value.get("reference", reference))
    label = value.get("label", value.get("final_answer"))
    key = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:16]
    return Prompt(key, line, messages, None if reference is None else str(reference),
                  None if label is None else str(label))


def _messages(messages: Any) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages: must be a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ValueError(f"messages[{i}]: needs a role ({', '.join(ROLES)}) and a string content")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def split_held_out(prompts: Sequence[Prompt], held_out: float, seed: int = SEED) -> tuple[list[Prompt], list[Prompt]]:
    """(train, held out): ``held_out`` a share (< 1) or a count, stratified on labels when every prompt has one."""
    count = held_out if held_out >= 1 else held_out * len(prompts)
    if not 1 <= round(count) < len(prompts):
        raise DataError(f"--held-out {held_out:g} leaves no prompt to train on or none to hold out "
                        f"({len(prompts)} prompts)")
    share = round(count) / len(prompts)
    stratify = "label" if all(p.label is not None for p in prompts) else None
    rows = [{"label": p.label} for p in prompts]
    train, test = split_indices(rows, (1 - share, share), seed, stratify)
    return [prompts[i] for i in train], [prompts[i] for i in test]


# ── 2. the teacher ───────────────────────────────────────────────────────────────────────────
def kept_answers(path: Path) -> dict[str, dict[str, Any]]:
    """The answers already in ``answers.jsonl`` by prompt id (failures are not kept; a torn last
    line from a kill is ignored)."""
    kept: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "answer" in entry:
                kept.setdefault(entry["id"], entry)
    return kept


def ask_teacher(client: ChatClient, prompts: Sequence[Prompt], path: Path, max_tokens: int = 256,
                progress: Progress | None = None, log: Log = print, concurrency: int = 1) -> dict[str, dict[str, Any]]:
    """Each prompt's answer, asked only when ``path`` has none yet; every answer and failure
    appended and fsynced as it arrives. ``concurrency`` requests in flight at once (a server
    that batches, as tunesmith serve and vLLM do, answers several for about the price of one)."""
    kept = kept_answers(path)
    todo = [p for p in dict((p.id, p) for p in prompts).values() if p.id not in kept]
    total = len({p.id for p in prompts})
    log(f"teacher {client.name}: {total - len(todo)} answer(s) kept, {len(todo)} to ask")
    failures, asked = 0, 0
    _end_torn_line(path)
    with open(path, "a", encoding="utf-8") as out, ThreadPoolExecutor(max(1, concurrency)) as pool:
        pending = iter(todo)
        running = {pool.submit(_ask, client, p, max_tokens): p for p in islice(pending, max(1, concurrency))}
        while running:
            done = next(as_completed(running))
            prompt = running.pop(done)
            entry = {"id": prompt.id, "line": prompt.line, "messages": prompt.messages, "teacher": client.name,
                     "max_tokens": max_tokens} | done.result() | {"time": round(time.time(), 3)}
            if "answer" in entry:
                failures, asked = 0, asked + 1
                kept[prompt.id] = entry
            else:
                failures += 1
            _append(out, entry)
            if progress:
                progress(len(kept), total)
            if "error" in entry and (asked == 0 or failures >= MAX_FAILURES_IN_A_ROW):
                for future in running:
                    future.cancel()
                raise RemoteError(f"the teacher failed {failures} time(s) in a row, stopping "
                                  f"({len(kept)} of {total} answers kept in {path}; rerun with --resume "
                                  f"to ask only the rest): {entry['error']}")
            for nxt in islice(pending, 1):
                running[pool.submit(_ask, client, nxt, max_tokens)] = nxt
    return kept


def _ask(client: ChatClient, prompt: Prompt, max_tokens: int) -> dict[str, Any]:
    try:
        return {"answer": client.chat(prompt.messages, max_tokens=max_tokens, temperature=0.0)}
    except RemoteError as e:
        return {"error": str(e)}


def _end_torn_line(path: Path) -> None:
    """A kill mid-write can leave a last line without its newline: end it, so that the next
    answer starts a line of its own (the torn one is skipped by ``kept_answers``)."""
    if path.exists() and path.stat().st_size:
        with open(path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")


def _append(out, entry: dict[str, Any]) -> None:
    out.write(json.dumps(entry, ensure_ascii=False) + "\n")
    out.flush()
    os.fsync(out.fileno())


# ── 3. the dataset ───────────────────────────────────────────────────────────────────────────
def training_data(prompts: Sequence[Prompt], answers: dict[str, dict[str, Any]], directory: Path) -> dict[str, Any]:
    """The training prompts with the teacher's answers, as chat records cleaned by data/clean.py."""
    raw, cleaned = directory / "teacher.raw.jsonl", directory / "teacher.train.jsonl"
    with open(raw, "w", encoding="utf-8") as f:
        for p in prompts:
            if p.id in answers:
                record = {"messages": p.messages + [{"role": "assistant", "content": answers[p.id]["answer"]}]}
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
    # min_tokens 1: a one-word answer (an intent, a label) is a whole answer for a routing teacher.
    summary = clean_file(raw, cleaned, CleanConfig(format="chat", min_tokens=1)).to_dict()
    if summary["kept"] == 0:
        raise DataError(f"no usable teacher answer is left after cleaning ({summary['removed_by_reason']})")
    return summary


# ── 4. the student ───────────────────────────────────────────────────────────────────────────
def train_student(data: Path, options: Options, workspace: Workspace, console=None):
    """The recipe machinery on the teacher's answers: ``--recipe`` YAML or LoRA SFT of ``student``."""
    from tunesmith.training.launch import train

    overrides = [f"data.train={data}", "data.validation=null", "data.test=null", *options.overrides]
    if options.recipe:
        config = load_config(options.recipe, overrides + ([f"model={options.student}"] if options.student else []))
    else:
        base = {"recipe": "sft", "model": options.student or DEFAULT_MODEL, "method": "lora", "run_name": "distill",
                "data": {"train": str(data), "max_length": 512}}
        config = load_config(None, overrides, base=base)
    if config.recipe != "sft":
        raise TunesmithError(f"distillation trains a chat model: the recipe must be sft, not {config.recipe}")
    return train(config, workspace, "distill", console)


# ── 5. the report ────────────────────────────────────────────────────────────────────────────
def compare(held_out: Sequence[Prompt], teacher: list[str], systems: dict[str, list[str]]) -> dict[str, Any]:
    """Each system's agreement with the teacher and, where prompts have references, its task metric."""
    refs = [(i, p.reference) for i, p in enumerate(held_out) if p.reference is not None]
    result: dict[str, Any] = {}
    for name, answers in systems.items():
        result[name] = {"agreement_exact": _mean(metrics.exact_matches(answers, teacher)),
                        "agreement_rouge_l": metrics.rouge_l(answers, teacher)}
        if refs:
            result[name]["task_exact_match"] = _mean(metrics.exact_matches([answers[i] for i, _ in refs],
                                                                           [r for _, r in refs]))
    if refs:
        result["teacher"] = {"task_exact_match": _mean(metrics.exact_matches([teacher[i] for i, _ in refs],
                                                                             [r for _, r in refs]))}
    return result


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def judged(held_out: Sequence[Prompt], student: list[str], teacher: list[str], judge: str, workspace: Workspace,
           log: Log) -> dict[str, Any]:
    """The student's answers against the teacher's by an LLM judge, positions swapped (eval/judge.py)."""
    from tunesmith.eval.judge import JudgeSpec, Pair, judge_pairs

    pairs = [Pair(p.id, p.messages, s, t, p.reference) for p, s, t in zip(held_out, student, teacher)]
    return judge_pairs(pairs, JudgeSpec(judge).client(workspace, log), names=("student", "teacher"), log=log)


def distill(prompts_file: str | Path, teacher: Teacher, directory: Path, workspace: Workspace,
            options: Options = Options(), resume: bool = False, progress: Progress | None = None,
            log: Log = print, console=None) -> dict[str, Any]:
    """The whole distillation into ``directory``: answers.jsonl, the cleaned data, the student's
    run, distill.json / distill.md."""
    started = time.time()
    answers_path = directory / "answers.jsonl"
    if answers_path.exists() and not resume:
        raise TunesmithError(f"{directory} already holds a distillation; --resume continues it "
                             "(asking only the prompts without an answer), or choose another -o")
    prompts = read_prompts(prompts_file)
    train_prompts, held_out = split_held_out(prompts, options.held_out)
    directory.mkdir(parents=True, exist_ok=True)
    client = chat_client(teacher.model, workspace, teacher.base_url, teacher.key_env, teacher.requests_per_minute,
                         log=log)
    answers = ask_teacher(client, train_prompts + held_out, answers_path, options.max_tokens, progress, log,
                          teacher.concurrency if teacher.base_url else 1)
    held_out = [p for p in held_out if p.id in answers]
    cleaning = training_data(train_prompts, answers, directory)
    log(f"training the student on {cleaning['kept']} answers ({cleaning['removed']} set aside by cleaning)")
    result = train_student(directory / "teacher.train.jsonl", options, workspace, console)
    teacher_answers = [answers[p.id]["answer"] for p in held_out]
    systems = {}
    for side, model in (("student_before", result.run.info()["base_model"]), ("student_after", result.run.id)):
        log(f"asking the {side.replace('_', ' ')} ({model}) the {len(held_out)} held-out prompts")
        systems[side] = chat_client(model, workspace).chat_many([p.messages for p in held_out], options.max_tokens)
    report = {"teacher": teacher.model, "teacher_base_url": teacher.base_url, "student": result.run.info()["base_model"],
              "run": result.run.id, "prompts": len(prompts), "train_prompts": len(train_prompts),
              "held_out_prompts": len(held_out), "answers": len(answers), "cleaning": cleaning,
              "training": {k: result.summary.get(k) for k in ("global_step", "train_seconds", "last_train_loss")},
              "metrics": compare(held_out, teacher_answers, systems),
              "examples": [{"id": p.id, "prompt": p.messages[-1]["content"], "reference": p.reference,
                            "teacher": t, "before": b, "after": a}
                           for p, t, b, a in zip(held_out, teacher_answers, systems["student_before"],
                                                 systems["student_after"])]}
    if options.judge:
        report["judge"] = judged(held_out, systems["student_after"], teacher_answers, options.judge, workspace, log)
    report["seconds"] = round(time.time() - started, 1)
    (directory / "distill.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    (directory / "distill.md").write_text(to_markdown(report))
    return report


def to_markdown(report: dict[str, Any]) -> str:
    m = report["metrics"]
    lines = [f"# Distillation of {report['teacher']} into {report['student']}", "",
             f"Run {report['run']}: {report['train_prompts']} training prompts "
             f"({report['cleaning']['kept']} answers kept after cleaning), {report['held_out_prompts']} held out.", "",
             "| system | agreement with teacher (exact) | ROUGE-L vs teacher | task exact match |",
             "|---|---|---|---|"]
    for name in ("student_before", "student_after", "teacher"):
        row = m.get(name, {})
        lines.append(f"| {name.replace('_', ' ')} | {_pct(row.get('agreement_exact'))} | "
                     f"{_num(row.get('agreement_rouge_l'))} | {_pct(row.get('task_exact_match'))} |")
    if report.get("judge"):
        lines += ["", "Judge: " + "; ".join(report["judge"].get("lines", []))]
    return "\n".join(lines) + "\n"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
