"""Read an exported artifact, its folder or its archive: its manifest, and the model its format runs as (an ONNX
Runtime session, an OpenVINO compiled model, or a PT2E program compiled by Inductor). export.py writes them."""

from __future__ import annotations

import json
from pathlib import Path

from . import archive

MANIFEST, CARD = "manifest.json", "README.md"


def artifact_model(folder: str | Path, fmt: str, max_length: int, threads: int | None = None):
    """The runnable model of an artifact folder in format fmt."""
    if fmt == "pt2e_int8":
        from .compiled import CompiledModel

        return CompiledModel(folder, max_length, threads)
    from .onnx_model import OnnxModel, OpenVinoModel

    return OpenVinoModel(folder, threads) if fmt == "openvino" else OnnxModel(folder, threads)


def read_manifest(folder: str | Path) -> dict | None:
    path = Path(archive.folder(folder)) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None
