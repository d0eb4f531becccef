"""Rich terminal output for `compress`: progress bars while it runs, a summary when it is done."""

from __future__ import annotations

import contextlib

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .costs import human


@contextlib.contextmanager
def progress_factory(console: Console, enabled: bool = True):
    """Yields ``progress(description, total)`` → ``advance(n)`` / ``update(done, total)``; None if disabled."""
    if not enabled:
        yield None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bars:
        def factory(description: str, total: int | None):
            task = bars.add_task(description, total=total)

            def step(a: int, b: int | None = None) -> None:
                if b is None:
                    bars.advance(task, a)
                else:
                    bars.update(task, completed=a + 1, total=b)
            return step
        yield factory


def print_summary(console: Console, r: dict) -> None:
    d, p = r["dense"], r["pruned"]
    console.print(f"[bold]{r['model']}[/bold] → {r['output']}")
    console.print(f"MACs {human(d['macs'])} → {human(p['macs'])} ({r['achieved']['macs']:.2f}x)   "
                  f"params {human(d['params'])} → {human(p['params'])} ({r['achieved']['params']:.2f}x)   "
                  f"target {r['target']:g}x {r['metric']}, {r['criterion']} + {r['allocation']}"
                  f"{' + reconstruction' if r['reconstruct'] else ''}")
    sp = r.get("sparsity")
    if sp:
        console.print(f"sparsity {sp['pattern']} ({sp['criterion']}): {sp['eligible_layers']} layers sparsified, "
                      f"{sp['skipped_layers']} skipped (see the report); zeros {100 * sp['sparsity_linear']:.1f}% "
                      "of all linear weights")
    q = r.get("int8")
    if q:
        line = f"INT8 QDQ ({q['preset']}, {q['calib_method']}) → {q['output']}"
        for key, label in (("int8_vs_fp32", "vs pruned FP32"), ("int8_vs_dense", "vs dense")):
            m = next(iter(q["fidelity"].get(key, {}).values()), None)
            if m:
                line += f"; {label}: " + (f"top-1 agr. {100 * m['top1_agreement']:.1f}%" if "top1_agreement" in m
                                          else f"cosine {m['cosine_mean']:.4f}")
        lat = q.get("latency_ms")
        if lat:
            line += f"; latency FP32 {lat['fp32']['median']:.2f} ms → INT8 {lat['int8']['median']:.2f} ms"
        console.print(line)
    table = Table(title="Channel groups (pruned ones)")
    for col in ("group", "width", "kept", "first producer"):
        table.add_column(col, justify="right" if col != "first producer" else "left")
    for g in r["groups"]:
        if g["kept"] < g["channels"]:
            producer = next((m["node"] for m in g["members"] if m["role"] == "producer"), "")
            table.add_row(str(g["id"]), str(g["channels"]), str(g["kept"]), producer)
    console.print(table)
    blocked = [g for g in r["groups"] if not g["prunable"] and g["reason"] and g["channels"] > 1]
    if blocked:
        console.print(f"{len(blocked)} group(s) not pruned: " + "; ".join(
            f"#{g['id']}: {g['reason']}" for g in blocked[:4]) + (" …" if len(blocked) > 4 else ""))
    for name, m in r["fidelity"].items():
        line = f"fidelity on {m['samples']} held-out samples, output '{name}': cosine {m['cosine_mean']:.4f}"
        if "top1_agreement" in m:
            line += f", top-1 agreement {100 * m['top1_agreement']:.1f}%, top-5 overlap {100 * m['top5_overlap']:.1f}%"
        console.print(line + f", max |Δ| {m['max_abs_diff']:.3g}")
    for w in r["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {w}")
    console.print("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in r["timings_s"].items()))


def print_quantize_summary(console: Console, r: dict) -> None:
    """What `onnxprune quantize` did: output, sizes, layers kept in float, fidelity, latency, warnings."""
    size, layers = r["size_bytes"], r["layers"]
    console.print(f"[bold]{r['model']}[/bold] → {r['output']}")
    console.print(f"preset {r['preset']}, calibration {r['calib_method']} on {r['calibration']['samples']} samples, "
                  f"{layers['quantized']}/{layers['weight_layers']} weight layers INT8"
                  + (f", bias-corrected {r['bias_correction']['corrected']}" if r.get("bias_correction") else ""))
    console.print(f"size {human(size['fp32'])}B FP32 → {human(size['int8_qdq'])}B QDQ file (float weights kept, "
                  f"QAT-ready); {human(size['int8_weights_stored'])}B with INT8 weight storage")
    if layers["float"]:
        console.print(f"kept in float ({len(layers['float'])}): " + ", ".join(layers["float"][:6])
                      + (" …" if len(layers["float"]) > 6 else ""))
    for name, m in r["fidelity"].get("int8_vs_fp32", {}).items():
        line = f"INT8 vs FP32 on {m['samples']} held-out samples, output '{name}': cosine {m['cosine_mean']:.4f}"
        if "top1_agreement" in m:
            line += f", top-1 agreement {100 * m['top1_agreement']:.1f}%, KL {m['kl_dense_to_pruned']:.4f}"
        console.print(line)
    gate = r.get("quality_gate")
    if gate:
        verdict = "[green]passed[/green]" if gate["passed"] else "[red]FAILED[/red]"
        console.print(f"quality gate (--max-drop {gate['max_drop']}): {gate['metric']} {gate['value']:.4f} {verdict}")
    lat = r.get("latency_ms")
    if lat:
        console.print(f"ORT CPU latency (batch {lat['batch']}): FP32 {lat['fp32']['median']:.3f} ms, "
                      f"INT8 {lat['int8']['median']:.3f} ms ({lat['fp32_over_int8']:.2f}x)")
    for w in r["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {w}")
    console.print("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in r["timings_s"].items()))
