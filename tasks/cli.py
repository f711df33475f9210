"""The `bertcompress` command: the core's step commands (bertcompress/cli.py) plus `status`, which reads the plan.

bertcompress status --task mrpc            # each step of the experiment: done, or will run and why
bertcompress finetune --task mrpc          # ... every other command as bertcompress/cli.py documents
"""

from __future__ import annotations

import sys

from bertcompress import cli


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["status"]:
        from . import status

        return status.main(argv[1:])
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
