"""Lossless on planted redundancy in graphs the tool has never seen (``models.planted_compose``): asked
for 0.97× the reduction the planted channels allow, ``compress --round-to 1`` must keep the dense function
(relative output error < 1e-4) and deliver between the target and 1.05× it. A fast sample that covers
every pattern runs in CI; 200 seeds run as a slow test."""

from __future__ import annotations

import onnx
import pytest

from benchmarks.planted_graphs import lossless_run, passes
from models import planted_compose
from onnxprune.costs import model_cost
from tests.helpers import rel_error, run_ort

FAST = (
    3,
    5,
    6,
    7,
    16,
    24,
    27,
    44,
)  # residual, se, grouped, split+flatten_gemm, shuffle, dense, fpn, plain, ffn
PATTERNS = {"residual", "se", "grouped", "shuffle", "split+flatten_gemm", "dense", "fpn", "plain", "ffn"}


def check_lossless(seed: int, folder) -> None:
    run = lossless_run(seed, folder)
    assert passes(run), run  # relative error < TOLERANCE, achieved within [target, WINDOW × target]


def test_the_generator_plants_what_it_claims():
    """The oracle's own oracle: each composed graph and its reduced twin compute the same outputs, the twin
    with fewer MACs, and the fast sample covers every pattern."""
    seen = set()
    for seed in FAST:
        g = planted_compose.build(seed)
        seen.update(g.patterns)
        for model in (g.model, g.reduced):
            onnx.checker.check_model(model, full_check=True)
        feeds = planted_compose.random_inputs(g.model, batch=4, seed=1)
        for a, b in zip(run_ort(g.reduced, feeds), run_ort(g.model, feeds), strict=True):
            assert a.shape == b.shape and rel_error(a, b) <= 1e-5
        assert model_cost(g.reduced).macs < model_cost(g.model).macs
    assert seen == PATTERNS
    again = planted_compose.build.__wrapped__(FAST[0])
    assert again.model.SerializeToString() == planted_compose.build(FAST[0]).model.SerializeToString()


@pytest.mark.parametrize("seed", FAST)
def test_compress_is_lossless_on_composed_planted_graphs(tmp_path, seed):
    check_lossless(seed, tmp_path)


@pytest.mark.slow
def test_compress_is_lossless_on_200_composed_planted_graphs(tmp_path):
    failures = []
    for seed in range(200):
        folder = tmp_path / str(seed)
        folder.mkdir()
        try:
            check_lossless(seed, folder)
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, failures
