"""`onnxprune compress` end to end on the shipped Fashion-MNIST ResNet, its exit codes, and the math pieces
it stands on (one-layer reconstruction = least squares, DP allocation = brute force)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnxprune.passes.reconstruct import solve_refit

from onnxprune.allocate import GroupChoice, allocate_dp, fit_to_target, search_allocation
from onnxprune.cli import main
from onnxprune.criteria import GroupRanking
from tests.helpers import MODELS, digest, run_cli, run_ort

MODEL = MODELS / "fmnist_resnet.onnx"
CALIB = MODELS / "fmnist_calib.npz"


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    with pytest.raises(SystemExit) as info:
        main(["compress", str(MODEL), "--calib", str(CALIB), "--calib-samples", "128", "-o", str(out), "--json"])
    assert info.value.code == 0
    return out


def test_compress_outputs_valid_model_at_target(compressed):
    pruned = compressed / "fmnist_resnet.pruned.onnx"
    onnx.checker.check_model(str(pruned), full_check=True)
    report = json.loads((compressed / "fmnist_resnet.report.json").read_text())
    for key in ("model", "target", "metric", "dense", "pruned", "groups", "fidelity", "timings_s", "versions"):
        assert key in report
    assert report["pruned"]["macs"] * 2 <= report["dense"]["macs"]
    assert any(g["kept"] < g["channels"] for g in report["groups"])
    for g in report["groups"]:
        assert g["kept"] >= 1 and len(g["pruned_indices"]) == g["channels"] - g["kept"]
        assert {"id", "channels", "kept", "pruned_indices", "members", "prunable", "reason"} <= set(g)
    fid = report["fidelity"]["logits"]
    assert fid["samples"] == 256 and 0 <= fid["top1_agreement"] <= 1
    x = np.load(CALIB)["input"][256:320]
    assert run_ort(onnx.load(str(pruned)), {"input": x})[0].shape == (64, 10)


def test_compress_never_touches_input(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    model.write_bytes(MODEL.read_bytes())
    before = digest(model)
    code, _, err = run_cli(capsys, "compress", model, "-o", tmp_path, "--criterion", "magnitude", "--json")
    assert code == 0, err and "warning" in err
    assert digest(model) == before
    assert (tmp_path / "m.pruned.onnx").is_file() and (tmp_path / "m.report.json").is_file()


def test_unreachable_target_exit_3(tmp_path, capsys):
    code, _, err = run_cli(capsys, "compress", MODEL, "-o", tmp_path, "--target", "1000x", "--criterion", "magnitude")
    assert code == 3 and "target unreachable" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "fmnist_resnet.pruned.onnx").exists()


def test_quality_gate_exit_4(tmp_path, capsys):
    code, _, err = run_cli(capsys, "compress", MODEL, "-o", tmp_path, "--calib", CALIB, "--calib-samples", "64",
                           "--criterion", "magnitude", "--no-reconstruct", "--target", "3x", "--max-drop", "0")
    assert code == 4 and "quality gate failed" in err


@pytest.mark.parametrize("args, words", [
    (["--target", "0.5x"], "bad --target"),
    (["--target", "fast"], "bad --target"),
    (["--calib", "nope.npz"], "nope.npz"),
    (["--exclude", "("], "bad --exclude"),
    (["--search-evals", "-3"], "--search-evals must be ≥ 0"),
])
def test_bad_arguments_exit_2(tmp_path, capsys, args, words):
    code, _, err = run_cli(capsys, "compress", MODEL, "-o", tmp_path, *args)
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1


def test_wrong_calibration_shape_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, input=np.zeros((8, 1, 32, 32), np.float32))
    code, _, err = run_cli(capsys, "compress", MODEL, "-o", tmp_path, "--calib", bad)
    assert code == 2 and "'input'" in err and "expected shape" in err and "32, 32" in err


def test_exclude_keeps_matching_groups(tmp_path, capsys):
    code, out, err = run_cli(capsys, "compress", MODEL, "-o", tmp_path, "--criterion", "magnitude",
                             "--exclude", "res2", "--target", "1.3x", "--json")
    assert code == 0, err
    report = json.loads(out)
    for g in report["groups"]:
        if any("res2" in m["node"] for m in g["members"]):
            assert g["kept"] == g["channels"] and "exclude" in g["reason"]


def test_one_layer_refit_equals_lstsq():
    rng = np.random.default_rng(0)
    xd = rng.normal(size=(500, 12))
    keep = [0, 2, 3, 5, 7, 8, 11]
    xp = xd[:, keep] + 0.1 * rng.normal(size=(500, 7))  # the pruned model's (perturbed) inputs
    wd = rng.normal(size=(4, 12))
    aug = lambda x: np.hstack([x, np.ones((len(x), 1))])  # noqa: E731
    got = solve_refit(np.hstack([wd, np.zeros((4, 1))]), aug(xd).T @ aug(xp), aug(xp).T @ aug(xp),
                      np.zeros((4, 8)), ridge=1e-12)
    want = np.linalg.lstsq(aug(xp), xd @ wd.T, rcond=None)[0].T
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(2, 5), st.floats(0.5, 5.0)), min_size=1, max_size=3), st.floats(0.1, 0.9),
       st.integers(0, 10**6))
def test_dp_matches_brute_force(spec, fraction, seed):
    rng = np.random.default_rng(seed)
    choices = []
    for gid, (size, per) in enumerate(spec):
        err = np.concatenate([[0.0], np.cumsum(rng.random(size - 1)), [np.inf]])
        choices.append(GroupChoice(gid, size, 1, 1, per, GroupRanking(gid, np.arange(size), err)))
    total = sum((c.size - 1) * c.saving_per_channel for c in choices)
    need = fraction * total
    widths = allocate_dp(choices, need, buckets=4000)
    got_err = sum(c.error(widths[c.group]) for c in choices)
    assert sum((c.size - widths[c.group]) * c.saving_per_channel for c in choices) >= need - total / 4000 * len(choices)
    best = min(sum(c.error(k) for c, k in zip(choices, ks, strict=True))
               for ks in itertools.product(*[range(1, c.size + 1) for c in choices])
               if sum((c.size - k) * c.saving_per_channel for c, k in zip(choices, ks, strict=True)) >= need)
    assert got_err <= best + 1e-9


def _free_then_costly(group: int, size: int, free: int, per: float) -> GroupChoice:
    """A group whose first ``free`` channels cost nothing to remove, each further one 1."""
    err = np.concatenate([np.zeros(free + 1), np.arange(1, size - free), [np.inf]])
    return GroupChoice(group, size, 1, 1, per, GroupRanking(group, np.arange(size), err.astype(float)))


def test_dp_meets_a_saving_exactly_met_by_fractional_bucket_gains():
    # three free channels of 1/3 each meet a saving of 1 exactly; floored bucket gains (666 of 2000 each)
    # fell short, and the DP paid for a costly channel instead
    choices = [_free_then_costly(g, 2, 1, 1 / 3) for g in range(3)] + [_free_then_costly(3, 4, 0, 10.0)]
    assert allocate_dp(choices, 1.0) == {0: 1, 1: 1, 2: 1, 3: 4}


def test_dp_takes_every_free_channel_among_equally_good_plans():
    # two free channels of group 0 already meet the saving; taking all free ones is as good and saves more
    # (the linearized saving is an estimate: only the plan with every free channel may meet the exact one)
    choices = [_free_then_costly(0, 6, 3, 10.0), _free_then_costly(1, 6, 3, 1.0)]
    assert allocate_dp(choices, 20.0) == {0: 3, 1: 3}


def _convex_choices(sizes):
    """Groups with error (removed/size)²: the DP spreads a cut evenly over alike groups."""
    return [GroupChoice(g, size, 1, 1, 1.0, GroupRanking(g, np.arange(size),
                                                          np.concatenate([(np.arange(size) / size) ** 2, [np.inf]])))
            for g, size in enumerate(sizes)]


def test_dp_weights_move_channels_to_the_weighted_group():
    choices = _convex_choices([10, 10])
    plain = allocate_dp(choices, 8.0)
    heavy = allocate_dp(choices, 8.0, weights={0: 5.0})
    assert sum(10 - k for k in heavy.values()) >= 8
    assert plain[0] == plain[1] == 6
    assert heavy[0] > plain[0] > heavy[1]  # group 0's error now costs 5x: the other group pays more


def test_search_lowers_a_non_additive_damage_and_keeps_the_budget():
    # The per-group curves say the groups are alike, so the DP splits the cut; the real damage punishes
    # cutting both 0 and 1 (an interaction the curves cannot see): the search must move the cut away.
    choices = _convex_choices([10, 10, 10])

    def propose(weights):
        return allocate_dp(choices, 9.0, weights=weights)

    def damage(widths):
        cut = [10 - widths[g] for g in range(3)]
        return sum(cut) * 0.1 + 2.0 * min(cut[0], cut[1]) + 0.05 * cut[2]

    widths, record = search_allocation([0, 1, 2], propose, damage, evals=40, seed=0)
    assert sum(10 - k for k in widths.values()) >= 9
    assert record["damage"] == damage(widths) < record["initial_damage"]
    start = propose(None)
    assert min(10 - start[0], 10 - start[1]) >= 3 and record["accepted"] >= 1
    assert min(10 - widths[0], 10 - widths[1]) == 0
    again, _ = search_allocation([0, 1, 2], propose, damage, evals=40, seed=0)
    assert again == widths  # seeded: the same plan every run


def test_search_never_returns_worse_than_the_plain_dp():
    choices = _convex_choices([6, 8])
    start = allocate_dp(choices, 5.0)
    widths, record = search_allocation([0, 1], lambda w: allocate_dp(choices, 5.0, weights=w),
                                       lambda w: 0.0 if w == start else 1.0, evals=20, seed=3)
    assert widths == start and record["damage"] == record["initial_damage"] == 0.0


def test_fit_to_target_steps_past_a_coarse_proposer():
    # The proposer only moves in steps of 1000 saved; the first proposal misses the budget by 1.
    def propose(saving):
        return {0: int(np.floor((saving + 1) / 1000) * 1000)}

    widths, cost = fit_to_target(propose, lambda w: 100_000 - w[0], 100_000, 50_999, 0, "macs")
    assert cost <= 50_999 and widths == {0: 50_000}


def test_no_reconstruct_keeps_obs_compensation_and_it_helps(tmp_path, capsys):
    """--no-reconstruct skips the calibration refit, not OBS's own update: obs compensates, magnitude cannot."""
    reports = {}
    for criterion in ("obs", "magnitude"):
        code, out, _ = run_cli(capsys, "compress", MODEL, "--calib", CALIB, "--calib-samples", "128", "--target", "1.5x",
                               "--criterion", criterion, "--no-reconstruct", "--no-int8", "-o", tmp_path / criterion,
                               "--json")
        assert code == 0
        reports[criterion] = json.loads(out)
    obs = reports["obs"]
    assert obs["reconstruct"] is False and obs["refit_layers"]
    assert set(obs["refit_layers"].values()) == {"obs compensation"}
    assert reports["magnitude"]["refit_layers"] == {}
    assert obs["fidelity"]["logits"]["top1_agreement"] > 0.8  # sliced without compensation it is far lower


@pytest.mark.parametrize("reconstruct", [True, False])
@pytest.mark.parametrize("name", __import__("models.synthetic", fromlist=["names"]).names())
def test_compress_every_synthetic_graph_with_calibration(tmp_path, name, reconstruct):
    """Default obs pipeline on every synthetic graph (Concat, Split, SE, Flatten, LSTM, attention, Paddle
    Constant weights...): a valid model that runs. Groups whose consumers have no Hessian fall back to
    magnitude; the next group must still find its statistics (mlp_gemm crashed on that). 32 samples are
    one refit batch: the refit's second validation half is empty (every graph crashed on that)."""
    from models import synthetic
    from onnxprune.pipeline import CompressOptions, compress

    model = synthetic.build(name)
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "c.npz", **synthetic.random_inputs(model, batch=48, seed=1))
    report = compress(tmp_path / "m.onnx", tmp_path / "out", CompressOptions(
        target=1.3, calib=str(tmp_path / "c.npz"), calib_samples=32, reconstruct=reconstruct, int8=False))
    onnx.checker.check_model(report["output"], full_check=True)
    run_ort(onnx.load(report["output"]), synthetic.random_inputs(model, batch=2, seed=2))


def test_static_batch_model_compresses_and_measures_at_its_batch(tmp_path, capsys):
    """A model exported with a fixed batch (here 4) is costed and traced at that batch, not at 1 (that
    used to fail with an --input-shape error nobody gave), and its calibration halves keep whole batches."""
    model = onnx.load(MODELS / "fmnist_resnet.onnx")
    for vi in (*model.graph.input, *model.graph.output):
        dim = vi.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_param")
        dim.dim_value = 4
    path = tmp_path / "static.onnx"
    onnx.save(model, path)
    with np.load(MODELS / "fmnist_calib.npz") as z:
        x = z["input"][:96]
    np.savez(tmp_path / "calib.npz", input=x, groups=np.arange(96) // 3)  # 32 sources, three samples each
    code, out, err = run_cli(capsys, "compress", path, "--calib", tmp_path / "calib.npz", "--calib-samples", "64",
                             "--target", "1.3x", "-o", tmp_path / "out", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["achieved"]["macs"] >= 1.3 and report["input_shapes"]["input"][0] == 4
    pruned = onnx.load(report["output"])
    onnx.checker.check_model(pruned, full_check=True)
    assert run_ort(pruned, {"input": x[:4]})[0].shape[0] == 4
    # --metric latency measures at the batch the model fixes (the default batches 1 and 32 cannot run)
    code, out, err = run_cli(capsys, "compress", path, "--calib", tmp_path / "calib.npz", "--calib-samples", "64",
                             "--target", "1.1x", "--metric", "latency", "--no-int8", "-o", tmp_path / "lat", "--json")
    assert code in (0, 3), err  # 3: this machine could not reach 1.1x; never an input error
    if code == 0:
        report = json.loads(out)
        assert report["latency"]["table"]["batch"] == 4 and list(report["latency"]["measured"]) == ["batch 4"]
    else:
        assert "fixed batch" not in err


def test_reduce_mean_pooling_compresses_like_global_average_pool(tmp_path, capsys):
    """The same network exported with ``x.mean((2, 3))`` (ReduceMean) instead of GlobalAveragePool: its classifier
    reads every position of the pooled map too, so compress makes the very same model from it."""
    model = onnx.load(str(MODEL))
    node = next(n for n in model.graph.node if n.op_type == "GlobalAveragePool")
    node.op_type = "ReduceMean"
    node.attribute.extend([onnx.helper.make_attribute("axes", [2, 3]), onnx.helper.make_attribute("keepdims", 1)])
    assert model.opset_import[0].version < 18  # axes as an attribute
    variant = tmp_path / "mean_pool.onnx"
    onnx.save(model, str(variant))
    outputs = {}
    for name, path in (("gap", MODEL), ("mean", variant)):
        code, out, _ = run_cli(capsys, "compress", path, "--calib", CALIB, "--calib-samples", "128", "--target", "2x",
                               "--no-int8", "-o", tmp_path / name, "--json")
        assert code == 0
        pruned = onnx.load(json.loads(out)["output"])
        x = np.load(CALIB)["input"][-64:]
        outputs[name] = run_ort(pruned, {pruned.graph.input[0].name: x})[0]
    np.testing.assert_allclose(outputs["mean"], outputs["gap"], rtol=1e-4, atol=1e-4)
