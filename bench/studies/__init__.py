"""One-off studies: grids of runs behind a RESULTS-*.md (index: bench/README.md); python -m bench.studies.<name>."""
