"""Benchmarks of Kolors Studio: python -m bench.run (see bench/README.md)."""
