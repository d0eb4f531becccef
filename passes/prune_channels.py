"""Physically remove channels: apply a keep-plan {group id → kept channel indices} to a traced graph.

Every member of every touched space is edited: parameter tensors are sliced (producer rows, consumer
columns or C·H·W blocks, per-channel constants), Split sizes / Slice bounds / Reshape shapes / Resize
sizes / depthwise group counts are rewritten. A tensor read by more than one node slot is copied
before slicing, so shared initializers never change under another reader. ``mask_channels`` builds the
test oracle: the dense graph with the pruned channels' consumer weights zeroed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.channels import Member, Trace, weight_positions
from onnxprune.shapes import infer_shapes

Plan = Mapping[int, np.ndarray]


def _param_indices(m: Member, kept: np.ndarray, size: int) -> np.ndarray:
    """Positions along the member's axis that hold the kept channels."""
    return np.unique(weight_positions(kept, size, m.outer, m.inner, m.groups))


class _Editor:
    """Copy-on-write access to the constant inputs of node slots."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.nodes = {n.name: n for n in model.graph.node}
        self.inits = {t.name: t for t in model.graph.initializer}
        self.readers: dict[str, int] = {}
        for n in model.graph.node:
            for name in n.input:
                self.readers[name] = self.readers.get(name, 0) + 1
        self.readers.update({o.name: self.readers.get(o.name, 0) + 1 for o in model.graph.output})
        self.arrays: dict[tuple[str, int], np.ndarray] = {}

    def get(self, node: str, index: int) -> np.ndarray:
        key = (node, index)
        if key not in self.arrays:
            self.arrays[key] = numpy_helper.to_array(self.inits[self.nodes[node].input[index]]).copy()
        return self.arrays[key]

    def set(self, node: str, index: int, value: np.ndarray) -> None:
        self.arrays[(node, index)] = value

    def commit(self) -> None:
        """Write edited arrays back: in place when this slot is the tensor's only reader, else as a copy."""
        graph = self.model.graph
        for (node_name, index), value in self.arrays.items():
            node = self.nodes[node_name]
            name = node.input[index]
            if self.readers.get(name, 0) > 1:
                new_name = f"{name}__{node_name}"
                self.readers[name] -= 1
                node.input[index] = new_name
                graph.initializer.append(numpy_helper.from_array(value, new_name))
            else:
                self.inits[name].CopyFrom(numpy_helper.from_array(value, name))
        self.arrays.clear()


def _set_attr(node: onnx.NodeProto, name: str, value) -> None:
    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    node.attribute.append(helper.make_attribute(name, value))


def prune_channels(model: onnx.ModelProto, trace: Trace, plan: Plan, infer: bool = True) -> onnx.ModelProto:
    """A new model with every channel not kept by ``plan`` removed (the input model is not modified).

    ``infer=False`` skips the final shape inference (for throw-away models that only get run)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    kept = trace.kept_channels(plan)
    touched = {s.id for s in trace.spaces if len(kept[s.id]) < s.size}
    edit = _Editor(out)
    for m in trace.members:
        if m.space not in touched:
            continue
        size, k = trace.spaces[m.space].size, kept[m.space]
        node = edit.nodes[m.node]
        if m.kind == "param":
            arr = edit.get(m.node, m.input_index)
            edit.set(m.node, m.input_index, np.take(arr, _param_indices(m, k, size), axis=m.axis))
        elif m.kind == "group":
            _set_attr(node, "group", int(m.outer * len(k) * m.inner))
        elif m.kind == "reshape":
            shape = edit.get(m.node, m.input_index)
            shape[m.axis] = m.outer * len(k) * m.inner
        elif m.kind == "resize":
            sizes = edit.get(m.node, m.input_index)
            sizes[m.axis] = len(k)
        elif m.kind == "split":
            views = [trace.views[o] for o in node.output]
            sizes = np.array([v.outer * len(kept[v.space]) * v.inner for v in views], np.int64)
            if len(node.input) > 1 and node.input[1]:
                edit.set(m.node, 1, sizes)
            elif any(a.name == "split" for a in node.attribute):
                _set_attr(node, "split", sizes.tolist())
            else:  # equal split (or num_outputs): state the sizes explicitly
                for i, a in enumerate(node.attribute):
                    if a.name == "num_outputs":
                        del node.attribute[i]
                        break
                name = f"{m.node}__split_sizes"
                out.graph.initializer.append(numpy_helper.from_array(sizes, name))
                del node.input[1:]
                node.input.append(name)
        elif m.kind == "slice":
            starts, ends = edit.get(m.node, 1), edit.get(m.node, 2)
            space_out = trace.space_of(node.output[0])
            full = size
            start = int(starts[m.axis]) + (full if starts[m.axis] < 0 else 0)
            start = min(max(start, 0), full)
            new_start = int(np.sum(k < start))
            starts[m.axis] = new_start
            ends[m.axis] = new_start + len(kept[space_out])
        else:
            raise AssertionError(f"unknown member kind {m.kind}")
    edit.commit()
    del out.graph.value_info[:]
    return infer_shapes(out) if infer else out


def mask_channels(model: onnx.ModelProto, trace: Trace, plan: Plan) -> onnx.ModelProto:
    """The dense model with every pruned channel's consumer weights set to zero (the pruning oracle)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    kept = trace.kept_channels(plan)
    edit = _Editor(out)
    for m in trace.members:
        space = trace.spaces[m.space]
        if m.role != "consumer" or len(kept[m.space]) == space.size:
            continue
        arr = edit.get(m.node, m.input_index)
        keep = np.zeros(arr.shape[m.axis], bool)
        keep[_param_indices(m, kept[m.space], space.size)] = True
        index = [slice(None)] * arr.ndim
        index[m.axis] = ~keep
        arr[tuple(index)] = 0
    edit.commit()
    return out
