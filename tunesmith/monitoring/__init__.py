"""After launch: what the server's request log says about a model (traffic, latency, errors) and
whether its live inputs still look like its training data (drift); see monitor.py."""
