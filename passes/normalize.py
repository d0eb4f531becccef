"""Normalization: make every exported graph look alike before tracing and pruning.

Steps, in order: opset < 13 upgraded (onnx version converter), unique node names, Constant nodes
lowered to initializers and constant subgraphs folded (onnx-graphsurgeon, evaluated with
onnxruntime), Identity and inference Dropout removed, BatchNormalization folded into the preceding
Conv / ConvTranspose / Gemm, cleanup + toposort, and shape inference that keeps symbolic dims.
The result computes the same function as the input (tests assert rel. error < 1e-5).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import version_converter

from onnxprune.modelio import check_declared_size
from onnxprune.shapes import infer_shapes

MIN_OPSET = 13  # per-channel QDQ and Split-with-sizes-input need 13
FOLDABLE_INTO = ("Conv", "ConvTranspose", "Gemm")


@dataclass
class NormalizeReport:
    """What normalization did; ``bn_scales`` maps the node whose output a BN scaled to γ/√(σ²+ε)."""

    opset_before: int
    opset_after: int
    nodes_before: int
    nodes_after: int = 0
    constants_lowered: int = 0
    identities_removed: int = 0
    bn_folded: int = 0
    pads_folded: int = 0
    bn_kept: list[str] = field(default_factory=list)
    bn_scales: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "opset": [self.opset_before, self.opset_after],
            "nodes": [self.nodes_before, self.nodes_after],
            "constants_lowered": self.constants_lowered,
            "identities_removed": self.identities_removed,
            "batchnorm_folded": self.bn_folded,
            "batchnorm_kept": self.bn_kept,
            "pads_folded": self.pads_folded,
            "notes": self.notes,
        }


# Constants computed by folding larger than this (bytes) stay nodes: a folded initializer past protobuf's 2 GB
# limit cannot be written, and the graph must stay the size it was.
FOLD_LIMIT = 2**30


def default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def upgrade_opset(model: onnx.ModelProto, report: NormalizeReport) -> onnx.ModelProto:
    """Convert opset < MIN_OPSET models with onnx's version converter; keep the original if it fails."""
    if report.opset_before >= MIN_OPSET:
        return model
    try:
        converted = version_converter.convert_version(model, MIN_OPSET)
        onnx.checker.check_model(converted)
    except Exception as exc:
        report.notes.append(
            f"opset {report.opset_before} kept: version converter failed ({str(exc).splitlines()[0]})"
        )
        return model
    return converted


def name_nodes(graph: gs.Graph) -> None:
    """Give every node a unique, non-empty name: reports and keep-plans refer to nodes by name."""
    seen: set[str] = set()
    for i, node in enumerate(graph.nodes):
        name = node.name or f"{node.op}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        node.name = name
        seen.add(name)


def remove_identities(graph: gs.Graph) -> int:
    """Bypass Identity nodes and inference-mode Dropout (no mask output used). Returns how many."""
    removed = 0
    outputs = graph.outputs
    for node in list(graph.nodes):
        if node.op == "Dropout":
            used_extra = any(t.outputs or t in outputs for t in node.outputs[1:])
            training = len(node.inputs) > 2 and not (
                isinstance(node.inputs[2], gs.Constant) and not bool(np.asarray(node.inputs[2].values))
            )
            if used_extra or training:
                continue
        elif node.op != "Identity":
            continue
        src, dst = node.inputs[0], node.outputs[0]
        if dst in outputs:
            # Keep the graph output's name: rename the source tensor, when that is safe.
            if (
                not isinstance(src, gs.Variable)
                or src in graph.inputs
                or src in outputs
                or len(src.inputs) != 1
            ):
                continue
            outputs[outputs.index(dst)] = src
            name, dst.name = dst.name, dst.name + "_bypassed"
            src.name = name
        for consumer in list(dst.outputs):
            for i, t in enumerate(consumer.inputs):
                if t is dst:
                    consumer.inputs[i] = src
        node.outputs.clear()
        removed += 1
    return removed


def _bn_params(bn: gs.Node) -> tuple[np.ndarray, np.ndarray] | None:
    """(s, t) with BN(x) = s·x + t per channel, or None when the BN is not a constant inference BN."""
    if len(bn.inputs) != 5 or not all(isinstance(t, gs.Constant) for t in bn.inputs[1:]):
        return None
    if bn.attrs.get("training_mode", 0) or any(t.outputs for t in bn.outputs[1:]):
        return None
    gamma, beta, mean, var = (np.asarray(t.values, dtype=np.float64) for t in bn.inputs[1:])
    s = gamma / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
    return s, beta - mean * s


def _fold_conv(node: gs.Node, s: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    w = np.asarray(node.inputs[1].values, dtype=np.float64)
    b = (
        np.asarray(node.inputs[2].values, dtype=np.float64)
        if len(node.inputs) > 2 and node.inputs[2] is not None
        else 0.0
    )
    if node.op == "Conv":
        w = w * s.reshape((-1,) + (1,) * (w.ndim - 1))
    else:  # ConvTranspose: W is [Cin, Cout/g, k...]; output channel o = group·(Cout/g) + j
        g = int(node.attrs.get("group", 1))
        cin, cout_g = w.shape[0], w.shape[1]
        w = (
            w.reshape((g, cin // g, cout_g) + w.shape[2:]) * s.reshape((g, 1, cout_g) + (1,) * (w.ndim - 2))
        ).reshape(w.shape)
    return w, b * s + t


def _fold_gemm(node: gs.Node, s: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Y = α·A'B' + β·C, then s·Y + t  ⇒  B' columns scaled by s, C' = s·β·C + t, β' = 1."""
    w = np.asarray(node.inputs[1].values, dtype=np.float64)
    n = s.shape[0]
    w = w * (s[:, None] if node.attrs.get("transB", 0) else s[None, :])
    c = 0.0
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        c = np.asarray(node.inputs[2].values, dtype=np.float64)
        if c.size not in (1, n) or (c.ndim == 2 and c.shape[0] != 1):
            return None  # a per-row bias cannot be folded into a per-column one
        c = float(node.attrs.get("beta", 1.0)) * c.reshape(-1)
    node.attrs["beta"] = 1.0
    return w, np.broadcast_to(c, (n,)) * s + t


def fold_batchnorms(graph: gs.Graph, report: NormalizeReport) -> None:
    """Fold each inference BatchNormalization into the Conv/ConvTranspose/Gemm that alone feeds it."""
    for bn in [n for n in graph.nodes if n.op == "BatchNormalization"]:
        params = _bn_params(bn)
        x = bn.inputs[0]
        producer = x.inputs[0] if len(x.inputs) == 1 else None
        foldable = (
            params is not None
            and producer is not None
            and producer.op in FOLDABLE_INTO
            and len(x.outputs) == 1
            and x not in graph.outputs
            and isinstance(producer.inputs[1], gs.Constant)
            and (
                len(producer.inputs) < 3
                or producer.inputs[2] is None
                or isinstance(producer.inputs[2], gs.Constant)
            )
            and np.issubdtype(np.asarray(producer.inputs[1].values).dtype, np.floating)
        )
        if params is not None:
            report.bn_scales[producer.name if foldable else bn.name] = params[0].astype(np.float32)
        if not foldable:
            report.bn_kept.append(bn.name)
            continue
        s, t = params
        folded = (_fold_gemm if producer.op == "Gemm" else _fold_conv)(producer, s, t)
        if folded is None:
            report.bn_kept.append(bn.name)
            report.bn_scales[bn.name] = report.bn_scales.pop(producer.name)
            continue
        w, b = folded
        dtype = np.asarray(producer.inputs[1].values).dtype
        # Fresh tensors: the old ones may be shared with other nodes.
        new_w = gs.Constant(f"{producer.name}.weight_bnfold", w.astype(dtype))
        new_b = gs.Constant(f"{producer.name}.bias_bnfold", b.astype(dtype))
        producer.inputs[1] = new_w
        if len(producer.inputs) > 2:
            producer.inputs[2] = new_b
        else:
            producer.inputs.append(new_b)
        producer.outputs[0] = bn.outputs[0]
        bn.outputs.clear()
        report.bn_folded += 1


def _spatial_zero_pads(pad: gs.Node) -> list[int] | None:
    """Pad's [h_begin, w_begin, ..., h_end, w_end] if it is a constant-zero pad of the spatial axes of a
    4-D+ tensor only (non-negative), else None."""
    if pad.attrs.get("mode", "constant") not in ("constant", b"constant") or len(pad.inputs) > 3:
        return None
    if len(pad.inputs) < 2 or not isinstance(pad.inputs[1], gs.Constant):
        return None
    if (
        len(pad.inputs) > 2
        and pad.inputs[2] is not None
        and not (isinstance(pad.inputs[2], gs.Constant) and np.all(np.asarray(pad.inputs[2].values) == 0))
    ):
        return None
    pads = np.asarray(pad.inputs[1].values).astype(int).ravel()
    rank = len(pads) // 2
    if rank < 3 or np.any(pads < 0) or np.any(pads[[0, 1, rank, rank + 1]] != 0):
        return None
    return [int(v) for v in np.concatenate([pads[2:rank], pads[rank + 2 :]])]


def fold_pads(graph: gs.Graph, report: NormalizeReport) -> None:
    """Fold a zero Pad of the spatial axes into the Convs it alone feeds (their ``pads`` grow by it).

    TF-style "same" exports put a Pad before strided convs; left in, it is a float island between
    INT8 convs (onnxruntime cannot fuse Q/DQ across it) and an extra copy of the activation in FP32.
    """
    for pad in [n for n in graph.nodes if n.op == "Pad"]:
        extra = _spatial_zero_pads(pad)
        y = pad.outputs[0]
        consumers = list(y.outputs)
        if (
            extra is None
            or not consumers
            or y in graph.outputs
            or any(
                c.op != "Conv"
                or c.inputs[0] is not y
                or c.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET")
                for c in consumers
            )
        ):
            continue
        for conv in consumers:
            own = list(conv.attrs.get("pads", [0] * len(extra)))
            conv.attrs["pads"] = [a + b for a, b in zip(own, extra, strict=True)]
            conv.inputs[0] = pad.inputs[0]
        pad.outputs.clear()
        report.pads_folded += 1


def _finish(graph: gs.Graph, original: onnx.ModelProto) -> onnx.ModelProto:
    """Export the graph with the original model's metadata and a valid IR version, then infer shapes."""
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    model = gs.export_onnx(graph, do_type_check=False)
    needed = onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    model.ir_version = max(original.ir_version, needed)
    for attr in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(model, attr, getattr(original, attr))
    del model.metadata_props[:]
    model.metadata_props.extend(original.metadata_props)
    return infer_shapes(model)


def normalize(model: onnx.ModelProto) -> tuple[onnx.ModelProto, NormalizeReport]:
    """Return the normalized model (the input is not modified) and a report of what was done."""
    report = NormalizeReport(default_opset(model), default_opset(model), len(model.graph.node))
    model = upgrade_opset(model, report)
    report.opset_after = default_opset(model)
    inferred = infer_shapes(model)
    for vi in (*inferred.graph.value_info, *inferred.graph.output):  # before constant folding allocates them
        check_declared_size(vi, "tensor")
    graph = gs.import_onnx(inferred)
    name_nodes(graph)
    report.constants_lowered = sum(1 for n in graph.nodes if n.op == "Constant")
    level = gs.logger.G_LOGGER.severity
    gs.logger.G_LOGGER.severity = gs.logger.G_LOGGER.ERROR  # folding failures are expected and harmless
    logging.getLogger("onnx_graphsurgeon").setLevel(logging.ERROR)
    try:
        graph.toposort().fold_constants(
            partitioning="basic", error_ok=True, size_threshold=FOLD_LIMIT
        ).cleanup(remove_unused_graph_inputs=False)
    finally:
        gs.logger.G_LOGGER.severity = level
    report.identities_removed = remove_identities(graph)
    fold_batchnorms(graph, report)
    fold_pads(graph, report)
    out = _finish(graph, model)
    report.nodes_after = len(out.graph.node)
    return out, report
