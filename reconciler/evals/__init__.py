"""Eval suites: cases a model must answer and thresholds a change must keep (docs/evals.md)."""
