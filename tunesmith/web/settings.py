"""The web server's settings: what ``tunesmith serve`` passes to ``create_app`` (keys required,
body and upload limits, CORS origins, model-server capacity, request logging). Built at the edge
and kept on ``app.state.settings``; never a module-level instance."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.jobs.request_log import LogSettings

DEFAULT_UPLOAD_LIMIT = 512 * 1024 * 1024  # OpenAI's per-file limit
DEFAULT_BODY_LIMIT = 8 * 1024 * 1024      # a JSON body: far more than any context holds


@dataclass
class ServerSettings:
    require_keys: bool = True
    max_upload_bytes: int = DEFAULT_UPLOAD_LIMIT
    max_body_bytes: int = DEFAULT_BODY_LIMIT
    cors_origins: tuple[str, ...] = ()
    max_adapters: int = 8
    max_waiting: int = 16
    request_log: LogSettings = field(default_factory=LogSettings)
    models: dict[str, Path] = field(default_factory=dict)  # --model NAME=DIR: local model directories
    engine: str = "transformers"  # --engine: auto, transformers, llama.cpp, vllm (serving/engines.py)
    max_batch: int = 8            # --max-batch: requests decoded together per model (transformers)
