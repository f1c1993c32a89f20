"""Monitoring thresholds: typed, with defaults, from an optional YAML file (``tunesmith monitor
--config monitor.yaml``); a bad value is reported with its file, line and key."""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from tunesmith.config import load_yaml_model


class MonitorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    p_value: float = Field(0.01, gt=0, lt=1, description="A drift test alerts when its p-value is below this ...")
    min_effect: float = Field(0.1, ge=0, le=1, description="... and its effect size (KS statistic, Jensen-Shannon distance, total variation beyond what sampling alone gives) is at least this: with thousands of requests, tiny harmless shifts are 'significant'.")
    min_requests: int = Field(30, ge=5, description="Fewer live inputs than this: drift is not tested (too little to tell).")
    max_error_rate: float = Field(0.05, ge=0, le=1, description="Alert when more than this share of requests fail (any non-200 answer).")
    max_latency_p95_ms: float | None = Field(None, gt=0, description="Alert when the 95th-percentile latency exceeds this (null: no latency alert).")
    max_confidence_drop: float = Field(0.1, ge=0, le=1, description="Classifiers: alert when live predictions are this much less confident, on average, than the model is on its own training inputs (and a Mann-Whitney test agrees at p_value).")
    min_mean_confidence: float | None = Field(None, ge=0, le=1, description="Classifiers: also alert below this mean confidence (null: no absolute floor; what is 'confident' depends on the number of labels).")
    low_confidence: float = Field(0.5, gt=0, le=1, description="Classifiers: a prediction below this confidence counts as unsure.")
    max_negative_feedback: float = Field(0.3, ge=0, le=1, description="Alert when more than this share of rated answers were rated bad (at least min_feedback ratings).")
    min_feedback: int = Field(10, ge=1, description="Ratings needed before the feedback share can alert.")
    embedding_model: str = Field("minilm-l6", description="Sentence encoder for embedding drift (mean-pooled); pulled on first use.")
    max_samples: int = Field(500, ge=20, le=5000, description="Inputs per side used by the embedding and permutation tests (a seeded random sample).")
    permutations: int = Field(500, ge=50, le=10000, description="Permutations of the MMD test (p-value resolution 1/(n+1)).")
    seed: int = 0


def load_settings(path: str | Path | None, overrides: dict | None = None) -> MonitorSettings:
    """The thresholds from a whole file, or from the ``monitor:`` section of one, with
    ``overrides`` (``parse_overrides`` of ``--set key=value``) on top."""
    return load_yaml_model(path, MonitorSettings, overrides, section="monitor", what="monitor settings")
