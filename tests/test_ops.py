"""The op registry and the package's import graph."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxprune.passes.normalize import normalize
from onnxprune.passes.prune_channels import prune_channels

from onnxprune.channels import Edit
from onnxprune.costs import model_cost
from onnxprune.layers import linear_layers
from onnxprune.ops import EDITS, REGISTRY, WEIGHT_LAYER_OPS, entry, mac_rule, trace_rule
from onnxprune.tracer import trace_channels

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {
    "onnxprune": REPO / "onnxprune",
    "onnxprune.passes": REPO / "passes",
    "onnxprune.calibration": REPO / "calibration",
}


def test_every_edit_kind_has_one_rule_and_every_entry_is_complete():
    assert set(EDITS) == set(Edit)
    owners = {
        kind: [op for op, e in REGISTRY.items() if kind in e.edits] for kind in Edit if kind != Edit.PARAM
    }
    assert all(owners.values()), owners  # each special edit belongs to the op that records it
    for op, e in REGISTRY.items():
        assert callable(e.trace), op
        if e.weight_layer:
            assert e.macs is not None, f"{op}: a weight layer without a MAC formula"
    assert set(WEIGHT_LAYER_OPS) == {"Conv", "ConvTranspose", "Gemm", "MatMul"}


def test_lookups_respect_the_domain():
    assert trace_rule("Conv") is REGISTRY["Conv"].trace
    assert trace_rule("Conv", "com.microsoft") is None and entry("NoSuchOp") is None
    assert mac_rule("Conv") is REGISTRY["Conv"].macs  # a fused op keeps its name's cost in any domain


def _gemm_chain(op_between: str, domain: str = "") -> onnx.ModelProto:
    """x [N, 8] → Gemm(8→6) → op → Gemm(6→4)."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(8, 6)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(size=(6, 4)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "w1"], ["h"], name="fc1"),
        helper.make_node(op_between, ["h"], ["a"], name="mid", domain=domain),
        helper.make_node("Gemm", ["a", "w2"], ["y"], name="fc2"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        inits,
    )
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=opsets)


def test_an_entry_is_what_the_tracer_costs_and_pruning_read():
    """Through a registered op (Relu) the hidden channels form a prunable group, pruning edits both Gemms
    and the MACs count both; the same graph with an op nobody registered blocks the group."""
    model, _ = normalize(_gemm_chain("Relu"))
    trace = trace_channels(model)
    (group,) = [g for g in trace.groups if g.prunable]
    assert group.size == 6 and set(linear_layers(model)) == {"fc1", "fc2"}
    pruned = prune_channels(model, trace, {group.id: np.array([0, 2, 5])})
    onnx.checker.check_model(pruned, full_check=True)
    assert model_cost(pruned, {"x": (1, 8)}).macs == 8 * 3 + 3 * 4 < model_cost(model, {"x": (1, 8)}).macs

    unknown = _gemm_chain("Mystery", domain="custom.ops")
    blocked = trace_channels(unknown)
    reasons = [r for g in blocked.groups if g.size == 6 for r in g.reasons]
    assert any("custom.ops::Mystery" in r and "not supported" in r for r in reasons)


def _module_of(path: Path) -> str:
    for package, folder in PACKAGE_DIRS.items():
        if path.is_relative_to(folder):
            parts = path.relative_to(folder).with_suffix("").parts
            return ".".join([package, *parts]).removesuffix(".__init__")
    raise AssertionError(path)


def _imports(path: Path, module: str, known: set[str]) -> set[str]:
    """Modules of the package that ``path`` imports, at module level or inside functions."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out |= {f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {m for m in out if m in known and m != module}


def test_the_package_has_no_import_cycle():
    files = {_module_of(p): p for folder in PACKAGE_DIRS.values() for p in folder.rglob("*.py")}
    graph = {m: _imports(p, m, set(files)) for m, p in files.items()}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                pytest.fail("import cycle: " + " -> ".join([*path[path.index(d) :], d]))
            if not state.get(d):
                visit(d, [*path, d])
        state[m] = 2

    for m in sorted(graph):
        if not state.get(m):
            visit(m, [m])
