"""dvc.yaml: every tpuperf module a stage's command imports is one of the stage's deps.

The import closure is computed from the source, so a module added later (or a new import) is
covered by this test without editing it: it fails naming the stage and the dep to add.
"""

from __future__ import annotations

import ast
import shlex
from pathlib import Path, PurePosixPath

import pytest
import yaml

from tpuperf.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PACKAGE = "tpuperf"


def module_file(name: str) -> Path | None:
    """The repo file of module ``name`` (package -> its __init__.py), or None if it is not ours."""
    base = SRC.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_modules(tree: ast.AST, importer: str) -> set[str]:
    """tpuperf modules imported anywhere in ``tree`` (also inside functions), with their parent packages."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                package = importer.split(".")[: -node.level] if importer else []
                base = ".".join(package + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # `from pkg import x` imports pkg, and pkg.x when x is a submodule
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] != PACKAGE:
                continue
            parts = name.split(".")
            found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return {name for name in found if module_file(name)}


def closure(tree: ast.AST, importer: str, skip: set[str] = frozenset()) -> set[Path]:
    """Files of every tpuperf module reachable from ``tree`` through imports (not through ``skip``)."""
    seen: set[str] = set()
    todo = imported_modules(tree, importer)
    while todo:
        name = todo.pop()
        if name in seen or name in skip:
            continue
        seen.add(name)
        path = module_file(name)
        importer = f"{name}.__init__" if path.name == "__init__.py" else name  # `from . import` in a package
        tree = ast.parse(path.read_text())
        if name == PACKAGE:  # importing tpuperf runs its top level; its functions are the Python API
            tree = top_level(tree)  # (tpuperf.rank), which no stage command calls
        todo |= imported_modules(tree, importer) - seen
    return {module_file(name) for name in seen}


def top_level(tree: ast.Module, keep: list[ast.stmt] = ()) -> ast.Module:
    """``tree`` without its function and class bodies (what importing it runs), plus ``keep``."""
    body = [n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.ClassDef))] + list(keep)
    return ast.Module(body=body, type_ignores=[])


def command_files(cmd: str) -> set[Path]:
    """Every repo file whose code ``cmd`` runs: the entry file and its tpuperf import closure.

    ``tpuperf <subcommand> ...``: cli.py's top level plus the handler argparse picks for these
    arguments (cli.py imports heavy modules inside handlers); ``python <script>``: the script.
    """
    argv = shlex.split(cmd)
    if argv[0] == "tpuperf":
        cli = SRC / PACKAGE / "cli.py"
        tree = ast.parse(cli.read_text())
        handler = build_parser().parse_args(argv[1:]).func.__name__
        handlers = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == handler]
        assert handlers, f"{cli}: the handler {handler} of {cmd!r} is not a top-level function there"
        return {cli} | closure(top_level(tree, handlers), f"{PACKAGE}.cli")
    if argv[0] in ("python", "python3") and argv[1].endswith(".py"):
        script = REPO / argv[1]
        return {script} | closure(ast.parse(script.read_text()), "")
    raise AssertionError(f"dvc.yaml: cannot tell which code the command {cmd!r} runs; teach command_files() its form")


def covered(path: Path, deps: list[str]) -> bool:
    rel = PurePosixPath(path.relative_to(REPO).as_posix())
    return any(rel == PurePosixPath(dep) or PurePosixPath(dep) in rel.parents for dep in deps)


STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def stage_spec(name: str) -> dict:
    spec = STAGES[name]
    return spec.get("do", spec)  # foreach stages keep cmd/deps under do:


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_cover_every_module_its_command_imports(name):
    spec = stage_spec(name)
    if spec.get("always_changed"):
        pytest.skip(f"stage {name} is always_changed: it re-runs on every repro, so it needs no code deps")
    deps = [d if isinstance(d, str) else next(iter(d)) for d in spec.get("deps", [])]
    twice = sorted({d for d in deps if deps.count(d) > 1})
    assert not twice, f"dvc.yaml stage {name}: deps listed more than once: {twice}"
    needed = command_files(spec["cmd"])
    missing = sorted(str(p.relative_to(REPO)) for p in needed if not covered(p, deps))
    assert not missing, f"dvc.yaml stage {name}: add these deps (its command imports them): {missing}"
    code_deps = [d for d in deps if d.endswith(".py") or (REPO / d).is_dir() and d.startswith("src/")]
    stale = [d for d in code_deps if not any(covered(p, [d]) for p in needed)]
    assert not stale, f"dvc.yaml stage {name}: these deps are code it never imports (needless re-runs): {stale}"


def test_closure_follows_imports_inside_functions_and_packages():
    """The walker itself: train's handler reaches models/ only through imports inside trainer.py's functions."""
    files = {str(p.relative_to(SRC)) for p in command_files("tpuperf train --collection tile-xla --model chebsage")}
    assert {
        "tpuperf/__init__.py",
        "tpuperf/cli.py",
        "tpuperf/training/trainer.py",
        "tpuperf/models/__init__.py",
        "tpuperf/models/layers.py",
        "tpuperf/training/batches.py",
        "tpuperf/data/cache.py",
        "tpuperf/config.py",
        "tpuperf/training/losses.py",
    } <= files
    assert (
        "tpuperf/kaggle/kernels.py" not in files and "tpuperf/data/download.py" not in files
    )  # other handlers' imports
    download = {str(p.relative_to(SRC)) for p in command_files("tpuperf download")}
    assert "tpuperf/data/synthetic.py" in download and "tpuperf/training/trainer.py" not in download
    tree = ast.parse("from . import layers\nfrom ..data.cache import CachedGraph\nimport os")
    assert imported_modules(tree, "tpuperf.models.model") == {
        "tpuperf",
        "tpuperf.models",
        "tpuperf.models.layers",
        "tpuperf.data",
        "tpuperf.data.cache",
    }


def test_no_import_cycle():
    """No module reaches itself through imports (also those inside functions), except back through
    the ``__init__`` of a package it lives in (re-exports); e.g. the Kaggle kernel's entry code
    does not import the CLI that builds it."""
    cycles = []
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name == PACKAGE:  # its top level imports nothing of ours; tpuperf.rank is the Python API
            continue
        packages = {".".join(parts[:i]) for i in range(1, len(parts))}  # its own packages: not followed
        importer = f"{name}.__init__" if parts[-1] == "__init__" else name
        if path in closure(ast.parse(path.read_text()), importer, skip=packages):
            cycles.append(name)
    assert not cycles, f"modules that import themselves through other modules: {cycles}"
    entry = closure(
        ast.parse((SRC / PACKAGE / "kaggle" / "kernel_entry.py").read_text()), f"{PACKAGE}.kaggle.kernel_entry"
    )
    assert SRC / PACKAGE / "cli.py" not in entry and SRC / PACKAGE / "training" / "trainer.py" in entry
