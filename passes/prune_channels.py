"""Physically remove channels: apply a keep-plan {group id → kept channel indices} to a traced graph.

Every member of every touched space is edited by its op's edit rule (``ops.EDITS``, per ``channels.Edit``
kind): parameter tensors are sliced (producer rows, consumer columns or C·H·W blocks, per-channel
constants), Split sizes / Slice bounds / Reshape shapes / Resize sizes / depthwise group counts are
rewritten. A tensor read by more than one node slot is copied
before slicing, so shared initializers never change under another reader. ``mask_channels`` builds the
test oracle: the dense graph with the pruned channels' consumer weights zeroed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.channels import Member, Trace, weight_positions
from onnxprune.graph import initializers
from onnxprune.ops import EDITS
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
        self.inits = initializers(model.graph)
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


def prune_channels(model: onnx.ModelProto, trace: Trace, plan: Plan, infer: bool = True) -> onnx.ModelProto:
    """A new model with every channel not kept by ``plan`` removed (the input model is not modified).

    ``infer=False`` skips the final shape inference (for throw-away models that only get run)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    kept = trace.kept_channels(plan)
    touched = {s.id for s in trace.spaces if len(kept[s.id]) < s.size}
    edit = _Editor(out)
    for m in trace.members:
        if m.space in touched:
            EDITS[m.kind](edit, trace, m, kept)
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
