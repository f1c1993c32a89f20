"""The OpenAI-compatible server: files, fine-tuning jobs, models, chat completions (``tunesmith serve``)."""
