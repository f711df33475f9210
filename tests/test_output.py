"""What a run prints, as a user's terminal shows it: the flow as a process on a tiny MRPC slice (dense and its
int8 model), its stdout and stderr. No warning, progress bar or notice a user cannot act on; the closing summary
within 120 columns, its Δ and CI in points, the unit of experiment.champion_budget."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pandas as pd
import pipeline_runs as pr
import pytest

VARIANTS = {"dense": {"from": "pretrained", "quantize": ["dynamic"]}}
NOISE = {  # what each pattern caught before it was fixed
    "warning": r"(?i)warn",  # MLflow's type-hint UserWarning and its "integer column(s)" hint per logged model
    "progress bar": r"\d+%\|",  # "Downloading artifacts: 100%|███", transformers' "Loading weights" bars
    "MLflow notice": r"INFO mlflow|Downloading|Successfully registered|Created version",
    "register_model": r"no artifacts at artifact path",
}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    root = pr.copy_project(tmp_path_factory.mktemp("output"), "prefect.toml")
    params = pr.write_params(root / "params.yaml", variants=VARIANTS)
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}  # the tests' switch, not a user's
    env |= {
        "PYTHONPATH": str(pr.REPO),
        "PREFECT_HOME": str(root / ".prefect"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow/mlflow.db",
    }
    (root / "mlflow").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "flows.compress", "--task", "mrpc", "--params", str(params)],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    return {"root": root, "out": done.stdout, "report": root / "results" / "report" / "mrpc"}


@pytest.mark.parametrize("what", NOISE)
def test_the_run_prints_nothing_a_user_cannot_act_on(run, what):
    found = [line for line in run["out"].splitlines() if re.search(NOISE[what], line)]
    assert not found, "\n".join(found[:10])


def test_the_closing_summary_fits_120_columns_in_points(run):
    """From the summary's heading (after Prefect's log prefix) to the MLflow UI line, every line as printed is
    within 120 columns; its Δ and CI are summary.csv's ×100, so a variant is within experiment.champion_budget
    points of dense exactly when its printed Δ is; report.md keeps every column."""
    from bertcompress import params as P
    from tasks.report import summary_text

    lines = run["out"].splitlines()
    start = next(i for i, line in enumerate(lines) if line.endswith("## mrpc: compression summary"))
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("  then http://"))
    printed = lines[start : end + 1]
    assert max(map(len, printed)) <= 120, "\n".join(line for line in printed if len(line) > 120)
    md = (run["report"] / "summary.md").read_text().strip()  # the Prefect artifact's text: what was printed
    assert summary_text(run["report"]) in md and md.removeprefix("## mrpc: compression summary") in "\n".join(printed)

    summary = pd.read_csv(run["report"] / "summary.csv", index_col="method")
    budget = P.load(run["root"] / "params.yaml").experiment.champion_budget
    rows = {
        cells[0]: cells
        for cells in ([c.strip() for c in line.strip("|").split("|")] for line in printed if line.startswith("| "))
    }
    assert rows["variant"][2:4] == ["Δ score (pts)", "95 % CI (pts)"]
    row, s = rows["dense+dynamic"], summary.loc["dense+dynamic"]
    assert float(row[2]) == pytest.approx(100 * s["Δ vs dense"], abs=0.005)
    assert row[3] == f"[{100 * s['CI low']:+.2f}, {100 * s['CI high']:+.2f}]"
    within = s["score mean"] >= summary.loc["dense", "score mean"] - budget / 100  # tasks/report.py champion()
    assert within == (float(row[2]) >= -budget) and rows["dense"][2] == ""  # no Δ of dense against itself
    assert row[4] == f"{s['compact_mb']:.1f}" and rows["dense"][-1] in ("baseline", "collapsed")
    assert "| method | seeds | score mean | score std | f1 mean |" in (run["report"] / "report.md").read_text()
