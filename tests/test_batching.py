"""The continuous-batching engine on a tiny random model: rows decoded together, rows joining a
running batch, rows leaving it (done, cancelled, failed), mixed LoRA rows in one step, adapters
swapped for room, stop strings and seeds. Each greedy answer is checked against the same request
served alone by ``TransformersEngine`` (batch size 1) on a model with only that adapter.

The model is the shared tiny Llama made chattier: weights drawn wider (``initializer_range``
0.3), so greedy answers differ from prompt to prompt; the end-of-turn token's embedding (its
padding row, zero otherwise) drawn too, so some answers end on it; the newline's scaled up, so
streamed text arrives in several pieces."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import byte_tokenizer
from tunesmith.models.batching import Adapter, BatchingEngine
from tunesmith.models.chat import prompt_ids
from tunesmith.models.generation import Sampling, TransformersEngine

ASKS = ["hi", "Which colour is item 2?", "Tell me a long story about cats and dogs",
        "Name three rivers in Europe, please.", "x", "Tell me about item 0"]
WAIT = 20  # seconds any wait on the scheduler may take before the test fails instead of hanging

TOKENIZER = byte_tokenizer()
PROMPTS = [prompt_ids(TOKENIZER, [{"role": "user", "content": ask}]) for ask in ASKS]


def build_chatty_model(directory: Path) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    tok = TOKENIZER
    config = AutoConfig.for_model(
        "llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        initializer_range=0.3, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        embeddings = model.get_input_embeddings().weight
        embeddings[tok.eos_token_id] = torch.randn(32, generator=torch.Generator().manual_seed(0)) * 0.45
        embeddings[tok.convert_tokens_to_ids("Ċ")] *= 2.0  # "\n"
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def build_lora(base_dir: Path, directory: Path, seed: int) -> Path:
    """A LoRA adapter with random A and B (``init_lora_weights=False``): it changes the answers."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(load(base_dir), LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    model.save_pretrained(directory)
    return directory


def load(directory: Path, adapter: Adapter | None = None):
    """A fresh copy of the model (peft changes the model it wraps), with ``adapter`` alone on it."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(directory).eval()
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter.path), adapter_name=adapter.key).eval()
    return model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_chatty_model(tmp_path_factory.mktemp("chatty-model"))


@pytest.fixture(scope="module")
def adapters(model_dir, tmp_path_factory) -> dict[str, Adapter]:
    root = tmp_path_factory.mktemp("loras")
    return {key: Adapter(key, build_lora(model_dir, root / key, seed)) for key, seed in (("red", 1), ("blue", 2), ("green", 3))}


@pytest.fixture(scope="module")
def alone(model_dir, adapters):
    """``alone(prompt, params, adapter_key=None)``: the completion served on its own."""
    references = {None: TransformersEngine(load(model_dir), TOKENIZER, batch_size=1)}

    def completion(prompt, params, key=None):
        if key not in references:
            references[key] = TransformersEngine(load(model_dir, adapters[key]), TOKENIZER, batch_size=1)
        return references[key].generate([prompt], params)[0][0]

    return completion


@pytest.fixture(autouse=True)
def no_hang():
    """A scheduler that died leaves its callers waiting for ever: end the run, with every thread's stack."""
    import faulthandler

    faulthandler.dump_traceback_later(120, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def make_engine(model_dir):
    made = []

    def make(**options) -> BatchingEngine:
        made.append(BatchingEngine(load(model_dir), TOKENIZER, **options))
        return made[-1]

    yield make
    for engine in made:
        engine.close()


@dataclass
class Step:
    keys: list          # each row's adapter key (None: the base)
    width: int          # tokens fed per row: more than 1 is a prefill
    running: int        # rows already in the batch when this forward ran


def record_steps(engine: BatchingEngine, before=None) -> list[Step]:
    """Each of the engine's forwards, recorded; ``before(step_number, rows)`` runs before each."""
    steps: list[Step] = []
    forward = engine._forward

    def recorded(rows, **inputs):
        steps.append(Step([r.adapter.key if r.adapter else None for r in rows], inputs["input_ids"].shape[1],
                          len(engine._rows)))
        if before is not None:
            before(len(steps), rows)
        return forward(rows, **inputs)

    engine._forward = recorded
    return steps


def read(stream):
    """The whole text of a stream and its completion."""
    text = "".join(stream)
    return text, stream.completion


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


class Hold:
    """A context manager that records being entered and left."""

    def __init__(self):
        self.entered, self.exited, self.left = 0, 0, threading.Event()

    def __enter__(self):
        self.entered += 1
        return self

    def __exit__(self, *exc):
        self.exited += 1
        self.left.set()
        return False


def ascii_letter_in(text: str) -> str:
    """An ASCII letter the text has after its start (one token of the byte-level vocabulary)."""
    return next(c for c in text[3:] if c.isascii() and c.isalpha())


# ── the tests ───────────────────────────────────────────────────────────────────────────────
def test_prompts_decoded_together_each_get_their_answer_alone(make_engine, alone):
    engine = make_engine(max_batch=8)
    steps = record_steps(engine)
    params = Sampling(24)
    got = [choices[0] for choices in engine.generate(PROMPTS, params)]
    want = [alone(prompt, params) for prompt in PROMPTS]
    assert got == want
    assert len({len(p) for p in PROMPTS}) > 3 and len({c.text for c in want}) == len(want)
    assert {c.finish_reason for c in want} == {"stop", "length"}  # some end on the stop token, some run out
    assert steps[0].width == max(len(p) for p in PROMPTS) and len(steps[0].keys) == len(PROMPTS)  # one prefill
    assert engine.active == 0


def test_requests_joining_a_running_batch_get_their_answers_alone(make_engine, alone):
    engine = make_engine(max_batch=8)
    joins = {3: (PROMPTS[1], Sampling(12)), 6: (PROMPTS[2], Sampling(30)), 9: (PROMPTS[5], Sampling(8))}
    go = {step: threading.Event() for step in joins}
    submitted = {step: threading.Event() for step in joins}
    results: dict[int, tuple] = {}

    def before(step, rows):  # at these forwards a client arrives; the step waits until it has asked
        if step in go:
            go[step].set()
            assert submitted[step].wait(WAIT)

    def client(step):
        assert go[step].wait(WAIT)
        stream = engine.stream(*joins[step])
        submitted[step].set()
        results[step] = (*read(stream), stream.completion_tokens)

    steps = record_steps(engine, before)
    threads = [threading.Thread(target=client, args=(step,)) for step in joins]
    for thread in threads:
        thread.start()
    first_params = Sampling(40)
    first = engine.stream(PROMPTS[0], first_params)
    results[0] = (*read(first), first.completion_tokens)
    for thread in threads:
        thread.join(WAIT)
    requests = {0: (PROMPTS[0], first_params), **joins}
    for step, (prompt, params) in requests.items():
        want = alone(prompt, params)
        text, completion, completion_tokens = results[step]
        assert (text, completion_tokens, completion.finish_reason) == (want.text, want.tokens, want.finish_reason)
    reasons = {step: alone(*requests[step]).finish_reason for step in requests}
    assert set(reasons.values()) == {"stop", "length"}
    assert sum(1 for s in steps if s.width > 1 and s.running > 0) == 3  # three prefills beside running rows
    assert max(len(s.keys) for s in steps) >= 3
    wait_until(lambda: engine.active == 0, "the batch to empty")


def test_two_loras_and_the_base_share_one_step_and_each_answers_as_alone(make_engine, alone, adapters):
    engine = make_engine(max_batch=8)
    steps = record_steps(engine)
    params = Sampling(20)
    requests = [(None, PROMPTS[0]), ("red", PROMPTS[0]), ("blue", PROMPTS[0]), ("red", PROMPTS[3]),
                ("blue", PROMPTS[4]), (None, PROMPTS[2])]
    with engine.lock:  # the scheduler waits: all of them are admitted in its next step
        streams = [engine.stream(prompt, params, adapter=adapters.get(key)) for key, prompt in requests]
    got = [read(stream) for stream in streams]
    for (key, prompt), (text, completion) in zip(requests, got):
        want = alone(prompt, params, key)
        assert (text, completion.tokens, completion.finish_reason) == (want.text, want.tokens, want.finish_reason)
    assert len({text for text, _ in got[:3]}) == 3  # the adapters do change the answer to the same prompt
    assert steps[0].keys == [key for key, _ in requests]  # one prefill for all
    assert sum(1 for s in steps if s.width == 1 and {None, "red", "blue"} <= set(s.keys)) > 5  # and mixed decodes
    assert sorted(engine.adapters) == ["blue", "red"]


def test_without_mixing_each_step_holds_one_adapter_and_all_answer_as_alone(make_engine, alone, adapters):
    engine = make_engine(max_batch=8, mixed_adapters=False)
    steps = record_steps(engine)
    params = Sampling(16)
    requests = [("red", PROMPTS[0]), ("red", PROMPTS[3]), ("blue", PROMPTS[0]), (None, PROMPTS[0]), ("blue", PROMPTS[4])]
    with engine.lock:
        streams = [engine.stream(prompt, params, adapter=adapters.get(key)) for key, prompt in requests]
    got = [read(stream) for stream in streams]
    for (key, prompt), (text, completion) in zip(requests, got):
        want = alone(prompt, params, key)
        assert (text, completion.tokens, completion.finish_reason) == (want.text, want.tokens, want.finish_reason)
    assert len({text for text, _ in got[1:4]}) == 3
    assert all(len(set(s.keys)) == 1 for s in steps), [s.keys for s in steps]
    assert {s.keys[0] for s in steps} == {None, "red", "blue"}
    assert steps[0].keys == ["red", "red"]  # rows of one adapter still go together
    assert engine.active == 0


def test_a_cancelled_stream_leaves_the_batch_and_its_hold_while_the_others_finish(make_engine, alone):
    engine = make_engine(max_batch=8)
    hold = Hold()
    streams = {}
    after_cancel = []  # the forwards the cancelled row was in once cancelled

    def before(step, rows):
        row = next((r for r in rows if r.cancel is streams["gone"].cancelled), None)
        if row is not None and row.cancel.is_set():
            after_cancel.append(step)
        elif row is not None and len(row.tokens) >= 16:  # it cannot run on before its client has gone
            assert row.cancel.wait(WAIT)

    steps = record_steps(engine, before)
    others = {"hi": (PROMPTS[0], Sampling(40)), "x": (PROMPTS[4], Sampling(30))}
    with engine.lock:
        streams["gone"] = engine.stream(PROMPTS[5], Sampling(200), hold=hold)  # the longest prompt
        for name, (prompt, params) in others.items():
            streams[name] = engine.stream(prompt, params)
    assert hold.entered == 1 and hold.exited == 0
    pieces = iter(streams["gone"])
    assert next(pieces) and hold.exited == 0  # held while it generates
    streams["gone"].cancel()  # the client walks away
    assert hold.left.wait(WAIT)
    assert hold.entered == hold.exited == 1
    gone = streams["gone"].completion
    assert gone.finish_reason == "stop" and gone.tokens <= 17 and len(after_cancel) <= 1  # within a token
    for name, (prompt, params) in others.items():
        text, completion = read(streams[name])
        want = alone(prompt, params)
        assert (text, completion.tokens, completion.finish_reason) == (want.text, want.tokens, want.finish_reason)
    assert any(len(s.keys) == 2 for s in steps)  # the others went on without it
    wait_until(lambda: engine.active == 0, "the batch to empty")


def test_a_stop_string_cuts_the_text_and_ends_the_row(make_engine, alone):
    engine = make_engine()
    params = Sampling(40)
    full = engine.generate([PROMPTS[0]], params)[0][0]
    assert full.finish_reason == "length"
    stop = ascii_letter_in(full.text)
    stopped_params = Sampling(40, stop=(stop,))
    stopped, beside = (c[0] for c in engine.generate_each([(PROMPTS[0], stopped_params), (PROMPTS[4], params)]))
    assert stopped.text == full.text[:full.text.index(stop)] and stop not in stopped.text
    assert stopped.finish_reason == "stop" and stopped.tokens < 40
    assert stopped == alone(PROMPTS[0], stopped_params)  # the same count: the token that made the stop string
    assert beside == alone(PROMPTS[4], params)
    text, completion = read(engine.stream(PROMPTS[0], stopped_params))
    assert (text, completion) == (stopped.text, stopped)


def test_a_seed_gives_the_same_sample_alone_or_beside_another_request(make_engine):
    engine = make_engine()
    params = Sampling(20, temperature=1.0, seed=7)
    first = engine.generate([PROMPTS[1]], params)[0][0]
    assert engine.generate([PROMPTS[1]], params)[0][0] == first
    with engine.lock:  # prefilled with (and padded to) a longer prompt, decoded beside two other rows
        greedy = engine.stream(PROMPTS[2], Sampling(30))
        sampled = engine.stream(PROMPTS[0], Sampling(30, temperature=1.0, seed=8))
        beside = engine.stream(PROMPTS[1], params)
    assert read(beside) == (first.text, first)
    read(greedy)
    read(sampled)
    joining = engine.generate_each([(PROMPTS[3], Sampling(20, temperature=1.0, seed=3)), (PROMPTS[1], params)])
    assert joining[1][0] == first
    others = {engine.generate([PROMPTS[1]], Sampling(20, temperature=1.0, seed=seed))[0][0].text
              for seed in (1, 2, 3)}
    assert len(others | {first.text}) == 4


def test_an_error_in_the_model_fails_the_rows_of_that_step_and_the_engine_serves_on(make_engine, alone):
    engine = make_engine()
    forward = engine._forward
    calls = []
    fail_at = {1}

    def failing(rows, **inputs):
        calls.append(len(rows))
        if len(calls) in fail_at:
            raise RuntimeError("the model broke")
        return forward(rows, **inputs)

    engine._forward = failing
    params = Sampling(10)
    with pytest.raises(RuntimeError, match="the model broke"):
        engine.generate(PROMPTS[:3], params)  # at the prefill
    assert calls == [3] and engine.active == 0
    assert [c[0] for c in engine.generate(PROMPTS[:3], params)] == [alone(p, params) for p in PROMPTS[:3]]

    fail_at.add(len(calls) + 3)  # now at a decode step, with a stream in the batch too
    with engine.lock:
        stream = engine.stream(PROMPTS[4], Sampling(30))
        outcome = {}
        waiter = threading.Thread(target=lambda: outcome.update(error=_error_of(engine.generate, [PROMPTS[0]], params)))
        waiter.start()
        wait_until(lambda: engine.active == 2, "the second request to queue")
    with pytest.raises(RuntimeError, match="the model broke"):
        read(stream)
    waiter.join(WAIT)
    assert isinstance(outcome["error"], RuntimeError)
    assert engine.active == 0
    assert engine.generate([PROMPTS[5]], params)[0][0] == alone(PROMPTS[5], params)


def _error_of(function, *args):
    try:
        function(*args)
    except Exception as error:  # noqa: BLE001 - what the test looks at
        return error
    return None


def test_with_room_for_one_adapter_the_other_waits_and_each_answers_as_alone(make_engine, alone, adapters):
    engine = make_engine(max_adapters=1)
    steps = record_steps(engine)
    params = Sampling(20)
    for key in ("red", "blue", "red"):
        assert engine.generate([PROMPTS[0]], params, adapter=adapters[key])[0][0] == alone(PROMPTS[0], params, key)
        assert list(engine.adapters) == [key] and set(engine.model.peft_config) == {key}
    with engine.lock:  # both asked at once: "blue" waits until "red" has finished, and only then replaces it
        streams = {key: engine.stream(PROMPTS[3], params, adapter=adapters[key]) for key in ("red", "blue")}
    for key, stream in streams.items():
        text, completion = read(stream)
        want = alone(PROMPTS[3], params, key)
        assert (text, completion.tokens, completion.finish_reason) == (want.text, want.tokens, want.finish_reason)
    assert all(len(set(s.keys)) == 1 for s in steps)
    assert list(engine.adapters) == ["blue"] and set(engine.model.peft_config) == {"blue"}


def test_an_adapter_in_use_stays_loaded_when_a_new_one_needs_room(make_engine, alone, adapters):
    """Two adapters fit: "red" runs throughout, "blue" joins and leaves, then "green" joins. "blue",
    not "red" (loaded before it, but in use), makes room."""
    engine = make_engine(max_adapters=2)
    joins = {3: ("blue", PROMPTS[1], Sampling(3)), 10: ("green", PROMPTS[5], Sampling(10))}
    streams = {}

    def before(step, rows):
        if step in joins:
            key, prompt, params = joins[step]
            streams[key] = engine.stream(prompt, params, adapter=adapters[key])

    steps = record_steps(engine, before)
    streams["red"] = engine.stream(PROMPTS[0], Sampling(30), adapter=adapters["red"])
    requests = {"red": (PROMPTS[0], Sampling(30)), **{key: (p, params) for key, p, params in joins.values()}}
    got = {key: read(streams[key]) for key in ("red", "blue", "green")}
    for key, (prompt, params) in requests.items():
        want = alone(prompt, params, key)
        text, completion = got[key]
        assert (text, completion.tokens, completion.finish_reason) == (want.text, want.tokens, want.finish_reason)
    assert "blue" in steps[5].keys and steps[9].keys == ["red"]  # blue had left when green came
    assert any(set(s.keys) == {"red", "green"} for s in steps)
    assert sorted(engine.adapters) == ["green", "red"] and set(engine.model.peft_config) == {"green", "red"}
