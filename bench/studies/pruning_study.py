"""The pruning study (issue: pruning that keeps accuracy at 80–90 %): on one GPU, per task and seed, the dense
fine-tune, then gradual pruning of it to each sparsity by each criterion, with and without distillation from it.

    # on the lent GPU (needs only the core package; .carry/ from ../shared/tools/make_gpu_carry.py)
    python3 -m bench.studies.pruning_study run mrpc:42,43,44:magnitude,first_order:0.5,0.7,0.8,0.9:both --jobs 12 \
        --json $OUT/study.json
    python3 -m bench.studies.pruning_study run sst2:42,43,44:structured,structured@4:0.5/0.5,0.5/0.75:kd \
        --json $OUT/s.json
    # here: tables and figures from the rows
    python -m bench.studies.pruning_study report bench/results/pruning-study.json    # -> bench/RESULTS-pruning.md

Every run is the pipeline's own fine-tune (bertcompress/finetune.py: CUDA graphs, the teacher's forward inside
the captured step): a pruned variant is `from: dense`, `prune.method: gradual` with the criterion, ranking and
pattern given, trained for its own epochs and lr (the task's recipe in bench/studies/pruning.yaml), distilled
from that seed's dense model when `distill` is on. A structured run is `prune.method: structured` of that dense
model (heads/FFN fractions, in `prune.stages` stages) with recovery steps of the recipe's structured_epochs,
distilled when `distill` is on. Runs share the one GPU as parallel processes (bench/studies/pool.py); rows are
written as each run ends, so a call cut short keeps what finished. `cost` first times a dense and a distilled
pruned epoch alone, one after the other.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import time
from pathlib import Path

import yaml

from bench.studies.pool import common_args, prepared_data, run_pool, save

ROOT = Path(os.environ.get("STUDY_ROOT", "/dev/shm/pruning-study"))
KEEP = bool(os.environ.get("STUDY_KEEP"))
# STUDY_KEEP: keep the pruned models (to carry one back), not only the dense ones; STUDY_EXPORT: structured runs
# also export the ONNX Runtime int8 artifact
EXPORT = bool(os.environ.get("STUDY_EXPORT"))
GRID = Path(__file__).with_name("pruning.yaml")


@functools.cache
def grid() -> dict:
    """bench/studies/pruning.yaml: per-task recipes, distillation, and the gradual and structured runs' defaults."""
    return yaml.safe_load(GRID.read_text())


def overrides(task: str, cfg: dict, per_epoch: int) -> list[str]:
    """The run's params overrides; per_epoch = its training split's steps per epoch (structured recovery)."""
    g = grid()
    r = {**g["recipes"][task], **cfg.get("recipe", {})}  # a spec's own structured_epochs / lr / hidden_weight
    distill = [f"distill.{k}={v}" for k, v in g["distill"].items()]
    if cfg["variant"] == "dense":
        return [f"finetune.lr={r['dense_lr']}"]
    if cfg["criterion"] == "structured":
        heads, ffn = cfg["fractions"]
        sets = [
            f"finetune.lr={r['lr']}",
            "prune.method=structured",
            f"prune.heads_fraction={heads}",
            f"prune.ffn_fraction={ffn}",
            f"prune.stages={cfg['stages']}",
            f"prune.power={g['structured']['power']}",
            f"prune.recovery_steps={round(r['structured_epochs'] * per_epoch)}",
        ]
        hidden = [f"distill.hidden_weight={r['hidden_weight']}"] if "hidden_weight" in r else []
        sets += [f"prune.embedding_sparsity={r['embedding_sparsity']}"] if "embedding_sparsity" in r else []
        return sets + (distill + hidden if cfg["distill"] else [])
    gradual = g["gradual"]
    sets = [
        f"finetune.lr={r['lr']}",
        f"finetune.epochs={cfg.get('epochs', r['epochs'])}",
        "prune.method=gradual",
        f"prune.criterion={cfg['criterion']}",
        f"prune.final_sparsity={cfg['sparsity']}",
        f"prune.ranking={cfg.get('ranking', gradual['ranking'])}",
        f"prune.pattern={cfg.get('pattern', gradual['pattern'])}",
        f"prune.frequency={gradual['frequency']}",
        f"prune.power={gradual['power']}",
    ]
    return sets + (distill if cfg["distill"] else [])


def one(
    task: str, seed: int, cfg: dict, data: dict, model: str, max_steps: int | None = None, device: str = "cuda"
) -> dict:
    """One fine-tune (dense, or gradual pruning of the seed's dense model); its study row."""
    import numpy as np

    from bertcompress import params as P
    from bertcompress.finetune import finetune
    from bertcompress.metrics import headline
    from bertcompress.tokenize import Encoded

    dense = ROOT / "models" / f"{task}-s{seed}-dense"
    out = dense if cfg["variant"] == "dense" else ROOT / "models" / f"{task}-s{seed}-{cfg['variant']}"
    per_epoch = -(-len(Encoded.load(data["train"])) // P.defaults().finetune.batch_size)
    threads = os.environ.get("STUDY_THREADS", 1)  # torch threads of a run (1: many runs share the GPU host)
    sets = [
        f"model.name={model}",
        f"finetune.seed={seed}",
        f"runtime.threads={threads}",
        "finetune.precision=tf32",
        *overrides(task, cfg, per_epoch),
    ]
    if max_steps:  # a fine-tune's or a structured recovery's steps, cut short
        sets.append(
            f"{'prune.recovery_steps' if cfg.get('criterion') == 'structured' else 'finetune.max_steps'}={max_steps}"
        )
    if cfg["variant"] != "dense" and cfg["distill"]:
        sets.append(f"distill.teacher={dense}")
    p = P.load(None, sets)
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    if cfg.get("criterion") == "structured":
        m = structured(p, task, data, dense, out, device, per_epoch)
    else:
        m = finetune(
            p,
            task,
            data["train"],
            data["validation"],
            str(out),
            device=device,
            base=None if cfg["variant"] == "dense" else str(dense),
        )
    labels = Encoded.load(data["validation"]).labels
    gradual = grid()["gradual"]
    row = {
        "task": task,
        "variant": cfg["variant"],
        "criterion": cfg.get("criterion"),
        "distill": cfg["distill"],
        "ranking": cfg.get("ranking", gradual["ranking"]) if cfg["variant"] != "dense" else None,
        "pattern": cfg.get("pattern", gradual["pattern"]) if cfg["variant"] != "dense" else None,
        "target_sparsity": cfg.get("sparsity", 0.0),
        "achieved_sparsity": m.get("sparsity", {}).get("overall", 0.0),
        "seed": seed,
        "accuracy": m.get("val_accuracy"),
        "metric": headline(task, m),
        "lr": p.finetune.lr,
        "epochs": m["epochs"],
        "steps": m["steps"],
        "train_seconds": m["train_seconds"],
        "wall_seconds": time.perf_counter() - t0,
        "train_samples_per_second": m["train_samples_per_second"],
        "majority_accuracy": float(np.bincount(labels).max() / len(labels)) if labels.dtype.kind != "f" else None,
        "history": [{k: v for k, v in h.items()} for h in m["history"]],
    }
    if cfg.get("criterion") == "structured":
        row |= {
            "heads_fraction": cfg["fractions"][0],
            "ffn_fraction": cfg["fractions"][1],
            "stages": cfg["stages"],
            "structure": m["structure"],
            "parameters": m["parameters"],
            "hidden_weight": p.distill.hidden_weight if cfg["distill"] else None,
            "parameters_before": m["parameters_before"],
            "embedding_sparsity": p.prune.embedding_sparsity,
            **{k: m[k] for k in m if k.startswith("artifact_")},
        }
    if out != dense and not KEEP:
        shutil.rmtree(out, ignore_errors=True)
    return row


def structured(p, task: str, data: dict, dense: Path, out: Path, device: str, per_epoch: int) -> dict:
    """Structured pruning of the seed's dense model with (distilled) recovery on the GPU, evaluated like the
    fine-tunes (validation metrics as val_<name>); the row's timing is the recovery's."""
    from bertcompress import prune
    from bertcompress.evaluate import evaluate
    from bertcompress.glue import get_task
    from bertcompress.metrics import headline

    t0 = time.perf_counter()
    r = prune.prune(
        str(dense), str(out), p, task, data["train"], teacher=str(dense) if p.distill.teacher else None, device=device
    )
    seconds = time.perf_counter() - t0
    m = evaluate(str(out), task, data["validation"], 64)
    if EXPORT:  # the shipped form: ONNX Runtime int8 artifact (bertcompress export), its size and accuracy
        from bertcompress.export import export

        manifest = export(str(out), str(out) + "-artifact", task)
        shipped = evaluate(str(out) + "-artifact", task, data["validation"], 64)
        r |= {
            "artifact_mb": manifest["sizes"]["state_dict_mb"],
            "artifact_accuracy": shipped.get("accuracy"),
            "artifact_metric": headline(task, shipped),
            "artifact_sizes": manifest["sizes"],
        }
        shutil.rmtree(str(out) + "-artifact", ignore_errors=True)
    steps = p.prune.recovery_steps
    return {
        **r,
        **{f"val_{k}": m[k] for k in get_task(task).metrics},
        "epochs": steps / per_epoch,
        "steps": steps,
        "train_seconds": seconds,
        "train_samples_per_second": steps * p.finetune.batch_size / seconds,
        "history": [],
        "sparsity": {"overall": 1 - r["parameters"] / r["parameters_before"]},
    }


def jobs_of(specs: list[str]) -> list[tuple]:
    """task:seeds:criteria:sparsities:distill, e.g. mrpc:42,43:first_order,movement@layer:0.8,0.9:both
    (criterion@ranking, default global; distill kd | none | both), optionally :key=value,... of the recipe
    (structured_epochs, lr, hidden_weight, embedding_sparsity): one job per combination, in spec order."""
    jobs = []
    for spec in specs:
        task, seeds, criteria, sparsities, distill, *extra = spec.split(":")
        recipe = {k: float(v) for k, v in (kv.split("=") for kv in extra[0].split(","))} if extra else {}
        for seed in map(int, seeds.split(",")):
            for sparsity_text in sparsities.split(","):
                for crit in criteria.split(","):
                    crit, _, ranking = crit.partition("@")
                    if crit == "structured":  # sparsities are heads/ffn fractions, @N the stages
                        jobs += structured_jobs(task, seed, sparsity_text, ranking, distill, recipe)
                        continue
                    s = float(sparsity_text)
                    for kd in KD[distill]:
                        name = f"{crit}{'_' + ranking if ranking else ''}{round(s * 100)}{'_kd' if kd else ''}"
                        jobs.append(
                            (
                                task,
                                seed,
                                {
                                    "variant": name,
                                    "criterion": crit,
                                    "sparsity": s,
                                    "distill": kd,
                                    "ranking": ranking or grid()["gradual"]["ranking"],
                                },
                            )
                        )
    return jobs


KD = {"kd": (True,), "none": (False,), "both": (True, False)}


def structured_jobs(task: str, seed: int, fractions: str, stages: str, distill: str, recipe: dict) -> list[tuple]:
    """heads/ffn fractions (0.5/0.75) in `stages` stages (default pruning.yaml's: 1, at once), with or without
    distillation."""
    heads, ffn = map(float, fractions.split("/"))
    n = int(stages or grid()["structured"]["stages"])
    tag = "".join(f"_{k.split('_')[-1]}{v:g}" for k, v in recipe.items())  # e.g. _epochs20_lr5e-05
    return [
        (
            task,
            seed,
            {
                "variant": f"structured_h{round(heads * 100)}_f{round(ffn * 100)}_x{n}{tag}{'_kd' if kd else ''}",
                "criterion": "structured",
                "fractions": (heads, ffn),
                "stages": n,
                "distill": kd,
                "sparsity": None,
                "recipe": recipe,
            },
        )
        for kd in KD[distill]
    ]


def cost(task: str, data: dict, model: str, seed: int) -> dict:
    """samples/s of a dense epoch and of a distilled first-order pruning epoch, alone on the GPU."""
    rows = {}
    for cfg in (
        {"variant": "dense", "distill": False},
        {"variant": "cost_kd", "criterion": "first_order", "sparsity": 0.9, "distill": True},
    ):
        r = one(task, seed, cfg, data, model, max_steps=None if cfg["variant"] == "dense" else 115)
        rows[cfg["variant"]] = r["train_samples_per_second"]
    rows["ratio"] = rows["cost_kd"] / rows["dense"]
    return rows


def run(args) -> None:
    import torch

    started, rows = time.time(), []
    tasks = list(dict.fromkeys(spec.split(":")[0] for spec in args.spec))
    data = prepared_data(args, tasks, ROOT)
    info = {
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "torch": torch.__version__,
        "jobs": args.jobs,
        "rows": rows,
    }
    if args.cost:
        info["cost"] = cost(tasks[0], data[tasks[0]], args.model, 42)
        print("cost", info["cost"], flush=True)
        save(args.json, info, started)
    jobs = jobs_of(args.spec)
    dense = list(dict.fromkeys((t, s) for t, s, _ in jobs))  # in spec order: the first task's run first
    ready = [(t, s, {"variant": "dense", "distill": False}) for t, s in dense]

    def call(job: tuple) -> tuple:
        t, s, cfg = job
        cut = args.max_steps if cfg["variant"] != "dense" else None
        return one, t, s, cfg, data[t], args.model, cut, args.device

    def done(job: tuple, row: dict) -> None:
        rows.append(row)
        print(
            f"{row['task']} s{row['seed']} {row['variant']}: acc {row['accuracy']} metric "
            f"{row['metric']:.4f} sparsity {row['achieved_sparsity']:.3f} {row['wall_seconds']:.0f}s "
            f"[{time.time() - started:.0f}s]",
            flush=True,
        )
        save(args.json, info, started)
        if row["variant"] == "dense":  # its pruned runs become ready, kept in spec order
            ready.extend(j for j in jobs if j[:2] == (row["task"], row["seed"]))
            ready.sort(key=lambda j: jobs.index(j) if j in jobs else -1)

    run_pool(ready, call, done, args.jobs, key=lambda job: (job[0], job[1], job[2]["variant"]))
    save(args.json, info, started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("spec", nargs="+", help="task:seeds:criteria:sparsities:distill (see jobs_of)")
    r.add_argument("--cost", action="store_true", help="first time a dense and a distilled pruned epoch alone")
    common_args(r, max_steps_help="pruned runs stop after N steps (a smoke run)")
    rep = sub.add_parser("report")
    rep.add_argument("rows", nargs="+")
    args = ap.parse_args()
    if args.cmd == "run":
        run(args)
    else:
        from bench.studies.pruning_report import report  # tables and figures, here

        report(args.rows)


if __name__ == "__main__":
    main()
