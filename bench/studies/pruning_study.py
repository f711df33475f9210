"""The pruning study (issue: pruning that keeps accuracy at 80–90 %): on one GPU, per task and seed, the dense
fine-tune, then gradual pruning of it to each sparsity by each criterion, with and without distillation from it.

    # on the lent GPU (needs only the core package; .carry/ from ../shared/tools/make_gpu_carry.py)
    python3 -m bench.studies.pruning_study run mrpc:42,43,44:magnitude,first_order:0.5,0.7,0.8,0.9:both --jobs 12 \
        --json $OUT/study.json
    python3 -m bench.studies.pruning_study run sst2:42,43,44:structured,structured@4:0.5/0.5,0.5/0.75:kd \
        --json $OUT/s.json
    # here: tables and figures from the rows
    python -m bench.studies.pruning_report bench/results/pruning-study.json          # -> bench/RESULTS-pruning.md

Issue 29's protocol (--role): every choice on the dev split (data.dev_fraction of train, stratified and keyed by
content; the runs train on the rest), every claim on validation with fresh seeds that took no part in choosing:

    python3 -m bench.studies.pruning_study run --role choose sst2:42,43,44:first_order:0.9:kd ... --json $OUT/c.json
    python3 -m bench.studies.pruning_study run --role report sst2:45,46,47,48,49:first_order:0.9:kd ... --json ...
    python -m bench.studies.pruning_report --dev bench/results/pruning-study-dev.json /work/.device/*/c.json ...

Every row holds dev_metric and validation_metric (the task's headline metric of the saved model on each split),
its role, and split (dev for choose rows, validation for report rows): `metric` is the one on the row's split,
`accuracy` stays validation's. A row also keeps its split's per-example predictions (the report's paired
bootstrap); the JSON keeps each split's labels once per task (`labels`). A spec's criterion `dense` with
:dense_lr=...,dense_epochs=... is a dense candidate (a fine-tune of the pretrained model, e.g. RTE's recipe).

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
import json
import os
import shutil
import sys
import time
from pathlib import Path

import yaml

from bench.studies.pool import common_args, prepared_data, run_pool, save

ROOT = Path(os.environ.get("STUDY_ROOT", "/dev/shm/pruning-study"))
KEEP = bool(os.environ.get("STUDY_KEEP"))
# STUDY_KEEP: keep the pruned models (to carry one back), not only the dense ones; STUDY_EXPORT: structured runs
# also export the ONNX Runtime int8 artifact
EXPORT = bool(os.environ.get("STUDY_EXPORT"))
# STUDY_REUSE_DENSE: a seed's dense model already under ROOT (another run of the study on the same machine trained
# it) is scored again instead of trained again, so a later call's pruned runs pair with the same dense model
REUSE = bool(os.environ.get("STUDY_REUSE_DENSE"))
GRID = Path(__file__).with_name("pruning.yaml")


@functools.cache
def grid() -> dict:
    """bench/studies/pruning.yaml: per-task recipes, distillation, and the gradual and structured runs' defaults;
    a run's --recipe task:key=value,... (STUDY_RECIPES, inherited by its processes) laid over a task's recipe."""
    g = yaml.safe_load(GRID.read_text())
    for task, recipe in json.loads(os.environ.get("STUDY_RECIPES", "{}")).items():
        g["recipes"][task] = {**g["recipes"][task], **recipe}
    return g


def overrides(task: str, cfg: dict, per_epoch: int) -> list[str]:
    """The run's params overrides; per_epoch = its training split's steps per epoch (structured recovery)."""
    g = grid()
    r = {**g["recipes"][task], **cfg.get("recipe", {})}  # a spec's own structured_epochs / lr / hidden_weight
    distill = [f"distill.{k}={v}" for k, v in g["distill"].items()]
    hidden = [f"distill.hidden_weight={r['hidden_weight']}"] if "hidden_weight" in r else []
    if is_dense(cfg):  # the seed's dense model, or a dense candidate: its lr, and its epochs where the recipe sets them
        return [f"finetune.lr={r['dense_lr']}"] + (
            [f"finetune.epochs={r['dense_epochs']}"] if "dense_epochs" in r else []
        )
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
    return sets + (distill + hidden if cfg["distill"] else [])


def is_dense(cfg: dict) -> bool:
    """The seed's dense model (variant dense) or a dense candidate (criterion dense): fine-tunes of the pretrained
    model, no teacher."""
    return cfg["variant"] == "dense" or cfg.get("criterion") == "dense"


def one(
    task: str,
    seed: int,
    cfg: dict,
    data: dict,
    model: str,
    max_steps: int | None = None,
    device: str = "cuda",
    role: str = "choose",
) -> dict:
    """One fine-tune (dense, or gradual pruning of the seed's dense model); its study row. role choose: the row's
    split is dev (what chooses), report: validation (what is claimed); both splits are scored either way."""
    import numpy as np

    from bertcompress import params as P
    from bertcompress.finetune import finetune
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
    if not is_dense(cfg) and cfg["distill"]:
        sets.append(f"distill.teacher={dense}")
    p = P.load(None, sets)
    reuse = REUSE and cfg["variant"] == "dense" and (out / "metrics.json").is_file()
    if not reuse:
        shutil.rmtree(out, ignore_errors=True)
    split = SPLIT[role]
    t0 = time.perf_counter()
    if cfg.get("criterion") == "structured":
        m = structured(p, task, data, dense, out, device, per_epoch)
    elif reuse:
        m = json.loads((out / "metrics.json").read_text())
    else:  # the per-epoch history is scored on the row's split; the model is the last epoch's either way
        m = finetune(
            p, task, data["train"], data[split], str(out), device=device, base=None if is_dense(cfg) else str(dense)
        )
    scores = scored(str(out), task, data, device)
    labels = Encoded.load(data["validation"]).labels
    gradual = grid()["gradual"]
    row = {
        "task": task,
        "variant": cfg["variant"],
        "criterion": cfg.get("criterion"),
        "distill": cfg["distill"],
        "ranking": cfg.get("ranking", gradual["ranking"]) if not is_dense(cfg) else None,
        "pattern": cfg.get("pattern", gradual["pattern"]) if not is_dense(cfg) else None,
        "target_sparsity": cfg.get("sparsity") or 0.0,
        "achieved_sparsity": m.get("sparsity", {}).get("overall", 0.0),
        "seed": seed,
        "role": role,
        "split": split,
        "accuracy": scores["validation"]["accuracy"],
        "metric": scores[split]["metric"],
        "dev_metric": scores["dev"]["metric"],
        "validation_metric": scores["validation"]["metric"],
        "dev_accuracy": scores["dev"]["accuracy"],
        "dev_examples": len(scores["dev"]["predictions"]),
        "predictions": scores[split]["predictions"],  # the row's split, in split order (the paired bootstrap)
        "recipe": cfg.get("recipe", {}),
        "hidden_weight": p.distill.hidden_weight if cfg["distill"] else None,
        "reused": reuse,
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
            "parameters_before": m["parameters_before"],
            "embedding_sparsity": p.prune.embedding_sparsity,
            **{k: m[k] for k in m if k.startswith("artifact_")},
        }
    if out != dense and not KEEP:
        shutil.rmtree(out, ignore_errors=True)
    return row


SPLIT = {"choose": "dev", "report": "validation"}


def scored(model_dir: str, task: str, data: dict, device: str) -> dict:
    """The saved model on dev and on validation: per split its headline metric, accuracy and predictions."""
    from bertcompress import loop, metrics
    from bertcompress.glue import get_task
    from bertcompress.tokenize import Encoded
    from bertcompress.variant import load_variant

    model = load_variant(model_dir, get_task(task).num_labels).to(device)
    out = {}
    for split in ("dev", "validation"):
        d = Encoded.load(data[split])
        _, preds = loop.predict(model, d, 128, device)
        m = metrics.compute(task, d.labels, preds)
        out[split] = {"metric": metrics.headline(task, m), "accuracy": m.get("accuracy"), "predictions": preds.tolist()}
    return out


def structured(p, task: str, data: dict, dense: Path, out: Path, device: str, per_epoch: int) -> dict:
    """Structured pruning of the seed's dense model with (distilled) recovery on the GPU (scored by the caller,
    on both splits); the row's timing is the recovery's."""
    from bertcompress import prune

    t0 = time.perf_counter()
    r = prune.prune(
        str(dense), str(out), p, task, data["train"], teacher=str(dense) if p.distill.teacher else None, device=device
    )
    seconds = time.perf_counter() - t0
    if EXPORT:  # the shipped form: ONNX Runtime int8 artifact (bertcompress export), its size and accuracy
        from bertcompress.evaluate import evaluate
        from bertcompress.export import export
        from bertcompress.metrics import headline

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
    (structured_epochs, epochs, lr, hidden_weight, embedding_sparsity; a dense candidate's dense_lr, dense_epochs):
    one job per combination, in spec order. Criterion dense (sparsities and distill ignored, e.g.
    rte:42:dense:-:none:dense_lr=2e-5,dense_epochs=10) is a dense candidate fine-tuned from the pretrained model."""
    jobs = []
    for spec in specs:
        task, seeds, criteria, sparsities, distill, *extra = spec.split(":")
        recipe = {k: number(v) for k, v in (kv.split("=") for kv in extra[0].split(","))} if extra else {}
        tag = "".join(f"_{k.split('_')[-1]}{v:g}" for k, v in recipe.items())  # e.g. _epochs20_lr5e-05
        for seed in map(int, seeds.split(",")):
            if criteria == "dense":
                cfg = {"variant": f"dense{tag}", "criterion": "dense", "distill": False, "recipe": recipe}
                jobs.append((task, seed, cfg))
                continue
            for sparsity_text in sparsities.split(","):
                for crit in criteria.split(","):
                    crit, _, ranking = crit.partition("@")
                    if crit == "structured":  # sparsities are heads/ffn fractions, @N the stages
                        jobs += structured_jobs(task, seed, sparsity_text, ranking, distill, recipe)
                        continue
                    s = float(sparsity_text)
                    for kd in KD[distill]:
                        name = f"{crit}{'_' + ranking if ranking else ''}{round(s * 100)}{tag}{'_kd' if kd else ''}"
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
                                    "recipe": recipe,
                                },
                            )
                        )
    return jobs


def number(text: str) -> int | float:
    """A recipe value: an int where it is whole (epochs), else a float (lr)."""
    x = float(text)
    return int(x) if x.is_integer() and "e" not in text.lower() and "." not in text else x


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


SPEED_GOALS = {0.5: 2.0, 1.0: 3.0}  # structured: within this many points of dense (dev) -> this speed-up (b8, CPU)


def choice(rows: list[dict], speed: dict) -> dict:
    """What the dev split chooses from the choose rows (Δ = points of the headline metric on dev vs the same seed's
    dense, mean over seeds): per task the best first-order 90 % recipe; per budget of SPEED_GOALS the fastest
    structured recipe within it (speed: (heads, ffn) -> speed-up at batch 8 on the CPU; ties: the better Δ; none
    within: the best Δ among the shapes that reach the budget's speed-up, flagged); RTE's dense recipe (dense or a
    dense candidate: the best mean dev accuracy). {(task, what): (variant, why, mean Δ or accuracy, n)}."""
    rows = [r for r in rows if r.get("role", "choose") == "choose"]
    dense = {(r.get("call", 0), r["task"], r["seed"]): r for r in rows if r["variant"] == "dense"}
    groups: dict = {}
    for r in rows:
        if r["variant"] == "dense" or r.get("criterion") == "dense":
            continue
        base = dense.get((r.get("call", 0), r["task"], r["seed"]))
        if base:
            groups.setdefault((r["task"], r["variant"]), []).append((100 * (r["metric"] - base["metric"]), r))
    seeds = {t: len({s for c, tt, s in dense if tt == t}) for t in {k[1] for k in dense}}
    groups = {k: v for k, v in groups.items() if len(v) >= seeds[k[0]]}  # only candidates run on every seed
    mean = {k: sum(d for d, _ in v) / len(v) for k, v in groups.items()}
    chosen = {}
    for task in sorted({t for t, _ in groups}):
        fo = [k for k in groups if k[0] == task and groups[k][0][1]["criterion"] == "first_order"]
        fo = [k for k in fo if groups[k][0][1]["target_sparsity"] == 0.9]
        if fo:
            k = max(fo, key=mean.get)
            chosen[(task, "unstructured 90 %")] = (k[1], "best mean dev Δ", mean[k], len(groups[k]))
        st = [k for k in groups if k[0] == task and groups[k][0][1]["criterion"] == "structured"]
        shape = {k: speed.get((groups[k][0][1]["heads_fraction"], groups[k][0][1]["ffn_fraction"]), 0.0) for k in st}
        for budget, goal in SPEED_GOALS.items():
            within = [k for k in st if mean[k] >= -budget]
            if within:
                k, why = max(within, key=lambda k: (shape[k], mean[k])), f"fastest within {budget:g} point on dev"
            elif st:
                fast = [k for k in st if shape[k] >= goal] or st
                k, why = max(fast, key=mean.get), f"none within {budget:g} point on dev: best Δ of those ≥ {goal:g}×"
            else:
                continue
            chosen[(task, f"structured within {budget:g}")] = (k[1], why, mean[k], len(groups[k]))
    rte = {}
    for r in rows:
        if r["task"] == "rte" and (r["variant"] == "dense" or r.get("criterion") == "dense"):
            rte.setdefault(r["variant"], []).append(r["dev_accuracy"])
    rte = {v: a for v, a in rte.items() if len(a) >= seeds.get("rte", 0)}
    if rte:
        v = max(rte, key=lambda v: sum(rte[v]) / len(rte[v]))
        chosen[("rte", "dense")] = (v, "best mean dev accuracy", sum(rte[v]) / len(rte[v]), len(rte[v]))
    return chosen


def report_specs(rows: list[dict], speed: dict, seeds: str) -> list[str]:
    """The report call's run arguments from the choose rows: --recipe for RTE's chosen dense recipe, then a spec
    per chosen recipe (MRPC's pruning recipes also on RTE, whose dense recipe is the only one chosen on its dev)."""
    chosen = choice(rows, speed)
    row = {(r["task"], r["variant"]): r for r in rows}
    out, specs = [], []
    if ("rte", "dense") in chosen:
        recipe = row[("rte", chosen[("rte", "dense")][0])].get("recipe") or {}
        if recipe:
            out.append("--recipe=rte:" + ",".join(f"{k}={v}" for k, v in recipe.items()))
    for (task, _), (variant, *_) in chosen.items():
        if task == "rte":
            continue
        for t in (task, "rte") if task == "mrpc" else (task,):
            specs.append(spec_of(row[(task, variant)], t, seeds))
    return out + list(dict.fromkeys(specs))


def spec_of(r: dict, task: str, seeds: str) -> str:
    """The run spec that reruns a row's recipe for task on seeds."""
    kd = "kd" if r["distill"] else "none"
    extra = ":" + ",".join(f"{k}={v}" for k, v in r["recipe"].items()) if r.get("recipe") else ""
    if r["criterion"] == "structured":
        fractions = f"{r['heads_fraction']:g}/{r['ffn_fraction']:g}"
        return f"{task}:{seeds}:structured@{r['stages']}:{fractions}:{kd}{extra}"
    ranking = "" if r["ranking"] == grid()["gradual"]["ranking"] else f"@{r['ranking']}"
    return f"{task}:{seeds}:{r['criterion']}{ranking}:{r['target_sparsity']:g}:{kd}{extra}"


def specs_main(args) -> None:
    """Prints the report call's arguments, one a line (bench/studies/pruning_dev.sh reads them)."""
    rows = json.loads(Path(args.rows).read_text())["rows"]
    speed = {tuple(map(float, k.split("/"))): float(v) for k, v in (kv.split("=") for kv in args.speed.split(","))}
    for (task, what), (variant, why, value, n) in choice(rows, speed).items():
        print(f"# {task} {what}: {variant} ({why}; {value:+.3f}, n={n})", file=sys.stderr)
    print("\n".join(report_specs(rows, speed, args.seeds)))


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

    from bertcompress import params as P
    from bertcompress.tokenize import Encoded

    started, rows = time.time(), []
    recipes = {}
    for text in args.recipe or []:  # task:key=value,... over pruning.yaml's recipe, for every process of the run
        task, _, kvs = text.partition(":")
        recipes[task] = {k: number(v) for k, v in (kv.split("=") for kv in kvs.split(","))}
    os.environ["STUDY_RECIPES"] = json.dumps(recipes)
    grid.cache_clear()
    tasks = list(dict.fromkeys(spec.split(":")[0] for spec in args.spec))
    data = prepared_data(args, tasks, ROOT)
    info = {
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "torch": torch.__version__,
        "jobs": args.jobs,
        "role": args.role,
        "dev_fraction": P.defaults().data.dev_fraction,
        "recipes": {t: grid()["recipes"][t] for t in tasks},
        "labels": {t: {s: Encoded.load(data[t][s]).labels.tolist() for s in ("dev", "validation")} for t in tasks},
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
        return one, t, s, cfg, data[t], args.model, cut, args.device, args.role

    def done(job: tuple, row: dict) -> None:
        rows.append(row)
        print(
            f"{row['task']} s{row['seed']} {row['variant']}: acc {row['accuracy']:.4f} {row['split']} metric "
            f"{row['metric']:.4f} (dev {row['dev_metric']:.4f}, validation {row['validation_metric']:.4f}) "
            f"sparsity {row['achieved_sparsity']:.3f} {row['wall_seconds']:.0f}s [{time.time() - started:.0f}s]",
            flush=True,
        )
        save(args.json, info, started)
        if row["variant"] == "dense":  # its pruned runs become ready, kept in spec order
            ready.extend(j for j in jobs if j[:2] == (row["task"], row["seed"]))
            ready.sort(key=lambda j: jobs.index(j) if j in jobs else -1)

    run_pool(ready, call, done, args.jobs, key=lambda job: (job[0], job[1], job[2]["variant"]))
    save(args.json, info, started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("spec", nargs="+", help="task:seeds:criteria:sparsities:distill (see jobs_of)")
    r.add_argument("--cost", action="store_true", help="first time a dense and a distilled pruned epoch alone")
    r.add_argument(
        "--role",
        choices=sorted(SPLIT),
        default="choose",
        help="choose: rows score the dev split (what picks recipes); report: validation, fresh seeds (what is claimed)",
    )
    r.add_argument("--recipe", action="append", help="task:key=value,... over pruning.yaml's recipe of the task")
    common_args(r, max_steps_help="pruned runs stop after N steps (a smoke run)")
    sp = sub.add_parser("specs", help="the report call's arguments, chosen from a choose call's rows")
    sp.add_argument("rows", help="the choose call's JSON")
    sp.add_argument("--seeds", default="45,46,47,48,49")
    sp.add_argument("--speed", required=True, help="heads/ffn=speed-up,... at batch 8 on the CPU, e.g. 0.5/0.625=2.27")
    args = ap.parse_args()  # the tables and figures: bench.studies.pruning_report (it imports this module)
    if args.cmd == "run":
        run(args)
    else:
        specs_main(args)


if __name__ == "__main__":
    main()
