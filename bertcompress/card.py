"""The model card an artifact carries (README.md): what it is, how good and how fast it was where it was measured,
where it came from, and how to load it in each runtime without this project."""

from __future__ import annotations

FILES = {
    "onnx": "model.onnx",
    "onnx_int8": "model.onnx",
    "openvino": "openvino_model.xml + openvino_model.bin",
    "pt2e_int8": "model.pt2",
}
RUNTIME = {
    "onnx": "ONNX Runtime (fp32)",
    "onnx_int8": "ONNX Runtime (dynamic int8)",
    "openvino": "OpenVINO (int8 by NNCF)",
    "pt2e_int8": "PyTorch: torch.export program (PT2E int8), compiled by Inductor",
}


def _loading(m: dict) -> str:
    args = ", ".join(f'["{c} text"]' for c in m["text_columns"])
    tok = (
        "from transformers import AutoTokenizer\n"
        'tok = AutoTokenizer.from_pretrained(".")\n'
        f'x = tok({args}, truncation=True, max_length={m["max_length"]}, return_tensors="np")\n'
    )
    fmt = m["format"]
    if fmt in ("onnx", "onnx_int8"):
        return (
            "ONNX Runtime alone (any language; Python shown):\n\n```python\nimport onnxruntime as ort\n"
            + tok
            + 'session = ort.InferenceSession("model.onnx")\n'
            + 'logits = session.run(None, {k: x[k] for k in ("input_ids", "token_type_ids", "attention_mask")})[0]\n'
            + "```\n\nOptimum:\n\n```python\nfrom optimum.onnxruntime import ORTModelForSequenceClassification\n"
            + 'model = ORTModelForSequenceClassification.from_pretrained(".")\n```\n'
        )
    if fmt == "openvino":
        return (
            "OpenVINO alone:\n\n```python\nimport openvino as ov\n"
            + tok
            + 'model = ov.Core().compile_model("openvino_model.xml", "CPU")\n'
            + 'logits = model({k: x[k] for k in ("input_ids", "token_type_ids", "attention_mask")})[0]\n'
            + "```\n\nOptimum-Intel:\n\n```python\nfrom optimum.intel import OVModelForSequenceClassification\n"
            + 'model = OVModelForSequenceClassification.from_pretrained(".")\n```\n'
        )
    return (
        "PyTorch (torch and torchao of the versions below):\n\n```python\nimport torch, torchao.quantization.pt2e\n"
        + 'program = torch.export.load("model.pt2").module()\n'
        + "```\n"
    )


def _figures(v: dict, metric: str) -> list[str]:
    ci = v.get("ci", {})
    lines = [
        f"- {metric} {v[metric]:.4f} (95 % bootstrap CI over the {v['examples']} {v['split']} examples: "
        f"{ci.get('low', float('nan')):.4f}–{ci.get('high', float('nan')):.4f})"
    ]
    if "batch1_ms" in v:
        mach = v.get("machine", {})
        lines.append(
            f"- latency {v['batch1_ms']:.1f} ms at batch 1, {v['batch8_ms']:.1f} ms at batch 8 (length 128, "
            f"{v['threads']} threads) on {mach.get('cpu', '?')} ({mach.get('cores', '?')} cores; "
            f"{', '.join(mach.get('flags', [])) or 'no AVX-512'}): measure on your own machine, runtimes' speeds "
            "differ between CPUs"
        )
    return lines


def text(m: dict) -> str:
    from .glue import get_task

    metric = get_task(m["task"]).metric
    src = m.get("source_params") or {}
    seed = (src.get("finetune") or {}).get("seed")
    lines = [
        f"# {m['task']}: {RUNTIME.get(m['format'], m['format'])}",
        "",
        f"A BERT-family classifier for GLUE {m['task']} (labels: {', '.join(m['labels'] or ['a regression score'])};"
        f" inputs: {', '.join(m['text_columns'])}), exported by bertcompress as `{m['format']}`: "
        f"{FILES.get(m['format'], '')}, with its tokenizer and config.json. Texts longer than {m['max_length']} "
        "tokens are truncated (longest first), as in evaluation.",
        "",
        "## How good, how fast",
        "",
    ]
    if "validation" in m:
        lines += _figures(m["validation"], metric)
    else:
        lines.append("- not evaluated at export (export with the validation split to measure it)")
    sm = m.get("source_metrics") or {}
    if f"val_{metric}" in sm:
        lines.append(f"- its float source model: {metric} {sm[f'val_{metric}']:.4f} on validation (seed {seed})")
    if "auto" in m:
        a = m["auto"]
        lines += ["", f"Chosen by `--format auto`: {a['rule']} (float: {a['float_' + metric]:.4f}). Candidates:", ""]
        on = a.get("chosen_on", "validation")
        also = f" | validation {metric}" if on == "dev" else ""
        lines += [f"| format | {on} {metric} | Δ points{also} | batch 1 ms | batch 8 ms | archive MB | within budget |"]
        lines += ["|---|---|---|---|---|---|---|" + "---|" * bool(also)]
        lines += [
            f"| {r['format']} | {r[metric]:.4f} | {r['delta_points']:+.2f}"
            + (f" | {r[f'validation_{metric}']:.4f}" if also else "")
            + f" | {r['batch1_ms']:.1f} | {r['batch8_ms']:.1f} | {r['archive_mb']:.1f} | "
            f"{'yes' if r['within_budget'] else 'no'} |"
            for r in a["candidates"]
        ]
    lines += [
        "",
        "One seed's model: a single run; the pipeline's report gives every variant over several seeds.",
        "",
        "## Load it",
        "",
        "Unpack the archive first if that is what you have: `tar --zstd -xf <name>.tar.zst`.",
        "",
        _loading(m),
        "## Provenance",
        "",
        f"- source: `{m['source']}` ({(m.get('source_variant') or {}).get('mode', 'finetune')}), seed {seed}",
        f"- model: {(src.get('model') or {}).get('name', '?')}; storage: {m.get('storage')}",
        f"- built with: {', '.join(f'{k} {v}' for k, v in m.get('built_with', {}).items())}",
        "- manifest.json holds the source's params, metrics and every file's content hash",
        "",
    ]
    return "\n".join(lines)
