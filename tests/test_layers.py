"""The layers of DESIGN.md hold: who may import whom, and where pynvml, fsspec, torch,
prometheus_client and matplotlib live.

An `ast` walk over every module in the package. A new module must be placed in `LAYERS`
(by name or package pattern) before this test passes, which is the point.
"""

from __future__ import annotations

import ast
import fnmatch
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "supervisor"

# First match wins; patterns use fnmatch on dotted module names.
LAYERS: list[tuple[str, int]] = [
    # L0 data: standard library only
    ("supervisor.core", 0),
    ("supervisor.core.exitcodes", 0),
    ("supervisor.core.errors", 0),
    ("supervisor.core.clock", 0),
    ("supervisor.core.events", 0),
    ("supervisor.core.options", 0),
    ("supervisor.core.outputs", 0),
    ("supervisor.core.actions", 0),
    ("supervisor.gang", 0),
    ("supervisor.gang.records", 0),
    ("supervisor.gang.options", 0),
    ("supervisor.child_contract", 0),
    # L1 decisions: pure, L0 only
    ("supervisor.core.*", 1),
    ("supervisor.gang.*", 1),
    ("supervisor.gpu.catalog", 1),
    ("supervisor.hang.calibration", 1),
    ("supervisor.storage.retention", 1),
    ("supervisor.watch.steptime", 1),
    # L2 edges
    ("supervisor.channel", 2),
    ("supervisor.process", 2),
    ("supervisor.process.*", 2),
    ("supervisor.outputs", 2),
    ("supervisor.outputs.*", 2),
    ("supervisor.watch", 2),
    ("supervisor.watch.*", 2),
    ("supervisor.gpu", 2),
    ("supervisor.gpu.*", 2),
    ("supervisor.hang", 2),
    ("supervisor.hang.*", 2),
    ("supervisor.storage", 2),
    ("supervisor.storage.*", 2),
    ("supervisor.k8s", 2),
    ("supervisor.k8s.*", 2),
    # L3 the run
    ("supervisor.run", 3),
    ("supervisor.run.*", 3),
    # L4 faces
    ("supervisor", 4),
    ("supervisor.__main__", 4),
    ("supervisor.client", 4),
    ("supervisor.cli", 4),
    ("supervisor.cli.*", 4),
]

# Modules L1 must never touch: decisions stay pure.
IMPURE = {"os", "signal", "threading", "subprocess", "socket", "mmap", "fsspec", "pynvml"}


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


SOURCES = sorted(PACKAGE.rglob("*.py"))
MODULES = {module_name(p) for p in SOURCES}


def layer_of(name: str) -> int:
    for pattern, layer in LAYERS:
        if fnmatch.fnmatchcase(name, pattern):
            return layer
    raise AssertionError(f"{name} has no layer: add it to LAYERS in {__file__}")


def imports_of(path: Path) -> set[str]:
    """Every absolute module name imported anywhere in the file, at any depth."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    here = module_name(path).split(".")
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here if is_pkg else here[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for alias in node.names:  # `from supervisor import events` names a module
                sub = f"{mod}.{alias.name}"
                found.add(sub if sub in MODULES else mod)
    return found


def known_module(name: str, modules: set[str]) -> str | None:
    """The longest supervisor module that `name` refers to, if any."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p))
def test_module_imports_respect_layers(path: Path) -> None:
    me = module_name(path)
    mine = layer_of(me)
    for imported in imports_of(path):
        top = imported.split(".")[0]
        if mine == 1:
            assert top not in IMPURE, f"{me} (L1, pure) imports {imported}"
        if top == "pynvml":
            assert me == "supervisor.gpu.nvml", f"only supervisor.gpu.nvml may import pynvml: {me}"
        if top == "fsspec":
            assert me.startswith("supervisor.storage"), f"fsspec outside storage: {me}"
        if top == "prometheus_client":
            assert me == "supervisor.outputs.metrics", f"prometheus_client outside metrics: {me}"
        if top == "matplotlib":
            assert me == "supervisor.cli.plot", f"matplotlib outside supervisor.cli.plot: {me}"
        if top != "supervisor":
            continue
        target = known_module(imported, MODULES)
        if target is None:
            continue
        theirs = layer_of(target)
        assert theirs <= mine, f"{me} (L{mine}) imports {target} (L{theirs})"


def test_every_module_has_a_layer() -> None:
    for name in MODULES:
        layer_of(name)


def test_supervisor_process_never_imports_torch(tmp_path: Path) -> None:
    """Run a real supervised command and list what the supervisor process loaded."""
    probe = tmp_path / "modules.txt"
    code = (
        "import atexit, sys\n"
        f"atexit.register(lambda: open({str(probe)!r}, 'w').write('\\n'.join(sys.modules)))\n"
        "from supervisor.cli import main\n"
        "sys.argv = ['supervise', '--termination-log', '/dev/null', '--', 'true']\n"
        "main()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    loaded = set(probe.read_text().split())
    assert "supervisor.run.loop" in loaded  # the probe really ran the supervisor
    assert not {m for m in loaded if m == "torch" or m.startswith("torch.")}
    # Without --metrics-port, nothing of the metrics endpoint is loaded.
    assert not {m for m in loaded if m.split(".")[0] == "prometheus_client"}
    assert "supervisor.outputs.metrics" not in loaded
    # Without a ledger (no checkpoint dir) a run loads neither the gang nor storage.
    assert not loaded & {"supervisor.run.gang", "supervisor.gang.records", "fsspec", "secrets"}


def test_the_import_graph_has_no_cycle() -> None:
    """No module reaches itself through imports, function-level ones included."""
    graph = {
        module_name(path): {
            target
            for imported in imports_of(path)
            if (target := known_module(imported, MODULES)) and target != module_name(path)
        }
        for path in SOURCES
    }
    done: set[str] = set()

    def visit(module: str, trail: list[str]) -> None:
        if module in trail:
            cycle = [*trail[trail.index(module) :], module]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        for target in sorted(graph.get(module, ())):
            visit(target, [*trail, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
