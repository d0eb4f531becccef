"""`onnxprune analyze`: what a model is made of and where its cost lies.

``analyze_model`` returns a plain dict (the ``--json`` output); ``render_analysis`` draws it with
rich. Sections are listed in SECTIONS so later stages (channel groups) add one entry each.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import onnx
from rich.console import Console
from rich.table import Table

from onnxprune.passes.normalize import normalize
from onnxprune.passes.sparsify import pattern_report

from .costs import human, model_cost
from .errors import InputError
from .modelio import load_model
from .shapes import Shape, declared_shape, graph_inputs
from .sparsity import sparsity_option
from .tracer import trace_channels


def _io(values) -> list[dict]:
    return [
        {
            "name": v.name,
            "shape": declared_shape(v),
            "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
        }
        for v in values
    ]


def analyze_model(
    path: str | os.PathLike, input_shapes: Mapping[str, Shape] | None = None, sparsity: str | None = None
) -> dict:
    """Load, normalize and cost a model; with ``sparsity`` ("N:M") also check every linear weight for
    ≥ N zeros in every M along its reduction dimension. The dict is JSON-serializable."""
    original = load_model(path)
    model, norm = normalize(original)
    cost = model_cost(model, input_shapes)
    total = cost.macs or 1
    layers = [
        {
            "name": n.name,
            "op": n.op,
            "weight_shape": n.weight_shape,
            "output_shape": n.output_shape,
            "macs": n.macs,
            "params": n.params,
            "share": (n.macs or 0) / total,
        }
        for n in cost.nodes
        if n.macs or n.params
    ]
    pattern = sparsity_option(sparsity)
    if pattern is not None:
        if not pattern.semi_structured:
            raise InputError(f"--sparsity for analyze takes an N:M pattern such as 2:4, not '{sparsity}'")
    return {
        "sparsity": pattern_report(model, pattern.n, pattern.m) if pattern else None,
        "model": str(path),
        "ir_version": original.ir_version,
        "producer": f"{original.producer_name} {original.producer_version}".strip(),
        "inputs": _io(graph_inputs(original)),
        "outputs": _io(original.graph.output),
        "input_shapes": cost.input_shapes,
        "normalization": norm.summary(),
        "totals": {
            "macs": cost.macs,
            "params": cost.params,
            "nodes": len(model.graph.node),
            "unmeasured": cost.unmeasured,
        },
        "op_counts": _op_counts(model),
        "layers": layers,
        "channel_groups": _groups(model, cost, input_shapes),
    }


def _groups(model: onnx.ModelProto, cost, input_shapes) -> list[dict]:
    trace = trace_channels(model, input_shapes)
    macs = trace.group_macs({n.name: n.macs or 0 for n in cost.nodes})
    return [{**g.to_dict(), "macs": int(round(macs[g.id]))} for g in trace.groups]


def _op_counts(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _shape(s) -> str:
    return "—" if s is None else "×".join(str(d) for d in s)


def _render_layers(console: Console, a: dict) -> None:
    table = Table(title=f"Layers of {os.path.basename(a['model'])}", show_lines=False)
    for col, justify in (
        ("op", "left"),
        ("name", "left"),
        ("weight", "right"),
        ("output", "right"),
        ("MACs", "right"),
        ("params", "right"),
        ("share", "right"),
    ):
        table.add_column(col, justify=justify, overflow="fold")
    for row in a["layers"]:
        table.add_row(
            row["op"],
            row["name"],
            _shape(row["weight_shape"]),
            _shape(row["output_shape"]),
            human(row["macs"]),
            human(row["params"]),
            f"{100 * row['share']:.1f}%",
        )
    console.print(table)


def _render_summary(console: Console, a: dict) -> None:
    t, n = a["totals"], a["normalization"]
    shapes = ", ".join(f"{k}:{_shape(v)}" for k, v in a["input_shapes"].items())
    console.print(
        f"[bold]MACs[/bold] {human(t['macs'])} ({t['macs']:,})   [bold]params[/bold] {human(t['params'])} "
        f"({t['params']:,})   [bold]nodes[/bold] {t['nodes']}   at {shapes}"
    )
    console.print(
        f"opset {n['opset'][0]}→{n['opset'][1]}, nodes {n['nodes'][0]}→{n['nodes'][1]}; "
        f"{n['constants_lowered']} Constant nodes lowered, {n['identities_removed']} Identity removed, "
        f"{n['batchnorm_folded']} BatchNorm folded, {len(n['batchnorm_kept'])} kept"
    )
    ops = ", ".join(f"{k}×{v}" for k, v in a["op_counts"].items())
    console.print(f"ops: {ops}")
    for note in n["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}")
    if t["unmeasured"]:
        console.print(
            f"[yellow]warning:[/yellow] MACs unknown for {len(t['unmeasured'])} node(s) "
            f"(shapes not inferable): {', '.join(t['unmeasured'][:5])}"
        )


def _render_groups(console: Console, a: dict) -> None:
    groups = a["channel_groups"]
    table = Table(title=f"Channel groups: {sum(g['prunable'] for g in groups)} prunable of {len(groups)}")
    for col, justify in (
        ("id", "right"),
        ("channels", "right"),
        ("MACs", "right"),
        ("", "left"),
        ("members", "left"),
        ("reason", "left"),
    ):
        table.add_column(col, justify=justify, overflow="fold")
    for g in groups:
        names = list(dict.fromkeys(m["node"] for m in g["members"]))
        shown = ", ".join(names[:3]) + (f" (+{len(names) - 3})" if len(names) > 3 else "")
        table.add_row(
            str(g["id"]),
            str(g["channels"]),
            human(g["macs"]),
            "[green]prunable[/green]" if g["prunable"] else "[red]blocked[/red]",
            shown,
            g["reason"] or "",
        )
    console.print(table)


def _render_sparsity(console: Console, a: dict) -> None:
    sp = a.get("sparsity")
    if not sp:
        return
    table = Table(
        title=f"Sparsity pattern {sp['pattern']} (≥ N zeros in every M along the reduction dimension)"
    )
    for col in ("op", "node", "weight shape", "sparsity", sp["pattern"]):
        table.add_column(col, justify="left" if col in ("op", "node") else "right")
    for r in sp["layers"]:
        ok = (
            "[green]yes[/green]"
            if r["compliant"]
            else ("[red]no[/red]" if r["groups"] else "n/a (C % M ≠ 0)")
        )
        table.add_row(r["op"], r["node"], _shape(r["shape"]), f"{100 * r['sparsity']:.1f}%", ok)
    console.print(table)
    console.print(
        f"[bold]{sp['compliant_layers']}[/bold] of {len(sp['layers'])} linear layers follow "
        f"{sp['pattern']}; overall sparsity of linear weights {100 * sp['sparsity']:.1f}%"
    )


# Each section draws one part of the analysis.
SECTIONS: list[Callable[[Console, dict], None]] = [
    _render_layers,
    _render_groups,
    _render_summary,
    _render_sparsity,
]


def render_analysis(console: Console, analysis: dict) -> None:
    for section in SECTIONS:
        section(console, analysis)
