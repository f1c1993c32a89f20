"""Serving aliases: a stable model name clients call (``model="support-bot"``), pointing at
whichever run won the last retraining comparison; kept in ``<home>/aliases.json`` with the
model it replaced, so a promotion can be undone by pointing the alias back."""
from __future__ import annotations

import json
import time

from tunesmith.errors import ConfigError
from tunesmith.files import write_json_atomic
from tunesmith.workspace import Workspace, is_safe_name


def set_alias(workspace: Workspace, alias: str, target: str) -> None:
    if not is_safe_name(alias) or alias.startswith("ft:"):
        raise ConfigError(f"alias {alias!r}: use letters, digits, '.', '-' and '_'")
    path = workspace.aliases_path
    aliases = json.loads(path.read_text()) if path.exists() else {}
    aliases[alias] = {"model": target, "since": time.time(), "previous": (aliases.get(alias) or {}).get("model")}
    write_json_atomic(path, aliases)


def remove_alias(workspace: Workspace, alias: str) -> bool:
    """Delete the alias only: the model it points at stays. False when there was none."""
    path = workspace.aliases_path
    aliases = json.loads(path.read_text()) if path.exists() else {}
    if aliases.pop(alias, None) is None:
        return False
    write_json_atomic(path, aliases)
    return True


def read_aliases(workspace: Workspace) -> dict[str, str]:
    path = workspace.aliases_path
    return {name: entry["model"] for name, entry in json.loads(path.read_text()).items()} if path.exists() else {}
