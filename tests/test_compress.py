"""`onnxprune compress` end to end on the shipped Fashion-MNIST ResNet, its exit codes, and the math piece
it stands on (one-layer reconstruction = least squares)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnxprune.passes.reconstruct import solve_refit

from onnxprune.cli import main
from tests.helpers import MODELS, digest, run_cli, run_ort

MODEL = MODELS / "fmnist_resnet.onnx"
CALIB = MODELS / "fmnist_calib.npz"


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    with pytest.raises(SystemExit) as info:
        main(
            [
                "compress",
                str(MODEL),
                "--calib",
                str(CALIB),
                "--calib-samples",
                "128",
                "-o",
                str(out),
                "--json",
            ]
        )
    assert info.value.code == 0
    return out


def test_compress_outputs_valid_model_at_target(compressed):
    pruned = compressed / "fmnist_resnet.pruned.onnx"
    onnx.checker.check_model(str(pruned), full_check=True)
    report = json.loads((compressed / "fmnist_resnet.report.json").read_text())
    for key in (
        "model",
        "target",
        "metric",
        "dense",
        "pruned",
        "groups",
        "fidelity",
        "timings_s",
        "versions",
    ):
        assert key in report
    assert report["pruned"]["macs"] * 2 <= report["dense"]["macs"]
    assert any(g["kept"] < g["channels"] for g in report["groups"])
    for g in report["groups"]:
        assert g["kept"] >= 1 and len(g["pruned_indices"]) == g["channels"] - g["kept"]
        assert {"id", "channels", "kept", "pruned_indices", "members", "prunable", "reason"} <= set(g)
    fid = report["fidelity"]["logits"]
    assert fid["samples"] == 256 and 0 <= fid["top1_agreement"] <= 1
    # the guard measured every cut to under a quarter of a group past its trials (at 25 and 50% removed)
    guard = report["guard"]
    assert guard["unverified"] == []
    deep = {
        g["id"]
        for g in report["groups"]
        if g["kept"] < g["channels"] / 4 and g["channels"] - g["kept"] > (g["channels"] + 1) // 2
    }
    assert deep <= {m["group"] for m in guard["measurements"]}
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
    code, _, err = run_cli(
        capsys, "compress", MODEL, "-o", tmp_path, "--target", "1000x", "--criterion", "magnitude"
    )
    assert code == 3 and "target unreachable" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "fmnist_resnet.pruned.onnx").exists()


def test_quality_gate_exit_4(tmp_path, capsys):
    code, _, err = run_cli(
        capsys,
        "compress",
        MODEL,
        "-o",
        tmp_path,
        "--calib",
        CALIB,
        "--calib-samples",
        "64",
        "--criterion",
        "magnitude",
        "--no-reconstruct",
        "--target",
        "3x",
        "--max-drop",
        "0",
    )
    assert code == 4 and "quality gate failed" in err


@pytest.mark.parametrize(
    "args, words",
    [
        (["--target", "0.5x"], "bad --target"),
        (["--target", "fast"], "bad --target"),
        (["--calib", "nope.npz"], "nope.npz"),
        (["--exclude", "("], "bad --exclude"),
        (["--search-evals", "-3"], "--search-evals must be ≥ 0"),
    ],
)
def test_bad_arguments_exit_2(tmp_path, capsys, args, words):
    code, _, err = run_cli(capsys, "compress", MODEL, "-o", tmp_path, *args)
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1


def test_wrong_calibration_shape_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, input=np.zeros((8, 1, 32, 32), np.float32))
    code, _, err = run_cli(capsys, "compress", MODEL, "-o", tmp_path, "--calib", bad)
    assert code == 2 and "'input'" in err and "expected shape" in err and "32, 32" in err


def test_exclude_keeps_matching_groups(tmp_path, capsys):
    code, out, err = run_cli(
        capsys,
        "compress",
        MODEL,
        "-o",
        tmp_path,
        "--criterion",
        "magnitude",
        "--exclude",
        "res2",
        "--target",
        "1.3x",
        "--json",
    )
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
    got = solve_refit(
        np.hstack([wd, np.zeros((4, 1))]),
        aug(xd).T @ aug(xp),
        aug(xp).T @ aug(xp),
        np.zeros((4, 8)),
        ridge=1e-12,
    )
    want = np.linalg.lstsq(aug(xp), xd @ wd.T, rcond=None)[0].T
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)


def test_no_reconstruct_keeps_obs_compensation_and_it_helps(tmp_path, capsys):
    """--no-reconstruct skips the calibration refit, not OBS's own update: obs compensates, magnitude
    cannot."""
    reports = {}
    for criterion in ("obs", "magnitude"):
        code, out, _ = run_cli(
            capsys,
            "compress",
            MODEL,
            "--calib",
            CALIB,
            "--calib-samples",
            "128",
            "--target",
            "1.5x",
            "--criterion",
            criterion,
            "--no-reconstruct",
            "--no-int8",
            "-o",
            tmp_path / criterion,
            "--json",
        )
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
    report = compress(
        tmp_path / "m.onnx",
        tmp_path / "out",
        CompressOptions(
            target=1.3, calib=str(tmp_path / "c.npz"), calib_samples=32, reconstruct=reconstruct, int8=False
        ),
    )
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
    common = ["compress", path, "--calib", tmp_path / "calib.npz", "--calib-samples", "64", "--json"]
    code, out, err = run_cli(capsys, *common, "--target", "1.3x", "-o", tmp_path / "out")
    assert code == 0, err
    report = json.loads(out)
    assert report["achieved"]["macs"] >= 1.3 and report["input_shapes"]["input"][0] == 4
    pruned = onnx.load(report["output"])
    onnx.checker.check_model(pruned, full_check=True)
    assert run_ort(pruned, {"input": x[:4]})[0].shape[0] == 4
    # --metric latency measures at the batch the model fixes (the default batches 1 and 32 cannot run)
    code, out, err = run_cli(
        capsys, *common, "--target", "1.1x", "--metric", "latency", "--no-int8", "-o", tmp_path / "lat"
    )
    assert code in (0, 3), err  # 3: this machine could not reach 1.1x; never an input error
    if code == 0:
        report = json.loads(out)
        assert report["latency"]["table"]["batch"] == 4 and list(report["latency"]["measured"]) == ["batch 4"]
    else:
        assert "fixed batch" not in err


def test_reduce_mean_pooling_compresses_like_global_average_pool(tmp_path, capsys):
    """The same network exported with ``x.mean((2, 3))`` (ReduceMean) instead of GlobalAveragePool: its
    classifier
    reads every position of the pooled map too, so compress makes the very same model from it."""
    model = onnx.load(str(MODEL))
    node = next(n for n in model.graph.node if n.op_type == "GlobalAveragePool")
    node.op_type = "ReduceMean"
    node.attribute.extend(
        [onnx.helper.make_attribute("axes", [2, 3]), onnx.helper.make_attribute("keepdims", 1)]
    )
    assert model.opset_import[0].version < 18  # axes as an attribute
    variant = tmp_path / "mean_pool.onnx"
    onnx.save(model, str(variant))
    outputs = {}
    for name, path in (("gap", MODEL), ("mean", variant)):
        code, out, _ = run_cli(
            capsys,
            "compress",
            path,
            "--calib",
            CALIB,
            "--calib-samples",
            "128",
            "--target",
            "2x",
            "--no-int8",
            "-o",
            tmp_path / name,
            "--json",
        )
        assert code == 0
        pruned = onnx.load(json.loads(out)["output"])
        x = np.load(CALIB)["input"][-64:]
        outputs[name] = run_ort(pruned, {pruned.graph.input[0].name: x})[0]
    np.testing.assert_allclose(outputs["mean"], outputs["gap"], rtol=1e-4, atol=1e-4)


def test_python_api_returns_the_models_and_the_report_the_cli_writes(tmp_path, compressed):
    """``onnxprune.compress`` on a ModelProto gives the same pruned model as the CLI on its file, the INT8
    copy
    and the report; with ``outdir`` the files are where ``paths`` says; an unknown option is a TypeError."""
    import onnxprune
    from onnxprune.errors import TargetUnreachableError

    result = onnxprune.compress(onnx.load(str(MODEL)), target="2x", calib=str(CALIB), calib_samples=128)
    cli_model = onnx.load(str(compressed / "fmnist_resnet.pruned.onnx"))
    assert [onnx.numpy_helper.to_array(t).tobytes() for t in result.pruned.graph.initializer] == [
        onnx.numpy_helper.to_array(t).tobytes() for t in cli_model.graph.initializer
    ]
    assert result.int8 is not None and result.report["achieved"]["macs"] >= 2.0 and result.paths == {}
    written = onnxprune.compress(
        MODEL, target=1.5, calib=str(CALIB), calib_samples=128, int8=False, outdir=tmp_path / "o"
    )
    assert written.int8 is None and set(written.paths) == {"pruned", "report"}
    assert json.loads(written.paths["report"].read_text())["target"] == 1.5
    onnx.checker.check_model(onnx.load(str(written.paths["pruned"])), full_check=True)
    with pytest.raises(TypeError):
        onnxprune.compress(MODEL, target=2, calib=str(CALIB), no_such_option=1)
    with pytest.raises(TargetUnreachableError):
        onnxprune.compress(MODEL, target=1000, calib=str(CALIB), calib_samples=128, int8=False)
