"""Evals: datasets, scorers, suite runs with a regression gate for CI, online scoring of live traces and drift."""
