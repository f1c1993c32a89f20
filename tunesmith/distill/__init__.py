"""Distillation: a teacher's answers become an open student's training data (``tunesmith distill``)."""
