"""Benchmarks that run Modelyard and its competitor side by side (see bench/README.md)."""
