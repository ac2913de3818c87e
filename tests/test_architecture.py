"""The package's layers (docs/architecture.md): every import points downward, and there is no cycle.

Read from the source with ``ast`` (nothing is imported). A module-level import may only name a module of
the same layer or a lower one. An import inside a function may go upward only where it is listed in
``UPWARD_CALLS`` with the reason — convenience entry points that accept another layer's objects (a torch
model given to ``quantize_static``) or forward to it (``QuantizedModel.to_onnx``); the list is checked to
be exact, so a new upward import fails until it is justified here.
"""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "minquant"

#: layer of each top-level module / sub-package of minquant, low to high
LAYERS = {
    "core": 0,        # affine, target, observers, graph, float_ops, executor, sparse, im2col, files
    "kernels": 1,
    "data": 1,        # offline datasets, model zoo, training loop (torch, the core)
    "quantized": 2,
    "interop": 3,
    "frameworks": 4,
    "prune": 4,
    "distill": 4,
    "qat": 4,         # quantization-aware training, AdaRound (torch; imports quantized/ and below)
    "lesson": 5,
    "facade": 6,      # minquant/__init__.py (the public names of every layer) and __main__.py
}
CORE = {"files", "affine", "target", "observers", "graph", "float_ops", "executor", "sparse",
        "im2col"}

#: function-level imports that go up a layer, each with its reason (importer module -> imported module)
UPWARD_CALLS = {
    ("minquant.quantized.static", "minquant.interop.torch.fx_import"):
        "quantize_static / quantize_dynamic accept a torch nn.Module and import it with from_torch",
    ("minquant.quantized.model", "minquant.interop.onnx.exporter"):
        "QuantizedModel.to_onnx() forwards to minquant.interop.onnx.exporter",
    ("minquant.quantized.model", "minquant.interop.litert.exporter"):
        "QuantizedModel.to_tflite() forwards to minquant.interop.litert.exporter",
    ("minquant.quantized.comparison", "minquant.interop.torch.fx_import"):
        "compare() accepts the float torch model the quantized one came from",
}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return "facade"
    if parts[1] in CORE:
        return "core"
    return parts[1]


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path):
    """(imported module, at module level?) for every import of a minquant module in ``path``."""
    mod = module_name(path)
    pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    top_level = {id(n) for n in tree.body}
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom):
            if n.level:
                base = pkg.split(".")
                base = base[: len(base) - (n.level - 1)]
                target = ".".join(base + ([n.module] if n.module else []))
            else:
                target = n.module or ""
            if not target.startswith("minquant"):
                continue
            for alias in n.names:     # "from pkg import submodule" imports the submodule
                sub = f"{target}.{alias.name}"
                exists = (PKG.parent / Path(*sub.split("."))).with_suffix(".py").exists() or \
                    (PKG.parent / Path(*sub.split("."))).is_dir()
                yield (sub if exists else target), id(n) in top_level
        elif isinstance(n, ast.Import):
            for alias in n.names:
                if alias.name.startswith("minquant"):
                    yield alias.name, id(n) in top_level


def all_modules():
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_has_a_layer():
    for p in all_modules():
        assert layer_of(module_name(p)) in LAYERS, f"{module_name(p)}: no layer; add it to LAYERS"


def test_imports_point_downward():
    upward, used = [], set()
    for p in all_modules():
        mod = module_name(p)
        for target, top in imports_of(p):
            lo, hi = LAYERS[layer_of(mod)], LAYERS[layer_of(target)]
            if hi <= lo:
                if hi == lo and layer_of(mod) != layer_of(target) and top:
                    upward.append(f"{mod} -> {target} (same rank, different layers, module level)")
                continue
            key = (mod, target) if (mod, target) in UPWARD_CALLS else (mod, "*")
            if not top and key in UPWARD_CALLS:
                used.add(key)
                continue
            upward.append(f"{mod} -> {target} ({'module level' if top else 'in a function'})")
    assert not upward, "imports pointing up a layer:\n  " + "\n  ".join(upward)
    assert used == set(UPWARD_CALLS), f"UPWARD_CALLS lists imports that no longer exist: {set(UPWARD_CALLS) - used}"


def test_no_import_cycle_at_module_level():
    graph = {module_name(p): set() for p in all_modules()}
    for p in all_modules():
        for target, top in imports_of(p):
            if top and target in graph and target != module_name(p):
                graph[module_name(p)].add(target)
    # a package's __init__ importing its own submodules is not a cycle of layers: drop child -> parent-package edges
    for m in graph:
        graph[m] = {t for t in graph[m] if not m.startswith(t + ".")}
    state, stack = {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


@pytest.mark.parametrize("core_module", sorted(CORE))
def test_core_imports_only_numpy_numba_scipy(core_module):
    tree = ast.parse((PKG / f"{core_module}.py").read_text())
    allowed = {"numpy", "numba", "scipy", "llvmlite", "minquant"}
    stdlib = {"__future__", "dataclasses", "functools", "os", "sys", "math", "typing", "collections", "itertools",
              "json", "hashlib", "io", "re", "warnings", "pathlib", "copy", "operator", "abc", "enum", "zipfile",
              "textwrap", "contextlib", "numbers", "bisect", "heapq", "time", "types", "inspect", "tempfile"}
    for n in ast.walk(tree):
        names = [a.name for a in n.names] if isinstance(n, ast.Import) else \
            ([n.module] if isinstance(n, ast.ImportFrom) and n.level == 0 and n.module else [])
        for name in names:
            top = name.split(".")[0]
            assert top in allowed | stdlib, f"minquant/{core_module}.py imports {name}"
