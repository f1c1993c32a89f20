"""Augmentation: generated records are filtered (duplicates of the originals, of the test data, of
each other, echoes, overlong) and marked with their provenance; every generation is accounted for."""
import json

import pytest

from tests.conftest import chat_records, classification_records, write_jsonl
from tunesmith import api
from tunesmith.data.formats import Format
from tunesmith.labeling.augment import Candidate, _clean, _filter, _pair_from


def test_the_filter_drops_duplicates_test_leaks_and_overlong_texts():
    originals = [({"text": "where is my parcel please", "label": "delivery"}, 1),
                 ({"text": "I forgot my password again", "label": "login"}, 2)]
    test = None
    make = lambda text, label="delivery": Candidate({"text": text, "label": label}, text, 1)  # noqa: E731
    candidates = [make("Where is my parcel, please?"),                        # the original, case and punctuation aside
                  make("my parcel has not arrived, where is it"),             # new
                  make("my parcel has not arrived where is it!"),             # the same new one again
                  make("a " * 200),                                           # far longer than any original
                  make("can you refund the shoes I sent back", "refund")]     # new
    kept, dropped = _filter(candidates, originals, Format.CLASSIFICATION, test, longest=30)
    assert [c.key_text for c in kept] == ["my parcel has not arrived, where is it", "can you refund the shoes I sent back"]
    assert dropped == {"too_long": 1, "duplicate_of_original": 1, "in_test_data": 0, "duplicate_of_generated": 1}


def test_test_data_is_never_generated_into_training(tmp_path):
    test = write_jsonl(tmp_path / "test.jsonl", [{"text": "can you refund the shoes I sent back", "label": "refund"}])
    candidates = [Candidate({"text": t, "label": "refund"}, t, None) for t in
                  ["Can you refund the shoes I sent back?", "please refund my order of socks"]]
    kept, dropped = _filter(candidates, [({"text": "refund me", "label": "refund"}, 1)], Format.CLASSIFICATION, test, 40)
    assert [c.key_text for c in kept] == ["please refund my order of socks"] and dropped["in_test_data"] == 1


def test_small_model_wrappers_are_removed_and_pairs_parsed():
    assert _clean('Rewritten message: "Where has my card gone?"\n\nI hope this helps!') == "Where has my card gone?"
    pair = _pair_from("Request: How do I freeze my card?\nAnswer: Open the app and tap Freeze.")
    assert pair.record["messages"][1]["content"] == "Open the app and tap Freeze."
    assert _pair_from("no structure at all") is None


@pytest.mark.slow
@pytest.mark.parametrize("method", ["paraphrase", "self-instruct"])
def test_augment_end_to_end_accounts_for_every_generation(workspace, tiny_model_dir, tmp_path, method):
    data = write_jsonl(tmp_path / "small.jsonl", classification_records(12))
    summary = api.augment(data, tmp_path / "more.jsonl", method, str(tiny_model_dir), 2, min_similarity=0,
                          workspace=workspace)
    expected = 12 * 2 if method == "paraphrase" else 3 * 2  # per record, or per label (3 labels)
    assert summary["generated"] == expected
    assert summary["kept"] + sum(summary["dropped"].values()) == expected
    rows = [json.loads(line) for line in (tmp_path / "more.jsonl").read_text().splitlines()]
    assert len(rows) == 12 + summary["kept"] and all("_augment" not in r for r in rows[:12])
    assert all(r["_augment"]["method"] == method and r["label"] in {"refund", "delivery", "login"} for r in rows[12:])


@pytest.mark.slow
def test_chat_paraphrases_keep_the_answer(workspace, tiny_model_dir, tiny_encoder_dir, tmp_path):
    data = write_jsonl(tmp_path / "chat.jsonl", chat_records(4))
    summary = api.augment(data, tmp_path / "more.jsonl", "paraphrase", str(tiny_model_dir), 1, min_similarity=0.2,
                          embedding_model=str(tiny_encoder_dir), workspace=workspace)
    rows = [json.loads(line) for line in (tmp_path / "more.jsonl").read_text().splitlines()]
    for row in rows[4:]:
        source = chat_records(4)[row["_augment"]["source_line"] - 1]
        assert row["messages"][-1] == source["messages"][-1]  # the answer is kept, the question rewritten
    assert summary["generated"] == 4 and "off_topic" in summary["dropped"]  # the similarity check ran
    assert summary["kept"] + sum(summary["dropped"].values()) == 4


def test_off_topic_generations_are_dropped_by_similarity_to_their_anchor(workspace, tiny_encoder_dir):
    from tunesmith.labeling.augment import _similarities
    from tunesmith.models.embeddings import load_encoder

    encoder = load_encoder(str(tiny_encoder_dir), workspace)
    same = Candidate({"text": "where is my parcel"}, "where is my parcel", 1, ("where is my parcel",))
    other = Candidate({"text": "zz"}, "qqqq zzzz wwww", 1, ("where is my parcel",))
    near, far = _similarities([same, other], encoder)
    assert near == pytest.approx(1.0, abs=1e-4) and far < near
