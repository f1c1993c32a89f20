import math

import pytest

from tunesmith.eval import metrics


def test_rouge_l_and_bleu_bounds():
    assert metrics.rouge_l(["a b c"], ["a b c"]) == pytest.approx(1.0)
    assert metrics.rouge_l(["x y"], ["a b"]) == 0.0
    assert metrics.bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)
    assert metrics.bleu(["dog"], ["the cat sat on the mat"]) < 1.0


def test_exact_match_on_final_answers():
    predictions = ["steps...\n#### 1,200", "#### 7", "card_arrival", "Card_Arrival.", "I think lost_card"]
    answers = ["1200", "8", "card_arrival", "card_arrival", "lost_card"]
    assert metrics.exact_match(predictions, answers) == pytest.approx(3 / 5)


def test_perplexity():
    assert metrics.perplexity(0.0) == 1.0
    assert metrics.perplexity(math.log(4)) == pytest.approx(4.0)
