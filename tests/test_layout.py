"""The package's layout: sub-packages along the flow, the old flat module paths kept for one
release as the same module objects, no import circle (lazy, function-level imports counted) -
neither between modules nor between sub-packages - the cfg side torch-free, and no function
longer than a screen."""
import ast
import importlib
import os
import subprocess
import sys

import pytest

import darkcfg

PKG = os.path.dirname(os.path.abspath(darkcfg.__file__))

# old flat name -> where it lives now
MOVED = {
    "cfg": "config.cfg", "shapes": "config.shapes",
    "layers": "nn.layers", "model": "nn.model", "syncbn": "nn.syncbn",
    "weights": "files.weights", "ptfile": "files.ptfile", "io": "outputs",
    "export": "infer.export",
    "yolo": "objective.yolo", "keypoint": "objective.keypoint", "anchors": "objective.anchors",
    "data": "dataset.data", "augment": "dataset.augment", "demo": "dataset.demo",
    "train": "training.train",
    "validate": "evaluation.validate", "evaluate": "evaluation.evaluate",
    "detect": "infer.detect", "speed": "infer.speed",
}
# sub-package paths of modules that moved again so that no two sub-packages import each other
# (atomic writing went below config, export went downstream of nn)
ALIASES = {"darkcfg.files.io": "darkcfg.outputs", "darkcfg.files.export": "darkcfg.infer.export"}
SHIMS = {f"darkcfg.{old}" for old in MOVED} | set(ALIASES)


def _home(shim: str) -> str:
    if shim in ALIASES:
        return ALIASES[shim]
    return f"darkcfg.{MOVED[shim.rpartition('.')[2]]}"


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_path_is_the_new_module(old):
    new = importlib.import_module(f"darkcfg.{MOVED[old]}")
    assert importlib.import_module(f"darkcfg.{old}") is new
    assert getattr(darkcfg, old) is new
    assert sys.modules[f"darkcfg.{old}"] is new


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_an_earlier_sub_package_path_is_the_new_module(alias):
    assert importlib.import_module(alias) is importlib.import_module(ALIASES[alias])


def test_public_api_kept():
    from darkcfg import train as T
    from darkcfg.nn import model as M
    assert darkcfg.build_model is M.build_model
    # darkcfg.load: nn.model.load's, or int8's (downstream of nn) for dtype="int8" and .pt2
    assert darkcfg.load.__module__ == "darkcfg" and M.load.__name__ == "load"
    assert darkcfg.train.train is T.train and callable(T.learning_rate)
    from darkcfg.cli import main
    assert callable(main)


def _modules() -> dict:
    """dotted module name -> source path, shims left out; a package is its __init__."""
    out = {}
    for root, dirs, files in os.walk(PKG):
        dirs[:] = sorted(d for d in dirs if os.path.isfile(os.path.join(root, d, "__init__.py")))
        rel = os.path.relpath(root, os.path.dirname(PKG)).replace(os.sep, ".")
        for f in sorted(files):
            if not f.endswith(".py"):
                continue
            name = rel if f == "__init__.py" else f"{rel}.{f[:-3]}"
            if name not in SHIMS:
                out[name] = os.path.join(root, f)
    return out


def _imports(name: str, path: str, known: set) -> set:
    """Every darkcfg module ``name`` imports, at any depth (module level and in functions)."""
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = set()

    def resolve(mod):
        # a shim stands for the module it names
        if mod in SHIMS:
            mod = _home(mod)
        if mod in known:
            found.add(mod)

    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "darkcfg":
                    resolve(a.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").split(".")[0] == "darkcfg":
                mod = node.module
            else:
                continue
            resolved_any = False
            for a in node.names:
                sub = f"{mod}.{a.name}"
                if sub in known or sub in SHIMS:
                    resolve(sub)
                    resolved_any = True
            if not resolved_any:
                resolve(mod)
    found.discard(name)
    return found


def _cycle(graph: dict):
    """One import circle as a list of modules, or None."""
    state, stack = {}, []

    def visit(u):
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in state:
                c = visit(v)
                if c:
                    return c
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(graph):
        if u not in state:
            c = visit(u)
            if c:
                return c
    return None


def test_no_import_cycle():
    mods = _modules()
    assert "darkcfg.dataset.prepare" in mods and "darkcfg.cli" in mods
    graph = {m: _imports(m, p, set(mods)) for m, p in mods.items()}
    cycle = _cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_cycle_check_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _packages(graph: dict) -> dict:
    """The module graph folded onto sub-packages (darkcfg.config, darkcfg.nn, ...; a top-level
    module such as darkcfg.errors stands alone): package -> the packages it imports."""
    def pkg(m):
        return ".".join(m.split(".")[:2])
    out = {}
    for a, bs in graph.items():
        out.setdefault(pkg(a), set()).update(pkg(b) for b in bs if pkg(b) != pkg(a))
        for b in bs:
            out.setdefault(pkg(b), set())
    return out


def test_no_sub_package_imports_one_that_imports_it():
    """Data flows one way (text -> sections -> shapes -> modules -> targets/loss; data ->
    loader -> train; model + list -> evaluate): no two sub-packages import each other, directly
    or round a longer circle, even where no module circle exists."""
    mods = _modules()
    graph = {m: _imports(m, p, set(mods)) for m, p in mods.items()}
    packages = _packages(graph)
    assert {"darkcfg.config", "darkcfg.files", "darkcfg.nn"} <= set(packages)
    cycle = _cycle(packages)
    if cycle:
        a, b = cycle[0], cycle[1]
        why = sorted((m, n) for m, ns in graph.items() for n in ns
                     if m.startswith(a + ".") and (n == b or n.startswith(b + ".")))
        raise AssertionError("sub-packages import each other: " + " -> ".join(cycle)
                             + f" ({a} -> {b} through {why[:3]})")


def test_package_check_finds_a_two_way_import():
    """Modules without a circle (a.x -> b.y, b.z -> a.w) still tie packages a and b both ways."""
    graph = {"darkcfg.a.x": {"darkcfg.b.y"}, "darkcfg.b.z": {"darkcfg.a.w"},
             "darkcfg.a.w": set(), "darkcfg.b.y": set()}
    assert _cycle(graph) is None
    assert _cycle(_packages(graph)) == ["darkcfg.a", "darkcfg.b", "darkcfg.a"]
    graph["darkcfg.b.z"] = {"darkcfg.errors"}
    assert _cycle(_packages(graph)) is None


def test_import_edges_are_seen_inside_functions():
    mods = _modules()
    edges = _imports("darkcfg.files.weights", mods["darkcfg.files.weights"], set(mods))
    assert {"darkcfg.files.ptfile", "darkcfg.config.shapes", "darkcfg.config.cfg"} <= edges


def test_config_is_torch_free():
    code = ("import darkcfg.config, darkcfg.config.cfg, darkcfg.config.shapes, sys; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# The longest function or method allowed, in lines from ``def`` to its last line (docstring
# included): about one screen.  STYLE.md's anchor (nanoGPT's model.py) has a
# median of 11 and a longest of 55; past a screen a function is doing two things, and its
# reader can no longer see where a value set at the top is used at the bottom.
LONGEST = 60


def _long_functions(source: str, path: str, limit: int) -> list:
    """[(lines, "path:line name")] of every function or method over ``limit`` lines, nested
    ones included."""
    out = []
    for node in ast.walk(ast.parse(source, path)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            if lines > limit:
                out.append((lines, f"{os.path.relpath(path)}:{node.lineno} {node.name}"))
    return out


def test_no_function_is_longer_than_a_screen():
    found = []
    for name, path in sorted(_modules().items()):
        with open(path, encoding="utf-8") as f:
            found += _long_functions(f.read(), path, LONGEST)
    assert not found, f"over {LONGEST} lines: " + ", ".join(
        f"{where} ({n})" for n, where in sorted(found, reverse=True))


def test_length_check_sees_methods_and_nested_functions():
    def block(indent):
        return "".join(f"{indent}x{i} = {i}\n" for i in range(LONGEST))
    src = ("class A:\n    def m(self):\n" + block(" " * 8)
           + "def f():\n    def g():\n" + block(" " * 8)
           + "def short():\n" + block(" " * 4)[:-len(f"    x{LONGEST - 1} = {LONGEST - 1}\n")])
    found = sorted(w.split()[-1] for _, w in _long_functions(src, "x.py", LONGEST))
    assert found == ["f", "g", "m"]
