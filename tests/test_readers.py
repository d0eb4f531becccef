"""Calibration readers: npz / npy / image folders / script loaders, validation and the held-out split."""

from __future__ import annotations

import hashlib
import sys
import textwrap

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnxprune.calibration.readers import CalibrationSet, load_calibration

from onnxprune.errors import InputError
from tests.helpers import MODELS, run_ort

FLOAT, INT64 = TensorProto.FLOAT, TensorProto.INT64


def make_model(*inputs: tuple[str, int, list]) -> onnx.ModelProto:
    """Identity per input: only the graph inputs matter to the readers."""
    ins = [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs]
    outs = [helper.make_tensor_value_info(n + "_out", t, s) for n, t, s in inputs]
    nodes = [helper.make_node("Identity", [n], [n + "_out"]) for n, _, _ in inputs]
    graph = helper.make_graph(nodes, "g", ins, outs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def fmnist() -> onnx.ModelProto:
    return onnx.load(MODELS / "fmnist_resnet.onnx")


def save_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def rand(*shape, dtype=np.float32):
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


# --- npz / npy -------------------------------------------------------------------------------------


def test_npz_fmnist_real(fmnist):
    path = MODELS / "fmnist_calib.npz"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    cs = load_calibration(str(path), fmnist, samples=256, holdout=256)
    ref = np.load(path)["input"]
    assert isinstance(cs, CalibrationSet)
    assert (cs.n_calib(), cs.n_holdout()) == (256, 256)
    assert list(cs.calib) == list(cs.holdout) == ["input"]  # "labels" ignored
    assert cs.calib["input"].dtype == np.float32 and cs.calib["input"].shape == (256, 1, 28, 28)
    np.testing.assert_array_equal(cs.calib["input"], ref[:256])
    np.testing.assert_array_equal(cs.holdout["input"], ref[256:512])
    assert "npz, 512 samples" in cs.source and cs.warnings == []
    batches = list(cs.batches("holdout", batch_size=100))
    assert [len(b["input"]) for b in batches] == [100, 100, 56]
    (logits,) = run_ort(fmnist, batches[0])
    assert logits.shape == (100, 10) and np.isfinite(logits).all()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest  # input file untouched


def test_npz_multi_input_casts(tmp_path):
    model = make_model(("a", FLOAT, ["N", 4]), ("ids", INT64, ["N", "S"]))
    p = save_npz(
        tmp_path / "d.npz",
        a=rand(20, 4, dtype=np.float64),
        ids=np.arange(60, dtype=np.int32).reshape(20, 3),
        labels=np.zeros(20),
    )
    cs = load_calibration(p, model, samples=12, holdout=5)
    assert cs.calib["a"].dtype == np.float32 and cs.calib["ids"].dtype == np.int64
    assert (cs.n_calib(), cs.n_holdout()) == (12, 5)
    np.testing.assert_array_equal(cs.holdout["ids"][0], [36, 37, 38])  # file order, no shuffle


def test_float16_and_bool_cast(tmp_path):
    model = make_model(("x", FLOAT, ["N", 2]), ("m", TensorProto.BOOL, ["N", 2]))
    p = save_npz(tmp_path / "d.npz", x=rand(4, 2, dtype=np.float16), m=np.array([[0, 1]] * 4))
    cs = load_calibration(p, model, samples=2, holdout=2)
    assert cs.calib["x"].dtype == np.float32 and cs.calib["m"].dtype == np.bool_


def test_npy_single_input(tmp_path, fmnist):
    np.save(tmp_path / "x.npy", rand(10, 1, 28, 28, dtype=np.float64))
    cs = load_calibration(str(tmp_path / "x.npy"), fmnist, samples=4, holdout=3)
    assert (cs.n_calib(), cs.n_holdout()) == (4, 3)
    assert cs.calib["input"].dtype == np.float32 and "npy, 10 samples" in cs.source


def test_npy_multi_input_rejected(tmp_path):
    np.save(tmp_path / "x.npy", rand(4, 2))
    model = make_model(("a", FLOAT, ["N", 2]), ("b", FLOAT, ["N", 2]))
    with pytest.raises(InputError, match=r"\.npy file holds one array.*2 inputs \(a, b\)"):
        load_calibration(str(tmp_path / "x.npy"), model)


# --- split -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, samples, holdout, expect, warns",
    [
        (300, 256, 256, (256, 44), False),
        (10, 256, 256, (8, 2), True),
        (4, 256, 256, (3, 1), True),
        (256, 256, 256, (205, 51), True),
        (1, 256, 256, (1, 0), True),
        (10, 4, 0, (4, 0), False),
        (3, 8, 0, (3, 0), False),
        (10, 256, 1, (9, 1), True),
    ],
)
def test_split(tmp_path, n, samples, holdout, expect, warns):
    model = make_model(("x", FLOAT, ["N", 2]))
    data = np.arange(2 * n, dtype=np.float32).reshape(n, 2)
    cs = load_calibration(save_npz(tmp_path / "d.npz", x=data), model, samples=samples, holdout=holdout)
    assert (cs.n_calib(), cs.n_holdout()) == expect
    assert bool(cs.warnings) == warns
    both = np.concatenate([cs.calib["x"], cs.holdout["x"]])
    np.testing.assert_array_equal(both, data[: sum(expect)])  # disjoint, in file order
    if n == 1:
        assert "nothing held out" in cs.warnings[0]
    elif warns:
        assert f"holding out the last {expect[1]}" in cs.warnings[0]


def test_fixed_batch(tmp_path):
    model = make_model(("x", FLOAT, [2, 3]))
    cs = load_calibration(save_npz(tmp_path / "d.npz", x=rand(5, 3)), model, samples=5, holdout=0)
    assert cs.fixed_batch == 2
    assert [len(b["x"]) for b in cs.batches(batch_size=32)] == [2, 2]
    assert any("fixed batch of 2" in w for w in cs.warnings)
    with pytest.raises(ValueError):
        next(cs.batches("eval"))
    # the first n samples in whole batches: several with a static batch, one slice without
    assert [len(b["x"]) for b in cs.first("calib", 3)] == [2, 2]
    assert [len(b["x"]) for b in cs.first("calib", 32)] == [2, 2]
    dynamic = load_calibration(
        save_npz(tmp_path / "e.npz", x=rand(5, 3)), make_model(("x", FLOAT, ["N", 3])), samples=5, holdout=0
    )
    assert [len(b["x"]) for b in dynamic.first("calib", 3)] == [3]
    assert [len(b["x"]) for b in dynamic.first("calib", 5, 2)] == [2, 2, 1]
    assert [len(b["x"]) for b in cs.first("calib", 4, 32)] == [2, 2]  # the static batch wins over ``batch``


# --- validation errors -----------------------------------------------------------------------------


def test_missing_input_names_both(tmp_path, fmnist):
    p = save_npz(tmp_path / "d.npz", images=rand(4, 1, 28, 28), labels=np.zeros(4))
    with pytest.raises(InputError, match=r"no input 'input' \(found keys: images, labels"):
        load_calibration(p, fmnist)


def test_shape_mismatch_message(tmp_path, fmnist):
    p = save_npz(tmp_path / "d.npz", input=rand(16, 1, 32, 32))
    with pytest.raises(InputError) as e:
        load_calibration(p, fmnist)
    assert str(e.value) == "calibration input 'input': expected shape [N, 1, 28, 28], got [16, 1, 32, 32]"
    assert e.value.exit_code == 2


def test_rank_mismatch(tmp_path, fmnist):
    with pytest.raises(InputError, match=r"expected shape \[N, 1, 28, 28\], got \[4, 28, 28\]"):
        load_calibration(save_npz(tmp_path / "d.npz", input=rand(4, 28, 28)), fmnist)


def test_int_data_for_float_input(tmp_path, fmnist):
    p = save_npz(tmp_path / "d.npz", input=np.zeros((4, 1, 28, 28), np.uint8))
    with pytest.raises(InputError, match=r"'input': expected dtype float32, got uint8"):
        load_calibration(p, fmnist)


def test_float_data_for_int_input(tmp_path):
    model = make_model(("ids", INT64, ["N", 8]))
    with pytest.raises(InputError, match=r"'ids': expected dtype int64, got float32"):
        load_calibration(save_npz(tmp_path / "d.npz", ids=rand(4, 8)), model)


def test_int_out_of_range(tmp_path):
    model = make_model(("ids", TensorProto.INT8, ["N", 2]))
    with pytest.raises(InputError, match="out of range for int8"):
        load_calibration(save_npz(tmp_path / "d.npz", ids=np.full((3, 2), 300)), model)


def test_empty_data(tmp_path, fmnist):
    with pytest.raises(InputError, match="empty"):
        load_calibration(save_npz(tmp_path / "d.npz", input=np.zeros((0, 1, 28, 28), np.float32)), fmnist)


def test_scalar_data(tmp_path, fmnist):
    with pytest.raises(InputError, match="scalar"):
        load_calibration(save_npz(tmp_path / "d.npz", input=np.float32(1)), fmnist)


def test_sample_count_mismatch(tmp_path):
    model = make_model(("a", FLOAT, ["N", 2]), ("b", FLOAT, ["N", 2]))
    with pytest.raises(InputError, match=r"different sample counts: 'a' 4, 'b' 5"):
        load_calibration(save_npz(tmp_path / "d.npz", a=rand(4, 2), b=rand(5, 2)), model)


@pytest.mark.parametrize("value, word", [(np.nan, "NaN"), (np.inf, "infinite"), (-np.inf, "infinite")])
def test_non_finite_values_are_refused_with_the_sample(tmp_path, value, word):
    data = rand(4, 2)
    data[2, 1] = value
    with pytest.raises(InputError, match=f"'x' holds {word} values \\(first in sample 2\\)"):
        load_calibration(save_npz(tmp_path / "d.npz", x=data), make_model(("x", FLOAT, ["N", 2])))


@pytest.mark.parametrize(
    "name, content, pattern",
    [
        ("nope.npz", None, "calibration data not found"),
        ("d.txt", b"hi", "unsupported calibration data"),
        ("d.npz", b"not a zip", "cannot read .* as .npz"),
        ("loader.py", b"def f(): pass\n", r"needs a function: pass .*loader.py:FUNCTION"),
    ],
)
def test_bad_spec(tmp_path, fmnist, name, content, pattern):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(InputError, match=pattern):
        load_calibration(str(tmp_path / name), fmnist)


def test_bad_counts_args(tmp_path, fmnist):
    with pytest.raises(InputError, match="at least 1"):
        load_calibration(str(MODELS / "fmnist_calib.npz"), fmnist, samples=0)


# --- script loader ---------------------------------------------------------------------------------


def write_script(tmp_path, body: str, name="loader.py") -> str:
    (tmp_path / name).write_text(textwrap.dedent(body))
    return str(tmp_path / name)


def test_script_loader(tmp_path):
    (tmp_path / "helper_mod.py").write_text("WIDTH = 3\n")
    path = write_script(
        tmp_path,
        """
        import numpy as np
        from helper_mod import WIDTH   # the script's folder is importable

        def batches():
            for i in range(4):
                yield {"x": np.full((5, WIDTH), i, np.float64), "ids": np.arange(5).reshape(5, 1)}
    """,
    )
    model = make_model(("x", FLOAT, ["N", 3]), ("ids", INT64, ["N", 1]))
    cs = load_calibration(f"{path}:batches", model, samples=12, holdout=6)
    assert (cs.n_calib(), cs.n_holdout()) == (12, 6)
    assert cs.calib["x"].dtype == np.float32 and cs.calib["ids"].dtype == np.int64
    np.testing.assert_array_equal(cs.holdout["x"][:, 0], [2, 2, 2, 3, 3, 3])
    assert "script" in cs.source
    assert str(tmp_path) not in sys.path and not any(m.startswith("_onnxprune_calib") for m in sys.modules)


def test_script_infinite_generator_stops(tmp_path):
    path = write_script(
        tmp_path,
        """
        import itertools
        import numpy as np

        def forever():
            for i in itertools.count():
                yield {"x": np.full((4, 2), i, np.float32)}
    """,
    )
    cs = load_calibration(f"{path}:forever", make_model(("x", FLOAT, ["N", 2])), samples=8, holdout=3)
    assert (cs.n_calib(), cs.n_holdout()) == (8, 3)


def test_script_single_dict(tmp_path):
    path = write_script(tmp_path, "import numpy as np\ndef one():\n    return {'x': np.ones((3, 2))}\n")
    cs = load_calibration(f"{path}:one", make_model(("x", FLOAT, ["N", 2])), samples=2, holdout=1)
    assert (cs.n_calib(), cs.n_holdout()) == (2, 1)


@pytest.mark.parametrize(
    "body, func, pattern",
    [
        ("def f():\n    raise ValueError('boom')\n", "f", r"raised ValueError: boom"),
        ("raise RuntimeError('at import')\n", "f", r"raised RuntimeError: at import"),
        ("def f():\n    return []\n", "g", r"has no function 'g'"),
        ("def f():\n    return 3\n", "f", r"returned int, expected an iterable"),
        ("def f():\n    return [[1, 2]]\n", "f", r"item 0 is list"),
        ("def f():\n    return []\n", "f", r"yielded no data"),
        (
            "import numpy as np\ndef f():\n    return [{'x': np.ones((2, 2))}, {'y': np.ones((2, 2))}]\n",
            "f",
            r"item 1 has keys",
        ),
        ("import sys\ndef f():\n    sys.exit(3)\n", "f", r"raised SystemExit"),
    ],
)
def test_script_errors(tmp_path, body, func, pattern):
    path = write_script(tmp_path, body)
    with pytest.raises(InputError, match=pattern):
        load_calibration(f"{path}:{func}", make_model(("x", FLOAT, ["N", 2])))


def test_script_missing_file(tmp_path):
    with pytest.raises(InputError, match="calibration script not found"):
        load_calibration(f"{tmp_path}/none.py:f", make_model(("x", FLOAT, ["N", 2])))


def test_non_image_options_warn(tmp_path):
    p = save_npz(tmp_path / "d.npz", x=rand(4, 2))
    cs = load_calibration(p, make_model(("x", FLOAT, ["N", 2])), preprocess="raw", samples=2)
    assert any("image folders only" in w for w in cs.warnings)


# --- image folders ---------------------------------------------------------------------------------


def gray(value, size=(12, 10)):
    from PIL import Image

    return Image.new("RGB", size, (value, value, value))


def red_center(w=64, h=32, border=8):
    """Red image with blue left/right bands of ``border`` columns."""
    from PIL import Image

    a = np.zeros((h, w, 3), np.uint8)
    a[:, :, 0] = 255
    a[:, :border] = a[:, w - border :] = (0, 0, 255)
    return Image.fromarray(a)


@pytest.fixture
def pil():
    return pytest.importorskip("PIL")


NCHW8 = ("input", FLOAT, ["N", 3, 8, 8])


def test_images_preprocess_values(tmp_path, pil):
    gray(128).save(tmp_path / "g.png")
    model = make_model(NCHW8)
    got = {
        p: load_calibration(str(tmp_path), model, preprocess=p).calib["input"]
        for p in ("imagenet", "effnet", "raw")
    }
    for x in got.values():
        assert x.shape == (1, 3, 8, 8) and x.dtype == np.float32
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(got["imagenet"][0, :, 0, 0], (128 / 255 - mean) / std, rtol=1e-5)
    np.testing.assert_allclose(got["effnet"], 1 / 128)
    np.testing.assert_allclose(got["raw"], 128 / 255, rtol=1e-6)


def test_images_center_crop(tmp_path, pil):
    red_center().save(tmp_path / "rc.png")
    model = make_model(NCHW8)
    for pre in ("imagenet", "effnet"):  # resize shorter side to 9, crop the central 8x8: all red
        x = load_calibration(str(tmp_path), model, preprocess=pre).calib["input"][0]
        assert (x[0] > 0.9).all() and (x[2] < -0.9).all(), pre
    x = load_calibration(str(tmp_path), model, preprocess="raw").calib["input"][0]  # no crop
    assert (x[2, :, [0, -1]] > 0.5).all() and (x[0, :, [0, -1]] < 0.5).all()  # blue bands kept
    assert (x[0, :, 3:5] > 0.9).all() and (x[2, :, 3:5] < 0.1).all()


def test_images_order_recursive_default_and_nhwc(tmp_path, pil):
    (tmp_path / "sub").mkdir()
    gray(10).save(tmp_path / "b.png")
    gray(20).save(tmp_path / "a.jpg", quality=100)
    gray(30).save(tmp_path / "sub" / "c.bmp")
    gray(40).save(tmp_path / "d.webp", lossless=True)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "bad.png").write_bytes(b"garbage")
    model = make_model(("input", FLOAT, ["N", 8, 8, 3]))
    cs = load_calibration(str(tmp_path), model, samples=3, holdout=2)
    assert cs.calib["input"].shape == (3, 8, 8, 3) and cs.holdout["input"].shape == (1, 8, 8, 3)
    x = np.concatenate([cs.calib["input"], cs.holdout["input"]])
    pixels = (x[:, 4, 4, 1] * 0.224 + 0.456) * 255  # undo imagenet normalization (green)
    np.testing.assert_allclose(pixels, [20, 10, 40, 30], atol=1)  # a, b, d, sub/c
    assert any("imagenet" in w for w in cs.warnings)  # default preprocess
    assert any("unreadable" in w and "bad.png" in w for w in cs.warnings)
    assert "5 images" in cs.source and "NHWC" in cs.source


def test_images_grayscale_and_input_size(tmp_path, pil):
    red_center().save(tmp_path / "x.png")
    gray_model = make_model(("input", FLOAT, ["N", 1, 8, 8]))
    cs = load_calibration(str(tmp_path), gray_model, preprocess="raw")
    assert cs.calib["input"].shape == (1, 1, 8, 8)
    dyn = make_model(("input", FLOAT, ["N", 3, "H", "W"]))
    with pytest.raises(InputError, match="--input-size"):
        load_calibration(str(tmp_path), dyn)
    assert load_calibration(str(tmp_path), dyn, input_size=5).calib["input"].shape == (1, 3, 5, 5)
    with pytest.raises(InputError, match=r"expected shape \[N, 3, 8, 8\], got \[1, 3, 16, 16\]"):
        load_calibration(str(tmp_path), make_model(NCHW8), input_size=16)


def test_images_errors(tmp_path, pil, monkeypatch):
    model = make_model(NCHW8)
    with pytest.raises(InputError, match="no images"):
        load_calibration(str(tmp_path), model)
    gray(1).save(tmp_path / "g.png")
    with pytest.raises(InputError, match="unknown --preprocess 'vgg'"):
        load_calibration(str(tmp_path), model, preprocess="vgg")
    with pytest.raises(InputError, match="single-input models only"):
        load_calibration(str(tmp_path), make_model(NCHW8, ("b", FLOAT, ["N", 2])))
    with pytest.raises(InputError, match="float inputs only"):
        load_calibration(str(tmp_path), make_model(("input", TensorProto.UINT8, ["N", 3, 8, 8])))
    with pytest.raises(InputError, match="channel axis"):
        load_calibration(str(tmp_path), make_model(("input", FLOAT, ["N", 4, 8, 8])))
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(InputError, match=r"needs Pillow: pip install 'onnxprune\[images\]'"):
        load_calibration(str(tmp_path), model)


@pytest.mark.parametrize("compressed", [True, False])
def test_npz_reads_only_the_samples_it_needs_and_equals_a_full_read(tmp_path, compressed):
    """The prefix reader (C-ordered members) and the whole-array fallback (Fortran order) give the same
    rows."""
    model = make_model(
        ("x", TensorProto.FLOAT, ["N", 3, 4]),
        ("ids", TensorProto.INT64, ["N", 5]),
        ("f", TensorProto.FLOAT, ["N", 6]),
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 3, 4)).astype(np.float32)
    ids = rng.integers(0, 1000, size=(100, 5))
    f = np.asfortranarray(rng.normal(size=(100, 6)).astype(np.float32))
    path = tmp_path / "c.npz"
    (np.savez_compressed if compressed else np.savez)(path, x=x, ids=ids, f=f, labels=np.arange(100))
    cal = load_calibration(str(path), model, samples=10, holdout=5)
    for key, full in (("x", x), ("ids", ids), ("f", f)):
        np.testing.assert_array_equal(cal.calib[key], full[:10])
        np.testing.assert_array_equal(cal.holdout[key], full[10:15])
    assert "100 samples" in cal.source


def test_npz_members_of_different_lengths_are_still_refused(tmp_path):
    model = make_model(("a", TensorProto.FLOAT, ["N", 2]), ("b", TensorProto.FLOAT, ["N", 2]))
    path = tmp_path / "c.npz"
    np.savez_compressed(path, a=np.zeros((8, 2), np.float32), b=np.zeros((9, 2), np.float32))
    with pytest.raises(InputError, match="different sample counts: 'a' 8, 'b' 9"):
        load_calibration(str(path), model, samples=2, holdout=1)


@pytest.mark.parametrize("where", ["header", "inside the rows read", "after the rows read"])
def test_corrupt_npz_is_a_clear_input_error(tmp_path, where):
    """Only the first samples are kept, but the whole member is still checked (the zip CRC sits at its end):
    corruption anywhere is exit-2 input, never silently wrong calibration data nor an unexpected crash."""
    model = make_model(("x", TensorProto.FLOAT, ["N", 64]))
    path = tmp_path / "c.npz"
    np.savez_compressed(path, x=np.random.default_rng(0).normal(size=(400, 64)).astype(np.float32))
    data = bytearray(path.read_bytes())
    pos = {"header": 60, "inside the rows read": len(data) // 8, "after the rows read": len(data) * 3 // 4}[
        where
    ]
    for i in range(pos, pos + 32):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"cannot read .*c\.npz as \.npz"):
        load_calibration(str(path), model, samples=4, holdout=4)


# --- groups: the source of each sample ---------------------------------------------------------------


def test_npz_groups_follow_the_calibration_slice_and_warn_when_held_out_shares_them(tmp_path):
    model = make_model(("x", TensorProto.FLOAT, ["N", 3]))
    photos = np.array([0, 1, 2, 3, 0, 1, 2, 3, 4, 5])  # view-major: two views of photos 0-3, then 4, 5
    path = save_npz(tmp_path / "g.npz", x=rand(10, 3), groups=photos)
    cal = load_calibration(path, model, samples=4, holdout=6)
    np.testing.assert_array_equal(cal.groups, [0, 1, 2, 3])
    assert any("4 of 6 held-out samples share a group" in w for w in cal.warnings)
    clean = load_calibration(
        save_npz(tmp_path / "h.npz", x=rand(6, 3), groups=np.array(list("aabbcc"))),
        model,
        samples=4,
        holdout=2,
    )
    assert clean.groups.tolist() == list("aabb") and clean.warnings == []


def test_npz_without_groups_or_with_a_groups_input_has_no_groups(tmp_path):
    plain = load_calibration(
        save_npz(tmp_path / "p.npz", x=rand(6, 3)), make_model(("x", FLOAT, ["N", 3])), samples=4, holdout=2
    )
    assert plain.groups is None
    model = make_model(("x", FLOAT, ["N", 3]), ("groups", FLOAT, ["N", 3]))  # a model input wins over the key
    cal = load_calibration(
        save_npz(tmp_path / "q.npz", x=rand(6, 3), groups=rand(6, 3)), model, samples=4, holdout=2
    )
    assert cal.groups is None and cal.calib["groups"].shape == (4, 3)


@pytest.mark.parametrize(
    "groups, got",
    [
        (np.zeros((6, 2), np.int64), r"int64 of shape \[6, 2\]"),
        (np.arange(5), r"int64 of shape \[5\]"),
        (np.linspace(0, 1, 6), r"float64 of shape \[6\]"),
    ],
)
def test_bad_groups_are_a_one_line_input_error(tmp_path, groups, got):
    path = save_npz(tmp_path / "b.npz", x=rand(6, 3), groups=groups)
    with pytest.raises(
        InputError,
        match=r"calibration 'groups' in .*b\.npz must hold one integer or string per "
        rf"sample \(6\), got {got}",
    ):
        load_calibration(path, make_model(("x", FLOAT, ["N", 3])), samples=4, holdout=2)


def test_script_feeds_may_carry_groups(tmp_path):
    body = """
    import numpy as np
    def load():
        for i in range(3):
            yield {"x": np.full((4, 3), i, np.float32), "groups": np.array([i, i, i + 10, i + 10])}
    """
    model = make_model(("x", FLOAT, ["N", 3]))
    cal = load_calibration(write_script(tmp_path, body) + ":load", model, samples=8, holdout=4)
    assert cal.groups.tolist() == [0, 0, 10, 10, 1, 1, 11, 11] and "groups" not in cal.calib
    bad = """
    import numpy as np
    def load():
        yield {"x": np.zeros((4, 3), np.float32), "groups": np.zeros((4, 2))}
    """
    with pytest.raises(
        InputError, match=r"calibration 'groups' in .*:load must hold one integer or string per sample"
    ):
        load_calibration(write_script(tmp_path, bad, "bad.py") + ":load", model, samples=2, holdout=1)
