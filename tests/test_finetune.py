"""Fine-tuning: the saved folder, per-epoch metrics, same seed -> same numbers, kill-and-resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bertcompress.evaluate import evaluate
from bertcompress.finetune import finetune
from bertcompress.loop import epoch_batches, fill, matmul_precision


def test_writes_model_and_per_epoch_metrics(tiny_run):
    out, result = tiny_run
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert (out / "tokenizer.json").is_file() and not (out / "checkpoints").exists()
    assert not out.with_name(out.name + ".partial").exists()
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["history"] == result["history"] and [r["epoch"] for r in saved["history"]] == [1, 2]
    assert result["steps"] == 8  # 64 examples / batch 16 x 2 epochs
    for row in saved["history"]:
        assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_f1"} <= set(row)
        assert 0 <= row["train_accuracy"] <= 1 and row["train_loss"] > 0


def test_evaluate_reproduces_final_epoch(tiny_run, tiny_mrpc):
    out, result = tiny_run
    m = evaluate(str(out), "mrpc", tiny_mrpc["validation"], 64)
    assert m["accuracy"] == result["val_accuracy"] and m["f1"] == result["val_f1"]
    assert m["loss"] == pytest.approx(result["val_loss"], rel=1e-5)
    assert 22_000_000 < m["parameters"] < 23_000_000 and 85 < m["size_mb"] < 95  # MiniLM + 2-way head, fp32


def test_same_seed_same_metrics(tiny_run, tiny_params, tiny_mrpc, tmp_path):
    _, first = tiny_run
    again = finetune(tiny_params, "mrpc", tiny_mrpc["train"], tiny_mrpc["validation"], str(tmp_path / "again"))
    assert again["history"] == first["history"]


def test_shuffle_depends_on_seed_and_epoch_only():
    a, b = epoch_batches(100, 32, 42, 1), epoch_batches(100, 32, 42, 1)
    assert all((x == y).all() for x, y in zip(a, b)) and [len(x) for x in a] == [32, 32, 32, 4]
    assert not (epoch_batches(100, 32, 42, 2)[0] == a[0]).all()


class Interrupted(Exception):
    pass


def killed_after_first_epoch(params, tiny_mrpc, out) -> None:
    """A fine-tune to out that dies after its first epoch's checkpoint, as a killed run would."""

    def die(epoch, row):
        if epoch == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        finetune(params, "mrpc", tiny_mrpc["train"], tiny_mrpc["validation"], str(out), on_epoch_end=die)


def test_resume_after_interruption_gives_same_metrics(tiny_run, tiny_params, tiny_mrpc, tmp_path):
    _, uninterrupted = tiny_run
    out = tmp_path / "resumed"
    killed_after_first_epoch(tiny_params, tiny_mrpc, out)
    partial = tmp_path / "resumed.partial"
    assert not out.exists() and (partial / "checkpoints" / "epoch-1" / "model.safetensors").is_file()

    epochs_run = []
    resumed = finetune(
        tiny_params,
        "mrpc",
        tiny_mrpc["train"],
        tiny_mrpc["validation"],
        str(out),
        on_epoch_end=lambda e, row: epochs_run.append(e),
    )
    assert epochs_run == [2]  # epoch 1 came from the checkpoint
    assert resumed["history"] == uninterrupted["history"]
    assert out.is_dir() and not partial.exists()


def test_a_partial_run_of_other_params_is_set_aside_not_resumed(tiny_run, tiny_params, tiny_mrpc, tmp_path, capsys):
    """Killed at one lr, rerun at another: the rerun starts over (its weights are the new lr's, as params.json
    says), and the old checkpoint is kept aside, not resumed."""
    _, at_default_lr = tiny_run
    out, other = tmp_path / "run", tiny_params.replace({"finetune.lr": 5e-5})
    killed_after_first_epoch(tiny_params, tiny_mrpc, out)
    capsys.readouterr()
    epochs_run = []
    result = finetune(
        other,
        "mrpc",
        tiny_mrpc["train"],
        tiny_mrpc["validation"],
        str(out),
        on_epoch_end=lambda e, row: epochs_run.append(e),
    )
    said = [line for line in capsys.readouterr().out.splitlines() if "set aside" in line]
    assert len(said) == 1 and "run.stale" in said[0] and "starting over" in said[0]
    assert epochs_run == [1, 2]  # nothing resumed
    clean = finetune(other, "mrpc", tiny_mrpc["train"], tiny_mrpc["validation"], str(tmp_path / "clean"))
    assert result["history"] == clean["history"] != at_default_lr["history"]
    assert json.loads((out / "params.json").read_text())["finetune"]["lr"] == 5e-5
    assert (tmp_path / "run.stale" / "checkpoints" / "epoch-1").is_dir()
    assert json.loads(Path(f"{out}.step.json").read_text())["reads"]["finetune.lr"] == 5e-5  # what out was made from


def test_length_grouping_keeps_every_example_once_and_pads_less():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 128, size=1000)
    plain, grouped = epoch_batches(1000, 32, 42, 0), epoch_batches(1000, 32, 42, 0, lengths, group=10)
    assert sorted(np.concatenate(grouped).tolist()) == list(range(1000))
    assert max(len(b) for b in grouped) == 32 and len(grouped) == len(plain)
    padded = lambda batches: sum(len(b) * lengths[b].max() for b in batches)  # noqa: E731
    assert padded(grouped) < 0.75 * padded(plain)


def test_fast_path_matches_plain_loss_curve(tiny_params, tiny_mrpc, tmp_path):
    """Padding to multiples and logging every 10 steps change execution, not the maths."""
    plain = tiny_params.replace({"finetune.group_by_length": 0, "finetune.pad_to_multiple": 1, "runtime.log_every": 1})
    fast = tiny_params.replace({"finetune.group_by_length": 0, "finetune.pad_to_multiple": 8, "runtime.log_every": 10})
    curves = [
        finetune(p, "mrpc", tiny_mrpc["train"], tiny_mrpc["validation"], str(tmp_path / name))["history"]
        for name, p in (("plain", plain), ("fast", fast))
    ]
    for a, b in zip(*curves):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-4)
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-4)


def test_tf32_applies_to_cuda_runs_only_and_is_restored():
    assert torch.get_float32_matmul_precision() == "highest"
    with matmul_precision("tf32", "cpu"):
        assert torch.get_float32_matmul_precision() == "highest"  # CPU results stay bit-identical to fp32
    with pytest.raises(Interrupted), matmul_precision("tf32", "cuda:0"):
        assert torch.get_float32_matmul_precision() == "high"
        raise Interrupted
    assert torch.get_float32_matmul_precision() == "highest"  # restored even when training fails


def test_filled_short_batch_gives_the_short_batch_loss_and_gradients(tiny_params, tiny_mrpc):
    """The captured (GPU) path tops the epoch's last batch up with ignored repeats: same loss, same gradients."""
    import torch.nn.functional as F

    from bertcompress.model import load_model
    from bertcompress.tokenize import Encoded

    torch.manual_seed(0)
    model = load_model(tiny_params.model.name, 2).eval()  # no dropout: the two passes are comparable
    data, idx = Encoded.load(tiny_mrpc["train"]), np.array([3, 7, 11, 20, 5])
    filled = fill(idx, 8)
    assert filled.tolist() == [3, 7, 11, 20, 5, 3, 3, 3] and fill(filled, 8) is filled

    def loss_and_grads(rows):
        batch = data.batch(rows, 8)
        labels = batch.pop("labels")
        labels[len(idx) :] = -100
        model.zero_grad()
        loss = F.cross_entropy(model(**batch).logits, labels)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    (short, short_grads), (full, full_grads) = loss_and_grads(idx), loss_and_grads(filled)
    torch.testing.assert_close(full, short)
    for a, b in zip(full_grads, short_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
