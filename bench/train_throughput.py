"""Training throughput: tunesmith's recipes against the standard stack, same model, data and machine.

    python bench/train_throughput.py [--mode lora|full|classify] [--threads 2] [--repeats 1]
                                     [--conversations 256] [--heldout 64] [--max-steps N]

Modes and baselines (each system runs in its own process, alternately, in one invocation):
- ``lora`` / ``full``: TRL ``SFTTrainer`` as a typical user writes it (LoRA r=16 alpha=32
  all-linear for ``lora``; batch 4, max length 512, fp32, no packing, every other setting TRL's
  default, so gradient checkpointing on) against ``tunesmith train`` with the same model
  (smollm2-135m-instruct), data (``--conversations`` of ../shared/datasets/gsm8k/train.jsonl),
  LoRA settings, learning rate, schedule, epochs and loss tokens (``data.train_on: all``, as
  TRL trains chat data); tunesmith's own defaults decide everything else (packing, fused loss,
  precision). Printed per system: trained (loss-carrying) tokens/s, peak RSS of the process,
  the held-out loss of ``--heldout`` other conversations after training (token-weighted NLL in
  fp32, over all tokens and over assistant tokens, computed by the same code for both), model
  FLOPs utilisation against the matmul peaks measured in this run, and the ratios to TRL.
- ``classify``: banking77 (``--examples`` training texts, 1 epoch, minilm-l6) with
  ``tunesmith train`` (recipe classify) against the transformers ``Trainer`` as its
  text-classification example sets it up (dynamic padding, batch 32, lr 5e-5, fp32). Printed:
  training examples/s, peak RSS, test accuracy on ``--test-examples`` banking77 test texts.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["lora", "full", "classify"], default="lora")
    parser.add_argument("--model", default=None, help="Model name or directory (default: smollm2-135m-instruct; "
                                                      "minilm-l6 for classify).")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="Alternating rounds of (baseline, tunesmith).")
    parser.add_argument("--conversations", type=int, default=256)
    parser.add_argument("--heldout", type=int, default=64)
    parser.add_argument("--examples", type=int, default=2000, help="classify: training texts.")
    parser.add_argument("--test-examples", type=int, default=1000, help="classify: test texts.")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, default=None, help="Stop both after N optimizer steps (smoke runs).")
    parser.add_argument("--systems", default=None, help="Comma-separated subset, e.g. tunesmith (default: both).")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return run_worker(args.worker, json.loads(args.spec))

    workdir = Path(tempfile.mkdtemp(prefix="tunesmith-bench-"))
    spec = prepare(args, workdir)
    systems = args.systems.split(",") if args.systems else [baseline_name(args.mode), "tunesmith"]
    peaks_before = matmul_peaks(args.threads)
    results: dict[str, list[dict]] = {name: [] for name in systems}
    for round_ in range(args.repeats):
        for name in systems:
            print(f"[round {round_ + 1}/{args.repeats}] {name} ...", flush=True)
            results[name].append(launch(name, spec, args.threads))
            print("   ", json.dumps(results[name][-1]), flush=True)
    peaks_after = matmul_peaks(args.threads)
    peaks = {k: max(peaks_before[k], peaks_after[k]) for k in peaks_before}
    report(args, spec, results, peaks)


# --- set-up --------------------------------------------------------------------------------------

def baseline_name(mode: str) -> str:
    return "transformers-trainer" if mode == "classify" else "trl-sft"


def prepare(args, workdir: Path) -> dict:
    spec = {"mode": args.mode, "threads": args.threads, "epochs": args.epochs, "max_steps": args.max_steps,
            "workdir": str(workdir)}
    if args.mode == "classify":
        spec.update(model=args.model or "minilm-l6", **classify_data(args, workdir))
    else:
        spec.update(model=args.model or "smollm2-135m-instruct", **chat_data(args, workdir))
    spec["model_dir"] = model_dir(spec["model"])
    return spec


def chat_data(args, workdir: Path) -> dict:
    """A seeded shuffle of gsm8k train: the first ``--conversations`` train, the next ``--heldout`` evaluate."""
    rows = [json.loads(line) for line in (SHARED / "gsm8k" / "train.jsonl").read_text().splitlines() if line.strip()]
    random.Random(42).shuffle(rows)
    train, heldout = rows[:args.conversations], rows[args.conversations:args.conversations + args.heldout]
    paths = {}
    for name, part in (("train", train), ("heldout", heldout)):
        paths[name] = str(workdir / f"{name}.jsonl")
        Path(paths[name]).write_text("".join(json.dumps({"messages": r["messages"]}) + "\n" for r in part))
    return paths


def classify_data(args, workdir: Path) -> dict:
    import csv

    def rows(name):
        with open(SHARED / "banking77" / f"{name}.csv", newline="") as f:
            return list(csv.DictReader(f))

    train, test = rows("train"), rows("test")
    random.Random(42).shuffle(train)
    random.Random(42).shuffle(test)
    train = train[:args.examples]
    seen = {r["label"] for r in train}
    test = [r for r in test if r["label"] in seen][:args.test_examples]
    paths = {}
    for name, part in (("train", train), ("heldout", test)):
        paths[name] = str(workdir / f"{name}.csv")
        with open(paths[name], "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["text", "label"])
            writer.writeheader()
            writer.writerows({"text": r["text"], "label": r["label"]} for r in part)
    return paths


def model_dir(name: str) -> str:
    from tunesmith.models.store import resolve_model
    from tunesmith.workspace import Workspace

    return resolve_model(name, Workspace.default()).path


def launch(name: str, spec: dict, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run([sys.executable, __file__, "--worker", name, "--spec", json.dumps(spec)],
                         env=env, capture_output=True, text=True)
    if out.returncode:
        sys.stderr.write(out.stdout[-3000:] + out.stderr[-5000:])
        raise SystemExit(f"{name} failed (exit {out.returncode})")
    return json.loads(out.stdout.strip().splitlines()[-1])


def matmul_peaks(threads: int) -> dict[str, float]:
    """GFLOP/s of a 1024^3 matmul in fp32 and bf16, best of 10: the ceiling MFU is measured against."""
    import torch

    torch.set_num_threads(threads)
    peaks = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(1024, 1024, dtype=dtype), torch.randn(1024, 1024, dtype=dtype)
        a @ b
        best = float("inf")
        for _ in range(10):
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
        peaks[str(dtype).removeprefix("torch.")] = 2 * 1024**3 / best / 1e9
    return peaks


# --- workers (one process each, so peak RSS is theirs alone) -------------------------------------

def run_worker(name: str, spec: dict) -> None:
    import torch

    torch.set_num_threads(spec["threads"])
    result = {"lora": train_chat, "full": train_chat, "classify": train_classify}[spec["mode"]](name, spec)
    result["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 3)
    print(json.dumps(result))


def train_chat(name: str, spec: dict) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    if name == "trl-sft":
        model, seconds, steps, precision = train_trl(spec, tokenizer)
    else:
        model, seconds, steps, precision = train_tunesmith_sft(spec)
    trained = loss_tokens(spec["train"], tokenizer) * _epochs_done(spec, steps)
    heldout = heldout_loss(model, tokenizer, spec["heldout"])
    flops = flops_per_token(model, spec["mode"], mean_length(spec["train"], tokenizer))
    return {"system": name, "train_seconds": round(seconds, 1), "optimizer_steps": steps,
            "loss_tokens": round(trained), "loss_tokens_per_s": round(trained / seconds, 1), "precision": precision,
            "flops_per_token": flops, **heldout}


def train_trl(spec: dict, tokenizer):
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    rows = [json.loads(line) for line in Path(spec["train"]).read_text().splitlines()]
    full = spec["mode"] == "full"
    config = SFTConfig(output_dir=str(Path(spec["workdir"]) / "trl"), learning_rate=2e-5 if full else 2e-4,
                       per_device_train_batch_size=4, max_length=512, packing=False, bf16=False, use_cpu=True,
                       num_train_epochs=spec["epochs"], max_steps=spec["max_steps"] or -1, report_to="none",
                       save_strategy="no", logging_steps=10, seed=0, disable_tqdm=True)
    peft_config = None if full else LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=spec["model_dir"], args=config, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer, peft_config=peft_config)
    start = time.perf_counter()
    trainer.train()
    return trainer.model, time.perf_counter() - start, trainer.state.global_step, "fp32"


def train_tunesmith_sft(spec: dict):
    import tunesmith
    from tunesmith.config import load_config
    from tunesmith.workspace import Workspace

    full = spec["mode"] == "full"
    overrides = [f"model={spec['model_dir']}", f"data.train={spec['train']}", "data.validation_fraction=0",
                 "data.max_length=512", "data.train_on=all", f"method={'full' if full else 'lora'}",
                 "training.batch_size=4", f"training.learning_rate={2e-5 if full else 2e-4}",
                 "training.lr_scheduler=linear", "training.warmup_ratio=0", f"training.epochs={spec['epochs']}",
                 "lora.r=16", "lora.alpha=32", "lora.dropout=0", f"training.threads={spec['threads']}"]
    if spec["max_steps"]:
        overrides.append(f"training.max_steps={spec['max_steps']}")
    workspace = Workspace(Path(spec["workdir"]) / "home")
    result = tunesmith.train(load_config(None, overrides), workspace=workspace)
    summary = result.summary
    return result.model, summary["train_seconds"], summary["global_step"], summary["precision"]


def _epochs_done(spec: dict, steps: int) -> float:
    if not spec["max_steps"]:
        return spec["epochs"]
    rows = len(Path(spec["train"]).read_text().splitlines())
    return min(spec["epochs"], steps * 4 / rows)  # batch 4 examples per step (approximate for packed rows)


def loss_tokens(path: str, tokenizer) -> int:
    """Tokens that carry loss in one epoch when every token is trained: each conversation's
    length minus one (its first token is never a target)."""
    return sum(len(ids) - 1 for ids in _token_ids(path, tokenizer))


def mean_length(path: str, tokenizer) -> float:
    lengths = [len(ids) for ids in _token_ids(path, tokenizer)]
    return sum(lengths) / len(lengths)


def _token_ids(path: str, tokenizer) -> list[list[int]]:
    from tunesmith.models.chat import encode_chat

    rows = [json.loads(line) for line in Path(path).read_text().splitlines()]
    return [encode_chat(tokenizer, r["messages"], 512, "all").input_ids for r in rows]


def heldout_loss(model, tokenizer, path: str) -> dict:
    """Token-weighted NLL on the held-out conversations, fp32, one at a time: over all tokens
    and over the assistant's tokens."""
    import torch

    from tunesmith.models.chat import IGNORE, encode_chat

    model = model.float().eval()
    sums = {"all": [0.0, 0], "assistant": [0.0, 0]}
    with torch.no_grad():
        for line in Path(path).read_text().splitlines():
            messages = json.loads(line)["messages"]
            encoded = encode_chat(tokenizer, messages, 512, "assistant")
            ids = torch.tensor([encoded.input_ids])
            logits = model(input_ids=ids, use_cache=False).logits[0, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="none")
            assistant = torch.tensor(encoded.labels[1:]) != IGNORE
            sums["all"][0] += nll.sum().item()
            sums["all"][1] += nll.numel()
            sums["assistant"][0] += nll[assistant].sum().item()
            sums["assistant"][1] += int(assistant.sum())
    return {f"heldout_loss_{k}": round(total / max(count, 1), 4) for k, (total, count) in sums.items()}


def flops_per_token(model, mode: str, mean_len: float) -> float:
    """Model FLOPs per trained token, without recomputation: forward 2P over the matmul weights
    (the tied output projection included), input gradients 2P, weight gradients 2P for what is
    trained (6 x LoRA parameters in all, or +2P for full fine-tuning), plus attention scores
    and values (4 x layers x hidden x mean causal context, x3 for backward)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config
    vocab, hidden, layers = config.vocab_size, config.hidden_size, config.num_hidden_layers
    matmul = sum(p.numel() for n, p in base.named_parameters()
                 if p.dim() == 2 and "embed" not in n and "lora_" not in n) + vocab * hidden
    if getattr(config, "tie_word_embeddings", False) is False:
        matmul -= vocab * hidden  # lm_head already counted among the 2-D weights
    lora = sum(p.numel() for n, p in base.named_parameters() if "lora_" in n)
    attention = 3 * 4 * layers * hidden * (mean_len / 2)
    return (6 * matmul if mode == "full" else 4 * matmul + 6 * lora) + attention


def train_classify(name: str, spec: dict) -> dict:
    if name == "transformers-trainer":
        model, tokenizer, seconds, labels = train_plain_classifier(spec)
    else:
        model, tokenizer, seconds, labels = train_tunesmith_classifier(spec)
    examples = len(Path(spec["train"]).read_text().splitlines()) - 1
    return {"system": name, "train_seconds": round(seconds, 1),
            "examples_per_s": round(examples * spec["epochs"] / seconds, 1),
            "test_accuracy": round(classifier_accuracy(model, tokenizer, labels, spec["heldout"]), 4)}


def _csv(path: str) -> list[dict]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def train_plain_classifier(spec: dict):
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    rows = _csv(spec["train"])
    labels = sorted({r["label"] for r in rows})
    index = {label: i for i, label in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    data = Dataset.from_list([{"text": r["text"], "label": index[r["label"]]} for r in rows])
    data = data.map(lambda b: tokenizer(b["text"], truncation=True, max_length=128), batched=True,
                    remove_columns=["text"])
    model = AutoModelForSequenceClassification.from_pretrained(spec["model_dir"], num_labels=len(labels))
    args = TrainingArguments(output_dir=str(Path(spec["workdir"]) / "plain"), per_device_train_batch_size=32,
                             learning_rate=5e-5, num_train_epochs=spec["epochs"], max_steps=spec["max_steps"] or -1,
                             use_cpu=True, report_to="none", save_strategy="no", seed=0, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=DataCollatorWithPadding(tokenizer))
    start = time.perf_counter()
    trainer.train()
    return trainer.model, tokenizer, time.perf_counter() - start, labels


def train_tunesmith_classifier(spec: dict):
    import tunesmith
    from tunesmith.config import load_config
    from tunesmith.workspace import Workspace

    overrides = ["recipe=classify", f"model={spec['model_dir']}", f"data.train={spec['train']}",
                 "data.validation_fraction=0", f"training.epochs={spec['epochs']}",
                 f"training.threads={spec['threads']}"]
    if spec["max_steps"]:
        overrides.append(f"training.max_steps={spec['max_steps']}")
    workspace = Workspace(Path(spec["workdir"]) / "home")
    result = tunesmith.train(load_config(None, overrides), workspace=workspace)
    from tunesmith.models.engine import load_classifier

    loaded = load_classifier(result.run, workspace)  # the saved weights, as `tunesmith predict` uses them
    return loaded.model, loaded.tokenizer, result.summary["train_seconds"], loaded.labels


def classifier_accuracy(model, tokenizer, labels: list[str], path: str) -> float:
    import torch

    rows = _csv(path)
    model = model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(rows), 64):
            batch = rows[start:start + 64]
            enc = tokenizer([r["text"] for r in batch], padding=True, truncation=True, max_length=128,
                            return_tensors="pt")
            predicted = model(**enc).logits.argmax(-1).tolist()
            correct += sum(labels[p] == r["label"] for p, r in zip(predicted, batch))
    return correct / len(rows)


# --- report --------------------------------------------------------------------------------------

def report(args, spec: dict, results: dict[str, list[dict]], peaks: dict[str, float]) -> None:
    import statistics

    print()
    print(f"mode {args.mode}, model {spec['model']}, {args.threads} threads; matmul peak (1024^3, best of this run): "
          f"fp32 {peaks['float32']:.0f} GFLOP/s, bf16 {peaks['bfloat16']:.0f} GFLOP/s")
    baseline = baseline_name(args.mode)
    rate = "examples_per_s" if args.mode == "classify" else "loss_tokens_per_s"
    medians = {name: {k: statistics.median(r[k] for r in runs) for k in runs[0] if isinstance(runs[0][k], (int, float))}
               for name, runs in results.items()}
    base = medians.get(baseline)
    for name, m in medians.items():
        line = f"{name:>22}: {rate} {m[rate]:8.1f}   peak RSS {m['peak_rss_gb']:.2f} GB   train {m['train_seconds']:.0f} s"
        if args.mode == "classify":
            line += f"   test accuracy {m['test_accuracy']:.4f}"
        else:
            precision = results[name][0]["precision"]
            useful = m["loss_tokens_per_s"] * m["flops_per_token"] / 1e9
            line += (f"   steps {m['optimizer_steps']:.0f}   held-out loss all {m['heldout_loss_all']:.4f}"
                     f" / assistant {m['heldout_loss_assistant']:.4f}   {useful:.0f} GFLOP/s useful ({precision}):"
                     f" MFU {useful / peaks['float32']:.0%} of fp32 peak, {useful / peaks['bfloat16']:.0%} of bf16 peak")
        print(line)
        if base and name != baseline:
            ratio = (f"{'':>22}  vs {baseline}: {m[rate] / base[rate]:.2f}x {rate}, "
                     f"{m['peak_rss_gb'] / base['peak_rss_gb']:.2f}x peak RSS")
            if args.mode == "classify":
                ratio += f", accuracy {m['test_accuracy'] - base['test_accuracy']:+.4f}"
            else:
                ratio += (f", held-out loss {m['heldout_loss_all'] / base['heldout_loss_all'] - 1:+.2%} (all) "
                          f"{m['heldout_loss_assistant'] / base['heldout_loss_assistant'] - 1:+.2%} (assistant)")
            print(ratio)
    print(json.dumps({"mode": args.mode, "peaks_gflops": peaks, "runs": results}))


if __name__ == "__main__":
    main()
