"""The package layout of docs/architecture.md holds: imports run one way, down the stages.

Each package of `xinf_watch` may import only the packages after it in `LAYERS` (and the shared
modules at the top of `xinf_watch/`); nothing imports `app` but `__main__`. Read from the source
with `ast`, type-only imports included: a layer that needs a type from above it is in the wrong
place.
"""

from __future__ import annotations

import ast
from pathlib import Path

import xinf_watch

PACKAGE = Path(xinf_watch.__file__).parent
LAYERS = [
    "app",
    "simulate",
    "rules",
    "metrics",
    "fleet",
    "attribution",
    "keys",
    "config",
    "delivery",
    "state",
    "ingest",
    "formats",
    "shared",  # model.py, addresses.py, caches.py, visible.py, durations.py, userregex.py
]


def layer_of(dotted: str, package: Path) -> str | None:
    """The layer of an imported module (`xinf_watch.rules.engine` -> rules), None outside."""
    parts = dotted.split(".")
    if parts[0] != "xinf_watch":
        return None
    if len(parts) > 1 and (package / parts[1] / "__init__.py").is_file():
        return parts[1]
    return "shared"


def imported(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every `xinf_watch` import in `tree`, `from xinf_watch import x` as x."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            if node.module == "xinf_watch":
                found += [(node.lineno, f"xinf_watch.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def upward_imports(package: Path) -> list[str]:
    wrong = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        if relative == Path("__main__.py"):
            continue  # `python -m xinf_watch` is the CLI
        mine = relative.parts[0] if len(relative.parts) > 1 else "shared"
        for line, module in imported(ast.parse(path.read_text(encoding="utf-8"))):
            theirs = layer_of(module, package)
            if theirs is None or theirs == mine:
                continue
            if LAYERS.index(theirs) < LAYERS.index(mine):
                wrong.append(f"xinf_watch/{relative}:{line} ({mine}) imports {module} ({theirs})")
    return wrong


def test_every_package_is_in_a_layer() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(LAYERS) - {"shared"}


def test_imports_run_down_the_layers() -> None:
    assert upward_imports(PACKAGE) == []


def test_the_check_reports_imports_up_and_only_those(tmp_path: Path) -> None:
    for name in ("app", "rules", "keys"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / "model.py").write_text("import json\n")
    (tmp_path / "rules" / "engine.py").write_text(
        "from xinf_watch.keys.registry import KeyRegistry\n"  # down: fine
        "from xinf_watch import model, caches\n"  # shared: fine
        "if True:\n    from xinf_watch.app.pipeline import Pipeline\n"  # up
    )
    (tmp_path / "keys" / "registry.py").write_text("import xinf_watch.rules.engine\n")  # up
    assert upward_imports(tmp_path) == [
        "xinf_watch/keys/registry.py:1 (keys) imports xinf_watch.rules.engine (rules)",
        "xinf_watch/rules/engine.py:4 (rules) imports xinf_watch.app.pipeline (app)",
    ]
