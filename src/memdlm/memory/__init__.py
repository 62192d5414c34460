"""Parametric memory: per-sample (or batch-shared) fast weights and the inner loop."""
