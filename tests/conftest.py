"""Shared fixtures: offline switches, real GLUE from ../shared/glue, and one tiny prepared MRPC slice."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_GLUE = REPO.parent / "shared" / "glue"

for var, value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "TQDM_DISABLE": "1",
}.items():
    os.environ.setdefault(var, value)
os.environ.setdefault("GLUE_DIR", str(os.environ.get("GLUE_DIR") or SHARED_GLUE))

# The slow tier (`make test` runs it after `make test-fast`): a test is slow when it needs a workspace where a
# flow, DVC, a server or a browser ran, or makes its own (tmp_path_factory), or is marked so by hand.
SLOW_FIXTURES = {
    "flow", "grid", "ws", "flow_ws", "served", "chromium", "artifacts", "variants", "pt2e", "stsb", "run", "store",
    "teacher_dir", "repo", "fresh_model", "read_by_step",
}  # fmt: skip


def pytest_collection_modifyitems(config, items):
    for item in items:
        direct = set(getattr(getattr(item, "_fixtureinfo", None), "argnames", ()))  # tmp_path uses the factory too
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or "tmp_path_factory" in direct:
            item.add_marker(pytest.mark.slow)


TINY = [
    "data.max_train_samples=64",
    "data.max_eval_samples=64",
    "tokenize.max_length=32",
    "finetune.batch_size=16",
    "finetune.epochs=2",
    "evaluate.batch_size=64",
    "runtime.threads=1",
]


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    if not SHARED_GLUE.is_dir():
        pytest.fail(f"real GLUE not found at {SHARED_GLUE}; set GLUE_DIR")
    return Path(os.environ["GLUE_DIR"])


@pytest.fixture(scope="session")
def tiny_params():
    from bertcompress import params

    return params.load(None, TINY)


@pytest.fixture(scope="session")
def tiny_mrpc(tmp_path_factory, tiny_params, glue_dir) -> dict:
    """Tokenized 64-example MRPC train/validation slices: {'train': npz, 'validation': npz}."""
    from bertcompress.tokenize import prepared

    root = tmp_path_factory.mktemp("data")
    return prepared("mrpc", tiny_params, root / "glue", root / "tokenized")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_params, tiny_mrpc) -> tuple[Path, dict]:
    """One uninterrupted 2-epoch fine-tune on the tiny slice: (output folder, returned metrics)."""
    from bertcompress.finetune import finetune

    out = tmp_path_factory.mktemp("runs") / "dense"
    return out, finetune(tiny_params, "mrpc", tiny_mrpc["train"], tiny_mrpc["validation"], str(out))
