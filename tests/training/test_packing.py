"""Packing and the fused loss compute the same loss and gradients as the plain padded path."""
import pytest
import torch

from tests.conftest import build_tiny_model, byte_tokenizer, chat_records
from tunesmith.models.chat import IGNORE, encode_chat
from tunesmith.models.collate import PadCollator
from tunesmith.training import fused_loss
from tunesmith.training.fused_loss import fused_linear_cross_entropy
from tunesmith.training.packing import PackedCollator, pack_examples, packed_rows, packing_is_exact
from tunesmith.training.sft_trainer import fused_head, head_returns_hidden


@pytest.mark.parametrize("weight_grad", [False, True])
def test_fused_cross_entropy_matches_autograd_across_chunks(monkeypatch, weight_grad):
    monkeypatch.setattr(fused_loss, "_LOGITS_PER_CHUNK", 3 * 50)  # 3 rows per chunk: 7 chunks for 20 rows
    torch.manual_seed(0)
    hidden = torch.randn(20, 8, requires_grad=True)
    weight = torch.randn(50, 8, requires_grad=weight_grad)
    targets = torch.randint(0, 50, (20,))
    expected = torch.nn.functional.cross_entropy(hidden @ weight.T, targets, reduction="sum")
    (expected * 0.5).backward()
    want = hidden.grad.clone(), (weight.grad.clone() if weight_grad else None)
    hidden.grad = None
    weight.grad = None
    got = fused_linear_cross_entropy(hidden, weight, targets)
    (got * 0.5).backward()
    assert torch.allclose(got, expected, atol=1e-4)
    assert torch.allclose(hidden.grad, want[0], atol=1e-5)
    if weight_grad:
        assert torch.allclose(weight.grad, want[1], atol=1e-5)


def test_best_fit_decreasing_fills_rows_and_keeps_every_example():
    lengths = [7, 3, 9, 1, 4, 4, 6, 2, 8, 5]
    rows = pack_examples([{"input_ids": [0] * n} for n in lengths], 10)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 10 for row in rows)
    assert len(rows) == 5  # 49 tokens: the fewest rows of 10 that can hold them
    assert pack_examples([{"input_ids": [0] * 12}], 10) == [[0]]  # too long for a row: a row of its own


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    directory = build_tiny_model(tmp_path_factory.mktemp("tiny-pack"))
    return AutoModelForCausalLM.from_pretrained(directory).eval(), byte_tokenizer()


def _examples(tokenizer, n=6, train_on="assistant"):
    return [{"input_ids": e.input_ids, "labels": e.labels} for e in
            (encode_chat(tokenizer, r["messages"], 200, train_on) for r in chat_records(n, seed=3))]


def _summed_nll(model, batch):
    head = fused_head(model)
    with head_returns_hidden(head):
        hidden = model(**{k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids")},
                       logits_to_keep=batch["logits_to_keep"], use_cache=False).logits
    return fused_linear_cross_entropy(hidden, head.weight, batch["shift_labels"])


@pytest.mark.parametrize("train_on", ["assistant", "all"])
def test_packed_rows_give_the_padded_batch_loss(tiny, train_on):
    model, tokenizer = tiny
    examples = _examples(tokenizer, train_on=train_on)
    padded = PadCollator(tokenizer.pad_token_id, loss_positions_only=True)(examples)
    rows = packed_rows(examples, 160)
    assert len(rows) < len(examples)
    packed = PackedCollator(tokenizer.pad_token_id)(rows)
    assert packed["shift_labels"].numel() == padded["shift_labels"].numel()
    with torch.no_grad():
        reference = torch.nn.functional.cross_entropy(
            model(**{k: padded[k] for k in ("input_ids", "attention_mask")}).logits[padded["logits_to_keep"]],
            padded["shift_labels"], reduction="sum")
        assert torch.allclose(_summed_nll(model, padded), reference, rtol=1e-5)
        assert torch.allclose(_summed_nll(model, packed), reference, rtol=1e-5)


def test_no_target_crosses_an_example_boundary(tiny):
    _, tokenizer = tiny
    examples = _examples(tokenizer, n=3, train_on="all")
    row = packed_rows(examples, 10_000)[0]
    ends = [i for i, p in enumerate(row["position_ids"]) if i + 1 == len(row["position_ids"])
            or row["position_ids"][i + 1] == 0]
    assert len(ends) == 3 and all(row["targets"][i] == IGNORE for i in ends)


def test_packing_check_accepts_llama_and_rejects_a_model_that_leaks_across_examples(tiny):
    model, _ = tiny
    assert packing_is_exact(model)
    leaky = LeakyPositions(model)
    assert not packing_is_exact(leaky)


class LeakyPositions(torch.nn.Module):
    """A model that ignores position_ids, so packed examples see each other."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def forward(self, input_ids, position_ids=None, use_cache=False):
        return self.model(input_ids=input_ids, use_cache=use_cache)


def test_packed_attention_gives_the_same_loss_and_gradients_as_the_block_mask(tiny, monkeypatch):
    from tunesmith.training import packed_attention
    from tunesmith.training.packed_attention import training_attention

    sliced = []
    real = packed_attention._example_starts
    monkeypatch.setattr(packed_attention, "_example_starts", lambda *a: sliced.append(real(*a)) or sliced[-1])
    model, tokenizer = tiny
    packed = PackedCollator(tokenizer.pad_token_id)(packed_rows(_examples(tokenizer, train_on="all"), 160)[:2])
    results = []
    for enabled in (False, True):
        model.zero_grad()
        with training_attention(model, enabled):
            assert packing_is_exact(model)
            _summed_nll(model, packed).backward()
        results.append([p.grad.clone() for p in model.parameters()])
    assert model.config._attn_implementation == "sdpa"  # restored after training
    assert any(starts and len(starts[0]) > 1 for starts in sliced)  # the per-example path ran
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(*results))
