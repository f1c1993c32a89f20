"""Which examples changed: two systems compared example by example on the same held-out data.

An average hides what a fine-tune broke: +5 points can be 40 examples won and 30 lost. For a pair
(system, other) scored on the same examples this module gives the examples won, lost and tied on
a per-example metric, and a *paired* significance test of the difference:

- **McNemar's exact test** for a 0/1 metric (exact match, accuracy): under "no difference" each
  discordant example (one system right, the other wrong) is a fair coin, so the two-sided
  p-value is a binomial test on the discordant pairs (``scipy.stats.binomtest``, p = 0.5); the
  concordant ones carry no information about the difference.
- **A paired bootstrap** for a continuous metric (ROUGE-L, loss, a preference margin): the
  per-example differences are resampled with replacement (``scipy.stats.bootstrap``; resampling
  the differences is resampling the examples, both systems together), 10,000 times with a fixed
  seed so a report is reproducible. The confidence interval is the percentile one. scipy gives
  no p-value, so it is the bootstrap test of Efron & Tibshirani (1993, §16.4): the resampled
  means shifted to the null (mean difference 0), p = (1 + #{|mean* − mean| ≥ |mean|}) / (1 + B).

The lost examples come first everywhere they are listed: they are what a user must look at.
Pure functions (numbers in, numbers and indices out); the evaluations attach the texts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

RESAMPLES = 10_000
SEED = 0
ALPHA = 0.05
SHOWN_LOST, SHOWN_WON = 20, 5  # examples written out with their texts (all are counted and indexed)


@dataclass(frozen=True)
class Outcomes:
    won: list[int]
    lost: list[int]
    tied: list[int]


def outcomes(system: Sequence[float], other: Sequence[float], higher_is_better: bool = True,
             tolerance: float = 1e-9) -> Outcomes:
    """Indices of the examples ``system`` scores better on (won), worse (lost) and the same (tied).

    >>> outcomes([1, 0, 1, 1], [0, 1, 1, 0])
    Outcomes(won=[0, 3], lost=[1], tied=[2])
    >>> outcomes([0.2, 0.5], [0.3, 0.5], higher_is_better=False)
    Outcomes(won=[0], lost=[], tied=[1])
    """
    if len(system) != len(other):
        raise ValueError(f"paired scores need the same examples: {len(system)} vs {len(other)}")
    won, lost, tied = [], [], []
    for i, (a, b) in enumerate(zip(system, other)):
        gain = (a - b) if higher_is_better else (b - a)
        (won if gain > tolerance else lost if gain < -tolerance else tied).append(i)
    return Outcomes(won, lost, tied)


def mcnemar(won: int, lost: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (1.0 when there are none).

    >>> mcnemar(10, 0) == 2 * 0.5 ** 10
    True
    >>> mcnemar(3, 3), mcnemar(0, 0)
    (1.0, 1.0)
    """
    from scipy.stats import binomtest

    if won + lost == 0:
        return 1.0
    return float(binomtest(won, won + lost, 0.5).pvalue)


def paired_bootstrap(system: Sequence[float], other: Sequence[float], resamples: int = RESAMPLES,
                     seed: int = SEED, confidence: float = 0.95) -> dict[str, float]:
    """Mean of ``system - other``, its percentile confidence interval and the two-sided bootstrap
    p-value of "the mean difference is 0" (see the module docstring).

    >>> r = paired_bootstrap([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    >>> r["mean_difference"], r["p_value"]
    (0.0, 1.0)
    """
    import numpy as np
    from scipy.stats import bootstrap

    differences = np.asarray(system, dtype=float) - np.asarray(other, dtype=float)
    if len(differences) == 0:
        raise ValueError("a paired bootstrap needs at least one example")
    mean = float(differences.mean())
    if np.ptp(differences) == 0:  # every resample is the same mean: scipy warns of a degenerate distribution
        return {"mean_difference": mean, "ci_low": mean, "ci_high": mean,
                "p_value": 1.0 if mean == 0 else 1 / (resamples + 1), "resamples": resamples, "seed": seed}
    result = bootstrap((differences,), np.mean, n_resamples=resamples, confidence_level=confidence,
                       method="percentile", vectorized=True, batch=max(1, 2_000_000 // len(differences)),
                       rng=np.random.default_rng(seed))
    shifted = np.abs(result.bootstrap_distribution - mean) >= abs(mean) - 1e-12
    return {"mean_difference": mean, "ci_low": float(result.confidence_interval.low),
            "ci_high": float(result.confidence_interval.high),
            "p_value": float((1 + shifted.sum()) / (1 + resamples)), "resamples": resamples, "seed": seed}


def compare(system: str, other: str, metric: str, system_scores: Sequence[float], other_scores: Sequence[float],
            binary: bool, describe: Callable[[int], dict[str, Any]] = lambda i: {},
            higher_is_better: bool = True, indices: Sequence[int] | None = None,
            warn_on_any_loss: bool = False) -> dict[str, Any]:
    """One pair on one metric: counts, the paired test, and the examples lost (first) and won.

    ``indices`` maps positions in the score lists to example numbers in the test data (a baseline
    scored on a sample); ``describe(example number)`` gives the texts shown beside the scores.

    >>> c = compare("tuned", "base", "exact_match", [1, 1, 0, 1], [0, 0, 1, 1], binary=True)
    >>> c["won"], c["lost"], c["tied"], c["test"], round(c["p_value"], 3), c["lost_examples"]
    (2, 1, 1, 'mcnemar', 1.0, [2])
    """
    found = outcomes(system_scores, other_scores, higher_is_better)
    number = list(indices) if indices is not None else list(range(len(system_scores)))
    row: dict[str, Any] = {"system": system, "other": other, "metric": metric, "higher_is_better": higher_is_better,
                           "examples": len(system_scores), "won": len(found.won), "lost": len(found.lost),
                           "tied": len(found.tied),
                           "mean_difference": _mean(system_scores) - _mean(other_scores)}
    if binary:
        row |= {"test": "mcnemar", "p_value": mcnemar(len(found.won), len(found.lost))}
    else:
        boot = paired_bootstrap(system_scores, other_scores)
        row |= {"test": "bootstrap", **boot}
    worse = row["mean_difference"] < 0 if higher_is_better else row["mean_difference"] > 0
    row["significant"] = row["p_value"] < ALPHA
    row["significantly_worse"] = row["significant"] and worse
    row["warn_on_any_loss"] = warn_on_any_loss
    row["lost_examples"] = [number[i] for i in found.lost]
    row["won_examples"] = [number[i] for i in found.won]
    row["shown"] = [_shown(number[i], "lost", system_scores[i], other_scores[i], describe) for i in found.lost[:SHOWN_LOST]]
    row["shown"] += [_shown(number[i], "won", system_scores[i], other_scores[i], describe) for i in found.won[:SHOWN_WON]]
    return row


def warnings(comparisons: list[dict[str, Any]]) -> list[str]:
    """The regressions a user must not miss: a significant loss to any system, and any example
    lost to the starting point (the base model) on a 0/1 metric — what it got right and the
    fine-tune now gets wrong.

    >>> warnings([compare("fine-tuned", "base", "exact match", [1, 0], [1, 1], True, warn_on_any_loss=True)])
    ['fine-tuned got 1 example wrong that base got right (exact match; McNemar p = 1)']
    """
    out = []
    for c in comparisons:
        if c["significantly_worse"]:
            out.append(f"{c['system']} is significantly worse than {c['other']} on {c['metric']} "
                       f"({describe_test(c)}; lost {c['lost']}, won {c['won']}, tied {c['tied']})")
        elif c["warn_on_any_loss"] and c["lost"] and c["test"] == "mcnemar":
            out.append(f"{c['system']} got {c['lost']} example{'s' if c['lost'] != 1 else ''} wrong that "
                       f"{c['other']} got right ({c['metric']}; {describe_test(c)})")
    return out


def describe_test(c: dict[str, Any]) -> str:
    """The test and its p-value, as a report prints it.

    >>> describe_test({"test": "mcnemar", "p_value": 0.00195})
    'McNemar p = 0.00195'
    >>> describe_test({"test": "bootstrap", "p_value": 1 / 10_001, "resamples": 10_000})
    'paired bootstrap (10,000 resamples) p ≤ 0.0001'
    """
    if c["test"] == "mcnemar":
        return f"McNemar p = {c['p_value']:.3g}"
    resamples = c.get("resamples", RESAMPLES)
    if c["p_value"] <= 1 / (resamples + 1) + 1e-15:  # no resample as far from the null: the floor of the test
        return f"paired bootstrap ({resamples:,} resamples) p ≤ {1 / (resamples + 1):.2g}"
    return f"paired bootstrap ({resamples:,} resamples) p = {c['p_value']:.3g}"


def method_note() -> str:
    return (f"Paired tests on the same examples: McNemar's exact test (binomial on the discordant examples) for "
            f"0/1 metrics; for continuous ones a paired bootstrap of the per-example differences, {RESAMPLES:,} "
            f"resamples, seed {SEED} (percentile 95% interval). Significant: p < {ALPHA}.")


def section(comparisons: list[dict[str, Any]]) -> dict[str, Any]:
    """The report's ``paired`` section."""
    return {"comparisons": comparisons, "warnings": warnings(comparisons), "method": method_note()}


def _shown(example: int, outcome: str, a: float, b: float, describe: Callable[[int], dict[str, Any]]) -> dict[str, Any]:
    return {"example": example, "outcome": outcome, "system_score": float(a), "other_score": float(b),
            **describe(example)}


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if len(values) else 0.0
