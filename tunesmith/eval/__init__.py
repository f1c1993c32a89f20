"""Evaluation: metrics, side-by-side runs against the base model, reports."""
