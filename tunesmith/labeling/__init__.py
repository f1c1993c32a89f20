"""Active learning and weak supervision: which unlabelled examples a human should label next
(suggest.py) and a model's proposed labels for a human to confirm (prelabel.py)."""
