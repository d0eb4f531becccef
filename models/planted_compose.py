"""Randomly composed graphs with planted redundancy: the held-out oracle for lossless pruning.

``models.planted`` has one hand-written graph per pattern. Here a seed draws a whole network from
the patterns people export, in random order, widths and planting, so that the tool meets
combinations nobody wrote a test for:

* ``residual``: a residual stream shared by 2-3 blocks (stem and every block's last conv produce it,
  each Add joins it, a Relu follows each Add);
* ``se``: depthwise conv + BN + Relu, gated by a squeeze-excite branch (GAP, 1x1, Relu, 1x1, Sigmoid, Mul);
* ``grouped``: a 1x1 conv into g slices, a grouped 3x3 conv, optionally a ShuffleNet channel shuffle
  (Reshape [N,g,C/g,H,W], Transpose, Reshape) and a depthwise conv, a Split at a slice boundary whose
  second part goes MaxPool -> Flatten -> Gemm to a second graph output;
* ``dense``: DenseNet concat-of-concat (Concat(Concat(x, l1), l2));
* ``fpn``: lateral 1x1 convs at two resolutions, Resize x2 of the coarse one, Add, 3x3 smoothing conv;
* ``plain``: Conv + BN + (Relu | PRelu | LeakyRelu);
* token graphs: transformer FFN blocks (LayerNorm, MatMul+Add, Relu or GELU, MatMul+Add, residual Add),
  with a final LayerNorm.

Every space a rule can prune gets dead channels and positively scaled duplicates (scale in [0.5, 2];
1 behind GELU or a sigmoid gate, which are not positively homogeneous), up to half of its channels
(the stem's group at most half, the tool's first-conv cap). Streams behind a LayerNorm and graph
outputs are never planted, and no DenseNet block reads a shuffle's channels (a Concat of interleaved
channels is not traced; ``tests/test_tracer.py`` checks that it blocks). ``planted=False`` builds the
reduced graph (``models.planted`` folds each duplicate into its twin's consumers), which computes the
same outputs with fewer MACs.

    from models import planted_compose
    g = planted_compose.build(17)      # g.model, g.reduced, g.patterns
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import onnx

from . import planted
from .planted import Space, _centering, _emit, _Net

__all__ = ["Composed", "build"]

IMAGE_PATTERNS = ("residual", "se", "grouped", "dense", "fpn", "plain")


def _space(rng: np.random.Generator, n: int, scale_one: bool = False, max_share: float = 0.5) -> Space:
    """n channels, of which 1..max_share·n are dead or positively scaled duplicates of live ones."""
    removed = int(rng.integers(1, max(1, int(n * max_share)) + 1))
    idx = rng.permutation(n)
    gone, live = idx[:removed], idx[removed:]
    n_dead = int(rng.integers(0, removed + 1))
    dups = tuple(
        (int(rng.choice(live)), int(d), 1.0 if scale_one else round(float(rng.uniform(0.5, 2.0)), 3))
        for d in gone[n_dead:]
    )
    return Space(n, dead=tuple(int(d) for d in gone[:n_dead]), dups=dups)


def _slices(rng: np.random.Generator, groups: int, n: int, scale_one: bool = False) -> list[Space]:
    """``groups`` slices of n channels with the same dead and duplicate positions (each slice its own
    scales): a grouped conv or a channel shuffle prunes every slice alike."""
    first = _space(rng, n, scale_one)
    return [first] + [
        Space(
            n,
            first.dead,
            tuple(
                (t, d, 1.0 if scale_one else round(float(rng.uniform(0.5, 2.0)), 3)) for t, d, _ in first.dups
            ),
        )
        for _ in range(groups - 1)
    ]


def _shuffled(slices: list[Space]) -> Space:
    """The Space after a channel shuffle of ``slices``: output channel j·g + k is channel j of slice k."""
    g = len(slices)
    n = slices[0].n
    dead = tuple(sorted(j * g + k for k in range(g) for j in slices[k].dead))
    dups = tuple((t * g + k, d * g + k, s) for k in range(g) for t, d, s in slices[k].dups)
    return Space(n * g, dead, dups)


class _Draw:
    """One random network drawn on a _Net: the structural choices come from their own generator (seeded
    by the graph's seed), so every build of the same seed draws the same graph."""

    def __init__(self, b: _Net, seed: int):
        self.b, self.rng = b, np.random.default_rng([seed, 0xC0DE])
        self.patterns: list[str] = []
        self.n = 0

    def name(self, what: str) -> str:
        self.n += 1
        return f"{what}{self.n}"

    def width(self) -> int:
        return int(self.rng.integers(6, 15))

    # ---- image patterns: each takes (tensor, its spaces, spatial side) and returns the same ------
    def residual(self, x, sp, side):
        b = self.b
        for _ in range(int(self.rng.integers(2, 4))):
            p = self.name("res")
            mid = _space(self.rng, self.width())
            h = b.pconv(x, f"{p}.conv1", sp, mid, bias=False, bn=True, act="relu")
            h = b.pconv(
                h, f"{p}.conv2", mid, sp, bias=bool(self.rng.integers(2)), bn=True, center_at=f"{p}.add"
            )
            x = b.op("Relu", [b.op("Add", [h, x], f"{p}.add")], f"{p}.relu")
        return x, sp, side

    def se(self, x, sp, side):
        b, p = self.b, self.name("se")
        d = b.pconv(x, f"{p}.dw", sp, sp, depthwise=True, bn=True, act="relu")
        hid = _space(self.rng, self.width())
        g = b.pconv(b.op("GlobalAveragePool", [d], f"{p}.gap"), f"{p}.fc1", sp, hid, k=1, act="relu")
        g = b.op("Sigmoid", [b.pconv(g, f"{p}.fc2", hid, sp, k=1, gate=True)], f"{p}.sigmoid")
        return b.op("Mul", [d, g], f"{p}.mul"), sp, side

    def grouped(self, x, sp, side):
        b, p = self.b, self.name("grp")
        groups = int(self.rng.choice([2, 4]))
        per = int(self.rng.integers(3, 7))
        pre = _slices(self.rng, groups, per)
        h = b.pconv(x, f"{p}.pre", sp, pre, k=1, bias=False, bn=True, act="relu")
        out = _slices(self.rng, groups, per)
        h = b.pconv(h, f"{p}.gconv", pre, out, groups=groups, bias=False, bn=True, act="relu")
        if self.rng.integers(2):  # ShuffleNet: channel shuffle, then a depthwise conv
            self.patterns.append("shuffle")
            h = b.shuffle(h, groups, b.width(out[0]), side, f"{p}.shuffle")
            out = _shuffled(out)
            return b.pconv(h, f"{p}.dw", out, out, depthwise=True, bn=True, act="relu"), out, side
        # a Split at a slice boundary; the second part goes MaxPool -> Flatten -> Gemm to a graph output
        self.patterns.append("split+flatten_gemm")
        first, second = out[: groups // 2], out[groups // 2 :]
        a, c = b.split(
            h, [sum(b.width(s) for s in first), sum(b.width(s) for s in second)], axis=1, name=f"{p}.split"
        )
        f = b.flatten(b.op("MaxPool", [c], f"{p}.pool", kernel_shape=[2, 2], strides=[2, 2]), f"{p}.flatten")
        classes = int(self.rng.integers(3, 7))
        b.output(
            b.pgemm(
                f,
                f"{p}.fc",
                second,
                Space(classes),
                trans_b=int(self.rng.integers(2)),
                block=(side // 2) ** 2,
            ),
            ["N", classes],
        )
        return a, first, side

    def dense(self, x, sp, side):
        b, p = self.b, self.name("dense")
        s1, s2 = _space(self.rng, self.width()), _space(self.rng, self.width())
        l1 = b.pconv(x, f"{p}.l1", sp, s1, bias=False, bn=True, act="relu")
        cat1 = b.op("Concat", [x, l1], f"{p}.cat1", axis=1)
        l2 = b.pconv(cat1, f"{p}.l2", [*_as_list(sp), s1], s2, bias=False, bn=True, act="relu")
        cat2 = b.op("Concat", [cat1, l2], f"{p}.cat2", axis=1)
        return cat2, [*_as_list(sp), s1, s2], side

    def fpn(self, x, sp, side):
        b, p = self.b, self.name("fpn")
        coarse = _space(self.rng, self.width())
        c = b.pconv(x, f"{p}.down", sp, coarse, stride=2, bias=False, bn=True, act="relu")
        f = _space(self.rng, self.width())
        lat = b.pconv(x, f"{p}.lat_fine", sp, f, k=1)
        top = b.upsample2(b.pconv(c, f"{p}.lat_coarse", coarse, f, k=1), f"{p}.up")
        merged = b.op("Add", [lat, top], f"{p}.add")
        out = _space(self.rng, self.width())
        return b.pconv(merged, f"{p}.smooth", f, out, bias=False, bn=True, act="relu"), out, side

    def plain(self, x, sp, side):
        b, p = self.b, self.name("conv")
        act = str(self.rng.choice(["relu", "prelu", "leaky"]))
        out = _space(self.rng, self.width())
        return (
            b.pconv(
                x, p, sp, out, bias=act != "relu" or bool(self.rng.integers(2)), bn=act == "relu", act=act
            ),
            out,
            side,
        )

    # ---- whole graphs ----------------------------------------------------------------------
    def image(self):
        b = self.b
        side = int(self.rng.choice([8, 16]))
        x = b.input("x", ["N", 3, side, side])
        sp = _space(self.rng, self.width())
        h = b.pconv(x, "stem", Space(3), sp, bias=False, bn=True, act="relu")
        shuffled = False  # the current channels are a shuffle's (interleaved): residual and se keep them so
        for _ in range(int(self.rng.integers(2, 5))):
            # a Concat of interleaved channels is not traced: no DenseNet block reads shuffled channels
            allowed = [p for p in IMAGE_PATTERNS if not (p == "dense" and shuffled)]
            pattern = str(self.rng.choice(allowed))
            self.patterns.append(pattern)
            h, sp, side = getattr(self, pattern)(h, sp, side)
            shuffled = self.patterns[-1] == "shuffle" or (shuffled and pattern in ("residual", "se"))
        f = b.flatten(b.op("GlobalAveragePool", [h], "gap"), "flatten")
        classes = int(self.rng.integers(4, 11))
        b.output(b.pgemm(f, "fc", sp, Space(classes), trans_b=int(self.rng.integers(2))), ["N", classes])

    def tokens(self):
        b = self.b
        d, seq = int(self.rng.integers(8, 17)), int(self.rng.integers(3, 9))
        x = b.input("x", ["N", seq, d])
        stream = Space(d)  # LayerNorm normalizes the stream: it is never prunable, so never planted
        for _ in range(int(self.rng.integers(1, 4))):
            p = self.name("ffn")
            self.patterns.append("ffn")
            act = str(self.rng.choice(["relu", "gelu"]))
            hidden = _space(self.rng, int(self.rng.integers(12, 33)), scale_one=act == "gelu")
            h = b.plinear(b.layernorm(x, d, f"{p}.ln"), f"{p}.fc1", stream, hidden, act=act)
            h = b.plinear(h, f"{p}.fc2", hidden, stream)
            x = b.op("Add", [h, x], f"{p}.residual")
        b.output(b.layernorm(x, d, "final_ln"), ["N", seq, d])


def _as_list(sp) -> list[Space]:
    return [sp] if isinstance(sp, Space) else list(sp)


@dataclass
class Composed:
    """A composed planted graph, its reduced twin, and the patterns drawn, in graph order."""

    seed: int
    model: onnx.ModelProto
    reduced: onnx.ModelProto
    patterns: list[str]


def _body(seed: int):
    def body(b: _Net) -> None:
        draw = _Draw(b, seed)
        draw.tokens() if draw.rng.random() < 0.2 else draw.image()
        body.patterns = draw.patterns

    body.__name__ = f"composed_{seed}"
    body.__doc__ = f"Randomly composed planted graph, seed {seed}."
    return body


@functools.cache
def build(seed: int) -> Composed:
    """The composed graph of ``seed`` and its reduced twin (same weights, planted channels folded away)."""
    body = _body(seed)
    shifts = _centering(body, seed)
    model = _emit(body, seed, True, shifts)[1]
    reduced = _emit(body, seed, False, shifts)[1]
    return Composed(seed, model, reduced, list(body.patterns))


def random_inputs(model: onnx.ModelProto, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    return planted.random_inputs(model, batch=batch, seed=seed)
