"""Serving models over OpenAI's inference API: names (``names.py``), aliases (``aliases.py``)
and the loaded models with their locks, admission and adapters (``model_server.py``).
Generation itself is the engine's (``tunesmith/models/engine.py``)."""
