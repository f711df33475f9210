"""Every entry point's --help: its description whole (the docstring's first paragraph, not its first line cut
mid-sentence), exit 0, no side effect (`python -m flows.serve --help` starts no server)."""

from __future__ import annotations

import ast
import subprocess
import sys

import pipeline_runs as pr
import pytest

pytestmark = pytest.mark.slow  # subprocesses, servers or a whole bench: the slow tier (make test)

ENTRIES = ["flows.compress", "flows.serve", "tasks.report", "tasks.status", "bench.peers", "bench.ddp_scaling"]


@pytest.mark.parametrize("module", ENTRIES)
def test_help_is_whole_and_does_nothing_else(module):
    path = pr.REPO / (module.replace(".", "/") + ".py")
    first = ast.get_docstring(ast.parse(path.read_text()), clean=False).split("\n\n")[0]
    shown = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=pr.REPO, capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "".join(first.split()) in "".join(shown.stdout.split()), shown.stdout  # the paragraph, whole (argparse
    # wraps it, at hyphens too)
    assert first.rstrip().endswith((".", ")", ":")), first  # a sentence's end, not a cut
    assert "Starting" not in shown.stdout + shown.stderr and "serve" not in shown.stderr.lower()
