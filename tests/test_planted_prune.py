"""DESIGN oracle #2: planted dead/duplicate channels, through Add, Concat, Split, SE, Flatten→Gemm, MLP and
transformer FFN. At the pass level: folded by hand into their twins' consumer weights and then pruned by the
pass, they give exactly the planted model's function and the reduced model's MACs. End to end: asked for
exactly the reduced model's MACs, ``compress`` (defaults: obs, dp, reconstruction) finds them on
calibration data and is lossless."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnxprune.passes.normalize import normalize
from onnxprune.passes.prune_channels import prune_channels

from models import planted
from onnxprune.channels import expand_indices
from onnxprune.costs import model_cost
from onnxprune.pipeline import CompressOptions, compress
from onnxprune.tracer import trace_channels
from tests.helpers import rel_error, run_ort


def channel_of(trace, model, producer: str, channel: int):
    """(group, index within the group) of output channel ``channel`` of node ``producer``."""
    node = next(n for n in model.graph.node if n.name == producer)
    space = trace.space_of(node.output[0])
    seg = next(s for s in trace.segments[space] if s.start <= channel < s.start + s.length)
    return trace.groups[seg.group], channel - seg.start


def fold_duplicate(model, trace, group, twin: int, dup: int, scale: float) -> None:
    """Every consumer of the group: weight at the twin's position += scale · weight at the duplicate's."""
    inits = {t.name: t for t in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    for m in trace.members:
        if m.role != "consumer":
            continue
        for seg in trace.segments[m.space]:
            if seg.group != group.id:
                continue
            size = trace.spaces[m.space].size
            tensor = inits[nodes[m.node].input[m.input_index]]
            w = numpy_helper.to_array(tensor).copy()
            if m.groups > 1:
                raise AssertionError("planted graphs have no grouped consumers")
            t_pos = expand_indices([seg.start + twin], size, m.outer, m.inner)
            d_pos = expand_indices([seg.start + dup], size, m.outer, m.inner)
            wt, wd = np.moveaxis(w, m.axis, 0)[t_pos], np.moveaxis(w, m.axis, 0)[d_pos]
            np.moveaxis(w, m.axis, 0)[t_pos] = wt + scale * wd
            tensor.CopyFrom(numpy_helper.from_array(w, tensor.name))


@pytest.mark.parametrize("name", planted.names())
def test_fold_then_prune_is_lossless(name):
    p = planted.build(name)
    model, _ = normalize(p.model)
    trace = trace_channels(model)
    removed: dict[int, set[int]] = {}
    folded: set[tuple[int, int]] = set()
    for producer, channels in p.dead.items():
        for c in channels:
            g, i = channel_of(trace, model, producer, c)
            removed.setdefault(g.id, set()).add(i)
    for producer, pairs in p.duplicates.items():
        for twin, dup, scale in pairs:
            g, ti = channel_of(trace, model, producer, twin)
            _, di = channel_of(trace, model, producer, dup)
            removed.setdefault(g.id, set()).add(di)
            if (g.id, di) not in folded:  # coupled producers list the same pair: fold once
                folded.add((g.id, di))
                fold_duplicate(model, trace, g, ti, di, scale)
    assert all(trace.groups[gid].prunable for gid in removed)
    plan = {gid: np.array(sorted(set(range(trace.groups[gid].size)) - gone)) for gid, gone in removed.items()}
    pruned = prune_channels(model, trace, plan)
    onnx.checker.check_model(pruned, full_check=True)
    for batch in (1, 4):
        feeds = planted.random_inputs(p.model, batch=batch, seed=batch)
        for got, want in zip(run_ort(pruned, feeds), run_ort(p.model, feeds), strict=True):
            assert rel_error(got, want) <= 1e-5
    assert model_cost(pruned).macs == model_cost(normalize(p.reduced)[0]).macs


@pytest.mark.parametrize("name", planted.names())
def test_compress_at_the_lossless_target_is_lossless(tmp_path, name):
    p = planted.build(name)
    src = tmp_path / f"{name}.onnx"
    onnx.save(p.model, src)
    before = src.read_bytes()
    np.savez(tmp_path / "calib.npz", **planted.random_inputs(p.model, batch=1280, seed=7))
    reduced = model_cost(p.reduced).macs
    report = compress(
        src,
        tmp_path / "out",
        CompressOptions(
            target=model_cost(p.model).macs / reduced,
            calib=str(tmp_path / "calib.npz"),
            calib_samples=1024,
            int8=False,
        ),
    )
    pruned = onnx.load(report["output"])
    onnx.checker.check_model(pruned, full_check=True)
    # at least the planted channels go; in se_block more are exactly redundant and go too: pw's 16 output
    # channels are an affine map of the 9 input channels left, read through pooling by a linear Gemm
    assert report["pruned"]["macs"] <= reduced
    feeds = planted.random_inputs(p.model, batch=16, seed=99)
    for got, want in zip(run_ort(pruned, feeds), run_ort(p.model, feeds), strict=True):
        assert rel_error(got, want) <= 1e-4
    assert src.read_bytes() == before
