"""Built-in models: registry, pull, resolution and loading."""
