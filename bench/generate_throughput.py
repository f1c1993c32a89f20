"""Generation throughput: tunesmith's generation path against plain ``model.generate`` in fp32.

    python bench/generate_throughput.py [--model smollm2-135m-instruct] [--prompts 8] [--max-new-tokens 64]

Both answer the same gsm8k test questions (chat template, greedy, stop at end of turn), at
batch 1 (prompts one by one) and batch 8 (left-padded together). The baseline loads the model in
fp32 and calls ``generate`` as a user would; tunesmith goes through ``engine.load`` (weights in
bf16 where the hardware runs bf16 natively, else fp32) and ``engine.generate`` (length-sorted
left-padded batches, KV cache). Prints generated tokens/s, the ratio to the baseline, and
whether the answers are the same text. Run alternately in one invocation, best of ``--repeats``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from tunesmith.models import engine
    from tunesmith.workspace import Workspace

    torch.set_num_threads(args.threads)
    rows = [json.loads(line) for line in (SHARED / "gsm8k" / "test.jsonl").read_text().splitlines()][:args.prompts]
    conversations = [[m for m in r["messages"] if m["role"] != "assistant"] for r in rows]
    tunesmith_model = engine.load(args.model, Workspace.default())
    baseline = plain_model(tunesmith_model)
    print(f"{args.model}: tunesmith weights {next(tunesmith_model.model.parameters()).dtype}, "
          f"baseline fp32; {len(conversations)} prompts, up to {args.max_new_tokens} new tokens, {args.threads} threads")

    for batch in (1, 8):
        best: dict[str, tuple[float, list[str]]] = {}
        for _ in range(args.repeats):
            for name, run in (("model.generate fp32", lambda: baseline_generate(baseline, tunesmith_model.tokenizer,
                                                                                  conversations, batch, args)),
                              ("tunesmith", lambda: tunesmith_generate(tunesmith_model, conversations, batch, args))):
                rate, replies = run()
                if name not in best or rate > best[name][0]:
                    best[name] = (rate, replies)
        (base_rate, base_replies), (rate, replies) = best["model.generate fp32"], best["tunesmith"]
        same = sum(a == b for a, b in zip(base_replies, replies))
        print(f"batch {batch}: model.generate fp32 {base_rate:6.1f} tok/s   tunesmith {rate:6.1f} tok/s   "
              f"{rate / base_rate:.2f}x   same answers {same}/{len(replies)}")


def plain_model(loaded):
    import torch
    from transformers import AutoModelForCausalLM

    path = loaded.model.config._name_or_path
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def baseline_generate(model, tokenizer, conversations, batch: int, args) -> tuple[float, list[str]]:
    import torch

    from tunesmith.models.chat import stop_token_ids

    tokenizer.padding_side = "left"
    replies, tokens, start = [], 0, time.perf_counter()
    stops = stop_token_ids(tokenizer)
    for i in range(0, len(conversations), batch):
        texts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
                 for c in conversations[i:i + batch]]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=args.max_new_tokens, do_sample=False,
                                 eos_token_id=stops, pad_token_id=tokenizer.pad_token_id)
        for row in out[:, enc["input_ids"].shape[1]:].tolist():
            ended = next((k for k, t in enumerate(row) if t in stops), None)
            tokens += len(row) if ended is None else ended + 1
            replies.append(tokenizer.decode(row[:ended], skip_special_tokens=True).strip())
    return tokens / (time.perf_counter() - start), replies


def tunesmith_generate(loaded, conversations, batch: int, args) -> tuple[float, list[str]]:
    from tunesmith.models import engine
    start = time.perf_counter()
    replies = engine.generate(loaded, conversations, max_new_tokens=args.max_new_tokens, batch_size=batch)
    seconds = time.perf_counter() - start
    # Tokens generated: each reply re-encoded, + its end-of-turn token when it stopped early.
    tokens = 0
    for reply in replies:
        n = len(loaded.tokenizer(reply, add_special_tokens=False)["input_ids"])
        tokens += min(n + 1, args.max_new_tokens)
    return tokens / seconds, replies


if __name__ == "__main__":
    main()
