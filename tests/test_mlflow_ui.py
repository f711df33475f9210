"""The MLflow UI in a real browser: the runs of every method, with their metric columns, as a user sees them.

A small grid on the tiny real MRPC slice (dense and gradual fine-tunes, the dense model quantized to dynamic
int8, each evaluated) is logged through tasks/tracking.py into a SQLite store in a tmp dir. `mlflow server`
serves it on 127.0.0.1; headless Chromium (Debian's `chromium`, which `.ci/run` installs), driven by
Playwright, opens the experiment by the link the flow prints (tracking.runs_url: it must land on the runs
table, not on the GenAI overview; MLflow 3.17's UI picks the view by its global GenAI / Model training
switch, not by the experiment's kind tag, which is checked too), expands the parent run, adds the metric columns with
the Columns selector and checks each
run's row: its name, the values logged for it, the GLUE split in the Dataset column, the Source column, and the
logged MLflow model in the Models column. The screenshot goes to the test's tmp dir, and also to
results/ui/mlflow-runs.png when BERTCOMPRESS_UI_SCREENSHOT=1.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
METHODS = ("dense", "gradual", "dense+dynamic")
METRICS = ("accuracy", "f1", "compact_mb")  # columns added in the UI; their values are checked per run
PARENT = "ui-grid"  # the parent run, named with its start time
SOURCE = "tests/test_mlflow_ui.py"
SERVER_START_S = 90  # mlflow server answers in ~10-20 s on 2 busy cores
UI_TIMEOUT_MS = 30_000


def _experiment(tiny_params, root: Path):
    """tiny_params as an experiment whose variant table holds the logged methods (dense, gradual, and dense
    quantized to dynamic int8), trimmed to one epoch of two steps and one seed; written as a params file."""
    from bertcompress import params as P

    raw = tiny_params.to_dict()
    raw["finetune"] |= {"epochs": 1, "batch_size": 32}
    raw["prune"] |= {"frequency": 1, "final_sparsity": 0.5}
    raw["experiment"] |= {"seeds": [raw["finetune"]["seed"]], "baseline": "dense"}
    raw["variants"] = {
        "dense": {"from": "pretrained", "quantize": ["dynamic"]},
        "gradual": {"from": "pretrained", "prune": {"method": "gradual"}},
    }
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return P.load(path)


def _log_grid(tiny_params, tiny_mrpc, work: Path) -> tuple[str, dict]:
    """METHODS fine-tuned, quantized and evaluated on the tiny slice, logged as the pipeline's tasks log them:
    (parent run id, {method: (run name, run id, {metric: value})})."""
    from bertcompress.evaluate import evaluate
    from bertcompress.finetune import finetune
    from bertcompress.quantize import quantize
    from tasks import tracking

    train, validation = tiny_mrpc["train"], tiny_mrpc["validation"]
    work.mkdir(parents=True, exist_ok=True)
    p = _experiment(tiny_params, work)
    seed = p.experiment.seeds[0]
    runs = {}
    with tracking.parent_run("test", PARENT, key="ui", entry=SOURCE) as parent:
        for method in METHODS:
            name, _, mode = method.partition("+")
            q = p.variant(name, seed, mode or "none")
            with tracking.variant_run(parent, "mrpc", p, name, seed, mode or "none") as run:
                out = work / method
                if not mode:
                    result = finetune(q, "mrpc", train, validation, str(out), on_epoch_end=tracking.epoch_logger(run))
                    tracking.log_result(run, "finetune", result)
                else:
                    tracking.log_result(run, "quantize", quantize(str(work / name), str(out), q, "mrpc"))
                result = evaluate(str(out), "mrpc", validation, q.evaluate.batch_size)
                tracking.log_datasets(run, "mrpc", validation=validation)
                tracking.log_result(run, "evaluate", result)
                tracking.log_model(run, str(out), "mrpc", q.tokenize.max_length, q.evaluate.batch_size)
            logged = tracking.client()[0].get_run(run)
            assert logged.data.tags["method"] == method
            runs[method] = (logged.info.run_name, run, {m: logged.data.metrics[m] for m in METRICS})
    return tracking.client()[0].get_run(parent).info.run_name, runs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while True:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited with status {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(
                f"mlflow server did not answer on {url}/health within {SERVER_START_S} s:\n{log.read_text()[-3000:]}"
            )
        time.sleep(0.25)


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_params, tiny_mrpc):
    """The store (SQLite + artifact folder) with the grid's runs, served by `mlflow server` in its own process
    group: {url, experiment_id, parent, runs}. The server boots while the grid trains; it is stopped after."""
    from tasks import tracking

    root = tmp_path_factory.mktemp("mlflow-ui")
    db, log = root / "mlflow.db", root / "server.log"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
        mp.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
        experiment_id = tracking.client()[1]  # the database and its tables exist before the server opens them
        port = _free_port()
        cmd = [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--backend-store-uri",
            f"sqlite:///{db}",
            "--default-artifact-root",
            (root / "artifacts").as_uri(),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ]
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
            )
        try:
            parent, runs = _log_grid(tiny_params, tiny_mrpc, root / "models")
            url = f"http://127.0.0.1:{port}"
            _wait_until_up(proc, url, log)
            yield {"url": url, "experiment_id": experiment_id, "parent": parent, "runs": runs}
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's whole process group (uvicorn and its worker), then SIGKILL to what is left."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(5)


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium (Playwright's own browser download is not used), checked before the grid trains."""
    path = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if not path:
        pytest.fail(
            "Debian's chromium is not installed: `apt-get install -y chromium` (.ci/run does it), "
            "or set CHROMIUM=/path/to/chromium"
        )
    return path


def test_runs_of_every_method_appear_with_their_metric_columns(chromium, served, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=UI_TIMEOUT_MS)
    shot = tmp_path / "mlflow-runs.png"
    from tasks import tracking

    link = tracking.runs_url(served["url"])  # what the flow prints at its end
    kind = tracking.client()[0].get_experiment(served["experiment_id"]).tags.get("mlflow.experimentKind")
    assert kind == "custom_model_development"  # the experiment is marked as model training ("Machine learning")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1920, "height": 900})
        try:
            # as for a returning user: the assistant side panel, which opens itself on a first visit, stays shut
            page.add_init_script("localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true')")
            page.set_default_timeout(UI_TIMEOUT_MS)
            parent = page.get_by_role("link", name=served["parent"], exact=True)
            page.goto(link)  # lands on the runs table, not on the GenAI overview or its traces
            expect(parent).to_be_visible()  # the runs table has loaded; its child runs are folded under it
            assert "/runs" in page.url and "traces" not in page.url, page.url
            close = page.locator('[data-component-id="mlflow.assistant.chat_panel.close"]')
            if close.is_visible():
                close.click()
            page.get_by_role("gridcell").filter(has=parent).get_by_role("button").click()  # expand
            for name, _, _ in served["runs"].values():
                expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()

            page.get_by_role("button", name="Columns", exact=True).click()
            for metric in METRICS:
                page.get_by_title(metric, exact=True).click()  # tick it in the column selector's tree
            page.keyboard.press("Escape")
            for metric in METRICS:
                expect(page.get_by_role("columnheader", name=metric, exact=True).first).to_be_visible()

            for method, (name, run_id, metrics) in served["runs"].items():
                link = page.get_by_role("link", name=name, exact=True)
                assert link.get_attribute("href").endswith(f"/runs/{run_id}"), (method, name)
                for metric, value in metrics.items():
                    # ag-grid draws the pinned name column and the scrolling columns as two rows of one run id
                    cell = page.locator(
                        f'[role="row"][row-id="{run_id}"] [role="gridcell"][col-id="metrics.`{metric}`"]'
                    )
                    expect(cell).to_be_visible()
                    expect(cell).not_to_have_text("-")
                    shown = cell.inner_text().strip()
                    assert float(shown) == pytest.approx(value, rel=1e-3, abs=1e-4), (method, metric, shown, value)
                row = page.locator(f'[role="row"][row-id="{run_id}"]')
                column = lambda name: row.locator(f'[role="gridcell"][col-id="attributes.`{name}`"]')  # noqa: E731
                expect(column("Dataset")).to_contain_text("glue-mrpc-validation")  # tracking.log_datasets
                expect(column("Source")).to_have_text(Path(SOURCE).name)  # the command that ran (the UI shows its name)
                expect(column("Models")).to_have_text("model")  # the logged MLflow model (tracking.log_model)
            page.screenshot(path=str(shot))
        except Exception:
            with contextlib.suppress(Exception):  # what the browser showed when a check failed
                page.screenshot(path=str(tmp_path / "failure.png"))
            raise
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    runs = served["runs"]  # the grid's numbers are real: the int8 model is smaller than the dense one
    assert runs["dense+dynamic"][2]["compact_mb"] < 0.7 * runs["dense"][2]["compact_mb"]
    if os.environ.get("BERTCOMPRESS_UI_SCREENSHOT") == "1":
        (REPO / "results" / "ui").mkdir(parents=True, exist_ok=True)
        shutil.copy2(shot, REPO / "results" / "ui" / "mlflow-runs.png")
