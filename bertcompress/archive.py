"""An exported artifact's transport form: one standard archive, tar compressed by zstd (`<folder>.tar.zst`).

    tar --zstd -xf results/export/mrpc.tar.zst            # any machine: the artifact folder, as exported
    bertcompress predict --model results/export/mrpc.tar.zst "A sentence." "Its pair."

The archive holds the artifact's files under one folder named like the archive. Its bytes are deterministic
(sorted names, fixed times and owners), so the same artifact gives the same archive. `folder(path)` is how
every reader (predict, evaluate, the MLflow model) takes an archive: unpacked once into a cache folder named by
the archive's content hash, then read as the folder it came from.
"""

from __future__ import annotations

import io as _io
import os
import shutil
import tarfile
from pathlib import Path

from . import io
from .params import UserError

SUFFIX = ".tar.zst"
LEVEL = 19  # zstd's highest regular level: a pruned model's zeros and an int8 model's repeated bytes shrink


def path_of(folder: str | os.PathLike) -> Path:
    """Where the archive of an artifact folder lies: beside it, `<folder>.tar.zst`."""
    return Path(str(folder).rstrip("/") + SUFFIX)


def is_archive(path: str | os.PathLike) -> bool:
    return str(path).endswith(SUFFIX)


def _tar(folder: Path, name: str) -> bytes:
    buf = _io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            info = tarfile.TarInfo(f"{name}/{f.relative_to(folder).as_posix()}")
            info.size, info.mode, info.mtime = f.stat().st_size, 0o644, 0
            with f.open("rb") as data:
                tar.addfile(info, data)
    return buf.getvalue()


def pack(folder: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the archive of an artifact folder (atomically), by default beside it; its path. The folder inside is
    named like the archive (a temp folder packed before it is renamed into place ships under its final name)."""
    import zstandard

    out = Path(out) if out else path_of(folder)
    with io.atomic_file(out, SUFFIX) as tmp:
        tar = _tar(Path(folder), out.name[: -len(SUFFIX)])
        tmp.write_bytes(zstandard.ZstdCompressor(level=LEVEL).compress(tar))
    return out


def folder(path: str | os.PathLike) -> str:
    """An artifact folder to read: the path itself, or an archive unpacked (once) into the cache."""
    if not is_archive(path):
        return str(path)
    import zstandard

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist; pass an artifact folder or its {SUFFIX} archive")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bertcompress" / "artifacts"
    name = path.name[: -len(SUFFIX)]
    out = cache / io.content_hash(path)[:16] / name
    if out.is_dir():
        return str(out)
    if not path_of(out).is_file():  # beside the unpacked folder, as beside an exported one: its size is known
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, path_of(out))
    try:
        raw = zstandard.ZstdDecompressor().stream_reader(path.open("rb")).read()
        with io.atomic_dir(out) as tmp, tarfile.open(fileobj=_io.BytesIO(raw)) as tar:
            members = tar.getmembers()
            if not members or any(not m.isfile() or not m.name.startswith(f"{name}/") for m in members):
                raise UserError(f"{path} is no artifact archive (one folder '{name}/' of plain files); re-export it")
            for m in members:
                m.name = m.name[len(name) + 1 :]
            tar.extractall(tmp, members=members, filter="data")
    except (zstandard.ZstdError, tarfile.TarError) as e:
        raise UserError(f"{path} is not a tar + zstd archive ({e}); re-export it or pass the artifact folder") from None
    return str(out)


def size(folder: str | os.PathLike) -> int | None:
    """The bytes of an artifact folder's archive beside it (the size that ships), if it has one."""
    path = path_of(folder)
    return path.stat().st_size if path.is_file() else None
