"""tunesmith: fine-tune language models on your own data, evaluate them against the base model, use them.

The public Python API (see tunesmith/api.py); the ``tunesmith`` command is a thin layer over it.
"""
from tunesmith.api import (
    check_data,
    clean,
    compare,
    compare_tracked,
    evaluate,
    export,
    generate,
    get_run,
    leakage,
    list_models,
    list_runs,
    load,
    pull_model,
    resume,
    show_run,
    split,
    split_data,
    stream_reply,
    sync_runs,
    tracked_runs,
    train,
    tune,
    validate_data,
)
from tunesmith.config import ClassifyConfig, PreferenceConfig, SFTConfig, load_config
from tunesmith.errors import (
    ConfigError,
    DataError,
    ExportError,
    ModelNotFound,
    ParityFailed,
    RunNotFound,
    TunesmithError,
)
from tunesmith.workspace import Workspace

__version__ = "0.1.0"
__all__ = [
    "check_data", "clean", "compare", "evaluate", "export", "generate", "get_run", "leakage", "list_models", "list_runs", "load", "pull_model",
    "resume", "show_run", "tracked_runs", "compare_tracked", "tune", "sync_runs", "split", "split_data", "stream_reply", "train", "validate_data", "SFTConfig", "ClassifyConfig", "PreferenceConfig", "load_config",
    "ConfigError", "DataError", "ExportError", "ModelNotFound", "ParityFailed", "RunNotFound", "TunesmithError", "Workspace",
]
