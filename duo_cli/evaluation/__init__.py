"""Evaluation: the Evaluator (seeded, fixed quota per slot) and statistics of its results."""
