"""Synthetic ONNX graphs with PLANTED redundancy: the oracle for lossless pruning + reconstruction.

Each graph hides, in some of its channel groups, channels that carry no information:

* dead channels -- exactly zero after the producer's activation for every input (all-zero weight
  row; bias / BN beta negative before a Relu, zero otherwise);
* exact duplicates -- channel d equals ``s * channel t`` (s > 0) for every input: weight row and
  bias scaled by s, BatchNorm statistics as if trained on the scaled channel (mean_d = s*mean_t,
  var_d = s^2*(var_t + eps) - eps) with gamma_d = s*gamma_t, beta_d = s*beta_t, so that
  BN(s*x)_d = s*BN(x)_t (gamma_d = gamma_t would cancel the scale), per-channel
  pass-through parameters equal (depthwise weights, PRelu slope, SE gate row); only positively
  homogeneous ops (Relu, LeakyRelu, PRelu, Max/AveragePool, GlobalAveragePool) lie on their path.

Every builder takes ``(seed=0, planted=True)``. ``planted=False`` builds the REDUCED graph from the
same random draws: the planted channels are removed and each duplicate's contribution is folded into
its twin's consumers (column t += s * column d for every consumer: conv input channels, Gemm/MatMul
K rows, C*H*W blocks after Flatten), so the reduced graph computes the same outputs. Planted
positions are fixed per graph (listed in each docstring); weights vary with the seed. All graphs
are opset 17, float32, dynamic batch ``"N"``; graph outputs are never planted.

Nothing else is redundant: a random Relu unit reading non-negative or spatially averaged features
is often dead for every input, so the bias (or BN beta) in front of every Relu is shifted to put
the Relu's input at a random per-channel quantile in [0.3, 0.7] on N(0,1) inputs (one onnxruntime
run per Relu layer at build time, cached per seed; the shifts of duplicates and dead channels
follow the planting rules). Every other channel is then alive and no two are proportional.

    from models import planted
    p = planted.build("residual_add", seed=0)   # any name in planted.names()
    p.model, p.reduced, p.dead, p.duplicates, p.taps
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort

from . import synthetic
from .synthetic_builder import Builder

__all__ = ["GRAPHS", "OPSET", "Planted", "Space", "build", "names", "random_inputs"]

OPSET = 17
EPS = 1e-5  # BatchNormalization epsilon
DEAD_BEFORE_RELU = -0.5  # bias / beta of a dead channel when a Relu follows (zero otherwise)
META = "planted."
CALIB_BATCH, CALIB_SEED = 32, 1234  # inputs on which Relu inputs are centered


@dataclass(frozen=True)
class Space:
    """One channel space of ``n`` channels (planted width) and the channels planted in it."""

    n: int
    dead: tuple[int, ...] = ()
    dups: tuple[tuple[int, int, float], ...] = ()  # (twin t, duplicate d, scale s)

    def __post_init__(self):
        ds = [d for _, d, _ in self.dups]
        twins = {t for t, _, _ in self.dups}
        removed = [*self.dead, *ds]
        ok = len(set(removed)) == len(removed) and not twins & set(removed)
        if not (
            ok and all(0 <= c < self.n for c in [*removed, *twins]) and all(s > 0 for *_, s in self.dups)
        ):
            raise ValueError(
                f"inconsistent planting {self}: indices in range, each planted once, "
                "twins neither dead nor duplicates, scales > 0"
            )

    @property
    def removed(self) -> list[int]:
        return sorted({*self.dead, *(d for _, d, _ in self.dups)})


Spaces = Space | Sequence[Space]  # a list stands for the spaces concatenated along the channel axis


def _parts(spaces: Spaces):
    spaces = [spaces] if isinstance(spaces, Space) else list(spaces)
    offset = 0
    for sp in spaces:
        yield sp, offset
        offset += sp.n


def _rows(a: np.ndarray, axis: int) -> np.ndarray:
    return np.moveaxis(np.array(a, np.float64), axis, 0)


def _drop(a: np.ndarray, spaces: Spaces, axis: int, block: int = 1) -> np.ndarray:
    idx = [
        i for sp, o in _parts(spaces) for c in sp.removed for i in range((o + c) * block, (o + c + 1) * block)
    ]
    return np.delete(a, idx, axis)


def _linear(a, s):
    return s * a


def _equal(a, s):
    return a


def _zero(a):
    return np.zeros_like(a)


def _keep(a):
    return a


class _Net(Builder):
    """Builder whose layers take channel Spaces: producers plant rows, consumers fold columns.

    ``shifts`` (layer name -> per-channel vector, planted width) is added to the bias (or BN beta)
    in front of each Relu; ``centered`` lists (layer, pre-activation tensor, channel axis) for them.
    """

    def __init__(self, seed: int, planted: bool, shifts: dict[str, np.ndarray]):
        super().__init__(seed, OPSET)
        self.planted, self.shifts = planted, shifts
        self.centered: list[tuple[str, str, int]] = []
        self.dead: dict[str, list[int]] = {}
        self.dups: dict[str, list[tuple[int, int, float]]] = {}
        self.taps: dict[str, str] = {}

    def width(self, spaces: Spaces) -> int:
        return sum(sp.n - (0 if self.planted else len(sp.removed)) for sp, _ in _parts(spaces))

    # ---- weights ---------------------------------------------------------------------------
    def produce(self, name, a, spaces, axis=0, dup=_linear, dead=_zero):
        """Producer-side (per output channel) array: plant channels along ``axis``; reduced: drop them."""
        r = _rows(a, axis)
        for sp, o in _parts(spaces):
            for t, d, s in sp.dups:
                r[o + d] = dup(r[o + t], s)
            for d in sp.dead:
                r[o + d] = dead(r[o + d])
        r = np.moveaxis(r, 0, axis)
        if not self.planted:
            r = _drop(r, spaces, axis)
        return self.param(name, r.astype(np.float32))

    def fold(self, a, spaces, axis, block=1):
        """Consumer-side (per input channel) array: reduced graphs fold column d into t, then drop."""
        if self.planted:
            return np.asarray(a, np.float32)
        r = _rows(a, axis)
        for sp, o in _parts(spaces):
            for t, d, s in sp.dups:
                r[(o + t) * block : (o + t + 1) * block] += s * r[(o + d) * block : (o + d + 1) * block]
        return _drop(np.moveaxis(r, 0, axis), spaces, axis, block).astype(np.float32)

    def offset(self, layer, pre, axis, vec, relu_next):
        """Bias-like vector of ``layer`` plus its centering shift, registered when a Relu follows
        (``pre``: the Relu's input tensor); returns (vector, dead rule)."""
        if pre is None:
            return vec, _zero
        self.centered.append((layer, pre, axis))
        vec = vec + self.shifts.get(layer, 0.0)
        return vec, (lambda a: np.full_like(a, DEAD_BEFORE_RELU)) if relu_next else _zero

    def record(self, node, spaces, tap, gate=False):
        if self.planted and any(sp.dead or sp.dups for sp, _ in _parts(spaces)):
            self.dead[node] = sorted(o + d for sp, o in _parts(spaces) for d in sp.dead)
            self.dups[node] = [
                (o + t, o + d, 1.0 if gate else s) for sp, o in _parts(spaces) for t, d, s in sp.dups
            ]
            self.taps[node] = tap

    # ---- layers ----------------------------------------------------------------------------
    def pconv(
        self,
        x,
        name,
        sin,
        sout,
        k=3,
        stride=1,
        depthwise=False,
        bias=True,
        bn=False,
        act=None,
        gate=False,
        center_at=None,
        groups=1,
    ):
        """Conv [+BN] [+act] on spaces; ``gate``: SE expand conv (duplicate rows equal, dead rows zero);
        ``center_at``: the tensor of a later Relu (after a residual Add) that this layer's bias centers;
        ``groups`` > 1: a grouped conv whose ``sin`` is a list of ``groups`` Spaces, one per input slice
        (group i reads slice i, so each slice's duplicates fold within that group's weights)."""
        cin, cout = sum(sp.n for sp, _ in _parts(sin)), sum(sp.n for sp, _ in _parts(sout))
        fan = k * k * (1 if depthwise else cin // groups)
        w = self.rng.normal(0.0, fan**-0.5, [cout, 1 if depthwise else cin // groups, k, k])
        if groups > 1:
            assert len(sin) == groups and cout % groups == 0, f"{name}: one input Space per group"
            parts = zip(np.split(w, groups), sin, strict=True)
            w = np.concatenate([self.fold(part, sp, 1) for part, sp in parts])
            sin = ()  # folded already
        bvec = self.rng.normal(0.0, 0.2, cout)
        pre = center_at or ((f"{name}/bn" if bn else name) if act == "relu" else None)
        assert pre is None or bias or bn, f"{name}: a Relu needs a bias or BN beta to center"
        if depthwise:  # the input channel is the output channel: rows equal, dead rows need no care
            w = self.produce(f"{name}.weight", w, sout, dup=_equal, dead=_keep)
        else:
            w = self.produce(f"{name}.weight", self.fold(w, sin, 1), sout, dup=_equal if gate else _linear)
        ins = [x, w]
        if bias:
            bvec, dead = self.offset(name, None if bn else pre, 1, bvec, act == "relu")
            ins.append(self.produce(f"{name}.bias", bvec, sout, dup=_equal if gate else _linear, dead=dead))
        group = self.width(sout) if depthwise else groups
        y = self.op(
            "Conv", ins, name, kernel_shape=[k, k], strides=[stride] * 2, pads=[k // 2] * 4, group=group
        )
        if bn:
            y = self.pbn(y, name, sout, pre, act == "relu")
        y = self.pact(y, name, sout, act)
        self.record(name, sout, y, gate)
        return y

    def pbn(self, x, layer, spaces, pre, relu_next):
        c, r, name = sum(sp.n for sp, _ in _parts(spaces)), self.rng, f"{layer}/bn"
        gamma, beta = r.uniform(0.5, 1.5, c), r.normal(0, 0.2, c)
        mean, var = r.normal(0, 0.2, c), r.uniform(0.5, 2.0, c)
        beta, beta_dead = self.offset(layer, pre, 1, beta, relu_next)
        ins = [
            self.produce(f"{name}.scale", gamma, spaces, dead=_keep),
            self.produce(f"{name}.bias", beta, spaces, dead=beta_dead),
            self.produce(f"{name}.mean", mean, spaces),
            self.produce(f"{name}.var", var, spaces, dup=lambda v, s: s * s * (v + EPS) - EPS, dead=_keep),
        ]
        return self.op("BatchNormalization", [x, *ins], name, epsilon=EPS)

    def pact(self, x, name, spaces, act):
        if act is None:
            return x
        if act == "prelu":
            c = sum(sp.n for sp, _ in _parts(spaces))
            slope = self.produce(
                f"{name}/prelu.slope", self.rng.uniform(0.05, 0.3, [c, 1, 1]), spaces, dup=_equal, dead=_keep
            )
            return self.op("PRelu", [x, slope], f"{name}/prelu")
        if act == "gelu":
            return self.gelu(x, f"{name}/gelu")
        if act == "leaky":
            return self.op("LeakyRelu", [x], f"{name}/leaky", alpha=0.1)
        return self.op("Relu", [x], f"{name}/relu")

    def pgemm(self, x, name, sin, sout, trans_b=1, block=1, act=None):
        """Gemm; ``block``: each input channel is ``block`` consecutive K entries (Flatten of C*H*W)."""
        cin, cout = sum(sp.n for sp, _ in _parts(sin)) * block, sum(sp.n for sp, _ in _parts(sout))
        w = self.rng.normal(0.0, cin**-0.5, [cout, cin] if trans_b else [cin, cout])
        bvec = self.rng.normal(0.0, 0.2, cout)
        w = self.produce(
            f"{name}.weight", self.fold(w, sin, 1 if trans_b else 0, block), sout, axis=0 if trans_b else 1
        )
        bvec, dead = self.offset(name, name if act == "relu" else None, 1, bvec, True)
        y = self.op("Gemm", [x, w, self.produce(f"{name}.bias", bvec, sout, dead=dead)], name, transB=trans_b)
        y = self.pact(y, name, sout, act)
        self.record(name, sout, y)
        return y

    def plinear(self, x, name, sin, sout, act=None):
        """MatMul(x, W[K, M]) -> Add(bias) on the last axis (tokens [N, S, K])."""
        cin, cout = sum(sp.n for sp, _ in _parts(sin)), sum(sp.n for sp, _ in _parts(sout))
        w = self.rng.normal(0.0, cin**-0.5, [cin, cout])
        bvec = self.rng.normal(0.0, 0.2, cout)
        w = self.produce(f"{name}.weight", self.fold(w, sin, 0), sout, axis=1)
        y = self.op("MatMul", [x, w], f"{name}/matmul")
        bvec, dead = self.offset(name, name if act == "relu" else None, -1, bvec, True)
        y = self.pact(
            self.op("Add", [y, self.produce(f"{name}.bias", bvec, sout, dead=dead)], name), name, sout, act
        )
        self.record(f"{name}/matmul", sout, y)
        return y

    def flatten(self, x, name="flatten"):
        return self.op("Flatten", [x], name, axis=1)


GRAPHS: dict[
    str, Callable[..., onnx.ModelProto]
] = {}  # name -> builder(seed=0, planted=True), filled by @_graph


def _emit(body: Callable[[_Net], None], seed: int, planted: bool, shifts) -> tuple[_Net, onnx.ModelProto]:
    net = _Net(seed, planted, shifts)
    body(net)
    model = net.finish(body)
    model.producer_name = "onnxprune.planted"
    onnx.helper.set_model_props(
        model,
        {
            f"{META}graph": body.__name__,
            f"{META}seed": str(seed),
            f"{META}planted": str(planted),
            f"{META}dead": json.dumps(net.dead),
            f"{META}duplicates": json.dumps(net.dups),
            f"{META}taps": json.dumps(net.taps),
        },
    )
    return net, model


@functools.cache
def _centering(body: Callable[[_Net], None], seed: int) -> dict[str, np.ndarray]:
    """Bias shifts that put every Relu's input at a random quantile in [0.3, 0.7] per channel on
    N(0,1) inputs, layer by layer in graph order, so that no unplanted unit is dead by accident
    (a random Relu unit reading non-negative, averaged features often is). Rounded to 1e-3, so
    the graphs do not depend on the last bits of the CPU's arithmetic."""
    shifts: dict[str, np.ndarray] = {}
    quantiles = np.random.default_rng([seed, 0x9A17ED])
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    while True:
        net, model = _emit(body, seed, True, shifts)
        todo = [c for c in net.centered if c[0] not in shifts]
        if not todo:
            return shifts
        layer, tensor, axis = todo[0]
        model.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        z = sess.run([tensor], synthetic.random_inputs(model, CALIB_BATCH, seed=CALIB_SEED))[0]
        z = np.moveaxis(z, axis, 0).reshape(z.shape[axis], -1)
        q = quantiles.uniform(0.3, 0.7, z.shape[0])
        shifts[layer] = -np.round([np.quantile(row, qi) for row, qi in zip(z, q, strict=True)], 3)


def _graph(body: Callable[[_Net], None]) -> Callable[..., onnx.ModelProto]:
    """Register ``body`` (which draws the graph on a _Net) as builder ``(seed=0, planted=True)``."""

    def builder(seed: int = 0, planted: bool = True) -> onnx.ModelProto:
        return _emit(body, seed, planted, _centering(body, seed))[1]

    builder.__name__ = builder.__qualname__ = body.__name__
    builder.__doc__ = body.__doc__
    GRAPHS[body.__name__] = builder
    return builder


def _plain(n: int) -> Space:
    return Space(n)


# ---- builders ------------------------------------------------------------------------------


@_graph
def conv_chain(b: _Net) -> None:
    """Plain conv chain: Conv+BN+Relu -> Conv+PRelu -> MaxPool -> Conv+LeakyRelu -> AvgPool -> head.

    conv1 3->12 (BN, Relu): dead [1], dup 8 = 0.6*3.  conv2 12->16 (bias, per-channel PRelu slope,
    slope_d = slope_t): dead [2, 14], dup 11 = 1.8*5.  MaxPool 2.  conv3 16->12 (bias, LeakyRelu 0.1,
    dead bias 0): dead [9], dup 7 = 2.5*0.  AveragePool 2 -> head 1x1 12->6. Output head [N,6,4,4].
    """
    x = b.input("x", ["N", 3, 16, 16])
    s1 = Space(12, dead=(1,), dups=((3, 8, 0.6),))
    s2 = Space(16, dead=(2, 14), dups=((5, 11, 1.8),))
    s3 = Space(12, dead=(9,), dups=((0, 7, 2.5),))
    h = b.pconv(x, "conv1", _plain(3), s1, bias=False, bn=True, act="relu")
    h = b.pconv(h, "conv2", s1, s2, act="prelu")
    h = b.op("MaxPool", [h], "maxpool", kernel_shape=[2, 2], strides=[2, 2])
    h = b.pconv(h, "conv3", s2, s3, act="leaky")
    h = b.op("AveragePool", [h], "avgpool", kernel_shape=[2, 2], strides=[2, 2])
    b.output(b.pconv(h, "head", s3, _plain(6), k=1), ["N", 6, 4, 4])


@_graph
def mlp(b: _Net) -> None:
    """MLP of Gemms: fc1 (transB=0) -> Relu -> fc2 (transB=1) -> Relu -> fc3 (transB=1).

    x [N,12].  fc1 12->16: dead [4, 9], dup 13 = 0.5*2 (hidden rows of fc2 = columns of its B).
    fc2 16->12: dead [10], dup 5 = 3.0*0.  fc3 12->4. Output fc3 [N,4].
    """
    x = b.input("x", ["N", 12])
    s1 = Space(16, dead=(4, 9), dups=((2, 13, 0.5),))
    s2 = Space(12, dead=(10,), dups=((0, 5, 3.0),))
    h = b.pgemm(x, "fc1", _plain(12), s1, trans_b=0, act="relu")
    h = b.pgemm(h, "fc2", s1, s2, trans_b=1, act="relu")
    b.output(b.pgemm(h, "fc3", s2, _plain(4), trans_b=1), ["N", 4])


@_graph
def ffn(b: _Net) -> None:
    """Transformer FFN on tokens: LayerNorm -> MatMul+Add -> Relu -> MatMul+Add -> Add residual.

    x [N,6,16].  ffn1 16->24 (producer node ffn1/matmul; channel = last axis): dead [3, 17],
    dups 10 = 0.7*0, 21 = 1.9*6 (rows of ffn2's W).  ffn2 24->16. Output [N,6,16].
    """
    x = b.input("x", ["N", 6, 16])
    hidden = Space(24, dead=(3, 17), dups=((0, 10, 0.7), (6, 21, 1.9)))
    h = b.plinear(b.layernorm(x, 16, "ln"), "ffn1", _plain(16), hidden, act="relu")
    h = b.plinear(h, "ffn2", hidden, _plain(16))
    b.output(b.op("Add", [h, x], "residual"), ["N", 6, 16])


@_graph
def residual_add(b: _Net) -> None:
    """ResNet blocks: planted channels in both branches of an identity Add and a projection Add.

    stem 3->8 (BN, Relu) + b1.conv2 8->8 (BN, no act), coupled by b1.add: dead [5], dup 6 = 1.7*1
    (stem's dead channel via negative beta + Relu, b1.conv2's via zero beta). b1.conv1 8->8 free,
    random.  b2.conv1 8->12 stride 2: dup 6 = 1.3*0.  b2.conv2 12->12 (conv bias + BN) + b2.proj 1x1
    stride 2 (BN), coupled by b2.add, read by fc via GAP+Flatten: dead [3], dups 9 = 0.8*2,
    11 = 2.0*5.  fc Gemm 12->5. Output fc [N,5].
    """
    x = b.input("x", ["N", 3, 16, 16])
    a = Space(8, dead=(5,), dups=((1, 6, 1.7),))
    c1 = Space(12, dups=((0, 6, 1.3),))
    c = Space(12, dead=(3,), dups=((2, 9, 0.8), (5, 11, 2.0)))
    s = b.pconv(x, "stem", _plain(3), a, bias=False, bn=True, act="relu")
    h = b.pconv(s, "b1.conv1", a, _plain(8), bias=False, bn=True, act="relu")
    h = b.pconv(h, "b1.conv2", _plain(8), a, bias=False, bn=True, center_at="b1.add")
    r = b.op("Relu", [b.op("Add", [h, s], "b1.add")], "b1.relu")
    h = b.pconv(r, "b2.conv1", a, c1, stride=2, bias=False, bn=True, act="relu")
    h = b.pconv(h, "b2.conv2", c1, c, bn=True, center_at="b2.add")
    p = b.pconv(r, "b2.proj", a, c, k=1, stride=2, bias=False, bn=True)
    r = b.op("Relu", [b.op("Add", [h, p], "b2.add")], "b2.relu")
    f = b.flatten(b.op("GlobalAveragePool", [r], "gap"))
    b.output(b.pgemm(f, "fc", c, _plain(5)), ["N", 5])


@_graph
def dense_concat(b: _Net) -> None:
    """DenseNet block: planted channels in Concat inputs read by later convs at their offsets.

    stem 3->8 (BN, Relu): dead [2], dup 5 = 1.5*0 (offset 0 of cat1 and cat2).  dense1 8->6 random
    (offsets 8..13).  cat1 [14] -> dense2 14->6: dup 4 = 0.7*1 (offsets 14..19 of cat2).  cat2 [20]
    -> trans 1x1 20->8 (BN, Relu) -> AveragePool 2 -> head 1x1 8->4. Output head [N,4,8,8].
    """
    x = b.input("x", ["N", 3, 16, 16])
    s0, s1 = Space(8, dead=(2,), dups=((0, 5, 1.5),)), _plain(6)
    s2 = Space(6, dups=((1, 4, 0.7),))
    c0 = b.pconv(x, "stem", _plain(3), s0, bias=False, bn=True, act="relu")
    l1 = b.pconv(c0, "dense1", s0, s1, bias=False, bn=True, act="relu")
    cat1 = b.op("Concat", [c0, l1], "cat1", axis=1)
    l2 = b.pconv(cat1, "dense2", [s0, s1], s2, bias=False, bn=True, act="relu")
    cat2 = b.op("Concat", [c0, l1, l2], "cat2", axis=1)
    t = b.pconv(cat2, "trans", [s0, s1, s2], _plain(8), k=1, bias=False, bn=True, act="relu")
    t = b.op("AveragePool", [t], "trans/pool", kernel_shape=[2, 2], strides=[2, 2])
    b.output(b.pconv(t, "head", _plain(8), _plain(4), k=1), ["N", 4, 8, 8])


@_graph
def split_concat(b: _Net) -> None:
    """Split with planted channels inside its middle section, read by a conv and, via Concat, the head.

    stem 3->16 (BN, Relu), Split [4, 6, 6]: section 1 (stem channels 4..9) has dead [1], dup
    5 = 1.3*2, i.e. stem dead [5], dup 9 = 1.3*6.  branch_a 4->6 and branch_b 6->6 (BN, Relu)
    random.  cat = Concat(branch_a, section 1, branch_b, section 2) [24] -> head 1x1 24->6.
    Output head [N,6,8,8].
    """
    x = b.input("x", ["N", 3, 8, 8])
    sa, sb, sc = _plain(4), Space(6, dead=(1,), dups=((2, 5, 1.3),)), _plain(6)
    h = b.pconv(x, "stem", _plain(3), [sa, sb, sc], bias=False, bn=True, act="relu")
    pa, pb, pc = b.split(h, [b.width(sa), b.width(sb), b.width(sc)], axis=1, name="split")
    ya = b.pconv(pa, "branch_a", sa, _plain(6), bias=False, bn=True, act="relu")
    yb = b.pconv(pb, "branch_b", sb, _plain(6), bias=False, bn=True, act="relu")
    cat = b.op("Concat", [ya, pb, yb, pc], "cat", axis=1)
    b.output(b.pconv(cat, "head", [_plain(6), sb, _plain(6), sc], _plain(6), k=1), ["N", 6, 8, 8])


@_graph
def se_block(b: _Net) -> None:
    """Depthwise conv + squeeze-excite with planted channels whose SE gates equal their twins'.

    stem 3->12 stride 2 (BN, Relu): dead [3], dups 8 = 1.6*1, 10 = 0.5*5; the same channels at dw
    (depthwise 3x3 + BN + Relu: weights equal, bias/BN scaled) and at se/fc2 (expand conv: duplicate
    row and bias EQUAL to the twin's, recorded with scale 1.0; dead row zero). se/fc1 squeeze 12->6
    reads GAP of all of them; its hidden space has dup 4 = 1.2*0 (Relu).  Mul(dw, Sigmoid(se/fc2))
    -> pw 1x1 12->16 (BN) -> GAP -> Flatten -> fc Gemm 16->5. Output fc [N,5].
    """
    x = b.input("x", ["N", 3, 16, 16])
    c = Space(12, dead=(3,), dups=((1, 8, 1.6), (5, 10, 0.5)))
    hid = Space(6, dups=((0, 4, 1.2),))
    s = b.pconv(x, "stem", _plain(3), c, stride=2, bias=False, bn=True, act="relu")
    d = b.pconv(s, "dw", c, c, depthwise=True, bn=True, act="relu")
    g = b.pconv(b.op("GlobalAveragePool", [d], "se/gap"), "se/fc1", c, hid, k=1, act="relu")
    g = b.op("Sigmoid", [b.pconv(g, "se/fc2", hid, c, k=1, gate=True)], "se/sigmoid")
    y = b.pconv(b.op("Mul", [d, g], "se/mul"), "pw", c, _plain(16), k=1, bias=False, bn=True)
    f = b.flatten(b.op("GlobalAveragePool", [y], "gap"))
    b.output(b.pgemm(f, "fc", _plain(16), _plain(5)), ["N", 5])


@_graph
def gap_gemm(b: _Net) -> None:
    """Planted conv channels through GlobalAveragePool -> Flatten into a Gemm, then a planted Gemm.

    conv1 3->8 stride 2 (BN, Relu) random.  conv2 8->12 (conv bias + BN + Relu): dead [4], dups
    9 = 1.4*1, 10 = 0.8*2 (columns of fc1's B, transB=1).  fc1 12->16 Relu: dead [7], dup 12 = 0.9*3
    (rows of fc2's B, transB=0).  fc2 16->5. Output fc2 [N,5].
    """
    x = b.input("x", ["N", 3, 16, 16])
    s2 = Space(12, dead=(4,), dups=((1, 9, 1.4), (2, 10, 0.8)))
    s3 = Space(16, dead=(7,), dups=((3, 12, 0.9),))
    h = b.pconv(x, "conv1", _plain(3), _plain(8), stride=2, bias=False, bn=True, act="relu")
    h = b.pconv(h, "conv2", _plain(8), s2, bn=True, act="relu")
    f = b.flatten(b.op("GlobalAveragePool", [h], "gap"))
    h = b.pgemm(f, "fc1", s2, s3, trans_b=1, act="relu")
    b.output(b.pgemm(h, "fc2", s3, _plain(5), trans_b=0), ["N", 5])


@_graph
def flatten_gemm(b: _Net) -> None:
    """Spatial Flatten: each planted conv channel is a block of H*W=16 K entries of the next Gemm.

    conv 3->8 (bias, Relu, no BN): dead [2], dup 6 = 1.6*0.  MaxPool 2 -> Flatten [N,128] -> fc1
    Gemm transB=0 128->16 (blocks of 16 rows of B) Relu: dup 11 = 2.2*1.  fc2 Gemm transB=1 16->10.
    Output fc2 [N,10].
    """
    x = b.input("x", ["N", 3, 8, 8])
    sc, s1 = Space(8, dead=(2,), dups=((0, 6, 1.6),)), Space(16, dups=((1, 11, 2.2),))
    h = b.pconv(x, "conv", _plain(3), sc, act="relu")
    f = b.flatten(b.op("MaxPool", [h], "pool", kernel_shape=[2, 2], strides=[2, 2]))
    h = b.pgemm(f, "fc1", sc, s1, trans_b=0, block=16, act="relu")
    b.output(b.pgemm(h, "fc2", s1, _plain(10), trans_b=1), ["N", 10])


def names() -> list[str]:
    return list(GRAPHS)


@dataclass
class Planted:
    """A planted graph, its reduced twin and where the planted channels are.

    ``dead`` / ``duplicates`` are keyed by producer node name (every node whose output carries the
    planted channel: coupled convs of a residual Add, the depthwise conv and SE expand conv of an SE
    block), indices in that node's output channels; duplicates are ``(twin t, duplicate d, scale s)``
    with output[d] = s * output[t] at the node's output and at its tap. ``taps`` maps each of those
    nodes to the tensor after its per-channel BN/activation, where dead channels are exactly zero.
    """

    name: str
    model: onnx.ModelProto
    reduced: onnx.ModelProto
    dead: dict[str, list[int]]
    duplicates: dict[str, list[tuple[int, int, float]]]
    description: str
    taps: dict[str, str] = field(default_factory=dict)


def build(name: str, seed: int = 0) -> Planted:
    """The planted graph ``name`` (see ``names()``) and its reduced twin, built from the same seed."""
    if name not in GRAPHS:
        raise KeyError(f"unknown planted graph {name!r}; known: {', '.join(GRAPHS)}")
    fn = GRAPHS[name]
    model, reduced = fn(seed=seed, planted=True), fn(seed=seed, planted=False)
    meta = {p.key: p.value for p in model.metadata_props}
    dups = {k: [tuple(t) for t in v] for k, v in json.loads(meta[f"{META}duplicates"]).items()}
    return Planted(
        name,
        model,
        reduced,
        json.loads(meta[f"{META}dead"]),
        dups,
        (fn.__doc__ or "").strip().splitlines()[0],
        json.loads(meta[f"{META}taps"]),
    )


def random_inputs(model: onnx.ModelProto, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Feeds for every graph input (N(0,1) float32, symbolic dims -> ``batch``)."""
    return synthetic.random_inputs(model, batch=batch, seed=seed)
