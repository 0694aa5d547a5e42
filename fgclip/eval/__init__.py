"""Evaluation: test sets, ground truth, metrics, prompt scoring, heat maps, reports, `score`."""
