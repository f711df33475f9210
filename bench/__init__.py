"""Benchmarks of the product and one-off studies, run from the repository root as `python -m bench.<name>`
(index: bench/README.md)."""
