"""The compiler's layers import downward only, and its modules form no import
cycle (function-level imports count too: they are the same dependency, deferred).

    errors < ir < schedule < lower < ops < passes < codegen < runtime < nutshell (api, cli)

Read from the source with `ast`, so a violation is found without running it."""
import ast
import os

import networkx as nx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = {"compiler": "nutshell.compiler", "runtime": "nutshell.runtime",
            "frontends": "nutshell.frontends", "nutshell": "nutshell"}
C = "nutshell.compiler."
# what each compiler layer may import from the compiler (its own layer included)
ALLOWED = {
    "errors": (),
    "ir": ("errors", "ir"),
    # the schedule step rewrites loop IR (lower/loop_ir.py, a leaf of data classes)
    "schedule": ("errors", "ir", "schedule", "lower.target", "lower.loop_ir"),
    "lower": ("errors", "ir", "schedule", "lower"),
    "ops": ("errors", "ir", "schedule", "lower", "ops"),
    "passes": ("errors", "ir", "schedule", "lower.target", "ops", "passes"),
    "codegen": ("errors", "ir", "schedule", "lower", "ops", "passes", "codegen"),
    "cuda": ("errors", "ir", "schedule", "lower", "ops", "passes", "codegen", "cuda"),
}


def _modules():
    mods = {}
    for top, pkg in PACKAGES.items():
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(dirpath, f), os.path.join(ROOT, top))[:-3]
                    parts = [p for p in rel.split(os.sep) if p != "__init__"]
                    mods[".".join([pkg] + parts)] = os.path.join(dirpath, f)
    return mods


def _imports(name, path, mods):
    """The nutshell modules `name` imports (a `from pkg import module` names the module)."""
    package = name.split(".") if path.endswith("__init__.py") else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1] + [node.module or ""]).rstrip(".") \
                if node.level else node.module
            for a in node.names:
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base)
    return {m for m in found if m.startswith("nutshell")}


def _graph():
    mods = _modules()
    return {name: _imports(name, path, mods) for name, path in mods.items()}


def _layer(module):
    rest = module[len(C):]
    return rest.split(".")[0], rest


def test_compiler_layers_import_downward_only():
    bad = []
    for mod, deps in _graph().items():
        if not mod.startswith(C):
            continue
        layer, _ = _layer(mod)
        for dep in deps:
            if not dep.startswith(C):
                if dep != "nutshell.compiler":
                    bad.append(f"{mod} -> {dep} (the compiler imports nothing outside it)")
                continue
            _, rest = _layer(dep)
            if not any(rest == a or rest.startswith(a + ".") for a in ALLOWED[layer]):
                bad.append(f"{mod} -> {dep}")
    assert not bad, "upward imports:\n" + "\n".join(sorted(bad))


def test_runtime_does_not_import_the_api():
    bad = [f"{m} -> {d}" for m, deps in _graph().items() if m.startswith("nutshell.runtime")
           for d in deps if d in ("nutshell.api", "nutshell.cli")]
    assert not bad, "\n".join(bad)


def test_no_import_cycles_among_compiler_modules():
    g = nx.DiGraph((m, d) for m, deps in _graph().items() if m.startswith(C)
                   for d in deps if d.startswith(C) and d != m)
    cycles = [sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1]
    assert not cycles, cycles


def test_every_package_is_installed():
    """pyproject.toml lists packages by hand: a new folder left out (compiler/schedule
    was) imports in an editable checkout and fails in a wheel."""
    import tomllib
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        listed = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
    found = set()
    for folder, package in PACKAGES.items():
        for here, dirs, files in os.walk(os.path.join(ROOT, folder)):
            dirs[:] = [d for d in dirs if not d.startswith((".", "__"))]
            if "__init__.py" in files:
                relative = os.path.relpath(here, os.path.join(ROOT, folder))
                found.add(package if relative == "." else package + "." + relative.replace(os.sep, "."))
    assert found - listed == set(), f"packages missing from pyproject.toml: {sorted(found - listed)}"
