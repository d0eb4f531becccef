"""Loading refuses bad input with exit 2 and one line; saving is atomic and never touches the input."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune import modelio
from onnxprune.cli import main
from onnxprune.errors import InputError
from tests.helpers import run_ort


def tiny_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(size=(8,)).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 8, 8])],
        [w, b],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def external_model(folder: Path, location: str = "weights.bin") -> Path:
    """Save tiny_model with its weights as external data, then point them at ``location``."""
    path = folder / "ext.onnx"
    onnx.save_model(
        tiny_model(), str(path), save_as_external_data=True, location="weights.bin", size_threshold=0
    )
    if location != "weights.bin":
        m = onnx.load_model(str(path), load_external_data=False)
        for t in m.graph.initializer:
            for e in t.external_data:
                if e.key == "location":
                    e.value = location
        onnx.save_model(m, str(path))
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def assert_refused(capsys, path: Path, *words: str) -> None:
    before = digest(path) if path.is_file() else None
    code, out, err = run_cli(capsys, "analyze", str(path))
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    if before is not None:
        assert digest(path) == before


def test_not_onnx(tmp_path, capsys):
    p = tmp_path / "notes.onnx"
    p.write_text("this is a text file, not a model\n" * 20)
    assert_refused(capsys, p, str(p), "not")


def test_random_bytes(tmp_path, capsys):
    p = tmp_path / "noise.onnx"
    p.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert_refused(capsys, p, str(p))


@pytest.mark.parametrize("keep", [0.25, 0.5, 0.9, 0.99])
def test_truncated_protobuf(tmp_path, capsys, keep):
    data = tiny_model().SerializeToString()
    p = tmp_path / "cut.onnx"
    p.write_bytes(data[: int(len(data) * keep)])
    assert_refused(capsys, p, str(p))


def test_missing_and_empty_file(tmp_path, capsys):
    assert_refused(capsys, tmp_path / "nope.onnx", "not found")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert_refused(capsys, empty, "empty")


def test_missing_external_data(tmp_path, capsys):
    p = external_model(tmp_path)
    (tmp_path / "weights.bin").unlink()
    assert_refused(capsys, p, "weights.bin", "not found")


def test_truncated_external_data(tmp_path, capsys):
    p = external_model(tmp_path)
    data = (tmp_path / "weights.bin").read_bytes()
    (tmp_path / "weights.bin").write_bytes(data[:100])
    assert_refused(capsys, p, "truncated")


@pytest.mark.parametrize(
    "location", ["../outside.bin", "sub/../../outside.bin", "/etc/passwd", "/tmp/outside.bin"]
)
def test_external_data_path_traversal(tmp_path, capsys, location):
    inner = tmp_path / "model"
    inner.mkdir()
    p = external_model(inner, location)
    # the escaping target exists (and holds the real weights), so only the location check can refuse it
    (tmp_path / "outside.bin").write_bytes((inner / "weights.bin").read_bytes())
    assert_refused(capsys, p, "refusing")


def test_symlink_escaping_folder_is_refused(tmp_path, capsys):
    inner = tmp_path / "model"
    inner.mkdir()
    p = external_model(inner, "link.bin")
    (tmp_path / "outside.bin").write_bytes((inner / "weights.bin").read_bytes())
    os.symlink(tmp_path / "outside.bin", inner / "link.bin")
    assert_refused(capsys, p, "escapes")


def test_external_data_inside_folder_loads(tmp_path):
    p = external_model(tmp_path)
    loaded = modelio.load_model(p)
    x = np.ones((2, 3, 8, 8), np.float32)
    np.testing.assert_array_equal(run_ort(loaded, {"x": x})[0], run_ort(tiny_model(), {"x": x})[0])


def test_bad_input_shape_spec(tmp_path, capsys):
    p = tmp_path / "tiny.onnx"
    onnx.save_model(tiny_model(), str(p))
    for spec, word in (
        ("x:1x3xAx8", "bad --input-shape"),
        ("nope:1x3x8x8", "unknown input 'nope'"),
        ("x:1x3x8", "rank"),
        ("x:1x4x8x8", "model fixes dims"),
    ):
        code, _, err = run_cli(capsys, "analyze", str(p), "--input-shape", spec)
        assert code == 2 and len(err.strip().splitlines()) == 1 and word in err, (spec, err)


def test_save_refuses_to_overwrite_input(tmp_path):
    p = tmp_path / "tiny.onnx"
    onnx.save_model(tiny_model(), str(p))
    before = digest(p)
    with pytest.raises(InputError, match="refusing to overwrite"):
        modelio.save_model(tiny_model(), p, protect=(p,))
    link = tmp_path / "alias.onnx"
    os.symlink(p, link)
    with pytest.raises(InputError, match="refusing to overwrite"):
        modelio.save_model(tiny_model(), link, protect=(p,))
    assert digest(p) == before


def test_save_is_atomic_and_checked(tmp_path):
    out = tmp_path / "out" / "m.onnx"
    modelio.save_model(tiny_model(), out)
    assert sorted(os.listdir(out.parent)) == ["m.onnx"]  # no temp folder left behind
    bad = tiny_model()
    bad.graph.node[0].input[1] = "missing_weight"
    with pytest.raises(onnx.checker.ValidationError):
        modelio.save_model(bad, tmp_path / "out" / "bad.onnx")
    assert sorted(os.listdir(out.parent)) == ["m.onnx"]  # an invalid model is never written


def test_save_switches_to_external_data_above_threshold(tmp_path, monkeypatch):
    monkeypatch.setattr(modelio, "EXTERNAL_DATA_THRESHOLD", 500)
    model = tiny_model()
    out = modelio.save_model(model, tmp_path / "big.onnx")
    assert (tmp_path / "big.onnx.data").is_file()
    assert model.graph.initializer[0].data_location == TensorProto.DEFAULT  # caller's proto untouched
    reloaded = modelio.load_model(out)
    x = np.ones((1, 3, 8, 8), np.float32)
    np.testing.assert_array_equal(run_ort(reloaded, {"x": x})[0], run_ort(model, {"x": x})[0])


def test_console_script_exit_code(tmp_path):
    p = tmp_path / "bad.onnx"
    p.write_text("garbage")
    proc = subprocess.run(
        [sys.executable, "-m", "onnxprune", "analyze", str(p)], capture_output=True, text=True
    )
    assert (
        proc.returncode == 2
        and proc.stderr.startswith("error: ")
        and len(proc.stderr.strip().splitlines()) == 1
    )


def test_newest_ir_version_runs_in_every_command(tmp_path, capsys):
    """onnx ≥ 1.23 writes IR 14, which onnxruntime 1.31 refuses even for opset 17: loading lowers the IR
    version where the opsets allow it, so every command runs (the file itself stays as it was)."""
    from tests.helpers import MODELS, digest, run_cli

    model = onnx.load(str(MODELS / "fmnist_resnet.onnx"))
    model.ir_version = onnx.IR_VERSION
    path = tmp_path / "ir.onnx"
    onnx.save(model, str(path))
    before = digest(path)
    calib = MODELS / "fmnist_calib.npz"
    assert modelio.load_model(path).ir_version == min(onnx.IR_VERSION, modelio.ort_max_ir_version())
    for args in (
        ("analyze", path),
        (
            "compress",
            path,
            "--calib",
            calib,
            "--calib-samples",
            "32",
            "--target",
            "1.2x",
            "--no-int8",
            "-o",
            tmp_path / "c",
        ),
        ("quantize", path, "--calib", calib, "--calib-samples", "32", "-o", tmp_path / "q"),
        ("bench", path, "--batch", "1", "--rounds", "2", "--warmup", "1"),
    ):
        code, _, err = run_cli(capsys, *args)
        assert code == 0, (args[0], err)
    assert digest(path) == before
    onnx.checker.check_model(str(tmp_path / "c" / "ir.pruned.onnx"), full_check=True)
