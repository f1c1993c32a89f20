"""Data preparation on uploaded files (tunesmith's own routes): `data clean` and `data split`
with the same options as the commands, their outputs stored as new files. Nothing here cleans
or splits by itself; it calls the core API on the stored file and files what comes out."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from tunesmith import api
from tunesmith.errors import APIError, ConfigError, DataError
from tunesmith.jobs.files import FileStore

CLEAN_OPTIONS = {"fix_roles", "dedup_exact", "dedup_near", "near_rule", "label_conflicts", "pii", "min_tokens",
                 "max_tokens", "max_chars", "max_char_run", "min_text_ratio", "format"}


def clean(files: FileStore, file_id: str, options: dict[str, Any]) -> dict:
    """The cleaned file (validated, ready to train on), its rejects (every removed or changed
    record with its line, step and reason) and the clean card's counts."""
    row = files.get(file_id)
    unknown = sorted(set(options) - CLEAN_OPTIONS)
    if unknown:
        raise APIError(400, f"unknown clean option(s): {', '.join(unknown)} (known: {', '.join(sorted(CLEAN_OPTIONS))})",
                       "invalid_value", unknown[0])
    stem = Path(row.filename).stem
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / f"{stem}.clean.jsonl"
        try:
            card = api.clean(files.path(row.id), out, **options)
        except (ConfigError, DataError) as e:
            raise APIError(400, str(e).replace(str(files.path(row.id)), row.filename), "invalid_value", None) from None
        cleaned = files.save_bytes(out.name, out.read_bytes())
        rejects_path = out.with_suffix(".rejects.jsonl")
        rejects = files.save_bytes(rejects_path.name, rejects_path.read_bytes(), purpose="user_data") \
            if rejects_path.exists() else None
    return {"file": cleaned, "rejects_file": rejects, "card": _counts(card)}


def split(files: FileStore, file_id: str, body: dict[str, Any]) -> dict:
    """Train / validation (/ test) files, near-duplicates kept in one split, leakage checked."""
    row = files.get(file_id)
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / f"{Path(row.filename).stem}.jsonl"
        source.write_bytes(files.path(row.id).read_bytes())
        try:
            card = api.split_data(source, body.get("ratios", "0.8,0.1,0.1"), int(body.get("seed", 0)),
                                  body.get("stratify") or None, out_dir=scratch)
        except (ConfigError, DataError) as e:
            raise APIError(400, str(e).replace(str(source), row.filename), "invalid_value", None) from None
        # A training split needs enough examples to train on; a validation or test split only some.
        stored = {name: files.save_bytes(Path(path).name, Path(path).read_bytes(), min_examples=None if name == "train" else 1)
                  for name, path in card["files"].items()}
    return {"files": stored, "card": {k: v for k, v in card.items() if k not in ("files", "card")}}


def _counts(card: dict[str, Any]) -> dict[str, Any]:
    """The clean card without its local paths (plots and outputs live in a scratch directory)."""
    return {k: v for k, v in card.items() if k not in ("outputs", "plots")}
