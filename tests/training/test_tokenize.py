"""Assistant-only labels: exactly the assistant turns (content + end of turn) carry loss."""
import pytest

from tunesmith.errors import TemplateError
from tunesmith.models.chat import IGNORE, encode_chat, ensure_chat_template, prompt_ids


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def trained_text(tokenizer, encoded):
    return tokenizer.decode([t for t, l in zip(encoded.input_ids, encoded.labels) if l != IGNORE])


def test_only_assistant_turns_carry_loss_in_multi_turn(tokenizer):
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Goodbye."}]
    encoded = encode_chat(tokenizer, messages, max_length=1000)
    assert trained_text(tokenizer, encoded) == "Hello.<|im_end|>\nGoodbye.<|im_end|>\n"
    assert len(encoded.input_ids) == len(encoded.labels) and not encoded.truncated


def test_weight_zero_turns_are_not_trained(tokenizer):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Bad answer", "weight": 0},
                {"role": "user", "content": "Again"}, {"role": "assistant", "content": "Good answer", "weight": 1}]
    assert trained_text(tokenizer, encode_chat(tokenizer, messages, 1000)) == "Good answer<|im_end|>\n"


def test_truncation_is_reported(tokenizer):
    messages = [{"role": "user", "content": "x" * 50}, {"role": "assistant", "content": "y" * 50}]
    encoded = encode_chat(tokenizer, messages, max_length=40)
    assert encoded.truncated and len(encoded.input_ids) == 40 and encoded.loss_tokens == 0


def test_prompt_ids_end_with_the_assistant_header(tokenizer):
    ids = prompt_ids(tokenizer, [{"role": "user", "content": "Hi"}])
    assert tokenizer.decode(ids).endswith("<|im_start|>assistant\n")


def test_models_without_a_template_get_chatml(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = None
    assert ensure_chat_template(tokenizer) is True
    assert "<|im_start|>" in tokenizer.chat_template


def test_unstable_template_is_refused_with_advice(tokenizer):
    from transformers import AutoTokenizer

    unstable = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    # Renders the message count first: earlier prefixes are not prefixes of the full text.
    unstable.chat_template = "{{ messages|length }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(TemplateError, match="chat_template"):
        encode_chat(unstable, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], 100)


class _NoChatmlTokens:
    """A tokenizer whose vocabulary lacks ChatML's markers (like Gemma 3 base)."""

    chat_template = "{{ '<|im_start|>' }}...{{ '<|im_end|>' }}"
    unk_token_id = 3
    eos_token_id = 1

    def convert_tokens_to_ids(self, token):
        return self.unk_token_id


def test_chatml_without_its_tokens_stops_on_the_string(tokenizer):
    from tunesmith.models.chat import stop_strings, stop_token_ids, strip_stop_strings

    assert stop_strings(_NoChatmlTokens()) == ["<|im_end|>"]
    assert stop_token_ids(_NoChatmlTokens()) == [1]
    assert stop_strings(tokenizer) == []  # the tiny tokenizer has <|im_end|> as a token
    assert strip_stop_strings("card_arrival<|im_end|>\n<|im_start|>user", ["<|im_end|>"]) == "card_arrival"
