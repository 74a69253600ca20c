"""The project's own docs name real things: every test the fidelity table cites exists, and
every module of the package is in the module map."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CITED = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}


def test_every_test_the_fidelity_table_cites_exists() -> None:
    text = (ROOT / "docs" / "emulator-fidelity.md").read_text(encoding="utf-8")
    cited = CITED.findall(text)
    assert len(cited) > 100
    missing = [
        f"{path}::{name}"
        for path, name in cited
        if not (ROOT / path).is_file() or name not in _test_functions(ROOT / path)
    ]
    assert missing == []


def test_every_module_is_in_the_module_map() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    package = ROOT / "src" / "endpoint_forensics"
    modules = [
        str(p.relative_to(package)) for p in package.rglob("*.py") if p.name != "__init__.py"
    ]
    assert [m for m in sorted(modules) if f"`{m}`" not in text] == []
