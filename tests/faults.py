"""Run a pipeline command and kill it with SIGKILL (no clean-up of any kind) at a chosen point.

    python tests/faults.py step:5 -m bertcompress.cli finetune --task mrpc ...    # after the 5th optimizer step
    python tests/faults.py commit:2 -m bertcompress.cli quantize ...             # at the 2nd file put in place
    python tests/faults.py torn:state.pt:2 -m bertcompress.cli finetune ...      # the 2nd state.pt cut in half

step:N    after optimizer step N (torch's global step hook: every optimizer, eager or graphed).
commit:K  just before the K-th os.replace: the renames that make a result appear whole (bertcompress/io.py);
          commit:0 kills nothing and prints how many there were.
torn:NAME:K  the K-th file named NAME written by torch.save or safetensors is truncated to half, then the kill.
Commands below faults.py are run as `python -m ...` would run them, with the same argv.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
from pathlib import Path


def kill() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def at_step(n: int) -> None:
    from torch.optim.optimizer import register_optimizer_step_post_hook

    count = [0]

    def hook(optimizer, args, kwargs):
        count[0] += 1
        if count[0] == n:
            kill()

    register_optimizer_step_post_hook(hook)


def at_commit(k: int) -> None:
    """k = 0: only count them (printed to stderr at exit as `faults: N commits`)."""
    import atexit

    replace, count = os.replace, [0]

    def killing(src, dst, *a, **kw):
        count[0] += 1
        if count[0] == k:
            kill()
        return replace(src, dst, *a, **kw)

    os.replace = killing
    if k == 0:
        atexit.register(lambda: print(f"faults: {count[0]} commits", file=sys.stderr))


def torn(name: str, k: int) -> None:
    import safetensors.torch
    import torch

    count = [0]

    def wrap(save):
        def saving(obj, f, *a, **kw):
            save(obj, f, *a, **kw)
            if isinstance(f, (str, os.PathLike)) and Path(f).name == name:
                count[0] += 1
                if count[0] == k:
                    os.truncate(f, os.path.getsize(f) // 2)
                    kill()

        return saving

    torch.save = wrap(torch.save)
    safetensors.torch.save_file = wrap(safetensors.torch.save_file)


def main() -> None:
    spec, flag, module, *argv = sys.argv[1:]
    assert flag == "-m", "usage: faults.py SPEC -m MODULE [ARGS...]"
    kind, *args = spec.split(":")
    {
        "step": lambda n: at_step(int(n)),
        "commit": lambda n: at_commit(int(n)),
        "torn": lambda name, n: torn(name, int(n)),
    }[kind](*args)
    sys.argv = [module, *argv]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
