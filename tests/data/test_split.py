from collections import Counter

import pytest

from tunesmith.data.split import parse_ratios, split_indices


def test_split_is_deterministic_complete_and_disjoint():
    records = [{"i": i} for i in range(101)]
    a = split_indices(records, (0.8, 0.1, 0.1), seed=3)
    assert a == split_indices(records, (0.8, 0.1, 0.1), seed=3)
    assert a != split_indices(records, (0.8, 0.1, 0.1), seed=4)
    flat = sorted(i for part in a for i in part)
    assert flat == list(range(101))
    assert [len(p) for p in a] == [81, 10, 10]


def test_stratified_split_keeps_label_shares():
    records = [{"label": "a"}] * 60 + [{"label": "b"}] * 30 + [{"label": "c"}] * 10
    train, val, test = split_indices(records, (0.8, 0.1, 0.1), seed=0, stratify="label")
    for part, expected in ((val, {"a": 6, "b": 3, "c": 1}), (test, {"a": 6, "b": 3, "c": 1})):
        assert Counter(records[i]["label"] for i in part) == expected


@pytest.mark.parametrize("text", ["0.8,0.1", "a,b", "1.0", "0.5,0.5,0.5,-0.5", "0.9,0.2"])
def test_bad_ratios(text):
    if text == "0.8,0.1":
        with pytest.raises(ValueError, match="sum to 1"):
            parse_ratios(text)
    else:
        with pytest.raises(ValueError):
            parse_ratios(text)


def test_split_keeps_near_duplicate_groups_whole_is_stratified_and_does_not_leak(tmp_path):
    import json
    import random

    import tunesmith
    from tests.data.test_clean import TOPICS

    rng = random.Random(0)
    vocabulary = " ".join(TOPICS).lower().split()
    records = []
    for i in range(300):
        label = ["billing", "shipping", "returns"][i % 3] if i < 270 else "rare" if i < 271 else "billing"
        records.append({"text": " ".join(rng.choices(vocabulary, k=12)), "label": label})
    planted = [(5, {"text": records[5]["text"].upper(), "label": records[5]["label"]}),
               (8, {"text": records[8]["text"] + "!!", "label": records[8]["label"]})]
    records += [copy for _, copy in planted]
    path = tmp_path / "tickets.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))

    card = tunesmith.split_data(path, "0.8,0.1,0.1", seed=1, stratify="label", out_dir=tmp_path / "out")
    assert card["near_duplicate_groups"] == 2
    assert all(v == {"exact": 0, "near": 0} for v in card["leakage"].values())
    assert card["rare_labels"] == ["rare"]
    assert all(dev <= 1.0 for dev in card["max_label_share_deviation_pp"].values())
    where = {}
    for name, file in card["files"].items():
        for line in open(file):
            where.setdefault(json.loads(line)["text"].lower().rstrip("!"), set()).add(name)
    assert all(len(splits) == 1 for splits in where.values())


def test_leakage_finds_exact_and_near_overlaps(tmp_path):
    import json

    import tunesmith
    from tests.data.test_clean import TOPICS, chat

    train = [chat(t) for t in TOPICS[:10]]
    test = [chat(TOPICS[0]), chat(TOPICS[1].lower() + " please"), chat(TOPICS[12]), chat(TOPICS[13])]
    a, b = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    a.write_text("".join(json.dumps(r) + "\n" for r in train))
    b.write_text("".join(json.dumps(r) + "\n" for r in test))
    found = tunesmith.leakage(a, b)
    assert (found["exact_overlaps"], found["near_overlaps"]) == (1, 1)
    assert {(e["kind"], e["a_line"], e["b_line"]) for e in found["examples"]} == {("exact", 1, 1), ("near", 2, 2)}
