"""The tool and the app it delivers: aiship never imports the sample app, and ships what it reads."""

from __future__ import annotations

import ast
from importlib.resources import files
from pathlib import Path

FLOWS = Path(__file__).resolve().parents[2] / "flows"


def imported_modules(path: Path) -> set[str]:
    """Every module a Python file imports, at any depth of its code (function-local imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_nothing_under_flows_imports_the_sample_app():
    sources = sorted(FLOWS.rglob("*.py"))
    assert len(sources) > 20  # the walk really reads the package
    importers = {str(p.relative_to(FLOWS)): sorted(m for m in imported_modules(p) if m == "app" or m.startswith("app."))
                 for p in sources}
    assert {k: v for k, v in importers.items() if v} == {}


def test_the_import_walk_sees_function_local_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from app.model import x\n    import app\n")
    assert imported_modules(probe) == {"app.model", "app"}


def test_templates_and_default_dockerfile_ship_inside_the_package():
    package = files("flows")
    for name in ("deployment.yaml", "service.yaml", "namespace.yaml"):
        assert (package / "deployments" / name).is_file(), name
    assert "FROM" in (package / "resources" / "Dockerfile.wsgi").read_text()


def test_a_releases_labels_and_annotations_are_spelt_in_one_module_only():
    import re

    keys = re.compile(r"io\.aiship\.model\.|org\.opencontainers\.image\.|io\.aiship/(app|git-sha|model-|digest|serve)\b")
    spelt = sorted(str(p.relative_to(FLOWS)) for p in FLOWS.rglob("*.py") if keys.search(p.read_text()))
    assert spelt == ["release.py"], "label and annotation keys belong to flows/release.py; import them from there"
