"""Rich terminal output for `compress`: progress bars while it runs, a summary when it is done."""

from __future__ import annotations

import contextlib

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .costs import human


@contextlib.contextmanager
def progress_factory(console: Console, enabled: bool = True):
    """Yields ``progress(description, total)`` → ``advance(n)`` / ``update(done, total)``; None if
    disabled."""
    if not enabled:
        yield None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bars:

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
    """The compress report as a human reads it: costs, calibration, speed, INT8, groups, guard, fidelity."""
    d, p = r["dense"], r["pruned"]
    repair = (
        " + reconstruction" if r["reconstruct"] else " + OBS compensation" if r.get("refit_layers") else ""
    )
    console.print(f"[bold]{r['model']}[/bold] → {r['output']}")
    console.print(
        f"MACs {human(d['macs'])} → {human(p['macs'])} ({r['achieved']['macs']:.2f}x)   "
        f"params {human(d['params'])} → {human(p['params'])} ({r['achieved']['params']:.2f}x)   "
        f"target {r['target']:g}x {r['metric']}, {r['criterion']} + {r['allocation']}{repair}"
    )
    cal = r.get("calibration")
    if cal:
        console.print(
            f"calibration: {cal['samples']} samples"
            + (f" + {cal['mosaics']} mosaics (statistics)" if cal.get("mosaics") else "")
            + f", {cal['holdout']} held out ({cal['source']})"
        )
    lat = r.get("latency")
    if lat:
        console.print(
            "measured ORT CPU speedup (side by side, median): "
            + ", ".join(
                f"{k} {v['dense_ms']:.2f} → {v['pruned_ms']:.2f} ms ({v['speedup']:.2f}x)"
                for k, v in lat["measured"].items()
            )
            + f"; {len(lat['attempts'])} allocation(s), table of {lat['table']['nodes']} layers"
            + (" (cached)" if lat["table"]["cached"] else f" measured in {lat['table']['seconds']:.0f}s")
        )
    sp = r.get("sparsity")
    if sp:
        console.print(
            f"sparsity {sp['pattern']} ({sp['criterion']}): {sp['eligible_layers']} layers sparsified, "
            f"{sp['skipped_layers']} skipped (see the report); zeros {100 * sp['sparsity_linear']:.1f}% "
            "of all linear weights"
        )
    _print_int8(console, r.get("int8"))
    _print_groups(console, r)
    _print_guard(console, r.get("guard"))
    _print_blocked(console, r["groups"])
    _print_fidelity(console, r["fidelity"])
    for w in r["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {w}")
    console.print("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in r["timings_s"].items()))


def _print_int8(console: Console, q: dict | None) -> None:
    if q:
        line = f"INT8 QDQ ({q['preset']}, {q['calib_method']}) → {q['output']}"
        for key, label in (("int8_vs_fp32", "vs pruned FP32"), ("int8_vs_dense", "vs dense")):
            m = next(iter(q["fidelity"].get(key, {}).values()), None)
            if m:
                line += f"; {label}: " + (
                    f"top-1 agr. {100 * m['top1_agreement']:.1f}%"
                    if "top1_agreement" in m
                    else f"R² {m['r2_mean']:.4f}"
                )
        lat = q.get("latency_ms")
        if lat:
            line += f"; latency FP32 {lat['fp32']['median']:.2f} ms → INT8 {lat['int8']['median']:.2f} ms"
        console.print(line)


def _print_groups(console: Console, r: dict) -> None:
    table = Table(title="Channel groups (pruned ones)")
    for col in ("group", "width", "kept", "first producer"):
        table.add_column(col, justify="right" if col != "first producer" else "left")
    for g in r["groups"]:
        if g["kept"] < g["channels"]:
            producer = next((m["node"] for m in g["members"] if m["role"] == "producer"), "")
            table.add_row(str(g["id"]), str(g["channels"]), str(g["kept"]), producer)
    console.print(table)


def _print_guard(console: Console, guard: dict | None) -> None:
    if guard and guard["measurements"]:
        ms = guard["measurements"]
        raised = sorted({m["group"] for m in ms if m["raised"]})
        unmeasured = ", ".join(map(str, guard["unverified"]))
        whole = guard.get("plans") or []
        kept = (
            (
                f"; whole-plan damage {' → '.join(f'{d:.4g}' for d in whole)}: kept "
                + ("the re-plan" if guard.get("kept") else "the first plan")
            )
            if whole
            else ""
        )
        console.print(
            f"guard: {len(ms)} cut(s) to under a quarter past the trials measured at the planned "
            "width; "
            + (
                f"curves raised for group(s) {', '.join(map(str, raised))} and the plan redone"
                if raised
                else "none worse than its curve"
            )
            + kept
            + (f"; still unmeasured: {unmeasured}" if unmeasured else "")
        )


def _print_blocked(console: Console, groups: list[dict]) -> None:
    blocked = [g for g in groups if not g["prunable"] and g["reason"] and g["channels"] > 1]
    if blocked:
        console.print(
            f"{len(blocked)} group(s) not pruned: "
            + "; ".join(f"#{g['id']}: {g['reason']}" for g in blocked[:4])
            + (" …" if len(blocked) > 4 else "")
        )


def _print_fidelity(console: Console, fidelity: dict) -> None:
    for name, m in fidelity.items():
        if name == "metric_fn":
            console.print(
                f"--metric-fn {m['name']} on {m['samples']} held-out samples: {m['value']:.4f}"
                + parts_line(m.get("parts"))
            )
            continue
        line = f"fidelity on {m['samples']} held-out samples, output '{name}': cosine {m['cosine_mean']:.4f}"
        if "top1_agreement" in m:
            line += (
                f", top-1 agreement {100 * m['top1_agreement']:.1f}%, "
                f"top-5 overlap {100 * m['top5_overlap']:.1f}%"
            )
        else:
            worst = ", ".join(f"#{i} {r2:.3f}" for i, r2 in m["worst_components"][:3])
            line += f", R² per component mean {m['r2_mean']:.4f} (worst {worst} of {m['components']})"
        console.print(line + f", max |Δ| {m['max_abs_diff']:.3g}")


def parts_line(parts: dict | None) -> str:
    """A detector's per-part fidelity (``metrics.detection_parts``) as one clause, "" when there is none."""
    if not parts:
        return ""
    d, b, c = parts["detections"], parts["boxes"], parts["classes"]
    line = (
        f" — detections: dense {d['dense']}, pruned {d['candidate']}, precision {d['precision']:.3f}, "
        f"recall {d['recall']:.3f}; boxes: R² {b['r2_mean']:.4f}"
    )
    if b["matched_iou_mean"] is not None:
        line += f", IoU of matches {b['matched_iou_mean']:.3f}"
    if "objectness" in parts:
        line += f"; objectness: R² {parts['objectness']['r2']:.4f}"
    line += f"; class scores: R² {c['r2_mean']:.4f} (lowest {c['r2_min']:.4f}, class {c['lowest_class']})"
    if c["same_class_on_box_matches"] is not None:
        line += f", same class on {100 * c['same_class_on_box_matches']:.1f}% of box matches"
    return line


def print_quantize_summary(console: Console, r: dict) -> None:
    """What `onnxprune quantize` did: output, sizes, layers kept in float, fidelity, latency, warnings."""
    size, layers = r["size_bytes"], r["layers"]
    console.print(f"[bold]{r['model']}[/bold] → {r['output']}")
    console.print(
        f"preset {r['preset']}, calibration {r['calib_method']} on {r['calibration']['samples']} samples, "
        f"{layers['quantized']}/{layers['weight_layers']} weight layers INT8"
        + (f", bias-corrected {r['bias_correction']['corrected']}" if r.get("bias_correction") else "")
    )
    console.print(
        f"size {human(size['fp32'])}B FP32 → {human(size['int8_qdq'])}B QDQ file (float weights kept, "
        f"QAT-ready); {human(size['int8_weights_stored'])}B with INT8 weight storage"
    )
    if layers["float"]:
        console.print(
            f"kept in float ({len(layers['float'])}): "
            + ", ".join(layers["float"][:6])
            + (" …" if len(layers["float"]) > 6 else "")
        )
    for name, m in r["fidelity"].get("int8_vs_fp32", {}).items():
        if name == "metric_fn":
            console.print(
                f"INT8 vs FP32, --metric-fn {m['name']} on {m['samples']} held-out samples: "
                f"{m['value']:.4f}" + parts_line(m.get("parts"))
            )
            continue
        line = (
            f"INT8 vs FP32 on {m['samples']} held-out samples, output '{name}': cosine {m['cosine_mean']:.4f}"
        )
        if "top1_agreement" in m:
            line += f", top-1 agreement {100 * m['top1_agreement']:.1f}%, KL {m['kl_dense_to_pruned']:.4f}"
        else:
            line += f", R² per component mean {m['r2_mean']:.4f}"
        console.print(line)
    gate = r.get("quality_gate")
    if gate:
        verdict = "[green]passed[/green]" if gate["passed"] else "[red]FAILED[/red]"
        console.print(
            f"quality gate (--max-drop {gate['max_drop']}): {gate['metric']} {gate['value']:.4f} {verdict}"
        )
    lat = r.get("latency_ms")
    if lat:
        console.print(
            f"ORT CPU latency (batch {lat['batch']}): FP32 {lat['fp32']['median']:.3f} ms, "
            f"INT8 {lat['int8']['median']:.3f} ms ({lat['fp32_over_int8']:.2f}x)"
        )
    for w in r["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {w}")
    console.print("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in r["timings_s"].items()))


def _ms(value: float | None) -> str:
    return (
        "—"
        if value is None
        else f"{value:.3f}"
        if value < 10
        else f"{value:.2f}"
        if value < 1000
        else f"{value:.0f}"
    )


def _short_names(names: list[str]) -> dict[str, str]:
    """File names when they tell the models apart, else the paths as given."""
    base = {n: n.replace("\\", "/").rsplit("/", 1)[-1] for n in names}
    return base if len(set(base.values())) == len(set(names)) else {n: n for n in names}


def print_bench(console: Console, r: dict) -> None:
    """`onnxprune bench`: one row per model and batch, ratios against the first model at the same batch."""
    trt = r["backend"] == "tensorrt"
    repeats = r["repeats"] > 1
    rows = r["results"]
    label = _short_names(r["models"])
    backend = "TensorRT (GPU time)" if trt else "onnxruntime CPU"
    schedule = f"{r['rounds']} rounds" + (f" × {r['repeats']} repeats" if repeats else "")
    threads = "" if trt else f", threads {r['threads'] or 'default'}"
    table = Table(title=f"{backend} latency, interleaved: {schedule} after {r['warmup']} warm-up{threads}")
    columns = (
        ["model", "batch"]
        + (["precision"] if trt else [])
        + ["p50 ms"]
        + (["p50 min"] if repeats else [])
        + ["p90 ms", "p99 ms", "min ms", "samples/s", "vs first", "size MB", "GPU MB" if trt else "peak MB"]
        + (["build s"] if trt else [])
    )
    for col in columns:
        table.add_column(
            col,
            justify="left" if col in ("model", "precision") else "right",
            overflow="fold" if col == "model" else "ellipsis",
        )
    for row in rows:
        stats = row["stats"] or {}
        cells = [label[row["model"]], str(row["batch"])]
        if trt:
            cells.append((row.get("precision") or "—") + (" +2:4" if row.get("sparse") else ""))
        cells.append("[yellow]skipped[/yellow]" if row["skipped"] else _ms(row["p50_median_ms"]))
        if repeats:
            cells.append(_ms(row["p50_min_ms"]))
        cells += [
            _ms(stats.get("p90_ms")),
            _ms(stats.get("p99_ms")),
            _ms(stats.get("min_ms")),
            "—"
            if row["throughput"] is None
            else f"{row['throughput']:.{0 if row['throughput'] >= 100 else 1}f}",
            "—" if row["speedup"] is None else f"{row['speedup']:.2f}x",
            f"{row['size_mb']:.2f}",
            "—" if row["peak_mb"] is None else f"{row['peak_mb']:.1f}",
        ]
        if trt:
            cells.append("—" if row.get("build_s") is None else f"{row['build_s']:.1f}")
        table.add_row(*cells)
    console.print(table)
    if repeats:
        console.print(
            f"p50 ms: median of the {r['repeats']} repeats' p50s; p50 min: their minimum; "
            "p90/p99/min over all runs"
        )
    console.print(
        "vs first: the first model's p50 / this model's p50 at the same batch (above 1: faster); "
        + (
            "GPU MB: device memory of the engine, its context and I/O buffers"
            if trt
            else "peak MB: resident memory growth while loading the model and running it once"
        )
    )
    for row in rows:
        if row["skipped"]:
            console.print(
                f"[yellow]warning:[/yellow] {label[row['model']]} skipped at batch {row['batch']}: "
                f"{row['skipped']}"
            )
    for row in rows:
        sp = row.get("sparse_layers")
        if sp:
            console.print(
                f"[bold]{label[row['model']]}[/bold] (batch {row['batch']}) 2:4 weights in "
                f"{len(sp['eligible'])} layer(s)"
                + (
                    f"; TensorRT eligible: {', '.join(sp['eligible_tensorrt']) or 'none'}"
                    if sp["eligible_tensorrt"] is not None
                    else ""
                )
                + f"; sparse tactics: {', '.join(sp['sparse_tactic']) or 'none'}"
                + ("" if sp["detailed"] else " (no tactic names: engine not built with DETAILED verbosity)")
            )
