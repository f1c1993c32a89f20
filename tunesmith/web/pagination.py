"""OpenAI's list object, which every listing route answers with: ``{"object": "list", "data":
[...], "has_more": bool}``, plus ``first_id`` / ``last_id`` where OpenAI's route has them
(a job's checkpoints)."""
from __future__ import annotations

from typing import Any


def page(data: list[dict], has_more: bool, with_ids: bool = False) -> dict:
    """
    >>> page([{"id": "a"}, {"id": "b"}], False, with_ids=True)
    {'object': 'list', 'data': [{'id': 'a'}, {'id': 'b'}], 'has_more': False, 'first_id': 'a', 'last_id': 'b'}
    """
    listing: dict[str, Any] = {"object": "list", "data": data, "has_more": has_more}
    if with_ids:
        listing |= {"first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}
    return listing
