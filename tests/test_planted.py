"""Planted-redundancy graphs (models.planted): the graphs are valid, the planted channels are what
they claim to be, nothing else is redundant, and the reduced twin computes the same function."""

from __future__ import annotations

import functools

import numpy as np
import onnx
import pytest

from models import planted
from onnxprune.costs import model_cost
from tests.helpers import rel_error, run_ort

NAMES = planted.names()
TOL = 1e-5


@functools.cache
def _build(name: str) -> planted.Planted:
    return planted.build(name)


def _tapped(model: onnx.ModelProto, tensors: list[str], feeds) -> dict[str, np.ndarray]:
    """Run a copy of ``model`` with ``tensors`` added as graph outputs."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(
        onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in tensors if t not in have
    )
    names = [o.name for o in m.graph.output]
    return dict(zip(names, run_ort(m, feeds), strict=True))


def _channels(model: onnx.ModelProto, node_name: str, y: np.ndarray) -> np.ndarray:
    """[C, everything else]: the node's output channels (last axis for MatMul on tokens, else axis 1)."""
    op = next(n.op_type for n in model.graph.node if n.name == node_name)
    y = np.moveaxis(y, -1 if op == "MatMul" else 1, 0)
    return y.reshape(y.shape[0], -1).astype(np.float64)


def _producer_tensors(p: planted.Planted) -> dict[str, str]:
    return {n.name: n.output[0] for n in p.model.graph.node if n.name in p.taps}


@pytest.mark.parametrize("name", NAMES)
def test_valid_and_runs(name):
    p = _build(name)
    assert p.description and p.dead.keys() | p.duplicates.keys() == p.taps.keys() and p.taps
    for model in (p.model, p.reduced):
        onnx.checker.check_model(model, full_check=True)
        assert model.opset_import[0].version == planted.OPSET
        assert all(
            i.type.tensor_type.shape.dim[0].dim_param == "N"
            for i in [*model.graph.input, *model.graph.output]
        )
        outs = run_ort(model, planted.random_inputs(model, batch=2))
        assert all(o.dtype == np.float32 and np.isfinite(o).all() for o in outs)
    meta = {m.key: m.value for m in p.reduced.metadata_props}
    assert meta["planted.dead"] == meta["planted.duplicates"] == "{}"  # nothing planted in the reduced graph


@pytest.mark.parametrize("name", NAMES)
def test_planted_channels_hold_at_producers(name):
    """Dead channels are exactly zero at the tap; duplicates equal s * twin at producer output and tap;
    the reduced graph has the same producers with exactly the kept channels."""
    p = _build(name)
    prod = _producer_tensors(p)
    assert prod.keys() == p.taps.keys()
    feeds = planted.random_inputs(p.model, batch=16, seed=1)
    tensors = sorted({*prod.values(), *p.taps.values()})
    got, red = _tapped(p.model, tensors, feeds), _tapped(p.reduced, tensors, feeds)
    for node, tap in p.taps.items():
        at_tap, at_out = _channels(p.model, node, got[tap]), _channels(p.model, node, got[prod[node]])
        c = at_tap.shape[0]
        for d in p.dead[node]:
            assert 0 <= d < c and not at_tap[d].any(), (node, d)
        for t, d, s in p.duplicates[node]:
            assert 0 <= t < c and 0 <= d < c and s > 0
            assert np.abs(at_out[t]).max() > 1e-3 and np.abs(at_tap[t]).max() > 1e-3, (node, t)  # twin alive
            for y in (at_out, at_tap):
                assert np.abs(y[d] - s * y[t]).max() <= TOL * max(s, 1.0) * np.abs(y).max(), (node, t, d, s)
        removed = {*p.dead[node], *(d for _, d, _ in p.duplicates[node])}
        kept = [i for i in range(c) if i not in removed]
        r = _channels(p.reduced, node, red[tap])
        assert r.shape[0] == len(kept), node
        assert np.abs(r - at_tap[kept]).max() <= TOL * max(np.abs(at_tap).max(), 1e-12), node


def _assert_no_redundancy(label, y, dead=(), pairs=()):
    """Channels (rows of ``y``) other than ``dead`` are nonzero and no two are proportional,
    except the ``pairs`` (t, d)."""
    live = [i for i in range(y.shape[0]) if i not in set(dead)]
    for i in live:
        assert np.abs(y[i]).max() > 1e-3, (label, "dead", i)
    for i in live:
        for j in live:
            if i < j and (i, j) not in set(pairs):
                a, b = y[i], y[j]
                resid = np.linalg.norm(a - (a @ b) / (b @ b) * b) / np.linalg.norm(a)
                assert resid > 1e-3, (label, "proportional", i, j)


@pytest.mark.parametrize("name", NAMES)
def test_nothing_else_redundant(name):
    """Apart from the planted ones, no channel at a producer's tap, nor at the activation of an
    unplanted layer (node ``<layer>/relu`` etc.), is zero or proportional to another channel."""
    p = _build(name)
    feeds = planted.random_inputs(p.model, batch=16, seed=2)
    free = {
        n.output[0]: n.name
        for n in p.model.graph.node
        if n.op_type in ("Relu", "LeakyRelu", "PRelu")
        and "/" in n.name
        and n.name.rsplit("/", 1)[0] not in p.taps
        and n.output[0] not in p.taps.values()
    }
    got = _tapped(p.model, sorted({*p.taps.values(), *free}), feeds)
    for node, tap in p.taps.items():
        pairs = [(t, d) for t, d, _ in p.duplicates[node]]
        _assert_no_redundancy(node, _channels(p.model, node, got[tap]), p.dead[node], pairs)
    for tensor, node in free.items():
        y = got[tensor]
        y = np.moveaxis(y, -1 if y.ndim == 3 else 1, 0)
        _assert_no_redundancy(node, y.reshape(y.shape[0], -1).astype(np.float64))


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("name", NAMES)
def test_reduced_computes_the_same(name, batch):
    p = _build(name)
    feeds = planted.random_inputs(p.model, batch=batch, seed=batch)
    dense, reduced = run_ort(p.model, feeds), run_ort(p.reduced, feeds)
    assert [o.name for o in p.model.graph.output] == [o.name for o in p.reduced.graph.output]
    for a, b in zip(reduced, dense, strict=True):
        assert a.shape == b.shape and rel_error(a, b) <= TOL


@pytest.mark.parametrize("name", NAMES)
def test_reduced_has_fewer_macs(name):
    p = _build(name)
    dense, reduced = model_cost(p.model), model_cost(p.reduced)
    assert not dense.unmeasured and not reduced.unmeasured
    assert reduced.macs < dense.macs and reduced.params < dense.params


def test_coupled_producers_share_indices():
    coupled = {
        "residual_add": [("stem", "b1.conv2"), ("b2.conv2", "b2.proj")],
        "se_block": [("stem", "dw", "se/fc2")],
    }
    for name, groups in coupled.items():
        p = _build(name)
        for group in groups:
            assert len({tuple(p.dead[n]) for n in group}) == 1, group
            assert len({tuple((t, d) for t, d, _ in p.duplicates[n]) for n in group}) == 1, group
    p = _build("se_block")
    assert [s for *_, s in p.duplicates["se/fc2"]] == [1.0, 1.0]  # SE gates of twins are equal
    assert p.duplicates["stem"] == p.duplicates["dw"]


def test_deterministic_per_seed():
    a, b, c = planted.build("mlp", seed=5), planted.build("mlp", seed=5), planted.build("mlp", seed=6)
    assert a.model.SerializeToString() == b.model.SerializeToString()
    assert a.reduced.SerializeToString() == b.reduced.SerializeToString()
    assert a.model.SerializeToString() != c.model.SerializeToString()
    assert (a.dead, a.duplicates) == (c.dead, c.duplicates)
    with pytest.raises(KeyError):
        planted.build("nope")
