"""Reads that cannot drift: a Params whose sections note every key the code reads from them.

    .venv/bin/python -m pytest tests/test_reads.py      # every step of a plan run through it, on a tiny slice

A step's cache key lists the params it reads by hand (each step module's `reads(params)`); this is how a test
finds a key read but missing from that list.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from contextlib import contextmanager

from bertcompress.params import SECTIONS, Params, validate


@contextmanager
def recording(p: Params, quiet: tuple[str, ...] = ()) -> typing.Iterator[tuple[Params, dict]]:
    """p whose sections note every key that code reads from them: (params, {'finetune.lr': 'module:function of
    the first read', ...}). Not noted: reads by the params machinery itself (copies, checks, flat views), by
    the modules named in quiet and what they call, and of fields that code replaced (dataclasses.replace: the
    value is the code's, not params'). tests/test_reads.py runs every step through it."""
    seen: dict[str, str] = {}
    quiet = {dataclasses.__name__, __name__, Params.__module__, validate.__module__, *quiet}
    replace = dataclasses.replace

    def replaced(obj, /, **changes):  # a copy whose changed fields hold the code's values, not params'
        new = replace(obj, **changes)
        if hasattr(obj, "_section") and sys._getframe(1).f_globals.get("__name__") not in quiet:
            object.__setattr__(new, "_set", object.__getattribute__(obj, "_set") | set(changes))
        return new

    def noting(section: str, cls):
        names = {f.name for f in dataclasses.fields(cls)}

        def __getattribute__(self, name):
            if (
                name in names
                and name not in object.__getattribute__(self, "_set")
                and f"{section}.{name}" not in seen
                and not _called_from(quiet)
            ):
                caller = sys._getframe(1)
                seen[f"{section}.{name}"] = f"{caller.f_globals.get('__name__')}:{caller.f_code.co_name}"
            return object.__getattribute__(self, name)

        return type(
            cls.__name__, (cls,), {"__getattribute__": __getattribute__, "_section": section, "_set": frozenset()}
        )

    kinds = {s: noting(s, cls) for s, cls in SECTIONS.items()}
    sections = {s: kinds[s](**vars(getattr(p, s))) for s in SECTIONS}
    dataclasses.replace = replaced
    try:
        yield replace(p, **sections), seen
    finally:
        dataclasses.replace = replace


def _called_from(modules: set[str]) -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_globals.get("__name__") in modules:
            return True
        frame = frame.f_back
    return False
