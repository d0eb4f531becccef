"""Hostile input: a corpus of broken models, calibration data, scripts, options and output folders, each
generated here. Every case must meet the contract: the documented exit code, exactly one line on stderr
naming the problem (``error: ...``), no traceback, every input file byte for byte as it was, and no
output at all (the output folder is not even left behind)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from models import synthetic
from tests.helpers import run_cli

HUGE = 2**40


def _conv_model() -> onnx.ModelProto:
    return synthetic.build("conv_chain")


def _save(tmp: Path, model: onnx.ModelProto, name: str = "m.onnx") -> Path:
    path = tmp / name
    path.write_bytes(model.SerializeToString())
    return path


def _calib(tmp: Path, model: onnx.ModelProto, n: int = 24, name: str = "calib.npz", **override) -> Path:
    feeds = synthetic.random_inputs(model, batch=n, seed=1)
    feeds.update(override)
    np.savez(tmp / name, **feeds)
    return tmp / name


def _first_float_init(model: onnx.ModelProto) -> onnx.TensorProto:
    return next(t for t in model.graph.initializer if t.data_type == TensorProto.FLOAT and len(t.dims) > 1)


def _poisoned(value: float) -> onnx.ModelProto:
    model = _conv_model()
    t = _first_float_init(model)
    a = numpy_helper.to_array(t).copy()
    a.flat[3] = value
    t.CopyFrom(numpy_helper.from_array(a, t.name))
    return model


def _tiny(nodes, inits=(), inputs=None, outputs=None, opset: int = 17, domains=()) -> onnx.ModelProto:
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])]
    outputs = outputs or [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["d0", "d1", "d2", "d3"])]
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, list(inits))
    opsets = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, 1) for d in domains)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def _conv_node(name="conv", x="x", y="y", w="w"):
    return helper.make_node("Conv", [x, w], [y], name=name, pads=[1, 1, 1, 1], kernel_shape=[3, 3])


def _weight(shape, name="w"):
    return numpy_helper.from_array(np.random.default_rng(0).normal(size=shape).astype(np.float32), name)


def _custom_domain() -> onnx.ModelProto:
    model = _conv_model()
    first = model.graph.node[0]
    out = first.output[0]
    first.output[0] = out + "_pre"
    model.graph.node.insert(
        1, helper.make_node("Scramble", [out + "_pre"], [out], name="scramble", domain="com.example")
    )
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    return model


def _duplicate_tensor_name() -> onnx.ModelProto:
    """A node output named like an initializer (the graph defines tensor 'w2' twice)."""
    return _tiny(
        [_conv_node("c1", y="w2"), _conv_node("c2", x="w2", w="w2b")],
        [_weight([4, 3, 3, 3]), _weight([4, 4, 3, 3], "w2b"), _weight([4, 3, 3, 3], "w2")],
    )


def _shadowing() -> onnx.ModelProto:
    """A node whose output has the name of the initializer it reads (the checker lets it through)."""
    return _tiny(
        [
            _conv_node(y="h"),
            helper.make_node("Relu", ["w"], ["w"], name="w"),
            helper.make_node("Identity", ["h"], ["y"], name="out"),
        ],
        [_weight([4, 3, 3, 3])],
    )


def _filled(dims: list[int]) -> onnx.ModelProto:
    """x [N, 1, 1, 1] times a ConstantOfShape of ``dims``."""
    shape = numpy_helper.from_array(np.array(dims, np.int64), "shape")
    return _tiny(
        [
            helper.make_node("ConstantOfShape", ["shape"], ["big"], name="fill"),
            helper.make_node("Mul", ["x", "big"], ["y"], name="mul"),
        ],
        [shape],
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 1, 1])],
    )


def _expand_bomb() -> onnx.ModelProto:
    shape = numpy_helper.from_array(np.array([1024, 4, 2**15, 2**15], np.int64), "shape")
    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    return _tiny(
        [
            _conv_node(y="h"),
            helper.make_node("ReduceMean", ["h", "axes"], ["m"], name="mean"),
            helper.make_node("Expand", ["m", "shape"], ["y"], name="expand"),
        ],
        [_weight([4, 3, 3, 3]), shape, axes],
        opset=18,
    )


def _huge_input() -> onnx.ModelProto:
    return _tiny(
        [helper.make_node("Relu", ["x"], ["y"], name="relu")],
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, HUGE])],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, HUGE])],
    )


def _log_model() -> onnx.ModelProto:
    """Conv → Log: the log of negative conv outputs is NaN on every calibration sample."""
    return _tiny(
        [_conv_node(y="h"), helper.make_node("Log", ["h"], ["y"], name="log")], [_weight([4, 3, 3, 3])]
    )


def _zero_macs() -> onnx.ModelProto:
    return _tiny(
        [
            helper.make_node("Relu", ["x"], ["h"], name="relu"),
            helper.make_node("Add", ["h", "x"], ["y"], name="add"),
        ]
    )


def _nothing_prunable() -> onnx.ModelProto:
    return _tiny([_conv_node()], [_weight([4, 3, 3, 3])])


def _external(tmp: Path, location: str) -> onnx.ModelProto:
    model = _conv_model()
    t = _first_float_init(model)
    data = numpy_helper.to_array(t).tobytes()
    t.ClearField("float_data")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    del t.external_data[:]
    for k, v in (("location", location), ("offset", "0"), ("length", str(len(data)))):
        t.external_data.add(key=k, value=v)
    if not os.path.isabs(location) and ".." not in location:
        (tmp / location).write_bytes(data[: len(data) // 2] if "short" in location else data)
    return model


def _npz_bomb(path: Path, key: str = "x") -> None:
    """A .npz whose member claims 2^37 float32 in Fortran order: kilobytes on disk, 512 GiB decompressed."""
    header = {"descr": "<f4", "fortran_order": True, "shape": (2**13, 3, 2**12, 2**12)}
    buf = bytearray(np.lib.format.magic(1, 0))
    text = repr(header).encode("latin1")
    text += b" " * (64 - (len(buf) + 2 + len(text) + 1) % 64) + b"\n"
    buf += len(text).to_bytes(2, "little") + text
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z,
        z.open(f"{key}.npy", "w", force_zip64=True) as f,
    ):
        f.write(bytes(buf))
        zeros = bytes(1 << 20)
        for _ in range(64):
            f.write(zeros)


def _script(tmp: Path, body: str, name: str = "feed.py") -> Path:
    path = tmp / name
    path.write_text(body)
    return path


def _option_case(*options: str):
    """compress with calibration data and ``options``."""
    return lambda t: _compress(t, _conv_model(), *options)


def _script_case(body: str):
    """compress with ``--calib`` a script whose function ``feed`` is ``body``'s."""
    return lambda t: _compress(t, _conv_model(), "--calib", str(_script(t, body)) + ":feed", calib=False)


EMPTY_BATCHES = """import numpy as np


def feed():
    while True:
        yield {"x": np.zeros((0, 3, 16, 16), np.float32)}
"""


@dataclass
class Case:
    name: str
    make: Callable[[Path], list]  # tmp → argv (the output folder is appended for compress / quantize)
    code: int = 2
    words: tuple[str, ...] = ()


def _cmd(command: str, model: Path, *rest) -> list:
    return [command, model, *rest]


def _compress(tmp, model, *rest, calib=True):
    path = _save(tmp, model) if isinstance(model, onnx.ModelProto) else model
    args = ["compress", path, "--no-int8"]
    if calib:
        args += ["--calib", _calib(tmp, model if isinstance(model, onnx.ModelProto) else _conv_model())]
    return [*args, *rest]


CASES = [
    # -- the model file -------------------------------------------------------------------------
    Case("missing model", lambda t: _compress(t, t / "none.onnx", calib=False), 2, ("not found",)),
    Case("empty model file", lambda t: _compress(t, _touch(t / "e.onnx"), calib=False), 2, ("empty",)),
    Case("directory as model", lambda t: _compress(t, t, calib=False), 2, ("directory",)),
    Case(
        "random bytes", lambda t: _compress(t, _bytes(t, os.urandom(4096)), calib=False), 2, ("not an ONNX",)
    ),
    Case("text file", lambda t: _compress(t, _bytes(t, b"hello, I am a model"), calib=False), 2, ("ONNX",)),
    Case("json file", lambda t: ["analyze", _bytes(t, json.dumps({"graph": []}).encode())], 2, ("ONNX",)),
    Case(
        "truncated half",
        lambda t: ["analyze", _bytes(t, _conv_model().SerializeToString()[:3000])],
        2,
        ("truncated",),
    ),
    Case(
        "truncated 10 bytes",
        lambda t: ["analyze", _bytes(t, _conv_model().SerializeToString()[:10])],
        2,
        ("ONNX",),
    ),
    Case(
        "a tensor, not a model",
        lambda t: ["analyze", _bytes(t, _weight([3, 3]).SerializeToString())],
        2,
        ("ONNX",),
    ),
    Case("no nodes", lambda t: ["analyze", _save(t, _tiny([]))], 2, ("empty graph",)),
    Case(
        "undefined input",
        lambda t: ["analyze", _save(t, _tiny([_conv_node(x="ghost")], [_weight([4, 3, 3, 3])]))],
        2,
        ("not a valid ONNX model",),
    ),
    Case(
        "unsorted nodes",
        lambda t: [
            "analyze",
            _save(
                t,
                _tiny(
                    [_conv_node("b", x="h"), _conv_node("a", y="h", w="v")],
                    [_weight([4, 4, 3, 3]), _weight([4, 3, 3, 3], "v")],
                ),
            ),
        ],
        2,
        ("not a valid ONNX model",),
    ),
    Case("tensor defined twice", lambda t: ["analyze", _save(t, _duplicate_tensor_name())], 2, ("'w2'",)),
    Case(
        "node output shadows the initializer it reads",
        lambda t: ["analyze", _save(t, _shadowing())],
        2,
        ("'w'",),
    ),
    Case(
        "opset 99 analyze",
        lambda t: ["analyze", _save(t, _tiny([_conv_node()], [_weight([4, 3, 3, 3])], opset=99))],
        2,
        ("opset 99",),
    ),
    Case(
        "opset 99 compress",
        lambda t: _compress(t, _tiny([_conv_node()], [_weight([4, 3, 3, 3])], opset=99)),
        2,
        ("opset 99",),
    ),
    Case("custom domain op compress", lambda t: _compress(t, _custom_domain()), 2, ("com.example",)),
    Case(
        "custom domain op quantize",
        lambda t: ["quantize", _save(t, _custom_domain()), "--calib", _calib(t, _conv_model())],
        2,
        ("com.example",),
    ),
    Case(
        "custom domain op bench",
        lambda t: ["bench", _save(t, _custom_domain()), "--rounds", "2"],
        2,
        ("com.example",),
    ),
    Case(
        "unknown op",
        lambda t: ["analyze", _save(t, _tiny([helper.make_node("Frobnicate", ["x"], ["y"], name="f")]))],
        2,
        ("Frobnicate",),
    ),
    Case("nan weights", lambda t: _compress(t, _poisoned(np.nan)), 2, ("NaN",)),
    Case("inf weights", lambda t: _compress(t, _poisoned(np.inf)), 2, ("infinite",)),
    Case(
        "nan weights quantize",
        lambda t: ["quantize", _save(t, _poisoned(np.nan)), "--calib", _calib(t, _conv_model())],
        2,
        ("NaN",),
    ),
    Case(
        "zero-size conv weight",
        lambda t: _compress(t, _tiny([_conv_node()], [_weight([0, 3, 3, 3])])),
        2,
        ("empty",),
    ),
    Case(
        "zero-size conv weight analyze",
        lambda t: ["analyze", _save(t, _tiny([_conv_node()], [_weight([0, 3, 3, 3])]))],
        2,
        ("empty",),
    ),
    Case("huge declared input bench", lambda t: ["bench", _save(t, _huge_input())], 2, ("elements",)),
    Case("huge declared input analyze", lambda t: ["analyze", _save(t, _huge_input())], 2, ("elements",)),
    Case("constant-of-shape bomb", lambda t: ["analyze", _save(t, _filled([1024] * 4))], 2, ("elements",)),
    Case("expand bomb", lambda t: ["analyze", _save(t, _expand_bomb())], 2, ("elements",)),
    # 2^29 elements (2 GiB): within the limits, but too large to fold into the graph
    Case(
        "large computed constant: nothing to prune",
        lambda t: _compress(t, _filled([1, 512, 1024, 1024]), calib=False),
        3,
        ("MACs",),
    ),
    Case(
        "external data absolute",
        lambda t: ["analyze", _save(t, _external(t, "/etc/passwd"))],
        2,
        ("absolute",),
    ),
    Case(
        "external data escape",
        lambda t: ["analyze", _save(t, _external(t, "../secret.bin"))],
        2,
        ("escapes",),
    ),
    Case("external data missing", lambda t: ["analyze", _save(t, _external_missing(t))], 2, ("not found",)),
    Case(
        "external data truncated",
        lambda t: ["analyze", _save(t, _external(t, "short.bin"))],
        2,
        ("truncated",),
    ),
    Case("external data symlink out", lambda t: ["analyze", _save(t, _external_symlink(t))], 2, ("escapes",)),
    Case("ir version 0", lambda t: ["analyze", _save(t, _ir(_conv_model(), 0))], 2, ("ONNX",)),
    Case("model computes NaN on the data", lambda t: _compress(t, _log_model()), 2, ("NaN", "'y'")),
    Case("nothing to prune: no MACs", lambda t: _compress(t, _zero_macs()), 3, ("MACs",)),
    Case("nothing to prune: no group", lambda t: _compress(t, _nothing_prunable()), 3, ("unreachable",)),
    Case(
        "nothing to prune: params",
        lambda t: _compress(t, _nothing_prunable(), "--metric", "params"),
        3,
        ("unreachable",),
    ),
    # -- calibration data -----------------------------------------------------------------------
    Case(
        "calib missing",
        lambda t: _compress(t, _conv_model(), "--calib", t / "none.npz", calib=False),
        2,
        ("not found",),
    ),
    Case(
        "calib unknown kind",
        lambda t: _compress(t, _conv_model(), "--calib", _bytes(t, b"1,2,3", "c.csv"), calib=False),
        2,
        ("unsupported",),
    ),
    Case(
        "calib wrong key",
        lambda t: _compress(t, _conv_model(), "--calib", _npz(t, y=np.zeros((4, 3, 16, 16))), calib=False),
        2,
        ("no input 'x'",),
    ),
    Case(
        "calib wrong shape",
        lambda t: _compress(t, _conv_model(), "--calib", _npz(t, x=np.zeros((4, 3, 9, 9))), calib=False),
        2,
        ("expected shape",),
    ),
    Case(
        "calib strings",
        lambda t: _compress(t, _conv_model(), "--calib", _npz(t, x=np.array([["a"] * 3] * 4)), calib=False),
        2,
        ("'x'",),
    ),
    Case(
        "calib nan",
        lambda t: _compress(t, _conv_model(), "--calib", _npz(t, x=_with(np.nan)), calib=False),
        2,
        ("NaN", "sample 5"),
    ),
    Case(
        "calib inf",
        lambda t: _compress(t, _conv_model(), "--calib", _npz(t, x=_with(-np.inf)), calib=False),
        2,
        ("infinite",),
    ),
    Case(
        "calib nan quantize",
        lambda t: ["quantize", _save(t, _conv_model()), "--calib", _npz(t, x=_with(np.nan))],
        2,
        ("NaN",),
    ),
    Case(
        "calib zip bomb",
        lambda t: _compress(t, _conv_model(), "--calib", _bomb(t), calib=False),
        2,
        ("too large",),
    ),
    Case(
        "calib corrupt zip",
        lambda t: _compress(
            t, _conv_model(), "--calib", _bytes(t, b"PK\x03\x04garbage", "c.npz"), calib=False
        ),
        2,
        ("cannot read",),
    ),
    Case(
        "calib pickled objects",
        lambda t: _compress(t, _conv_model(), "--calib", _pickled(t), calib=False),
        2,
        ("cannot read",),
    ),
    Case(
        "calib empty",
        lambda t: _compress(t, _conv_model(), "--calib", _npz(t, x=np.zeros((0, 3, 16, 16))), calib=False),
        2,
        ("empty",),
    ),
    Case(
        "calib scalar",
        lambda t: _compress(t, _conv_model(), "--calib", _npz(t, x=np.float32(1)), calib=False),
        2,
        ("scalar",),
    ),
    Case(
        "calib counts differ",
        lambda t: _compress(
            t,
            _two_inputs(),
            "--calib",
            _npz(t, a=np.zeros((4, 4), np.float32), b=np.zeros((5, 4), np.float32)),
            calib=False,
        ),
        2,
        ("different sample counts",),
    ),
    Case(
        "calib groups wrong length",
        lambda t: _compress(
            t, _conv_model(), "--calib", _npz(t, x=_with(0.0), groups=np.arange(3)), calib=False
        ),
        2,
        ("groups",),
    ),
    Case(
        "npy for two inputs",
        lambda t: _compress(t, _two_inputs(), "--calib", _npy(t), calib=False),
        2,
        (".npy",),
    ),
    Case(
        "script missing",
        lambda t: _compress(t, _conv_model(), "--calib", f"{t / 'none.py'}:feed", calib=False),
        2,
        ("not found",),
    ),
    Case(
        "script without function",
        lambda t: _compress(t, _conv_model(), "--calib", str(_script(t, "x = 1\n")), calib=False),
        2,
        ("function",),
    ),
    *(
        Case(name, _script_case(body), 2, words)
        for name, body, words in (
            ("script syntax error", "def feed(:\n", ("SyntaxError",)),
            ("script raises", "def feed():\n    raise RuntimeError(7)\n", ("RuntimeError",)),
            ("script exits", "import sys\ndef feed():\n    sys.exit(3)\n", ("SystemExit",)),
            ("script returns a number", "def feed():\n    return 5\n", ("iterable",)),
            ("script yields strings", 'def feed():\n    yield "x"\n', ("expected a dict",)),
            (
                "script yields empty dicts forever",
                "def feed():\n    while True:\n        yield {}\n",
                ("empty",),
            ),
            ("script yields empty batches forever", EMPTY_BATCHES, ("no samples",)),
            ("script yields nothing", "def feed():\n    return iter([])\n", ("no data",)),
        )
    ),
    Case(
        "image folder empty",
        lambda t: _compress(t, _conv_model(), "--calib", _folder(t), calib=False),
        2,
        ("no images",),
    ),
    Case(
        "image folder corrupt",
        lambda t: _compress(t, _conv_model(), "--calib", _folder(t, b"not a png"), calib=False),
        2,
        ("could be decoded",),
    ),
    # -- options --------------------------------------------------------------------------------
    *(
        Case(name, _option_case(*args), 2, (word,))
        for name, args, word in (
            ("target word", ("--target", "fast"), "--target"),
            ("target below 1", ("--target", "0.5x"), "--target"),
            ("target nan", ("--target", "nan"), "--target"),
            ("target inf", ("--target", "inf"), "--target"),
            ("calib samples word", ("--calib-samples", "abc"), "--calib-samples"),
            ("calib samples zero", ("--calib-samples", "0"), "--calib-samples"),
            ("unknown metric", ("--metric", "joules"), "--metric"),
            ("bad exclude regex", ("--exclude", "(("), "--exclude"),
            ("round-to zero", ("--round-to", "0"), "--round-to"),
            ("sparsity 5:4", ("--sparsity", "5:4"), "sparsity"),
            ("sparsity 1.5", ("--sparsity", "1.5"), "sparsity"),
            ("input shape garbage", ("--input-shape", "x:axb"), "--input-shape"),
            ("search evals negative", ("--search-evals", "-1"), "--search-evals"),
            ("max drop word", ("--max-drop", "lots"), "--max-drop"),
            ("latency batches word", ("--metric", "latency", "--latency-batches", "x"), "--latency-batches"),
            ("unknown option", ("--frobnicate",), "--frobnicate"),
        )
    ),
    Case("quantize without calib", lambda t: ["quantize", _save(t, _conv_model())], 2, ("--calib",)),
    Case(
        "bench rounds zero", lambda t: ["bench", _save(t, _conv_model()), "--rounds", "0"], 2, ("--rounds",)
    ),
    Case("bench batch zero", lambda t: ["bench", _save(t, _conv_model()), "--batch", "0"], 2, ("batch",)),
    Case("bench batch word", lambda t: ["bench", _save(t, _conv_model()), "--batch", "big"], 2, ("batch",)),
    Case(
        "bench warmup negative",
        lambda t: ["bench", _save(t, _conv_model()), "--warmup", "-1"],
        2,
        ("--warmup",),
    ),
    Case("no command", lambda t: ["frobnicate"], 2, ("frobnicate",)),
    # -- output folders -------------------------------------------------------------------------
    Case(
        "output is the input file",
        lambda t: [*_compress(t, _conv_model()), "-o", t / "m.onnx"],
        2,
        ("m.onnx",),
    ),
    Case(
        "output is a file",
        lambda t: [*_compress(t, _conv_model()), "-o", _bytes(t, b"x", "taken")],
        2,
        ("taken",),
    ),
    Case(
        "output under a file",
        lambda t: [*_compress(t, _conv_model()), "-o", _bytes(t, b"x", "plain") / "sub"],
        2,
        ("plain",),
    ),
    Case(
        "output impossible",
        lambda t: [*_compress(t, _conv_model()), "-o", "/proc/onnxprune-out"],
        2,
        ("/proc/onnxprune-out",),
    ),
    Case(
        "quantize output is a file",
        lambda t: [
            "quantize",
            _save(t, _conv_model()),
            "--calib",
            _calib(t, _conv_model()),
            "-o",
            _bytes(t, b"x", "taken"),
        ],
        2,
        ("taken",),
    ),
]


def _touch(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _bytes(tmp: Path, data: bytes, name: str = "m.onnx") -> Path:
    (tmp / name).write_bytes(data)
    return tmp / name


def _ir(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    model.ir_version = version
    return model


def _npz(tmp: Path, **arrays) -> Path:
    np.savez(tmp / "c.npz", **arrays)
    return tmp / "c.npz"


def _npy(tmp: Path) -> Path:
    np.save(tmp / "c.npy", np.zeros((4, 4), np.float32))
    return tmp / "c.npy"


def _with(value: float) -> np.ndarray:
    x = np.random.default_rng(0).normal(size=(24, 3, 16, 16)).astype(np.float32)
    x[5, 1, 2, 3] = value
    return x


def _bomb(tmp: Path) -> Path:
    _npz_bomb(tmp / "bomb.npz")
    return tmp / "bomb.npz"


def _pickled(tmp: Path) -> Path:
    np.savez(tmp / "p.npz", x=np.array([{"a": 1}] * 4, dtype=object))
    return tmp / "p.npz"


def _folder(tmp: Path, content: bytes | None = None) -> Path:
    folder = tmp / "images"
    folder.mkdir()
    if content is not None:
        for i in range(3):
            (folder / f"{i}.png").write_bytes(content)
    return folder


def _two_inputs() -> onnx.ModelProto:
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 4]) for n in "ab"]
    return _tiny(
        [
            helper.make_node("Add", ["a", "b"], ["h"], name="add"),
            helper.make_node("MatMul", ["h", "w"], ["y"], name="mm"),
        ],
        [_weight([4, 4])],
        inputs=inputs,
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )


def _external_missing(tmp: Path) -> onnx.ModelProto:
    model = _external(tmp, "gone.bin")
    (tmp / "gone.bin").unlink()
    return model


def _external_symlink(tmp: Path) -> onnx.ModelProto:
    outside = tmp.parent / f"{tmp.name}-outside.bin"
    model = _external(tmp, "link.bin")
    outside.write_bytes((tmp / "link.bin").read_bytes())
    (tmp / "link.bin").unlink()
    (tmp / "link.bin").symlink_to(outside)
    return model


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@contextlib.contextmanager
def _deadline(seconds: int):
    def fail(*_):
        raise TimeoutError(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_meets_the_contract(tmp_path, capsys, case):
    inputs = tmp_path / "in"
    inputs.mkdir()
    argv = [str(a) for a in case.make(inputs)]
    out = tmp_path / "out"
    if argv[0] in ("compress", "quantize") and "-o" not in argv:
        argv += ["-o", str(out)]
    before = _digests(inputs)
    capsys.readouterr()
    with _deadline(120):
        code, stdout, stderr = run_cli(capsys, *argv)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == case.code, (code, stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert all(w in lines[0] for w in case.words), lines[0]
    assert "Traceback" not in stdout + stderr
    assert _digests(inputs) == before, "an input file changed"
    assert not out.exists(), f"output left behind: {sorted(p.name for p in out.rglob('*'))}"


def test_an_unreadable_model_file_is_one_line(tmp_path, capsys, monkeypatch):
    """As root every file is readable, so the refusal is simulated where the bytes are read."""
    path = _save(tmp_path, _conv_model())
    real = Path.read_bytes

    def denied(self):
        if self == path:
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    code, _, err = run_cli(capsys, "analyze", path)
    assert code == 2 and err.strip().splitlines() == [
        f"error: cannot read model file {path}: Permission denied"
    ]


def test_the_corpus_is_large_and_its_cases_distinct():
    assert len(CASES) >= 60 and len({c.name for c in CASES}) == len(CASES)
