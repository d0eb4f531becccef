"""Graph-building helper behind models.synthetic: a tiny accumulator of nodes and initializers.

``Builder`` methods emit one op (or a torch-export-shaped group of ops) each and return the output
tensor name; ops whose ONNX form changed between opsets (Split, Squeeze, HardSwish,
LayerNormalization) are emitted in the form valid for the builder's opset.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MIN_OPSET = 11
META_GRAPH, META_SEED, META_VARIANTS = "synthetic.graph", "synthetic.seed", "synthetic.variants"


class UnsupportedOpset(ValueError):
    """The requested graph cannot be expressed at the requested opset."""


class Builder:
    """Collects nodes, initializers and graph I/O; helpers emit each op in its opset's form."""

    def __init__(self, seed: int, opset: int):
        newest = onnx.defs.onnx_opset_version()
        if not MIN_OPSET <= opset <= newest:
            raise UnsupportedOpset(f"synthetic graphs support opsets {MIN_OPSET}..{newest}, got {opset}")
        self.seed, self.opset = seed, opset
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.params: dict[str, np.ndarray] = {}
        self._auto = Counter()

    # ---- tensors ---------------------------------------------------------------------------
    def input(self, name: str, shape: list, dtype: int = TensorProto.FLOAT) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, dtype, shape))
        return name

    def output(self, name: str, shape: list, dtype: int = TensorProto.FLOAT) -> None:
        self.outputs.append(helper.make_tensor_value_info(name, dtype, shape))

    def param(self, name: str, array) -> str:
        """An initializer; a second call with the same name shares it (values must agree)."""
        array = np.asarray(array)
        if name in self.params:
            assert np.array_equal(self.params[name], array), f"initializer {name} redefined"
        self.params[name] = array
        return name

    def const(self, name: str, value, dtype=np.float32) -> str:
        return self.param(name, np.asarray(value, dtype=dtype))

    def weight(self, name: str, shape: list, fan_in: int | None = None) -> str:
        fan_in = fan_in or int(np.prod(shape[1:]))
        return self.param(name, self.rng.normal(0.0, fan_in**-0.5, shape).astype(np.float32))

    def bias(self, name: str, shape) -> str:
        return self.param(name, self.rng.normal(0.0, 0.2, shape).astype(np.float32))

    # ---- nodes -----------------------------------------------------------------------------
    def op(self, op_type: str, inputs: list, name: str | None = None, outputs: list | None = None, **attrs):
        """Append a node; its (single) output tensor is named like the node unless ``outputs``."""
        if name is None:
            name = f"{op_type.lower()}_{self._auto[op_type]}"
            self._auto[op_type] += 1
        outs = outputs or [name]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, **attrs))
        return outs[0] if len(outs) == 1 else outs

    def conv(self, x, cin, cout, k=3, stride=1, group=1, pad=None, dilation=1, bias=True, name="conv"):
        pad = dilation * (k // 2) if pad is None else pad
        ins = [x, self.weight(f"{name}.weight", [cout, cin // group, k, k])]
        if bias:
            ins.append(self.bias(f"{name}.bias", [cout]))
        return self.op(
            "Conv",
            ins,
            name,
            kernel_shape=[k, k],
            strides=[stride] * 2,
            pads=[pad] * 4,
            dilations=[dilation] * 2,
            group=group,
        )

    def bn(self, x, c, name):
        r = self.rng
        stats = {
            "scale": r.uniform(0.5, 1.5, c),
            "bias": r.normal(0, 0.2, c),
            "mean": r.normal(0, 0.2, c),
            "var": r.uniform(0.5, 2.0, c),
        }
        ins = [self.param(f"{name}.{k}", v.astype(np.float32)) for k, v in stats.items()]
        return self.op("BatchNormalization", [x, *ins], name, epsilon=1e-5)

    def act(self, x, kind, name):
        if kind is None:
            return x
        if kind == "hardswish":
            return self.hardswish(x, name)
        if kind == "clip6":
            return self.op("Clip", [x, self.const("clip.min", 0.0), self.const("clip.max", 6.0)], name)
        return self.op({"relu": "Relu", "sigmoid": "Sigmoid"}[kind], [x], name)

    def cba(self, x, cin, cout, k=3, stride=1, group=1, pad=None, act="relu", bias=False, name="conv"):
        """Conv -> BatchNormalization -> activation (torch export order; conv bias off by default)."""
        y = self.conv(x, cin, cout, k, stride, group, pad, bias=bias, name=name)
        return self.act(self.bn(y, cout, f"{name}/bn"), act, f"{name}/{act}")

    def linear(self, x, din, dout, name):
        """MatMul(x, W[din, dout]) -> Add(bias): torch nn.Linear on a >2-D tensor / Paddle Linear."""
        y = self.op("MatMul", [x, self.weight(f"{name}.weight", [din, dout], fan_in=din)], f"{name}/matmul")
        return self.op("Add", [y, self.bias(f"{name}.bias", [dout])], name)

    def gemm(self, x, din, dout, name, trans_a=0, trans_b=1, alpha=1.0, beta=1.0, bias_shape=None):
        w = self.weight(f"{name}.weight", [dout, din] if trans_b else [din, dout], fan_in=din)
        c = self.bias(f"{name}.bias", bias_shape or [dout])
        return self.op("Gemm", [x, w, c], name, transA=trans_a, transB=trans_b, alpha=alpha, beta=beta)

    def gap_fc(self, x, c, classes, name="fc"):
        """GlobalAveragePool -> Flatten -> Gemm(transB=1): the usual classifier head."""
        f = self.op("Flatten", [self.op("GlobalAveragePool", [x], "gap")], "flatten", axis=1)
        return self.gemm(f, c, classes, name)

    def se(self, x, c, hidden, gate="sigmoid", name="se"):
        """Squeeze-excite: GAP -> Conv -> Relu -> Conv -> gate -> Mul(x, gate)."""
        g = self.op("GlobalAveragePool", [x], f"{name}/gap")
        g = self.op("Relu", [self.conv(g, c, hidden, k=1, name=f"{name}/fc1")], f"{name}/relu")
        g = self.conv(g, hidden, c, k=1, name=f"{name}/fc2")
        if gate == "hardsigmoid":  # Paddle's hardsigmoid slope
            g = self.op("HardSigmoid", [g], f"{name}/{gate}", alpha=0.2, beta=0.5)
        else:
            g = self.op("Sigmoid", [g], f"{name}/{gate}")
        return self.op("Mul", [x, g], f"{name}/mul")

    # ---- ops whose form depends on the opset ----------------------------------------------
    def split(self, x, sizes, axis, name):
        outs = [f"{name}.{i}" for i in range(len(sizes))]
        if self.opset >= 13:
            return self.op("Split", [x, self.const(f"{name}.sizes", sizes, np.int64)], name, outs, axis=axis)
        return self.op("Split", [x], name, outs, axis=axis, split=list(sizes))

    def squeeze(self, x, axes, name):
        if self.opset >= 13:
            return self.op("Squeeze", [x, self.const(f"{name}.axes", axes, np.int64)], name)
        return self.op("Squeeze", [x], name, axes=list(axes))

    def hardswish(self, x, name):
        if self.opset >= 14:
            return self.op("HardSwish", [x], name)
        hs = self.op("HardSigmoid", [x], f"{name}/hardsigmoid", alpha=1 / 6, beta=0.5)
        return self.op("Mul", [x, hs], name)

    def layernorm(self, x, d, name):
        """LayerNormalization over the last axis; decomposed (torch style) before opset 17."""
        g = self.param(f"{name}.weight", self.rng.uniform(0.5, 1.5, d).astype(np.float32))
        b = self.bias(f"{name}.bias", [d])
        if self.opset >= 17:
            return self.op("LayerNormalization", [x, g, b], name, axis=-1, epsilon=1e-5)
        mean = self.op("ReduceMean", [x], f"{name}/mean", axes=[-1])
        dev = self.op("Sub", [x, mean], f"{name}/sub")
        var = self.op(
            "ReduceMean",
            [self.op("Pow", [dev, self.const("ln.two", 2.0)], f"{name}/pow")],
            f"{name}/var",
            axes=[-1],
        )
        std = self.op(
            "Sqrt", [self.op("Add", [var, self.const("ln.eps", 1e-5)], f"{name}/add_eps")], f"{name}/sqrt"
        )
        y = self.op("Mul", [self.op("Div", [dev, std], f"{name}/div"), g], f"{name}/mul")
        return self.op("Add", [y, b], name)

    def gelu(self, x, name):
        """GELU in torch's erf form (an ONNX op only from opset 20): x·½(1 + erf(x/√2))."""
        e = self.op("Div", [x, self.const("gelu.sqrt2", np.sqrt(2.0))], f"{name}/div")
        e = self.op("Add", [self.op("Erf", [e], f"{name}/erf"), self.const("gelu.one", 1.0)], f"{name}/add")
        e = self.op("Mul", [x, e], f"{name}/mul")
        return self.op("Mul", [e, self.const("gelu.half", 0.5)], name)

    def upsample2(self, x, name):
        """Resize nearest x2 as torch exports F.interpolate (empty roi + scales; valid from 11)."""
        roi, scales = self.const("resize.roi", []), self.const("resize.scales", [1, 1, 2, 2])
        return self.op(
            "Resize",
            [x, roi, scales],
            name,
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        )

    def shuffle(self, x, groups: int, per_group: int, side: int, name: str = "shuffle"):
        """ShuffleNet's channel shuffle of a [N, groups·per_group, side, side] map as torch exports it:
        Reshape [N, g, C/g, H, W] -> Transpose [0, 2, 1, 3, 4] -> Reshape [N, C, H, W]
        (channel j·g + k ← k·C/g + j)."""
        split = self.const(f"{name}.shape5", [0, groups, per_group, side, side], np.int64)
        x = self.op(
            "Transpose",
            [self.op("Reshape", [x, split], f"{name}/reshape")],
            f"{name}/transpose",
            perm=[0, 2, 1, 3, 4],
        )
        merge = self.const(f"{name}.shape4", [0, -1, side, side], np.int64)
        return self.op("Reshape", [x, merge], f"{name}/merge")

    def finish(self, fn: Callable) -> onnx.ModelProto:
        inits = [numpy_helper.from_array(v, k) for k, v in self.params.items()]
        graph = helper.make_graph(
            self.nodes,
            fn.__name__,
            self.inputs,
            self.outputs,
            inits,
            doc_string=inspect.cleandoc(fn.__doc__ or ""),
        )
        opsets = [helper.make_opsetid("", self.opset)]
        model = helper.make_model(
            graph,
            opset_imports=opsets,
            producer_name="onnxprune.synthetic",
            ir_version=helper.find_min_ir_version_for(opsets),
        )
        helper.set_model_props(
            model, {META_GRAPH: fn.__name__, META_SEED: str(self.seed), META_VARIANTS: "[]"}
        )
        return model
