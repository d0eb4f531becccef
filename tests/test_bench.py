"""`onnxprune bench`: statistics, the interleaved schedule, compare_latency and the command line."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from models import synthetic
from onnxprune.bench import (
    MIN_ROUNDS,
    ModelSkipped,
    compare_latency,
    interleave,
    latency_stats,
    parse_batches,
    rotation,
    shapes_at_batch,
)
from onnxprune.errors import InputError
from onnxprune.memory import peak_rss_growth
from tests.helpers import run_cli


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, Path]:
    """Two dynamic-batch models, one with a fixed batch of 1, one with dynamic spatial dims."""
    d = tmp_path_factory.mktemp("bench")
    dynamic_hw = synthetic.build("conv_chain")
    dims = dynamic_hw.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "H", "W"
    models = {
        "chain": synthetic.build("conv_chain"),
        "residual": synthetic.build("residual_add"),
        "fixed": synthetic.with_static_batch(synthetic.build("conv_chain"), 1),
        "dynamic_hw": dynamic_hw,
    }
    paths = {}
    for name, m in models.items():
        paths[name] = d / f"{name}.onnx"
        onnx.save(m, str(paths[name]))
    return paths


# ---- statistics and schedule ----------------------------------------------------------------------


def test_latency_stats_on_known_times():
    s = latency_stats(np.arange(1, 101, dtype=float)[::-1], batch=4, threads=2)  # order must not matter
    assert (s.p50_ms, s.p90_ms, s.p99_ms) == pytest.approx((50.5, 90.1, 99.01))
    assert (s.min_ms, s.mean_ms, s.runs, s.batch, s.threads) == (1.0, 50.5, 100, 4, 2)
    assert s.throughput == pytest.approx(4 * 1000 / 50.5)
    assert s.to_dict()["p99_ms"] == pytest.approx(99.01)
    one = latency_stats([2.0])
    assert one.p50_ms == one.p99_ms == one.min_ms == 2.0 and one.throughput == 500.0
    with pytest.raises(ValueError):
        latency_stats([])


def test_rotation_starts_each_round_one_model_later():
    assert [rotation(3, r) for r in range(4)] == [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 1, 2]]
    # over n rounds every model runs once in every position
    positions = np.array([rotation(4, r) for r in range(4)])
    assert all(sorted(col) == [0, 1, 2, 3] for col in positions.T)


def _recording_runners(n: int, calls: list[int]):
    def make(i):
        def run():
            calls.append(i)
            return float(10 * i + len(calls))  # distinct per call: checks which call lands where

        return run

    return [make(i) for i in range(n)]


def test_interleave_runs_models_in_rotating_order_after_warmup():
    calls: list[int] = []
    times = interleave(_recording_runners(3, calls), rounds=3, warmup=2)
    assert calls == [0, 1, 2, 1, 2, 0] + [0, 1, 2, 1, 2, 0, 2, 0, 1]  # warm-up rounds, then timed rounds
    assert [len(t) for t in times] == [3, 3, 3]
    # model 1's timed runs were calls 8, 10 and 15 (1-based): warm-up calls are not recorded
    assert times[1] == [18.0, 20.0, 25.0]


def test_interleave_budget_stops_after_the_minimum_rounds():
    calls: list[int] = []
    times = interleave(_recording_runners(2, calls), rounds=50, budget_s=0.0)
    assert [len(t) for t in times] == [MIN_ROUNDS, MIN_ROUNDS]
    assert len(calls) == 2 * MIN_ROUNDS


def test_parse_batches():
    assert parse_batches("1,8,32") == [1, 8, 32]
    assert parse_batches("4, 4,1") == [4, 1]
    for bad in ("", "0", "1,-2", "a"):
        with pytest.raises(InputError, match="--batch"):
            parse_batches(bad)


# ---- inputs and memory ------------------------------------------------------------------------------


def test_shapes_at_batch(model_files):
    chain = onnx.load(str(model_files["chain"]))
    assert shapes_at_batch(chain, 8) == {"x": (8, 3, 16, 16)}
    with pytest.raises(ModelSkipped, match="fixed batch of 1, not 8"):
        shapes_at_batch(onnx.load(str(model_files["fixed"])), 8)
    dyn = onnx.load(str(model_files["dynamic_hw"]))
    with pytest.raises(InputError, match="'x' has dynamic dim 2"):
        shapes_at_batch(dyn, 1)
    # the leading dim of --input-shape follows the batch being measured
    assert shapes_at_batch(dyn, 4, {"x": (1, 3, 20, 24), "other": (1, 2)}) == {"x": (4, 3, 20, 24)}


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_peak_rss_growth_sees_memory_freed_before_returning():
    def touch_and_free():
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, written so it is resident
        return float(block[-1])

    result, mb = peak_rss_growth(touch_and_free)
    assert result == 1.0 and mb is not None
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        assert mb >= 0.0  # no peak reset here: only the retained growth is known
    else:
        assert 60.0 < mb < 200.0


# ---- compare_latency -------------------------------------------------------------------------------


def test_compare_latency_on_two_models():
    models = [synthetic.build("conv_chain"), synthetic.build("residual_add")]
    stats = compare_latency(models, batch=2, rounds=7, warmup=1)
    assert len(stats) == 2
    for s in stats:
        assert s.runs == 7 and s.batch == 2 and s.threads == 0
        assert 0 < s.min_ms <= s.p50_ms <= s.p90_ms <= s.p99_ms
        assert s.throughput == pytest.approx(2 * 1000 / s.p50_ms)


def test_compare_latency_feeds_models_with_different_inputs():
    a = synthetic.build("conv_chain")
    b = synthetic.build("transformer_block")  # other input name, rank and shape
    stats = compare_latency([a, b], rounds=MIN_ROUNDS, warmup=0, threads=1)
    assert [s.runs for s in stats] == [MIN_ROUNDS, MIN_ROUNDS] and stats[1].threads == 1


def test_compare_latency_refuses_a_model_fixed_to_another_batch():
    models = [synthetic.build("conv_chain"), synthetic.with_static_batch(synthetic.build("conv_chain"), 1)]
    with pytest.raises(ModelSkipped, match="model 2 of 2: input 'x' has a fixed batch of 1, not 4") as info:
        compare_latency(models, batch=4, rounds=MIN_ROUNDS)
    assert info.value.exit_code == 2


# ---- command line ----------------------------------------------------------------------------------


def test_cli_table(model_files, capsys):
    code, out, err = run_cli(
        capsys, "bench", model_files["chain"], model_files["residual"], "--rounds", "5", "--warmup", "1"
    )
    assert code == 0, err
    assert "chain.onnx" in out and "residual.onnx" in out and "1.00x" in out
    for header in ("p50", "p99", "samples/s", "vs first", "peak MB"):
        assert header in out


def test_cli_json_batches_and_repeats(model_files, capsys):
    code, out, err = run_cli(
        capsys,
        "bench",
        model_files["chain"],
        model_files["residual"],
        model_files["fixed"],
        *"--batch 1,4 --rounds 5 --warmup 1 --repeats 2 --threads 1 --json".split(),
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["backend"] == "ort" and report["batches"] == [1, 4] and report["repeats"] == 2
    rows = report["results"]
    assert [(Path(r["model"]).stem, r["batch"]) for r in rows] == [
        ("chain", 1),
        ("residual", 1),
        ("fixed", 1),
        ("chain", 4),
        ("residual", 4),
        ("fixed", 4),
    ]
    for r in rows[:5]:
        assert r["skipped"] is None and r["stats"]["runs"] == 10 and r["stats"]["threads"] == 1
        assert len(r["p50_repeats_ms"]) == 2 and r["p50_min_ms"] <= r["p50_median_ms"]
        assert r["throughput"] == pytest.approx(r["batch"] * 1000 / r["p50_median_ms"])
        assert r["size_mb"] > 0 and r["peak_mb"] is not None
    assert rows[0]["speedup"] == rows[3]["speedup"] == 1.0
    assert rows[1]["speedup"] == pytest.approx(rows[0]["p50_median_ms"] / rows[1]["p50_median_ms"])
    fixed4 = rows[5]
    assert (
        fixed4["stats"] is None
        and fixed4["speedup"] is None
        and "fixed batch of 1, not 4" in fixed4["skipped"]
    )


def test_cli_skipped_row_is_a_warning_not_a_failure(model_files, capsys):
    code, out, _ = run_cli(
        capsys,
        "bench",
        model_files["chain"],
        model_files["fixed"],
        *"--batch 2 --rounds 5 --warmup 0".split(),
    )
    assert code == 0
    assert (
        "skipped" in out and "fixed.onnx skipped at batch 2: input 'x' has a fixed batch of 1, not 2" in out
    )


def test_cli_dynamic_dims_need_input_shape(model_files, capsys):
    code, out, err = run_cli(capsys, "bench", model_files["dynamic_hw"], "--rounds", "5")
    assert code == 2 and not out
    assert err.strip() == "error: input 'x' has dynamic dim 2 ('H'): pass --input-shape x:1x3xDxD"
    code, out, err = run_cli(
        capsys,
        "bench",
        model_files["dynamic_hw"],
        model_files["chain"],
        *"--input-shape x:1x3x16x16 --batch 2 --rounds 5 --warmup 0 --json".split(),
    )
    assert code == 0, err
    assert [r["stats"]["runs"] for r in json.loads(out)["results"]] == [5, 5]


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.onnx"], "error: model file not found: missing.onnx"),
        (["{chain}", "--batch", "0"], "error: bad --batch '0'"),
        (["{chain}", "--sparse"], "error: --sparse applies to --backend tensorrt only"),
        (["{chain}", "--input-shape", "y:1x3"], "error: --input-shape names unknown input 'y'"),
    ],
)
def test_cli_bad_input_exit_2(model_files, capsys, args, message):
    code, out, err = run_cli(capsys, "bench", *[a.format(chain=model_files["chain"]) for a in args])
    assert code == 2 and not out
    assert err.startswith(message) and len(err.strip().splitlines()) == 1


def test_cli_not_an_onnx_file_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    code, _, err = run_cli(capsys, "bench", bad)
    assert code == 2 and "is not an ONNX model" in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_cli_tensorrt_backend_without_tensorrt_exit_2(model_files, capsys):
    code, out, err = run_cli(capsys, "bench", model_files["chain"], "--backend", "tensorrt")
    assert code == 2 and not out
    assert err == "error: --backend tensorrt: tensorrt is not installed (pip install 'onnxprune[tensorrt]')\n"
