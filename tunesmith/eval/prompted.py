"""The prompt-engineering baseline: a base LLM asked to pick a label, zero-shot or few-shot.

The prompt is a chat: a system message listing every label, optional demonstrations (one
training example per label, as user / assistant turns), then the text to classify. The answer
is *constrained to the label set*: greedy decoding over a trie of the labels' token sequences
(each closed by the template's end-of-turn token), so every answer is a valid label and the
baseline is judged on its choice, not on its formatting.

Cost: the instructions and demonstrations are the same for every text, so their KV cache is
computed once and shared; each text then costs its own tokens plus a few constrained steps.
Texts are batched left-padded after the shared prefix (explicit position ids keep every row's
positions contiguous), so the last position is each row's next-token position.
"""
from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from tunesmith.eval.baselines import SystemOutput, time_one_at_a_time
from tunesmith.models.chat import render

QUERY = "\x00QUERY\x00"  # a placeholder no real text contains, to split the rendered prompt
MAX_PREFIX_TOKENS = 3000


@dataclass
class LabelTrie:
    children: dict[int, "LabelTrie"] = field(default_factory=dict)
    label: int | None = None  # set on the node reached after the end-of-turn token

    def add(self, ids: list[int], label: int) -> None:
        node = self
        for token in ids:
            node = node.children.setdefault(token, LabelTrie())
        node.label = label


def instructions(labels: Sequence[str]) -> str:
    return ("Classify the user's message into exactly one of these labels:\n" + "\n".join(labels)
            + "\nAnswer with the label only.")


def pick_shots(train: Sequence[tuple[str, str]], labels: Sequence[str], per_label: int = 1,
               seed: int = 0) -> list[tuple[str, str]]:
    """``per_label`` random training examples of every label, shuffled (no label order to copy)."""
    rng = random.Random(seed)
    by_label: dict[str, list[str]] = {}
    for text, label in train:
        by_label.setdefault(label, []).append(text)
    shots = [(text, label) for label in labels if label in by_label
             for text in rng.sample(by_label[label], min(per_label, len(by_label[label])))]
    rng.shuffle(shots)
    return shots


class PromptedClassifier:
    """A causal LM used as a classifier through a prompt; ``shots`` empty means zero-shot."""

    def __init__(self, model, tokenizer, labels: Sequence[str], shots: Sequence[tuple[str, str]] = ()):
        self.model, self.tokenizer, self.labels = model, tokenizer, list(labels)
        messages = [{"role": "system", "content": instructions(labels)}]
        for text, label in shots:
            messages += [{"role": "user", "content": text}, {"role": "assistant", "content": label}]
        self.prefix_ids, self.before, self.after, self.shots = self._split_prompt(messages, len(shots))
        self.trie = self._label_trie(messages)
        self.max_label_tokens = self._depth(self.trie)
        self._caches: dict[int, Any] = {}  # batch size → the shared prefix's KV cache, that many rows

    def _split_prompt(self, messages: list[dict], n_shots: int) -> tuple[list[int], str, str, int]:
        """Token ids of the shared prefix, and the text around the query in the rest. Shots are
        dropped from the end while the prefix is longer than MAX_PREFIX_TOKENS."""
        tokenizer = self.tokenizer
        while True:
            full = render(tokenizer, messages + [{"role": "user", "content": QUERY}], add_generation_prompt=True)
            prefix = render(tokenizer, messages)
            if not full.startswith(prefix):  # the template re-renders earlier turns: no shared prefix
                prefix = ""
            prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else []
            if len(prefix_ids) <= MAX_PREFIX_TOKENS or n_shots == 0:
                break
            messages, n_shots = messages[:-2], n_shots - 1
        before, after = full[len(prefix):].split(QUERY)
        return prefix_ids, before, after, n_shots

    def _label_trie(self, messages: list[dict]) -> LabelTrie:
        tokenizer = self.tokenizer
        probe = "LABEL"
        rendered = render(tokenizer, [{"role": "user", "content": "x"}, {"role": "assistant", "content": probe}])
        end_text = rendered.split(probe, 1)[1]
        end_ids = tokenizer(end_text, add_special_tokens=False)["input_ids"][:1] if end_text else []
        end_ids = end_ids or [tokenizer.eos_token_id]
        trie = LabelTrie()
        for index, label in enumerate(self.labels):
            trie.add(tokenizer(label, add_special_tokens=False)["input_ids"] + end_ids, index)
        return trie

    def _depth(self, node: LabelTrie) -> int:
        return 0 if not node.children else 1 + max(self._depth(c) for c in node.children.values())

    def predict(self, texts: Sequence[str], batch_size: int = 8, progress: Callable[[int], None] | None = None) -> list[int]:
        """Label indices; ``progress(done)`` after each batch."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = [0] * len(texts)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            batch = [texts[i] for i in chunk]
            # A short last batch is filled up, so one cache shape serves every batch.
            filled = batch + [batch[-1]] * (min(batch_size, len(order)) - len(batch))
            for i, label in zip(chunk, self._predict_batch(filled)):
                out[i] = label
            if progress:
                progress(start + len(chunk))
        return out

    def shared_cache(self, rows: int = 1):
        """The prefix's KV cache repeated for ``rows`` rows, computed once; each use crops it back."""
        import torch

        if not self.prefix_ids:
            return None
        if 1 not in self._caches:
            with torch.inference_mode():
                self._caches[1] = self.model(input_ids=torch.tensor([self.prefix_ids]), use_cache=True).past_key_values
        if rows not in self._caches:
            cache = copy.deepcopy(self._caches[1])
            cache.batch_repeat_interleave(rows)
            self._caches[rows] = cache
        return self._caches[rows]

    def _predict_batch(self, texts: list[str]) -> list[int]:
        import torch

        tokenizer, pad = self.tokenizer, self.tokenizer.pad_token_id
        queries = [tokenizer(self.before + t + self.after, add_special_tokens=False)["input_ids"] for t in texts]
        width, p, rows = max(len(q) for q in queries), len(self.prefix_ids), len(texts)
        ids = torch.tensor([[pad] * (width - len(q)) + q for q in queries])
        mask = torch.tensor([[1] * p + [0] * (width - len(q)) + [1] * len(q) for q in queries])
        positions = torch.tensor([[max(p + j - (width - len(q)), 0) for j in range(width)] for q in queries])
        cache = self.shared_cache(rows)
        try:
            return self._decode(ids, mask, positions, cache, rows)
        finally:
            if cache is not None and cache.get_seq_length() > p:
                cache.crop(p - cache.get_seq_length())  # back to the shared prefix for the next batch

    def _decode(self, ids, mask, positions, cache, rows: int) -> list[int]:
        import torch

        pad = self.tokenizer.pad_token_id
        nodes = [self.trie] * rows
        chosen: list[int | None] = [None] * rows
        next_pos = positions[:, -1] + 1
        with torch.inference_mode():
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                             use_cache=True, logits_to_keep=1)
            for _ in range(self.max_label_tokens):
                logits = out.logits[:, -1].float()
                step = []
                for r in range(rows):
                    if chosen[r] is not None:
                        step.append(pad)
                        continue
                    allowed = list(nodes[r].children)
                    token = allowed[int(logits[r, allowed].argmax())] if len(allowed) > 1 else allowed[0]
                    nodes[r] = nodes[r].children[token]
                    if nodes[r].label is not None:
                        chosen[r] = nodes[r].label
                    step.append(token)
                if all(c is not None for c in chosen):
                    break
                mask = torch.cat([mask, torch.ones(rows, 1, dtype=mask.dtype)], dim=1)
                out = self.model(input_ids=torch.tensor(step).unsqueeze(1), attention_mask=mask,
                                 position_ids=next_pos.unsqueeze(1), past_key_values=out.past_key_values,
                                 use_cache=True, logits_to_keep=1)
                next_pos = next_pos + 1
        return [c if c is not None else 0 for c in chosen]


def prompted_baseline(model, tokenizer, labels: Sequence[str], test_texts: Sequence[str],
                      shots: Sequence[tuple[str, str]], name: str, batch_size: int = 8,
                      latency_examples: int = 20, log: Callable[[str], None] | None = None):
    classifier = PromptedClassifier(model, tokenizer, labels, shots)
    classifier.shared_cache(batch_size)  # once, outside the timings
    classifier.shared_cache(1)
    started = time.time()
    predictions = classifier.predict(list(test_texts), batch_size, _quarters(len(test_texts), started, log))
    seconds = time.time() - started
    latencies = time_one_at_a_time(lambda text: classifier.predict([text], 1), test_texts, latency_examples)
    details: dict[str, Any] = {"shots": classifier.shots, "prompt_tokens_shared": len(classifier.prefix_ids)}
    return SystemOutput(name, "baseline", predictions, None, seconds, latencies, details)


def _quarters(total: int, started: float, log: Callable[[str], None] | None) -> Callable[[int], None] | None:
    """A progress callback that logs at each quarter done, with the time so far (these runs take minutes)."""
    if log is None:
        return None
    marks = {total * q // 4 for q in (1, 2, 3)}
    last = [0]

    def progress(done: int) -> None:
        passed = [m for m in marks if last[0] < m <= done]
        last[0] = done
        if passed:
            log(f"  {done}/{total} examples, {time.time() - started:.0f} s")
    return progress
