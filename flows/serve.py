"""Serve the compress flow as deployments compress/<task> for the six GLUE tasks here (mrpc, sst2, cola, stsb,
rte, wnli; the task preset).

    scripts/prefect.sh up                   # local server on 127.0.0.1:4200 (SQLite in .prefect/) + this
    scripts/prefect.sh run mrpc --param 'overrides=["finetune.epochs=1"]'
    # by hand: PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.serve
    #          PREFECT_API_URL=http://127.0.0.1:4200/api prefect deployment run compress/mrpc --watch

Any other flow parameter is overridable per run with --param: overrides (a list of section.key=value, as -S)
and params_file. Runs execute in subprocesses of this process, from the project root.
"""

from __future__ import annotations

import argparse

TASKS = ("mrpc", "sst2", "cola", "stsb", "rte", "wnli")  # the GLUE tasks ../shared/glue holds


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.split("\n\n")[0]).parse_args(argv)
    from prefect import serve  # after --help: asking for help starts no server

    from flows.compress import compress

    serve(*(compress.to_deployment(name=task, parameters={"task": task}) for task in TASKS))


if __name__ == "__main__":
    main()
