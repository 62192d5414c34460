"""Evaluation: held-out task accuracy, long-context suites, exposure bias, lm-eval."""
