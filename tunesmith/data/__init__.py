"""Data formats, validation, splitting and dataset cards (pure Python, no torch)."""
