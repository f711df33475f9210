"""Files: atomic writes (a JSON file, a whole folder) and content hashes of files and folders.

Every result the pipeline writes appears whole or not at all: it is written under a temporary name beside its
final place and renamed into it, so a failed or killed run never leaves a half-written result.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from . import checks


@contextmanager
def atomic_file(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside `path` (ending in suffix, for writers that insist on one); renamed into place on
    success, removed on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in path.parent.glob(f".{path.name}.*.tmp{suffix}"):  # left by a killed write (its pid in the name)
        if (pid := old.name[len(path.name) + 2 :].split(".")[0]).isdigit() and not _alive(int(pid)):
            old.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def check_writable(path: str | os.PathLike, folder: bool = True, need_mb: int = 200) -> None:
    """Can a folder (or a file) be written at path, with need_mb free? Checked before any work: one line if not."""
    path = Path(path).absolute()
    if folder and path.exists() and not path.is_dir():
        raise checks.UserError(f"output {path} is a file where a folder must go; remove it or choose another --out")
    parent = next((p for p in [path, *path.parents] if p.exists()), None)
    if parent is None or not parent.is_dir():
        raise checks.UserError(f"output {path}: {parent} is a file where a folder must go; choose another path")
    probe = parent / f".write-probe-{os.getpid()}"
    try:  # a real write: permissions, read-only mounts and quotas all answer it
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise checks.UserError(
            f"output {path}: cannot write in {parent} ({e.strerror}); choose a writable location or fix its permissions"
        ) from None
    free = shutil.disk_usage(parent).free / 1e6
    if free < need_mb:
        raise checks.UserError(
            f"output {path}: only {free:.0f} MB free on its filesystem, {need_mb} MB needed; "
            "free some space or choose another location"
        )


def _plain(value):
    """JSON for what json does not know: numpy scalars as numbers, anything else as its string."""
    return value.item() if hasattr(value, "item") and getattr(value, "ndim", 1) == 0 else str(value)


def write_json(path: str | os.PathLike, data) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=_plain) + "\n")


def read_json(path: str | os.PathLike):
    return json.loads(Path(path).read_text())


@contextmanager
def scratch_dir(out: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temp folder beside `out`, removed when the block ends, however it ends; one left by a
    killed run (its pid in the name, the process gone) is removed first."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for old in out.parent.glob(f".{out.name}.*.tmp"):
        if (pid := old.name[len(out.name) + 2 : -4]).isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_dir(out: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temp folder beside `out`; on success it replaces `out` whole, on failure it is removed."""
    with scratch_dir(out) as tmp:
        yield tmp
        replace_dir(tmp, Path(out))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def replace_dir(src: Path, out: Path) -> None:
    """Move folder src to out, replacing what is there (the old copy is removed after the rename)."""
    old = out.with_name(f".{out.name}.{os.getpid()}.old")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        os.replace(out, old)
    os.replace(src, out)
    shutil.rmtree(old, ignore_errors=True)


@functools.cache
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def content_hash(path: str | os.PathLike) -> str:
    """sha256 of a file, or of a folder's relative paths and file hashes; memoised by size and mtime like DVC."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"{root} is missing")
    files = [root] if root.is_file() else sorted(f for f in root.rglob("*") if f.is_file())
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(root)}\0{_file_sha256(str(f), st.st_size, st.st_mtime_ns)}\n".encode())
    return h.hexdigest()


def read_yaml(path: Path) -> dict:
    """A YAML mapping (a params file); a missing or broken file is one line naming it and the fix."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise checks.UserError(f"{path}: file not found; pass --params with the path to your params.yaml") from None
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        raise checks.UserError(
            f"{path}: not valid YAML{f' at line {line + 1}' if line is not None else ''}; fix the syntax"
        ) from None
    if not isinstance(raw, dict):
        raise checks.UserError(f"{path}: expected a mapping of sections (data, model, ...), got {type(raw).__name__}")
    return raw


def merge(base: dict, top: dict) -> dict:
    """top laid over base, key by key within each section; a `variants` table given replaces the default whole."""
    out = copy.deepcopy(base)
    for section, values in top.items():
        if section == "variants" or not isinstance(values, dict) or not isinstance(out.get(section), dict):
            out[section] = copy.deepcopy(values)
        else:
            out[section].update(values)
    return out


def override(raw: dict, item: str) -> None:
    """`section.key=value`, or `variants.<name>[.<section>.<key>]=value`; the value is YAML, as DVC reads it."""
    key, sep, value = item.partition("=")
    parts = key.split(".")
    ok = sep and ((parts[0] != "variants" and len(parts) == 2) or (parts[0] == "variants" and len(parts) >= 2))
    if not ok:
        raise checks.UserError(
            f"override '{item}': expected section.key=value (e.g. finetune.lr=3e-5) or "
            "variants.<name>.<section>.<key>=value"
        )
    node = raw
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    parsed = yaml.safe_load(value)  # but 2:4 stays a string (an N:M pattern; YAML 1.1 reads it as base 60)
    node[parts[-1]] = value if isinstance(parsed, int) and ":" in value else parsed
