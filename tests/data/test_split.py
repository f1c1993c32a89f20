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
