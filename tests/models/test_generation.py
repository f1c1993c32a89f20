"""The generation engine on the tiny random model: seeds, stop strings (cut, held back when
streamed), finish reasons, token counts in a padded batch, cancel, and the stream's hold."""
import threading

import pytest

from tunesmith.models import engine
from tunesmith.models.chat import prompt_ids
from tunesmith.models.engine import Sampling
from tunesmith.models.store import ModelRef

ASKS = ["Which colour is item 2?", "hi", "Tell me a long story about cats"]
SAMPLED = Sampling(30, temperature=1.0, top_k=0, seed=7)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    loaded = engine.load_model(ModelRef("tiny", str(tiny_model_dir)))
    prompts = [prompt_ids(loaded.tokenizer, [{"role": "user", "content": a}]) for a in ASKS]
    return loaded, prompts


def ascii_stop(text: str) -> str:
    """A letter the text has after its start (one byte, one token of the byte-level vocabulary)."""
    return next(c for c in text[3:] if c.isascii() and c.isalpha())


def test_a_seed_gives_the_same_choices_and_n_gives_several(tiny):
    loaded, prompts = tiny
    eng = loaded.engine()
    first = eng.generate(prompts, Sampling(12, temperature=1.0, n=2, seed=3))
    assert first == eng.generate(prompts, Sampling(12, temperature=1.0, n=2, seed=3))
    assert all(len(choices) == 2 and choices[0] != choices[1] for choices in first)
    assert all(c.tokens == 12 and c.finish_reason == "length" for choices in first for c in choices)


def test_a_stop_string_cuts_the_text_and_ends_generation(tiny):
    loaded, prompts = tiny
    eng = loaded.engine(batch_size=1)
    full = eng.generate(prompts[:1], SAMPLED)[0][0]
    stop = ascii_stop(full.text)
    stopped = eng.generate(prompts[:1], Sampling(30, temperature=1.0, top_k=0, seed=7, stop=(stop,)))[0][0]
    assert stopped.text == full.text[:full.text.index(stop)]
    assert stopped.finish_reason == "stop" and stopped.tokens < full.tokens == 30


def test_a_stream_says_what_generate_says(tiny):
    loaded, prompts = tiny
    eng = loaded.engine(batch_size=1)
    stop = ascii_stop(eng.generate(prompts[:1], SAMPLED)[0][0].text)
    params = Sampling(30, temperature=1.0, top_k=0, seed=7, stop=(stop,))
    alone = eng.generate(prompts[:1], params)[0][0]
    stream = eng.stream(prompts[0], params)
    pieces = list(stream)
    assert "".join(pieces) == stream.text == alone.text and stop not in stream.text
    assert stream.completion_tokens == alone.tokens and stream.prompt_tokens == len(prompts[0])


def test_a_batch_row_counts_its_tokens_up_to_its_stop_not_the_padding(tiny):
    """The tiny tokenizer pads with eos: a row that ended at a stop string is followed by eos
    tokens it never generated. The texts are transformers' own ``generate(stop_strings=...)``'s."""
    import torch

    loaded, prompts = tiny
    eng = loaded.engine(batch_size=3)
    texts = [c[0].text for c in eng.generate(prompts, SAMPLED)]
    stop = ascii_stop(texts[0])
    params = Sampling(30, temperature=1.0, top_k=0, seed=7, stop=(stop,))
    got = [c[0] for c in eng.generate(prompts, params)]
    order = sorted(range(3), key=lambda i: len(prompts[i]))
    width = max(len(p) for p in prompts)
    pads = [width - len(prompts[i]) for i in order]
    ids = torch.tensor([[loaded.tokenizer.pad_token_id] * pad + prompts[i] for pad, i in zip(pads, order)])
    mask = torch.tensor([[0] * pad + [1] * len(prompts[i]) for pad, i in zip(pads, order)])
    torch.manual_seed(7)
    out = loaded.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=30, do_sample=True,
                                temperature=1.0, top_k=None, stop_strings=[stop], tokenizer=loaded.tokenizer,
                                eos_token_id=loaded.tokenizer.eos_token_id,
                                pad_token_id=loaded.tokenizer.pad_token_id)[:, width:]
    for row, i in enumerate(order):
        tokens = loaded.tokenizer.convert_ids_to_tokens(out[row].tolist())
        ends = [k + 1 for k, token in enumerate(tokens) if token in (stop, loaded.tokenizer.eos_token)]
        expected = min(ends, default=30)
        assert got[i].tokens == expected
        assert got[i].text == loaded.tokenizer.decode(out[row], skip_special_tokens=True).split(stop)[0]
    assert got[0].finish_reason == "stop"


def test_cancel_stops_at_the_next_token(tiny):
    loaded, prompts = tiny
    cancel = threading.Event()
    cancel.set()
    done = loaded.engine().generate(prompts, SAMPLED, cancel)
    assert [c[0].tokens for c in done] == [1, 1, 1] and {c[0].finish_reason for c in done} == {"stop"}


def test_a_stream_holds_its_hold_in_the_generating_thread(tiny):
    loaded, prompts = tiny
    seen, gate = [], threading.Event()

    class Hold:
        def __enter__(self):
            gate.wait()
            seen.append(("enter", threading.current_thread().name))

        def __exit__(self, *exc):
            seen.append(("exit", threading.current_thread().name))

    gate.set()
    stream = loaded.engine().stream(prompts[1], Sampling(5), hold=Hold())
    assert "".join(stream) == "\n" * 5 and stream.completion_tokens == 5
    assert [step for step, _ in seen] == ["enter", "exit"] and seen[0][1] != threading.current_thread().name
    gate.clear()
    stream = loaded.engine().stream(prompts[1], Sampling(5), hold=Hold())
    stream.cancel()  # while it waited for the model: nothing is generated, the hold is still left
    gate.set()
    assert list(stream) == [] and stream.completion_tokens == 0 and len(seen) == 4


def test_generate_strips_and_stream_yields_the_reply(tiny):
    loaded, _ = tiny
    ask = [{"role": "user", "content": "hi"}]
    assert engine.generate(loaded, [ask], 6) == [""]  # the untrained model says six newlines
    assert "".join(engine.stream(loaded, ask, 6)) == "\n" * 6
