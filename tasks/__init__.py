"""The pipeline's edge: Prefect tasks over the core steps (steps.py), the DVC stage driver (stage.py) and the
one MLflow module both use (tracking.py). The core package `bertcompress` never imports from here."""
