"""Experiment tracking: every train, eval and tune run recorded in MLflow (store.py: where;
tracker.py: a guarded MLflow run; callback.py: the Trainer bridge; views.py: runs list/show/compare)."""
