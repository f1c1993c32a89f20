"""Shared fixtures: an isolated tunesmith home per test and a tiny random model built in seconds.

The tiny model is a 2-layer Llama with a byte-level tokenizer (no merges, so nothing to train)
and a ChatML template: every code path of the real model (chat template, LoRA, checkpoints,
generation) runs in well under a second per step.
"""
from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tunesmith.models.chat import CHATML_TEMPLATE
from tunesmith.workspace import Workspace

SPECIALS = ["<|im_start|>", "<|im_end|>", "<unk>"]


def build_tiny_model(directory: Path, seed: int = 0, architecture: str = "llama") -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = byte_tokenizer()
    config = AutoConfig.for_model(
        architecture, vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def build_tiny_encoder(directory: Path, seed: int = 0) -> Path:
    """A 2-layer BERT (a stand-in for minilm-l6) with the same byte-level tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModel

    tokenizer = byte_tokenizer()
    config = AutoConfig.for_model("bert", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                  num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=512,
                                  pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    AutoModel.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def byte_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_chars = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(byte_chars))}
    raw = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.add_special_tokens(SPECIALS)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|im_end|>", pad_token="<|im_end|>",
                                        bos_token="<|im_start|>", unk_token="<unk>")
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    return build_tiny_encoder(tmp_path_factory.mktemp("tiny-encoder"))


def classification_records(n: int, seed: int = 0) -> list[dict]:
    """A learnable toy intent task: the topic word decides the label; the filler varies."""
    import random

    topics = {"refund": ["refund", "money back"], "delivery": ["parcel", "courier"], "login": ["password", "log in"]}
    fillers = ["hello, question about my {}", "where is the {} please", "{} is not working", "help me with the {}",
               "I have an issue: {}", "can you check {} today"]
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = list(topics)[i % 3]
        rows.append({"text": rng.choice(fillers).format(rng.choice(topics[label])) + f" #{i}", "label": label})
    return rows


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Workspace:
    home = tmp_path / "home"
    monkeypatch.setenv("TUNESMITH_HOME", str(home))
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):  # the home's own store, nobody else's
        monkeypatch.delenv(variable, raising=False)
    return Workspace(home)


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def chat_records(n: int, seed: int = 0) -> list[dict]:
    """A learnable toy task: answer a colour question with the colour, always the same way."""
    colours = ["red", "green", "blue", "amber", "violet"]
    return [{"messages": [{"role": "user", "content": f"Which colour is item {i}?"},
                          {"role": "assistant", "content": f"Item {i} is {colours[(i + seed) % 5]}."}]}
            for i in range(n)]


@pytest.fixture
def chat_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "chat.jsonl", chat_records(40))


@contextmanager
def fake_endpoint(respond):
    """A stdlib HTTP server standing in for an OpenAI-compatible endpoint: each POST's JSON body
    and headers go to ``respond(body, headers) -> (status, answer, extra headers)``. Yields its
    ``…/v1`` base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            status, answer, headers = respond(body, self.headers)
            data = json.dumps(answer).encode()
            self.send_response(status)
            for k, v in {"content-type": "application/json", **headers}.items():
                self.send_header(k, v)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1"
    finally:
        server.shutdown()
